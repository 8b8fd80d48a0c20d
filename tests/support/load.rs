//! Clients that keep sending through the proxy until told to stop: HTTP/1.1 and h2c,
//! each on one kept-alive connection and with a new connection per request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};

use super::*;

/// What one client saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: usize,
    /// Any error, a non-200 answer, or a body `expected` refused.
    pub failures: Vec<String>,
    /// Requests sent again because the gateway closed an idle kept-alive connection as
    /// they went out, before a byte of response (RFC 9112 §9.3.1: a client may retry an
    /// idempotent request then, and curl and browsers do).
    pub retried: usize,
}

/// Five clients GETting `path` until `stop`.
pub fn clients(
    proxy: &str,
    path: &str,
    stop: Arc<AtomicBool>,
    expected: fn(&Bytes) -> bool,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    let url = format!("http://{proxy}{path}");
    [
        "keep-alive",
        "new-connection",
        "h2c",
        "h2c-new-connection",
        "keep-alive",
    ]
    .into_iter()
    .map(|kind| tokio::spawn(client_loop(kind, url.clone(), stop.clone(), expected)))
    .collect()
}

async fn client_loop(
    kind: &'static str,
    url: String,
    stop: Arc<AtomicBool>,
    expected: fn(&Bytes) -> bool,
) -> Tally {
    let h2 = kind.starts_with("h2c");
    let mut client = if h2 { h2c_client() } else { client() };
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        if kind == "h2c-new-connection" {
            client = h2c_client();
        }
        let request = || {
            let mut req = Request::get(&url);
            if kind == "new-connection" {
                req = req.header("connection", "close");
            }
            req.body(full("")).unwrap()
        };
        tally.sent += 1;
        let mut answer = within("a proxied request", client.request(request())).await;
        if kind == "keep-alive" && answer.as_ref().is_err_and(closed_before_answering) {
            tally.retried += 1;
            answer = within("a proxied request", client.request(request())).await;
        }
        match answer {
            Ok(response) if response.status() == StatusCode::OK => {
                let body = body_bytes(response).await;
                if !expected(&body) {
                    tally.failures.push(format!("{kind}: body {body:?}"));
                }
            }
            Ok(response) => tally
                .failures
                .push(format!("{kind}: {}", response.status())),
            Err(e) => tally.failures.push(format!("{kind}: {e:?}")),
        }
    }
    tally
}

/// The connection closed before any of the response came back (hyper's
/// "connection closed before message completed").
fn closed_before_answering(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            return hyper.is_incomplete_message();
        }
        source = cause.source();
    }
    false
}

/// Every client's tally, once `stop` is set; asserts none failed and returns the
/// requests sent and retried in all.
pub async fn settle(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> (usize, usize) {
    let (mut sent, mut retried) = (0, 0);
    for task in tasks {
        let tally = task.await.unwrap();
        assert!(
            tally.failures.is_empty(),
            "{} failed of {}: {:?}",
            tally.failures.len(),
            tally.sent,
            tally.failures
        );
        sent += tally.sent;
        retried += tally.retried;
    }
    (sent, retried)
}
