//! Wall-clock helpers shared by the request path, the admin API and the stores.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds (0 before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
