//! Clients that go away or pipeline: aborts reach the upstream, are never blamed on it,
//! and every pipelined request is checked on its own, against the state of its turn.
//!
//! This binary holds no test that makes the upstream fail, so the process-wide upstream
//! error counters must stay at zero here.

mod support;

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use http_body_util::BodyExt;
use support::admin::{generate, require};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

async fn metric(gw: &Gateway, prefix: &str) -> f64 {
    metrics_text(gw)
        .await
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_client_leaving_mid_upload_aborts_the_upstream_request() {
    let (events_tx, mut events) = mpsc::unbounded_channel::<&'static str>();
    let up = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let events = events_tx.clone();
        async move {
            let mut body = req.into_body();
            let _ = events.send("started");
            loop {
                match body.frame().await {
                    Some(Ok(_)) => continue,
                    Some(Err(_)) => {
                        let _ = events.send("aborted");
                        break;
                    }
                    None => {
                        let _ = events.send("completed");
                        break;
                    }
                }
            }
            Response::new(full("ok"))
        }
    })
    .await;
    let gw = Gateway::start(up.addr, "").await;
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'x'; 10_000]).await.unwrap();
    assert_eq!(
        within("upstream start", events.recv()).await,
        Some("started")
    );
    drop(stream);
    assert_eq!(
        within("upstream abort", events.recv()).await,
        Some("aborted")
    );
    assert_eq!(
        metric(&gw, "authgate_upstream_errors_total").await,
        0.0,
        "a client fault is not an upstream error"
    );
    assert_eq!(
        metric(
            &gw,
            "authgate_requests_total{route_class=\"other\",status_class=\"5xx\"}"
        )
        .await,
        0.0
    );
}

/// Reads responses off a raw connection until `n` complete ones (with content-length)
/// have arrived; returns their status codes.
async fn statuses(stream: &mut TcpStream, n: usize) -> Vec<u16> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    within("pipelined responses", async {
        loop {
            let text = String::from_utf8_lossy(&data).into_owned();
            let parsed = parse_responses(&text);
            if parsed.len() >= n {
                return parsed;
            }
            let got = stream.read(&mut buf).await.unwrap();
            assert!(got > 0, "closed early: {text}");
            data.extend_from_slice(&buf[..got]);
        }
    })
    .await
}

fn parse_responses(mut text: &str) -> Vec<u16> {
    let mut out = Vec::new();
    while let Some(end) = text.find("\r\n\r\n") {
        let head = &text[..end];
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if text.len() < end + 4 + length {
            break;
        }
        out.push(status);
        text = &text[end + 4 + length..];
    }
    out
}

#[tokio::test]
async fn pipelined_requests_are_each_checked() {
    let up = Upstream::start(|_req| async { Response::new(full("ok")) }).await;
    let gw = Gateway::start(up.addr, "").await;
    require(&gw, "acme", true).await;
    let token = generate(&gw, "acme", None).await;
    let with = format!("POST {BATCH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n");
    let without = format!("POST {BATCH} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    stream
        .write_all(format!("{with}{without}{with}").as_bytes())
        .await
        .unwrap();
    assert_eq!(statuses(&mut stream, 3).await, [200, 401, 200]);
}

#[tokio::test]
async fn a_pipelined_request_behind_a_rotation_sees_the_new_token() {
    // The first request is held at the upstream while the token is rotated; the second,
    // already in the gateway's buffer, is checked after the rotation returned.
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    let up = Upstream::start(move |_req| {
        let arrived = arrived_tx.clone();
        let release = release.lock().unwrap().take();
        async move {
            let _ = arrived.send(());
            if let Some(release) = release {
                let _ = release.await;
            }
            Response::new(full("ok"))
        }
    })
    .await;
    let gw = Gateway::start(up.addr, "").await;
    require(&gw, "acme", true).await;
    let old = generate(&gw, "acme", None).await;
    let req = |token: &str| {
        format!("POST {BATCH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n")
    };
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    stream
        .write_all(format!("{}{}", req(&old), req(&old)).as_bytes())
        .await
        .unwrap();
    within("the first request upstream", arrived.recv()).await;
    let new = generate(&gw, "acme", None).await;
    release_tx.send(()).unwrap();
    assert_eq!(statuses(&mut stream, 2).await, [200, 401]);
    stream.write_all(req(&new).as_bytes()).await.unwrap();
    assert_eq!(statuses(&mut stream, 1).await, [200]);
}
