//! The fence: until when this replica may serve protected routes.
//!
//! A replica holding a lease in Redis may answer protected routes only while its own
//! monotonic clock is inside that lease, minus a safety margin. The lease protocol
//! (`state::redis`) moves the instant forward after each successful renewal and back to
//! zero when it learns it is stale; the request path only compares it with a clock
//! read: one atomic load, no lock, no I/O.
//!
//! The fence also keeps the `authgate_state_fenced` gauge: every opening and closing
//! sets it, and as a lease runs out with no event, the lease protocol calls
//! [`Fence::report`] wherever it may have (a failed renewal, a lost session). Reading
//! the fence on the request path never touches the gauge.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::gauge;

use crate::metrics::STATE_FENCED;

/// "Serve protected routes until" as milliseconds on a process-local monotonic clock.
#[derive(Debug)]
pub struct Fence {
    origin: Instant,
    /// Milliseconds since `origin`; 0 means fenced now.
    until_ms: AtomicU64,
    /// Woken by every opening (a renewal: once per heartbeat, never per request).
    opened: tokio::sync::Notify,
}

impl Default for Fence {
    fn default() -> Self {
        Fence::new()
    }
}

impl Fence {
    /// A fence that is closed until the first [`Fence::open_until`].
    pub fn new() -> Fence {
        Fence {
            origin: Instant::now(),
            until_ms: AtomicU64::new(0),
            opened: tokio::sync::Notify::new(),
        }
    }

    /// Resolves once protected routes may be served (at once if they may now).
    pub async fn opened(&self) {
        loop {
            let opened = self.opened.notified();
            if !self.is_fenced() {
                return;
            }
            opened.await;
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_millis() as u64
    }

    /// Whether protected routes must be refused now.
    pub fn is_fenced(&self) -> bool {
        self.ms(Instant::now()) >= self.until_ms.load(Ordering::Acquire)
    }

    /// Serve until `sent + valid`: `sent` is when the renewal that granted the lease was
    /// sent (before Redis read its clock), so the local window ends no later than the
    /// lease Redis recorded.
    pub fn open_until(&self, sent: Instant, valid: Duration) {
        let until = self.ms(sent + valid);
        self.until_ms.store(until, Ordering::Release);
        self.report();
        self.opened.notify_waiters();
    }

    /// Refuse protected routes from now on (until the next renewal).
    pub fn close(&self) {
        self.until_ms.store(0, Ordering::Release);
        set_gauge(true);
    }

    /// Sets the gauge to whether the fence is closed now (a lease that ran out by
    /// itself closed it without a call).
    pub fn report(&self) {
        set_gauge(self.is_fenced());
    }
}

fn set_gauge(fenced: bool) {
    gauge!(STATE_FENCED).set(if fenced { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_until_opened_and_closed_again_on_demand() {
        let fence = Fence::new();
        assert!(fence.is_fenced(), "closed before the first lease");
        fence.open_until(Instant::now(), Duration::from_secs(60));
        assert!(!fence.is_fenced());
        fence.close();
        assert!(fence.is_fenced());
        fence.open_until(
            Instant::now() - Duration::from_secs(2),
            Duration::from_secs(1),
        );
        assert!(
            fence.is_fenced(),
            "a lease that already ran out does not open it"
        );
    }

    #[test]
    fn the_gauge_follows_every_opening_and_closing() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let gauge = |step: &dyn Fn()| {
            metrics::with_local_recorder(&recorder, step);
            let text = handle.render();
            let line = text.lines().find(|l| l.starts_with(STATE_FENCED));
            line.and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        let fence = Fence::new();
        assert_eq!(gauge(&|| fence.report()), Some(1.0), "closed at first");
        let open = || fence.open_until(Instant::now(), Duration::from_secs(60));
        assert_eq!(gauge(&open), Some(0.0));
        assert_eq!(gauge(&|| fence.close()), Some(1.0));
        let ran_out = || fence.open_until(Instant::now() - Duration::from_secs(2), Duration::ZERO);
        assert_eq!(gauge(&ran_out), Some(1.0), "a lease already over");
    }
}
