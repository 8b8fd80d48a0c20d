//! Wall-clock time as the gateway stores and shows it: instants are kept as Unix
//! milliseconds (the state, tokens, Redis leases) and shown as RFC 3339 in UTC (admin
//! documents, certificate validity, log lines).
//!
//! Only for what people and other processes read: durations and deadlines inside the
//! process use the monotonic clock (`Instant`), which the wall clock can jump past.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch (0 for a clock set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The instant `ms` milliseconds after the Unix epoch.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `2026-01-31T12:00:00Z`: whole seconds, for token and certificate times.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `2026-01-31T12:00:00.123Z`: milliseconds, where a second is a real share of the span
/// shown (lease deadlines, access log lines).
pub fn rfc3339_ms(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_forms() {
        let t = from_unix_ms(86_400_123);
        assert_eq!(rfc3339(t), "1970-01-02T00:00:00Z", "seconds truncate");
        assert_eq!(rfc3339_ms(t), "1970-01-02T00:00:00.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn now_is_the_system_clock_in_milliseconds() {
        let before = SystemTime::now();
        let now = from_unix_ms(now_ms());
        let after = SystemTime::now();
        // `now_ms` truncates to the millisecond, so it may read just before `before`.
        assert!(now + Duration::from_millis(1) >= before && now <= after);
    }
}
