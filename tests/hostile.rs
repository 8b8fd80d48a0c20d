//! Hostile HTTP/1.1 input over raw sockets: framing and smuggling, size limits and
//! slow clients. Each case names what the gateway must answer, and that nothing
//! ambiguous reaches the upstream.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the upstream saw: `METHOD uri body-length` (or `aborted`) per request.
#[derive(Default)]
struct Seen {
    log: Mutex<Vec<String>>,
    changed: tokio::sync::Notify,
}

impl Seen {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.log.lock().unwrap()
    }

    /// Waits until the upstream has finished with `n` requests.
    async fn wait_for(&self, n: usize) -> Vec<String> {
        self.wait_until(|log| log.len() >= n).await
    }

    /// Waits until `done` holds for the log.
    async fn wait_until(&self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        within("the upstream to finish a request", async {
            loop {
                let changed = self.changed.notified();
                if done(&self.lock()) {
                    return self.lock().clone();
                }
                changed.await;
            }
        })
        .await
    }
}

/// An upstream recording each request once it has read (or lost) the body.
async fn upstream() -> (Upstream, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let log = seen.clone();
    let up = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let line = format!("{} {}", req.method(), req.uri());
            let entry = match req.into_body().collect().await {
                Ok(body) => format!("{line} {}", body.to_bytes().len()),
                Err(_) => format!("{line} aborted"),
            };
            log.lock().push(entry);
            log.changed.notify_waiters();
            Response::new(full("ok"))
        }
    })
    .await;
    (up, seen)
}

/// What the gateway answered on a raw connection, and whether it then closed it.
struct Answer {
    text: String,
    closed: bool,
}

impl Answer {
    fn status(&self) -> u16 {
        self.text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {:?}", self.text))
    }

    /// The head's lines after the status line, names lower-cased.
    fn headers(&self) -> Vec<String> {
        let head = self.text.split("\r\n\r\n").next().unwrap_or("");
        head.split("\r\n")
            .skip(1)
            .map(|line| match line.split_once(':') {
                Some((name, value)) => format!("{}: {}", name.to_ascii_lowercase(), value.trim()),
                None => line.to_string(),
            })
            .collect()
    }

    /// The body of a lone response, as JSON.
    fn json(&self) -> serde_json::Value {
        let (_, body) = self.text.split_once("\r\n\r\n").expect("a complete head");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {:?}", self.text))
    }
}

/// Sends `bytes`, reads until the gateway closes or `quiet` passes without more bytes
/// after a complete response arrived.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut text = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        // Once a response is in, a connection left open shows as a quiet socket.
        let wait = if text.windows(4).any(|w| w == b"\r\n\r\n") {
            Duration::from_millis(300)
        } else {
            PATIENCE
        };
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Answer {
                    text: String::from_utf8_lossy(&text).into_owned(),
                    closed: true,
                }
            }
            Ok(Ok(n)) => text.extend_from_slice(&buf[..n]),
            Err(_) if !text.is_empty() => {
                return Answer {
                    text: String::from_utf8_lossy(&text).into_owned(),
                    closed: false,
                }
            }
            Err(_) => panic!("no answer within {PATIENCE:?}"),
        }
    }
}

const POST: &str = "POST /m2/acme/profile/update HTTP/1.1\r\nHost: x\r\n";

async fn refused(head: &str, body: &str, status: u16) {
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    let answer = exchange(gw.proxy, format!("{head}\r\n{body}").as_bytes()).await;
    assert_eq!(answer.status(), status, "{}", answer.text);
    assert!(answer.closed, "connection left open after doubtful framing");
    assert!(seen.lock().is_empty(), "forwarded: {:?}", seen.lock());
}

/// RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; an intermediary that
/// forwards must drop the Content-Length and close the connection after responding.
/// hyper does exactly that before authgate sees the request, so the upstream receives
/// a cleanly chunked request and nothing queued behind it on this connection is read.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_read_as_chunked_and_closes() {
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    let smuggle = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let req =
        format!("{POST}Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggle}");
    let answer = exchange(gw.proxy, req.as_bytes()).await;
    assert_eq!(answer.status(), 200, "{}", answer.text);
    assert!(answer.closed, "connection kept open after CL + TE");
    assert_eq!(seen.wait_for(1).await, ["POST /m2/acme/profile/update 0"]);
    assert!(
        !answer
            .text
            .contains("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP"),
        "two responses"
    );
}

#[tokio::test]
async fn conflicting_content_lengths_are_400() {
    refused(
        &format!("{POST}Content-Length: 4\r\nContent-Length: 5\r\n"),
        "abcde",
        400,
    )
    .await;
    refused(&format!("{POST}Content-Length: 4, 5\r\n"), "abcde", 400).await;
}

/// RFC 9110 §8.6 lets a recipient fold identical lengths into one; the upstream gets one.
#[tokio::test]
async fn identical_duplicate_content_lengths_are_folded_into_one() {
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    let req = format!("{POST}Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd");
    let answer = exchange(gw.proxy, req.as_bytes()).await;
    assert_eq!(answer.status(), 200, "{}", answer.text);
    assert_eq!(seen.wait_for(1).await, ["POST /m2/acme/profile/update 4"]);
}

#[tokio::test]
async fn signed_or_non_numeric_lengths_are_400() {
    for length in ["+4", "-1", "abc", "0x4", "4 4"] {
        refused(&format!("{POST}Content-Length: {length}\r\n"), "abcd", 400).await;
    }
}

#[tokio::test]
async fn obfuscated_transfer_encodings_are_refused() {
    refused(
        &format!("{POST}Transfer-Encoding : chunked\r\n"),
        "0\r\n\r\n",
        400,
    )
    .await;
    refused(
        &format!("{POST}Transfer-Encoding: chunked, gzip\r\n"),
        "0\r\n\r\n",
        400,
    )
    .await;
    refused(
        &format!("{POST}Transfer-Encoding: xchunked\r\n"),
        "0\r\n\r\n",
        400,
    )
    .await;
    // Understood framing, but a coding the upstream would receive still applied.
    refused(
        &format!("{POST}Transfer-Encoding: gzip, chunked\r\n"),
        "0\r\n\r\n",
        501,
    )
    .await;
    refused(
        &format!("{POST}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        "0\r\n\r\n",
        501,
    )
    .await;
    let http10 =
        "POST /m2/acme/profile/update HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n";
    refused(http10, "0\r\n\r\n", 400).await;
}

#[tokio::test]
async fn a_tab_before_chunked_is_plain_whitespace_and_accepted() {
    // RFC 9110 OWS includes HTAB: this is ordinary chunked framing, re-framed upstream.
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    let req = format!("{POST}Transfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
    let answer = exchange(gw.proxy, req.as_bytes()).await;
    assert_eq!(answer.status(), 200, "{}", answer.text);
    assert_eq!(seen.wait_for(1).await, ["POST /m2/acme/profile/update 3"]);
}

#[tokio::test]
async fn a_chunk_size_overflow_never_smuggles_the_request_behind_it() {
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    let smuggle = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let req = format!(
        "{POST}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\n{smuggle}\r\n0\r\n\r\n"
    );
    let answer = exchange(gw.proxy, req.as_bytes()).await;
    assert_eq!(answer.status(), 400, "{}", answer.text);
    assert!(answer.closed);
    // A later request on a fresh connection marks the point by which anything smuggled
    // would have arrived. The broken request itself never completes upstream (at most
    // its head arrives, then the abort).
    let marker = exchange(
        gw.proxy,
        b"GET /marker HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(marker.status(), 200);
    let seen = seen
        .wait_until(|log| log.iter().any(|r| r.starts_with("GET /marker")))
        .await;
    for entry in &seen {
        assert!(!entry.contains("smuggled"), "{seen:?}");
        assert!(
            entry.starts_with("GET /marker") || entry.ends_with("aborted"),
            "{seen:?}"
        );
    }
}

#[tokio::test]
async fn obs_fold_nul_and_bad_bytes_in_headers_are_400() {
    refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n", "", 400).await;
    refused("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n", "", 400).await;
    refused("GET / HTTP/1.1\r\nHost: x\r\nX-\u{1}A: a\r\n", "", 400).await;
}

#[tokio::test]
async fn bare_lf_and_obs_text_are_parsed_and_forwarded_cleanly() {
    // RFC 9112 §2.2 lets a recipient accept bare LF; obs-text is legal in field values.
    // Either way the upstream receives a re-serialised, unambiguous request.
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    let answer = exchange(gw.proxy, b"GET /lf HTTP/1.1\nHost: x\n\n").await;
    assert_eq!(answer.status(), 200);
    let answer = exchange(
        gw.proxy,
        b"GET /obs HTTP/1.1\r\nHost: x\r\nX-A: \xff\xfe\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(seen.wait_for(2).await, ["GET /lf 0", "GET /obs 0"]);
}

#[tokio::test]
async fn heads_over_the_limits_are_431() {
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "limits: { max_header_bytes: 16384 }\n").await;
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20_000));
    let one_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let many_small: String = (0..1000)
        .map(|i| format!("X-{i}: {}\r\n", "a".repeat(10)))
        .collect();
    let total = format!("GET / HTTP/1.1\r\nHost: x\r\n{many_small}\r\n");
    let too_many: String = (0..101).map(|i| format!("X-{i}: a\r\n")).collect();
    let count = format!("GET / HTTP/1.1\r\nHost: x\r\n{too_many}\r\n");
    for (what, req) in [
        ("request line", long_line),
        ("one header", one_header),
        ("all headers", total),
        ("header count", count),
    ] {
        for (listener, addr) in [("proxy", gw.proxy), ("admin", gw.admin)] {
            let what = format!("{what} on the {listener} listener");
            let answer = exchange(addr, req.as_bytes()).await;
            assert_gateways_431(&answer, &what);
        }
    }
    assert!(seen.lock().is_empty());
}

/// The gateway's JSON 431, like every other error it answers, not hyper's empty one.
fn assert_gateways_431(answer: &Answer, what: &str) {
    assert_eq!(answer.status(), 431, "{what}: {}", answer.text);
    assert!(answer.closed, "{what}");
    let headers = answer.headers();
    for line in ["content-type: application/json", "connection: close"] {
        assert!(
            headers.iter().any(|h| h == line),
            "{what}: {line} in {headers:?}"
        );
    }
    let body = answer.json();
    assert_eq!(body["error"], "request_header_fields_too_large", "{what}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}"
    );
}

/// Regression: hyper answered a head over `max_header_bytes` with an empty 431 of its
/// own. A head that fills the limit exactly, and one sent in many small writes, get the
/// gateway's JSON one.
#[tokio::test]
async fn an_oversized_head_gets_the_gateways_json_431() {
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "limits: { max_header_bytes: 8192 }\n").await;
    // Exactly the limit and no end of head: the gateway reads every byte sent.
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ".to_vec();
    head.resize(8192, b'a');
    let answer = exchange(gw.proxy, &head).await;
    assert_gateways_431(&answer, "a head filling the limit");

    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    for i in 0.. {
        let line = format!("X-{i}: {}\r\n", "a".repeat(100));
        if stream.write_all(line.as_bytes()).await.is_err() {
            break; // the gateway answered and closed
        }
        if i == 200 {
            break;
        }
    }
    let _ = within("the 431 and the close", stream.read_to_end(&mut answer)).await;
    let answer = Answer {
        text: String::from_utf8_lossy(&answer).into_owned(),
        closed: true,
    };
    assert_gateways_431(&answer, "a head sent line by line");
    assert!(seen.lock().is_empty());
}

#[tokio::test]
async fn http_1_0_clients_are_served_and_closed() {
    let (up, _) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    let answer = exchange(gw.proxy, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(answer.text.starts_with("HTTP/1.0 200"), "{}", answer.text);
    assert!(answer.closed);
}

#[tokio::test]
async fn a_slow_body_is_cut_off_after_the_body_read_timeout() {
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "limits: { body_read_timeout: 300ms }\n").await;
    let started = Instant::now();
    // Half the promised body, then silence.
    let answer = exchange(
        gw.proxy,
        format!("{POST}Content-Length: 10\r\n\r\nabcde").as_bytes(),
    )
    .await;
    assert_eq!(answer.status(), 408, "{}", answer.text);
    assert!(answer.closed);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        seen.wait_for(1).await,
        ["POST /m2/acme/profile/update aborted"]
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_send_timeout() {
    // 64 MiB of response the client never reads: writes block, the clock runs.
    let up = Upstream::start(|_req| async { Response::new(full(vec![b'z'; 64 << 20])) }).await;
    let gw = Gateway::start(up.addr, "limits: { send_timeout: 300ms }\n").await;
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Wait (without reading) until the gateway has given up: its metric says so.
    let closed = within("the send timeout to fire", async {
        loop {
            let count = sample(
                &metrics_text(&gw).await,
                "authgate_connections_closed_total{reason=\"send_timeout\"}",
            )
            .unwrap_or(0.0);
            if count >= 1.0 {
                return count;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(closed >= 1.0);
    // Draining what was buffered ends in EOF or a reset, well short of 64 MiB.
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(Ok(n)) = within("EOF", tokio::time::timeout(PATIENCE, stream.read(&mut buf))).await
    {
        if n == 0 {
            break;
        }
        total += n;
    }
    assert!(
        total < 64 << 20,
        "the whole response was delivered: {total}"
    );
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_for_a_free_slot() {
    let (up, _) = upstream().await;
    let gw = Gateway::start(up.addr, "limits: { max_connections: 2 }\n").await;
    let req = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = TcpStream::connect(gw.proxy).await.unwrap();
    let mut second = TcpStream::connect(gw.proxy).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for s in [&mut first, &mut second] {
        s.write_all(req).await.unwrap();
        let n = within("a response", s.read(&mut buf)).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    // The third connection is left in the kernel's backlog: no answer while two are open.
    let mut third = TcpStream::connect(gw.proxy).await.unwrap();
    third.write_all(req).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(waiting.is_err(), "served beyond max_connections");
    drop(first);
    let n = within("the third connection to be served", third.read(&mut buf))
        .await
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

/// Regression (found with slowhttptest): the head clock must stop once a request is
/// being handled. A slow upstream answer and a slowly streamed body both outlive
/// `header_read_timeout` and must still complete.
#[tokio::test]
async fn a_request_in_flight_outlives_the_header_read_timeout() {
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    let up = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let release = release.lock().unwrap().take();
        async move {
            let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
            if let Some(release) = release {
                let _ = release.await;
            }
            Response::new(full(format!("{}", body.unwrap_or(0))))
        }
    })
    .await;
    let gw = Gateway::start(up.addr, "limits: { header_read_timeout: 200ms }\n").await;
    // A slow answer: held by the upstream well past the head clock.
    let slow = tokio::spawn(client().get(gw.url("/slow").parse().unwrap()));
    tokio::time::sleep(Duration::from_millis(700)).await; // the passage of time is the fault
    release_tx.send(()).unwrap();
    let response = within("the slow answer", slow).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    // A slow body: ten pieces, 100 ms apart, on a fresh connection.
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    stream
        .write_all(format!("{POST}Content-Length: 10\r\n\r\n").as_bytes())
        .await
        .unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await; // a trickling client
        stream.write_all(b"x").await.unwrap();
    }
    let mut answer = String::new();
    let mut buf = [0u8; 1024];
    while !answer.contains("\r\n\r\n10") {
        let n = within("the slow body's answer", stream.read(&mut buf))
            .await
            .unwrap();
        assert!(n > 0, "connection dropped: {answer:?}");
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
