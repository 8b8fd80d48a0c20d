//! The proxy listener end to end: real gateway, real upstream, real clients.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

/// An upstream that records every request and answers 201 with the request body and
/// a few response headers, including hop-by-hop ones the gateway must drop.
async fn recording_upstream() -> (Upstream, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let upstream = Upstream::start(move |req| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            log.lock().unwrap().push(Seen {
                method: parts.method,
                uri: parts.uri.to_string(),
                version: parts.version,
                headers: parts.headers,
                body: body.clone(),
            });
            Response::builder()
                .status(201)
                .header("x-upstream", "yes")
                .header("connection", "x-resp-hop")
                .header("x-resp-hop", "secret")
                .header("set-cookie", "a=1")
                .body(full(body))
                .unwrap()
        }
    })
    .await;
    (upstream, seen)
}

#[tokio::test]
async fn get_and_post_are_proxied_byte_for_byte() {
    let (upstream, seen) = recording_upstream().await;
    let gw = Gateway::start(upstream.addr, "").await;
    let client = client();

    let get = Request::get(gw.url("/rest/v1/profiles/p1?client=acme&x=%20y"))
        .header("x-custom", "one")
        .header("accept", "application/json")
        .body(full(""))
        .unwrap();
    let response = within("GET", client.request(get)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-upstream"], "yes");
    assert_eq!(response.headers()["set-cookie"], "a=1");

    let payload: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let post = Request::post(gw.url("/m2/acme/v2/profile/batchUpdate"))
        .header("content-type", "application/octet-stream")
        .body(full(payload.clone()))
        .unwrap();
    let response = within("POST", client.request(post)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(body_bytes(response).await, payload, "response body intact");

    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].uri, "/rest/v1/profiles/p1?client=acme&x=%20y");
    assert_eq!(seen[0].headers["x-custom"], "one");
    assert_eq!(seen[0].headers["host"], gw.proxy.to_string(), "Host kept");
    assert_eq!(seen[1].method, Method::POST);
    assert_eq!(seen[1].body, payload, "request body intact");
    assert_eq!(seen[1].headers["content-length"], "70000");
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_forwarding_headers_set() {
    let (upstream, seen) = recording_upstream().await;
    let gw = Gateway::start(upstream.addr, "").await;
    let request = Request::get(gw.url("/x"))
        .header("host", "profiles.example")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "spoofed.example")
        .header("via", "1.0 edge")
        .body(full(""))
        .unwrap();
    let response = within("GET", client().request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        response.headers().get("x-resp-hop").is_none(),
        "response hop header dropped"
    );
    assert_eq!(response.headers()["via"], "1.1 authgate");

    let seen = seen.lock().unwrap();
    let h = &seen[0].headers;
    for dropped in ["x-hop", "keep-alive", "te", "proxy-authorization"] {
        assert!(h.get(dropped).is_none(), "{dropped} must not be forwarded");
    }
    assert_eq!(h["host"], "profiles.example");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http", "overwritten, not trusted");
    assert_eq!(h["x-forwarded-host"], "profiles.example");
    assert_eq!(h["via"], "1.0 edge, 1.1 authgate");
}

#[tokio::test]
async fn cleartext_http2_clients_are_served() {
    let (upstream, seen) = recording_upstream().await;
    let gw = Gateway::start(upstream.addr, "").await;
    let request = Request::post(gw.url("/m2/acme/profile/batchUpdate"))
        .body(full("batch=x"))
        .unwrap();
    let response = within("h2 POST", h2c_client().request(request))
        .await
        .unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(body_bytes(response).await, "batch=x");

    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0].version,
        Version::HTTP_11,
        "upstream speaks HTTP/1.1"
    );
    assert_eq!(
        seen[0].headers["host"],
        gw.proxy.to_string(),
        "Host from :authority"
    );
    assert_eq!(seen[0].headers["via"], "2 authgate");
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_with_a_json_body() {
    let gw = Gateway::start(dead_address().await, "").await;
    let started = Instant::now();
    let response = within("GET", client().get(gw.url("/x").parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(body["error"], "bad_gateway");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused → fast 502"
    );
}

#[tokio::test]
async fn stalled_upstream_is_a_504_after_the_request_timeout() {
    let upstream = Upstream::start(|_req| std::future::pending()).await;
    let gw = Gateway::start(upstream.addr, "  request_timeout: 300ms\n").await;
    let started = Instant::now();
    let response = within("GET", client().get(gw.url("/slow").parse().unwrap()))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(body["error"], "gateway_timeout");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

/// Sends raw bytes and returns everything the gateway answers until it closes.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    within(
        "the gateway to answer and close",
        stream.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn oversized_request_head_is_a_431() {
    let (upstream, seen) = recording_upstream().await;
    let gw = Gateway::start(upstream.addr, "limits: { max_header_bytes: 16384 }\n").await;
    let big = "a".repeat(20_000);
    let request = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    let answer = raw_exchange(gw.proxy, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(seen.lock().unwrap().is_empty());

    // Just under the limit passes.
    let fits = "a".repeat(15_000);
    let request = Request::get(gw.url("/"))
        .header("x-big", fits)
        .body(full(""))
        .unwrap();
    let response = within("GET", client().request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// HTTP/2 counts a head as its field list (RFC 9113 §6.5.2); one over `max_header_bytes`
/// gets the gateway's JSON 431 like every other error, on a connection that stays
/// usable, and is never forwarded. (h2 itself only answers lists over twice the limit,
/// with a bare 431 and a reset stream.)
#[tokio::test]
async fn an_http2_head_over_the_limit_is_the_gateways_json_431() {
    let (upstream, seen) = recording_upstream().await;
    let gw = Gateway::start(upstream.addr, "limits: { max_header_bytes: 16384 }\n").await;
    let client = h2c_client();
    let get = |big: usize| {
        Request::get(gw.url("/rest/v1/profiles/p1?client=acme"))
            .header("x-big", "a".repeat(big))
            .body(full(""))
            .unwrap()
    };
    for (what, big) in [("one field", 20_000), ("just over", 16_384)] {
        let response = within("h2 GET", client.request(get(big))).await.unwrap();
        assert_eq!(response.version(), Version::HTTP_2, "{what}");
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "{what}"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{what}"
        );
        let body: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
        assert_eq!(body["error"], "request_header_fields_too_large", "{what}");
    }
    let many = (0..400).fold(
        Request::get(gw.url("/rest/v1/profiles/p1?client=acme")),
        |req, i| req.header(format!("x-{i}"), "a".repeat(10)),
    );
    let response = within("h2 GET", client.request(many.body(full("")).unwrap()))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "many fields"
    );
    assert!(seen.lock().unwrap().is_empty());

    // The same connection goes on; a head under the limit is forwarded.
    let response = within("h2 GET", client.request(get(15_000))).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_client_trickling_its_head_is_cut_off() {
    let (upstream, seen) = recording_upstream().await;
    let gw = Gateway::start(
        upstream.addr,
        "limits: { header_read_timeout: 300ms, idle_timeout: 60s }\n",
    )
    .await;
    let started = Instant::now();
    // Half a request line, then nothing: the gateway must hang up on its own.
    let answer = raw_exchange(gw.proxy, b"POST /m2/acme/profile/batchUpdate HT").await;
    assert_eq!(answer, "", "no response, just a close");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_idle_timeout() {
    let (upstream, _seen) = recording_upstream().await;
    let gw = Gateway::start(
        upstream.addr,
        "limits: { header_read_timeout: 30s, idle_timeout: 300ms }\n",
    )
    .await;
    let started = Instant::now();
    let answer = raw_exchange(gw.proxy, b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed by idle_timeout"
    );
}

#[tokio::test]
async fn idle_keep_alive_outlives_the_header_read_timeout() {
    let (upstream, _seen) = recording_upstream().await;
    let gw = Gateway::start(
        upstream.addr,
        "limits: { header_read_timeout: 200ms, idle_timeout: 60s }\n",
    )
    .await;
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    let request = b"GET /a HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n";
    stream.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within("first response", stream.read(&mut buf))
        .await
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 201"));
    // Idle for several header timeouts: the connection must stay open …
    let quiet = tokio::time::timeout(Duration::from_millis(1000), stream.read(&mut buf)).await;
    assert!(quiet.is_err(), "closed while idle: {quiet:?}");
    // … and still serve the next request.
    stream.write_all(request).await.unwrap();
    let n = within("second response", stream.read(&mut buf))
        .await
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 201"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn a_100_mib_upload_streams_through() {
    // The upstream reports its first chunk before the client has sent more than 1 MiB:
    // a gateway that buffered the body would deadlock here instead.
    let (first_tx, first_rx) = oneshot::channel::<()>();
    let first_tx = Arc::new(Mutex::new(Some(first_tx)));
    let upstream = Upstream::start(move |req| {
        let first_tx = first_tx.clone();
        async move {
            let mut body = req.into_body();
            let mut total = 0usize;
            while let Some(frame) = body.frame().await {
                let frame = frame.unwrap();
                if let Some(data) = frame.data_ref() {
                    total += data.len();
                    if let Some(tx) = first_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                }
            }
            Response::new(full(total.to_string()))
        }
    })
    .await;
    let gw = Gateway::start(upstream.addr, "").await;

    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, TestError>::new(4);
    // Not a protected route: those cap bodies at limits.max_body_bytes (50 MB).
    let request = Request::post(gw.url("/upload"))
        .header("content-length", (100 * MIB).to_string())
        .body(body.boxed())
        .unwrap();
    let response = tokio::spawn(client().request(request));
    let chunk = Bytes::from(vec![b'x'; MIB]);
    tx.send_data(chunk.clone()).await.unwrap();
    within("the upstream to receive the first chunk", first_rx)
        .await
        .unwrap();
    for _ in 1..100 {
        within("the gateway to take a chunk", tx.send_data(chunk.clone()))
            .await
            .unwrap();
    }
    drop(tx);
    let response = within("the response", response).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response).await, (100 * MIB).to_string());
}

type TestError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::test]
async fn a_100_mib_download_streams_through() {
    // The upstream sends 1 MiB, then waits until the client has seen bytes before
    // sending the other 99: a gateway that buffered the response would deadlock.
    let (seen_tx, seen_rx) = mpsc::channel::<()>(1);
    let seen_rx = Arc::new(tokio::sync::Mutex::new(Some(seen_rx)));
    let upstream = Upstream::start(move |_req| {
        let seen_rx = seen_rx.clone();
        async move {
            let (mut tx, body) = http_body_util::channel::Channel::<Bytes, TestError>::new(4);
            let mut seen = seen_rx.lock().await.take().expect("one request");
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'y'; MIB]);
                tx.send_data(chunk.clone()).await.unwrap();
                seen.recv().await;
                for _ in 1..100 {
                    if tx.send_data(chunk.clone()).await.is_err() {
                        return;
                    }
                }
            });
            Response::builder()
                .header("content-length", (100 * MIB).to_string())
                .body(body.boxed())
                .unwrap()
        }
    })
    .await;
    let gw = Gateway::start(upstream.addr, "").await;
    let request = Request::get(gw.url("/export")).body(full("")).unwrap();
    let response = within("response head", client().request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut total = 0;
    let mut told = false;
    while let Some(frame) = within("a body frame", body.frame()).await {
        if let Some(data) = frame.unwrap().data_ref() {
            total += data.len();
            if !told {
                seen_tx.send(()).await.unwrap();
                told = true;
            }
        }
    }
    assert_eq!(total, 100 * MIB);
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_and_refuses_new_connections() {
    let (arrived_tx, mut arrived_rx) = mpsc::channel::<()>(1);
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release_rx = Arc::new(Mutex::new(Some(release_rx)));
    let upstream = Upstream::start(move |_req| {
        let arrived_tx = arrived_tx.clone();
        let release = release_rx.lock().unwrap().take();
        async move {
            arrived_tx.send(()).await.unwrap();
            if let Some(release) = release {
                let _ = release.await;
            }
            Response::new(full("finished"))
        }
    })
    .await;
    let mut gw = Gateway::start(upstream.addr, "shutdown_timeout: 20s\n").await;
    let in_flight = tokio::spawn(client().get(gw.url("/long").parse().unwrap()));
    within("the request to reach the upstream", arrived_rx.recv()).await;

    let ready = client().get(gw.admin_url("/readyz").parse().unwrap());
    assert_eq!(
        within("readyz", ready).await.unwrap().status(),
        StatusCode::OK
    );
    gw.begin_shutdown();

    // Readiness flips at once; the admin listener stays up during the drain.
    let mut status = StatusCode::OK;
    for _ in 0..1000 {
        let ready = client().get(gw.admin_url("/readyz").parse().unwrap());
        status = within("readyz", ready).await.unwrap().status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The proxy listener is closed: new connections are refused.
    let refused = TcpStream::connect(gw.proxy).await;
    assert!(refused.is_err(), "new connection accepted while draining");

    release_tx.send(()).unwrap();
    let response = within("the in-flight request", in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response).await, "finished");
    gw.join().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_class() {
    let (upstream, _seen) = recording_upstream().await;
    let gw = Gateway::start(upstream.addr, "").await;
    let post = Request::post(gw.url("/m2/metrics-test/v2/profile/batchUpdate"))
        .body(full("batch=x"))
        .unwrap();
    within("POST", client().request(post)).await.unwrap();
    let text = metrics_text(&gw).await;
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("authgate_requests_total{route_class=\"protected\",status_class=\"2xx\"}")
        })
        .unwrap_or_else(|| panic!("{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{line}");
    for name in [
        "authgate_upstream_duration_seconds_bucket",
        "authgate_requests_in_flight",
        "authgate_open_connections",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

#[tokio::test]
async fn admin_listener_answers_health_and_unknown_routes() {
    let gw = Gateway::start(dead_address().await, "").await;
    let c = client();
    let health = within("healthz", c.get(gw.admin_url("/healthz").parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let missing = within("404", c.get(gw.admin_url("/nope").parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let post = Request::post(gw.admin_url("/healthz"))
        .body(full(""))
        .unwrap();
    let wrong = within("405", c.request(post)).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers()["allow"], "GET, HEAD");
    gw.shutdown().await;
}
