//! The PROXY protocol on the proxy listener, byte-exact over raw sockets: who may send a
//! header (`trusted_proxies`), `accept` and `require`, broken and half-sent headers,
//! v2 `LOCAL`, and the bytes behind a header (pipelined requests, HTTP/2, a TLS
//! ClientHello) reaching hyper intact. The real HAProxy in front is in `haproxy.rs`.
//!
//! Client sockets bind loopback addresses other than 127.0.0.1 (Linux routes all of
//! 127.0.0.0/8 to `lo`), so the gateway sees a trusted load balancer (127.0.0.1) and
//! untrusted strangers (127.0.0.3) side by side.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use ppp::v2::{Builder, Command, Protocol, Version};
use support::tls::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const REJECTED: &str = "authgate_proxy_protocol_rejected_total";

/// An upstream answering each request with the `X-Forwarded-For` it received.
async fn echo_forwarded_for() -> Upstream {
    Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        let xff = req
            .headers()
            .get("x-forwarded-for")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        Response::new(full(format!("xff={xff}")))
    })
    .await
}

/// A gateway trusting 127.0.0.1 with `listen.proxy_protocol: mode`.
async fn gateway(up: &Upstream, mode: &str) -> Gateway {
    let extra = format!(
        "trusted_proxies: [\"127.0.0.1/32\"]\nlisten: {{ proxy_protocol: {mode} }}\nlimits: {{ header_read_timeout: 1s }}"
    );
    Gateway::start(up.addr, &extra).await
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    within("a connection", socket.connect(to)).await.unwrap()
}

fn v2(command: Command, source: &str) -> Vec<u8> {
    let source: SocketAddr = source.parse().unwrap();
    let destination: SocketAddr = if source.is_ipv4() {
        "127.0.0.1:8080".parse().unwrap()
    } else {
        "[::1]:8080".parse().unwrap()
    };
    Builder::with_addresses(
        Version::Two | command,
        Protocol::Stream,
        (source, destination),
    )
    .build()
    .unwrap()
}

const GET: &[u8] = b"GET /p HTTP/1.1\r\nhost: gw\r\n\r\n";

/// Sends `bytes` from `from` and reads until the gateway closes: what it answered.
async fn exchange(from: &str, to: SocketAddr, bytes: &[u8], close_write: bool) -> String {
    let mut stream = connect_from(from, to).await;
    stream.write_all(bytes).await.unwrap();
    if close_write {
        stream.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    within("the gateway to answer or close", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            // One answer per request sent; HTTP/1.1 keeps the connection open after it.
            let answers = String::from_utf8_lossy(&out).matches("xff=").count();
            if answers > 0 && answers == String::from_utf8_lossy(bytes).matches("GET ").count() {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The refusal count for `reason`.
async fn rejected(gw: &Gateway, reason: &str) -> f64 {
    let series = format!("{REJECTED}{{reason=\"{reason}\"}}");
    sample(&metrics_text(gw).await, &series).unwrap_or(0.0)
}

/// Sends `bytes`, expects the connection closed without a byte, and the refusal of
/// `reason` counted.
async fn refused(gw: &Gateway, from: &str, bytes: &[u8], close_write: bool, reason: &str) {
    let before = rejected(gw, reason).await;
    let answer = exchange(from, gw.proxy, bytes, close_write).await;
    assert_eq!(answer, "", "{} answered", bytes.escape_ascii());
    // Counted before the socket is dropped, so already visible.
    let after = rejected(gw, reason).await;
    assert!(after > before, "{reason}: {before} → {after}");
}

#[tokio::test]
async fn a_header_from_a_trusted_peer_names_the_client() {
    let up = echo_forwarded_for().await;
    let gw = gateway(&up, "accept").await;
    for header in [
        v2(Command::Proxy, "192.0.2.7:51234"),
        b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 8080\r\n".to_vec(),
    ] {
        let answer = exchange("127.0.0.1", gw.proxy, &[&header[..], GET].concat(), false).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("xff=192.0.2.7"), "{answer}");
    }
    let v6 = v2(Command::Proxy, "[2001:db8::7]:51234");
    let answer = exchange("127.0.0.1", gw.proxy, &[&v6[..], GET].concat(), false).await;
    assert!(answer.ends_with("xff=2001:db8::7"), "{answer}");
}

#[tokio::test]
async fn accept_lets_connections_without_a_header_through_from_anyone() {
    let up = echo_forwarded_for().await;
    let gw = gateway(&up, "accept").await;
    for from in ["127.0.0.1", "127.0.0.3"] {
        let answer = exchange(from, gw.proxy, GET, false).await;
        assert!(answer.ends_with(&format!("xff={from}")), "{answer}");
    }
}

#[tokio::test]
async fn a_header_from_an_untrusted_peer_closes_the_connection() {
    let up = echo_forwarded_for().await;
    let gw = gateway(&up, "accept").await;
    let header = v2(Command::Proxy, "192.0.2.7:51234");
    refused(
        &gw,
        "127.0.0.3",
        &[&header[..], GET].concat(),
        false,
        "untrusted",
    )
    .await;
    let v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 8080\r\n";
    refused(
        &gw,
        "127.0.0.3",
        &[&v1[..], GET].concat(),
        false,
        "untrusted",
    )
    .await;
    // Refused at the signature: the rest of the header is never waited for.
    refused(&gw, "127.0.0.3", &header[..14], false, "untrusted").await;
}

#[tokio::test]
async fn require_closes_connections_without_a_header_and_from_strangers() {
    let up = echo_forwarded_for().await;
    let gw = gateway(&up, "require").await;
    refused(&gw, "127.0.0.1", GET, false, "missing").await;
    refused(&gw, "127.0.0.3", GET, false, "untrusted").await;
    let header = v2(Command::Proxy, "192.0.2.7:51234");
    refused(
        &gw,
        "127.0.0.3",
        &[&header[..], GET].concat(),
        false,
        "untrusted",
    )
    .await;
    let answer = exchange("127.0.0.1", gw.proxy, &[&header[..], GET].concat(), false).await;
    assert!(answer.ends_with("xff=192.0.2.7"), "{answer}");
}

#[tokio::test]
async fn a_v2_local_header_keeps_the_load_balancer_as_the_client() {
    let up = echo_forwarded_for().await;
    let gw = gateway(&up, "require").await;
    let local = v2(Command::Local, "192.0.2.7:51234");
    let answer = exchange("127.0.0.1", gw.proxy, &[&local[..], GET].concat(), false).await;
    assert!(answer.ends_with("xff=127.0.0.1"), "{answer}");
    let unknown = b"PROXY UNKNOWN\r\n";
    let answer = exchange("127.0.0.1", gw.proxy, &[&unknown[..], GET].concat(), false).await;
    assert!(answer.ends_with("xff=127.0.0.1"), "{answer}");
}

#[tokio::test]
async fn garbage_and_truncated_headers_are_refused() {
    let up = echo_forwarded_for().await;
    let gw = gateway(&up, "accept").await;
    let header = v2(Command::Proxy, "192.0.2.7:51234");
    let mut bad_version = header.clone();
    bad_version[12] = 0x31;
    for garbage in [
        &b"PROXY TCP4 192.0.2.7 127.0.0.1 051234 8080\r\n"[..],
        b"PROXY TCP4 not-an-ip 127.0.0.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.7 127.0.0.1 1 2\rGET",
        &[b"PROXY ".as_slice(), &[b'9'; 200]].concat(),
        &bad_version,
    ] {
        refused(&gw, "127.0.0.1", garbage, false, "malformed").await;
    }
    // Half a header, then the peer's end of the stream.
    refused(&gw, "127.0.0.1", &header[..20], true, "truncated").await;
    refused(
        &gw,
        "127.0.0.1",
        b"PROXY TCP4 192.0.2.7 12",
        true,
        "truncated",
    )
    .await;
    assert_eq!(
        exchange("127.0.0.1", gw.proxy, GET, false)
            .await
            .split_whitespace()
            .nth(1),
        Some("200"),
        "the gateway still serves"
    );
}

#[tokio::test]
async fn half_a_header_is_cut_off_by_the_head_clock() {
    let up = echo_forwarded_for().await;
    let gw = gateway(&up, "accept").await;
    let series = "authgate_connections_closed_total{reason=\"header_timeout\"}";
    let before = sample(&metrics_text(&gw).await, series).unwrap_or(0.0);
    let header = v2(Command::Proxy, "192.0.2.7:51234");
    // Kept open, never finished: closed after header_read_timeout (1 s), not PATIENCE.
    let started = std::time::Instant::now();
    assert_eq!(
        exchange("127.0.0.1", gw.proxy, &header[..20], false).await,
        ""
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let after = sample(&metrics_text(&gw).await, series).unwrap_or(0.0);
    assert!(after > before, "{before} → {after}");
}

#[tokio::test]
async fn bytes_behind_the_header_are_not_lost() {
    let up = echo_forwarded_for().await;
    let gw = gateway(&up, "require").await;
    // Header and two pipelined requests in one segment, and one byte at a time.
    let header = v2(Command::Proxy, "192.0.2.7:51234");
    let bytes = [&header[..], GET, GET].concat();
    let answer = exchange("127.0.0.1", gw.proxy, &bytes, false).await;
    assert_eq!(answer.matches("xff=192.0.2.7").count(), 2, "{answer}");
    let mut stream = connect_from("127.0.0.1", gw.proxy).await;
    for byte in [&header[..], GET].concat() {
        stream.write_all(&[byte]).await.unwrap();
    }
    let mut out = Vec::new();
    within("an answer", async {
        while !String::from_utf8_lossy(&out).ends_with("xff=192.0.2.7") {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {}", out.escape_ascii());
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await;
}

#[tokio::test]
async fn http2_after_the_header() {
    let up = echo_forwarded_for().await;
    let gw = gateway(&up, "require").await;
    let mut stream = connect_from("127.0.0.1", gw.proxy).await;
    stream
        .write_all(&v2(Command::Proxy, "192.0.2.7:51234"))
        .await
        .unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{}/p", gw.proxy))
        .body(full(""))
        .unwrap();
    let response = within("an HTTP/2 response", sender.send_request(req))
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(body_bytes(response).await, "xff=192.0.2.7");
}

#[tokio::test]
async fn a_tls_listener_reads_the_header_before_the_handshake() {
    let up = echo_forwarded_for().await;
    let ca = TestCa::new("proxy-protocol CA");
    let leaf = ca.leaf("localhost", &["localhost"]);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    leaf.write(dir.path(), "gateway");
    let text = format!(
        "upstream:\n  url: \"http://{}\"\ntls:\n  proxy: {{ cert: gateway.pem, key: gateway.key }}\ntrusted_proxies: [\"127.0.0.1\"]\nlisten: {{ proxy_protocol: require }}\n{}",
        up.addr,
        admin_yaml()
    );
    let gw = Gateway::start_text(dir, &text)
        .await
        .expect("gateway starts");
    let mut tcp = connect_from("127.0.0.1", gw.proxy).await;
    tcp.write_all(&v2(Command::Proxy, "192.0.2.7:51234"))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = within(
        "a TLS handshake behind the header",
        tokio_rustls::TlsConnector::from(client_config(&ca, &["http/1.1"], None))
            .connect(name, tcp),
    )
    .await
    .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/p")
        .header("host", "localhost")
        .body(full(""))
        .unwrap();
    let response = within("an HTTPS response", sender.send_request(req))
        .await
        .unwrap();
    assert_eq!(body_bytes(response).await, "xff=192.0.2.7");
    // Without the header, the ClientHello itself is refused.
    refused(
        &gw,
        "127.0.0.1",
        b"\x16\x03\x01\x00\x05hello",
        false,
        "missing",
    )
    .await;
}

#[tokio::test]
async fn the_admin_listener_never_reads_a_header() {
    let up = echo_forwarded_for().await;
    let gw = gateway(&up, "require").await;
    let answer = exchange(
        "127.0.0.1",
        gw.admin,
        b"GET /healthz HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        false,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
