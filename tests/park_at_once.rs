//! The client-fault and hostile-input suites again, with every idle HTTP/1.1 connection
//! parked at once (`limits.park_after: 0s`, set by `support` for the modules of this
//! file): a connection between two requests then holds no hyper connection, and every
//! request after a connection's first goes through an unpark.

// Each suite brings its own copy of `support`, as in its own test binary.
#![allow(clippy::duplicate_mod)]

#[path = "client_faults.rs"]
mod client_faults;
#[path = "hostile.rs"]
mod hostile;
mod support;

#[test]
fn the_suites_here_run_with_every_idle_connection_parked_at_once() {
    assert_eq!(
        support::park_after_override(),
        Some(std::time::Duration::ZERO)
    );
}
