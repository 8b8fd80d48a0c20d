//! A misbehaving upstream: refused, silent, truncated, overrunning, reset, or closing
//! idle keep-alive connections. The client gets a clean error or a clean answer, and a
//! broken upstream connection is never reused.

mod support;

use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::scripted::{ok, Act, Scripted};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one raw request and reads to EOF (or error): everything the client received.
async fn raw(addr: std::net::SocketAddr, request: &str) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let clean_eof = within("the gateway to end the connection", async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return false,
            }
        }
    })
    .await;
    (got, clean_eof)
}

#[tokio::test]
async fn a_post_to_an_upstream_that_hangs_up_is_a_502_and_never_retried() {
    let up = Scripted::start(|_, _| Act::Close).await;
    let gw = Gateway::start(up.addr, "").await;
    let req = Request::post(gw.url("/m2/acme/profile/update"))
        .body(full("a=b"))
        .unwrap();
    let response = within("POST", client().request(req)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(up.requests(), 1, "the POST was sent again");
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_fast_502() {
    let gw = Gateway::start(dead_address().await, "").await;
    let started = Instant::now();
    let req = Request::post(gw.url("/m2/acme/profile/update"))
        .body(full("a=b"))
        .unwrap();
    let response = within("POST", client().request(req)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_truncated_response_aborts_the_client_connection() {
    // The client sees the head, the three bytes, then the connection ends short of the
    // promised length: never a padded or "complete" body.
    // Promises 100 bytes, sends 3, closes.
    let up = Scripted::start(|conn, _| match conn {
        0 => Act::SendClose(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc".to_vec()),
        _ => Act::Send(ok("fine")),
    })
    .await;
    let gw = Gateway::start(up.addr, "").await;
    let (got, _) = raw(gw.proxy, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("\r\n\r\nabc"),
        "the client must see the cut, not a padded body: {text:?}"
    );
    // The next request goes over a fresh upstream connection and succeeds.
    let response = within("GET", client().get(gw.url("/b").parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(body_bytes(response).await, "fine");
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn an_overrunning_response_is_cut_and_its_connection_discarded() {
    // Three bytes promised, nine sent: the extra six must never be read as a response.
    let up = Scripted::start(|conn, _| match conn {
        0 => Act::Send(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabcHTTP/1.1".to_vec()),
        _ => Act::Send(ok("fine")),
    })
    .await;
    let gw = Gateway::start(up.addr, "").await;
    let c = client();
    let first = within("GET", c.get(gw.url("/a").parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(body_bytes(first).await, "abc");
    for _ in 0..3 {
        let next = within("GET", c.get(gw.url("/b").parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(next.status(), StatusCode::OK);
        assert_eq!(body_bytes(next).await, "fine");
    }
    assert!(up.connections() >= 2, "the polluted connection was reused");
}

#[tokio::test]
async fn a_reset_mid_body_aborts_the_client_connection() {
    let up = Scripted::start(|conn, _| match conn {
        0 => Act::SendReset(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial".to_vec()),
        _ => Act::Send(ok("fine")),
    })
    .await;
    let gw = Gateway::start(up.addr, "").await;
    let response = within("GET", client().get(gw.url("/a").parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the head was already on its way"
    );
    let body = within("the body", response.into_body().collect()).await;
    assert!(
        body.is_err(),
        "a cut body must surface as an error, not a short success"
    );
    let response = within("GET", client().get(gw.url("/b").parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(body_bytes(response).await, "fine");
}

#[tokio::test]
async fn idle_keep_alive_connections_closed_by_the_upstream_are_not_a_failure() {
    // Every answer advertises keep-alive, then the upstream closes right after it.
    let up = Scripted::start(|_, _| Act::SendClose(ok("fine"))).await;
    let gw = Gateway::start(up.addr, "").await;
    let c = client();
    for i in 0..30 {
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let req = Request::builder()
            .method(method)
            .uri(gw.url("/x"))
            .body(full(""))
            .unwrap();
        let response = within("request", c.request(req)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "request {i} ({method})");
        assert_eq!(body_bytes(response).await, "fine");
    }
    assert_eq!(
        up.requests(),
        30,
        "each request reached the upstream exactly once"
    );
}

#[tokio::test]
async fn finished_exchanges_return_their_upstream_connection_to_the_pool() {
    // Every ending of a response: a sized body, a chunked one, none at all (204), and a
    // HEAD answer (a length, no body). Each leaves the connection reusable.
    let up = Scripted::start(|_, request| {
        Act::Send(match request % 4 {
            0 => ok("sized"),
            1 => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7\r\nchunked\r\n0\r\n\r\n"
                .to_vec(),
            2 => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec(),
        })
    })
    .await;
    let gw = Gateway::start(up.addr, "").await;
    let c = client();
    for i in 0..20 {
        let method = if i % 4 == 3 { "HEAD" } else { "GET" };
        let req = Request::builder()
            .method(method)
            .uri(gw.url("/x"))
            .body(full(""))
            .unwrap();
        let response = within("request", c.request(req)).await.unwrap();
        assert!(response.status().is_success(), "request {i}");
        body_bytes(response).await;
    }
    assert_eq!(up.requests(), 20);
    assert_eq!(
        up.connections(),
        1,
        "one upstream connection served them all"
    );
}

#[tokio::test]
async fn a_response_abandoned_by_its_client_closes_its_upstream_connection() {
    // The first answer is longer than the client will read; its connection must not be
    // reused, or the next request would read the rest of it as its own answer.
    let big = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: 8388608\r\n\r\n{}",
        "x".repeat(8 << 20)
    );
    let up = Scripted::start(move |conn, _| {
        Act::Send(if conn == 0 {
            big.clone().into_bytes()
        } else {
            ok("second")
        })
    })
    .await;
    let gw = Gateway::start(up.addr, "").await;
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    within("the start of the answer", stream.read_exact(&mut head))
        .await
        .unwrap();
    drop(stream);
    let req = Request::get(gw.url("/next")).body(full("")).unwrap();
    let response = within("request", client().request(req)).await.unwrap();
    assert_eq!(body_bytes(response).await, "second");
    assert_eq!(up.connections(), 2);
}
