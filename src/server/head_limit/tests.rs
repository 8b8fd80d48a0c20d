use std::io::IoSlice;

use http::header;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::server::watchdog::RequestGuard;

const DATE: &str = "Tue, 01 Jul 2025 10:00:00 GMT";

/// The head hyper 1.x writes for a request head over its limits (checked against hyper
/// itself below).
fn hyper_head() -> Vec<u8> {
    format!(
        "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"
    )
    .into_bytes()
}

/// A client socket taking at most `chunk` bytes a write, and not ready for every other
/// write (woken at once).
struct Socket {
    written: Vec<u8>,
    chunk: usize,
    stall: bool,
}

impl Socket {
    fn new(chunk: usize) -> Socket {
        Socket {
            written: Vec::new(),
            chunk,
            stall: true,
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.stall = !this.stall;
        if this.stall {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = buf.len().min(this.chunk);
        this.written.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What reaches a client socket taking `chunk` bytes a write when hyper writes
/// `writes`, then flushes and shuts down.
async fn through(conn: Arc<ConnState>, chunk: usize, writes: &[&[u8]]) -> Vec<u8> {
    let mut io = Answering::new(Socket::new(chunk), conn);
    for write in writes {
        io.write_all(write).await.unwrap();
    }
    io.flush().await.unwrap();
    io.shutdown().await.unwrap();
    io.inner.written
}

/// Splits an HTTP/1.1 response into its head's lines and its body.
fn parse(bytes: &[u8]) -> (Vec<String>, serde_json::Value) {
    let text = std::str::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let lines: Vec<String> = head.split("\r\n").map(str::to_string).collect();
    let length = lines
        .iter()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap();
    assert_eq!(length.parse::<usize>().unwrap(), body.len());
    (lines, serde_json::from_str(body).unwrap())
}

fn assert_gateways_431(bytes: &[u8]) {
    let (lines, body) = parse(bytes);
    assert_eq!(lines[0], "HTTP/1.1 431 Request Header Fields Too Large");
    for line in [
        "content-type: application/json",
        "connection: close",
        &format!("date: {DATE}"),
    ] {
        assert!(lines.iter().any(|l| l == line), "{line} in {lines:?}");
    }
    assert_eq!(body["error"], "request_header_fields_too_large");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn hypers_431_becomes_the_gateways() {
    let out = through(Arc::new(ConnState::new()), usize::MAX, &[&hyper_head()]).await;
    assert_gateways_431(&out);
}

#[tokio::test]
async fn the_answer_survives_partial_writes() {
    // Seven bytes a write, every other write refused: hyper's head counts as written
    // at once, and the answer goes out whole by the end of the flush.
    let out = through(Arc::new(ConnState::new()), 7, &[&hyper_head()]).await;
    assert_gateways_431(&out);
    assert_eq!(out, answer(Some(DATE.as_bytes())));
}

#[tokio::test]
async fn a_shutdown_first_writes_the_whole_answer() {
    let mut io = Answering::new(Socket::new(3), Arc::new(ConnState::new()));
    io.write_all(&hyper_head()).await.unwrap();
    io.shutdown().await.unwrap();
    assert_gateways_431(&io.inner.written);
}

#[tokio::test]
async fn a_vectored_write_is_answered_too() {
    let mut io = Answering::new(Socket::new(5), Arc::new(ConnState::new()));
    let head = hyper_head();
    let n = io.write_vectored(&[IoSlice::new(&head)]).await.unwrap();
    assert_eq!(n, head.len());
    io.flush().await.unwrap();
    assert_gateways_431(&io.inner.written);
}

#[tokio::test]
async fn responses_while_a_request_is_in_flight_pass_unchanged() {
    let conn = Arc::new(ConnState::new());
    let _request = RequestGuard::start(conn.clone(), None);
    let out = through(conn, usize::MAX, &[&hyper_head()]).await;
    assert_eq!(out, hyper_head());
}

#[tokio::test]
async fn an_http2_connection_is_left_alone() {
    let conn = Arc::new(ConnState::new());
    conn.is_h2.store(true, std::sync::atomic::Ordering::Relaxed);
    let out = through(conn, usize::MAX, &[&hyper_head()]).await;
    assert_eq!(out, hyper_head());
}

#[tokio::test]
async fn other_431s_pass_unchanged() {
    // An upstream's 431 relayed after its request's guard was dropped: it has a `Via`,
    // or a body, or a type.
    let relayed: [&[u8]; 4] = [
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nvia: 1.1 authgate\r\n\r\n",
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 2\r\n\r\nno",
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 431 Custom\r\ncontent-length: 0\r\n\r\n",
    ];
    for bytes in relayed {
        let out = through(Arc::new(ConnState::new()), usize::MAX, &[bytes]).await;
        assert_eq!(out, bytes, "{}", String::from_utf8_lossy(bytes));
    }
}

#[tokio::test]
async fn only_the_first_431_is_answered() {
    let head = hyper_head();
    let out = through(Arc::new(ConnState::new()), usize::MAX, &[&head, &head]).await;
    let answer = answer(Some(DATE.as_bytes()));
    assert_eq!(out[..answer.len()], answer[..]);
    assert_eq!(out[answer.len()..], head[..]);
}

#[tokio::test]
async fn hyper_writes_the_head_this_module_recognises() {
    // A canary for hyper upgrades: its own answer to an oversized head, byte for byte
    // what `hypers_431` expects.
    let (client, server) = tokio::io::duplex(1 << 20);
    let serve = tokio::spawn(async move {
        let service = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(crate::body::Body::empty()))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .max_buf_size(8192)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service)
            .await;
    });
    let mut client = client;
    let head = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n",
        "a".repeat(9000)
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        client.read_to_end(&mut answer),
    )
    .await
    .unwrap()
    .unwrap();
    serve.await.unwrap();
    let (len, date) = hypers_431(&answer).unwrap_or_else(|| panic!("{answer:?}"));
    assert_eq!(len, answer.len(), "nothing follows the head");
    assert!(date.is_some());
}

#[test]
fn an_h2_field_list_is_counted_as_h2_counts_it() {
    let req = Request::post("https://localhost:8443/m2/acme")
        .header(header::CONTENT_TYPE, "text/csv")
        .body(())
        .unwrap();
    let pseudo = (7 + 4 + 32) + (7 + 5 + 32) + (10 + 14 + 32) + (5 + 8 + 32);
    let fields = 12 + 8 + 32;
    assert_eq!(h2_field_list_size(&req), pseudo + fields);
}

#[test]
fn h2_leaves_room_above_the_limit() {
    assert_eq!(h2_max_header_list_size(65536), 131072);
    assert_eq!(h2_max_header_list_size(usize::MAX), u32::MAX);
}
