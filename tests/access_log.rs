//! The access log through the real binary: one JSON line per request, with its fields;
//! the request id the client got is the one the upstream got and the one logged; no
//! token, admin key or query secret in the log; a trusted peer's request id kept, an
//! untrusted one's replaced; the file reopened on SIGUSR1.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use serde_json::Value;
use support::process::{await_listening, signal, terminate_and_wait, write_config, Listening};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// The real binary serving the config of `write_config(dir, upstream, extra)`.
fn serve(dir: &Path, upstream: std::net::SocketAddr, extra: &str) -> (Child, Listening) {
    let config = write_config(dir, upstream, extra);
    let mut child = Command::new(BIN)
        .args(["serve", "-c", config.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let at = await_listening(&mut child, "gateway");
    (child, at)
}

/// The lines of the log file once it holds at least `n` (the writer is asynchronous).
async fn lines(path: &Path, n: usize) -> Vec<Value> {
    within("access-log lines", async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
}

async fn send(url: String, method: &str, headers: &[(&str, &str)]) -> (StatusCode, String, Value) {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = within(
        "request",
        client().request(req.body(full("batch=a")).unwrap()),
    )
    .await
    .unwrap();
    let status = response.status();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let bytes = body_bytes(response).await;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, id, body)
}

#[tokio::test]
async fn every_request_gets_one_line_with_its_fields_and_no_secret() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let up = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let id = req
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_string());
        record.lock().unwrap().push(id.unwrap_or_default());
        async { Response::new(full("ok")) }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let extra = format!(
        "{}access_log: {{ target: access.log, format: json }}\ntrusted_proxies: [\"127.0.0.2/32\"]\n",
        admin_yaml()
    );
    let (child, at) = serve(dir.path(), up.addr, &extra);
    let proxy = |p: &str| format!("http://{}{p}", at.proxy);
    let admin = |p: &str| format!("http://{}{p}", at.admin);

    // Tenant acme requires a token.
    let approver = format!("Bearer {}", keys().approver);
    let put = Request::put(admin("/admin/v1/tenants/acme/settings"))
        .header("authorization", &approver)
        .body(full(r#"{"require_authentication": true}"#))
        .unwrap();
    assert_eq!(
        within("settings", client().request(put))
            .await
            .unwrap()
            .status(),
        200
    );
    let post = Request::post(admin("/admin/v1/tenants/acme/token"))
        .header("authorization", &approver)
        .body(full("{}"))
        .unwrap();
    let answer = body_bytes(within("token", client().request(post)).await.unwrap()).await;
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let token = answer["token"].as_str().unwrap().to_string();
    let token_id = answer["id"].as_str().unwrap().to_string();

    let bearer = format!("Bearer {token}");
    let batch = "/m2/acme/profile/batchUpdate?access_token=s3cr3t";
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (ok, ok_id, _) = send(
        proxy(batch),
        "POST",
        &[("authorization", &bearer), ("traceparent", traceparent)],
    )
    .await;
    assert_eq!(ok, StatusCode::OK);
    let (missing, missing_id, body) = send(proxy(batch), "POST", &[]).await;
    assert_eq!(missing, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["request_id"],
        missing_id.as_str(),
        "the error body names the request"
    );
    let (other, _, _) = send(
        proxy("/rest/v1/profiles/1?client=acme"),
        "GET",
        &[
            ("authorization", &bearer),
            ("x-request-id", "client-chosen-1"),
        ],
    )
    .await;
    assert_eq!(other, StatusCode::OK);
    let (bad, _, _) = send(proxy("/m2/acme/profile/batchUpdate.json"), "POST", &[]).await;
    assert_eq!(bad, StatusCode::BAD_REQUEST);

    let logged = lines(&log, 4).await;
    assert_eq!(logged.len(), 4, "{logged:#?}");
    let allowed = &logged[0];
    assert_eq!(allowed["request_id"], ok_id.as_str());
    assert_eq!(
        seen.lock().unwrap()[0],
        ok_id,
        "the upstream got the same id"
    );
    assert_eq!(allowed["status"], 200);
    assert_eq!(allowed["method"], "POST");
    assert_eq!(allowed["path"], "/m2/acme/profile/batchUpdate", "no query");
    assert_eq!(allowed["proto"], "HTTP/1.1");
    assert_eq!(allowed["route"], "protected");
    assert_eq!(allowed["tenant"], "acme");
    assert_eq!(allowed["decision"], "ok");
    assert_eq!(allowed["token_id"], token_id.as_str());
    assert_eq!(allowed["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(allowed["bytes_in"], 7);
    assert_eq!(allowed["bytes_out"], 2);
    assert_eq!(allowed["complete"], true);
    assert!(allowed["upstream_ms"].as_f64().is_some());
    assert!(allowed["duration_ms"].as_f64().unwrap() >= allowed["upstream_ms"].as_f64().unwrap());
    assert!(allowed["client"].as_str().unwrap().starts_with("127.0.0.1"));
    assert!(allowed["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(allowed["time"].as_str().unwrap().ends_with('Z'));

    let refused = &logged[1];
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["decision"], "missing");
    assert_eq!(refused["upstream_ms"], Value::Null, "not forwarded");
    assert_eq!(refused["token_id"], Value::Null);

    let unprotected = &logged[2];
    assert_eq!(unprotected["route"], "other");
    assert_eq!(unprotected["decision"], Value::Null);
    assert_eq!(unprotected["tenant"], Value::Null);
    assert_ne!(
        unprotected["request_id"], "client-chosen-1",
        "an untrusted peer's request id is replaced"
    );
    assert_eq!(logged[3]["status"], 400);
    assert_eq!(logged[3]["decision"], "ambiguous_path");

    // Rotated away by logrotate: SIGUSR1 reopens the path.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    signal(&child, "-USR1");
    within("a line in the reopened file", async {
        loop {
            send(proxy("/rest/v1/profiles/2"), "GET", &[]).await;
            if std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;

    assert!(terminate_and_wait(child).success());
    let everything =
        std::fs::read_to_string(&rotated).unwrap() + &std::fs::read_to_string(&log).unwrap();
    for secret in [token.as_str(), keys().approver.as_str(), "s3cr3t"] {
        assert!(!everything.contains(secret), "a secret in the access log");
    }
}

#[tokio::test]
async fn a_trusted_peers_well_formed_request_id_is_kept_and_a_malformed_one_replaced() {
    let up = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        let id = req.headers()["x-request-id"].to_str().unwrap().to_string();
        Response::new(full(id))
    })
    .await;
    let gw = Gateway::start(up.addr, "trusted_proxies: [\"127.0.0.1/32\"]\n").await;
    let (_, kept, _) = send(gw.url("/x"), "GET", &[("x-request-id", "lb-1234-abcd")]).await;
    assert_eq!(kept, "lb-1234-abcd");
    let (_, replaced, _) = send(gw.url("/x"), "GET", &[("x-request-id", "two words")]).await;
    assert_ne!(replaced, "two words");
    assert_eq!(replaced.len(), 32);
    let untrusted = Gateway::start(up.addr, "").await;
    let (_, fresh, _) = send(
        untrusted.url("/x"),
        "GET",
        &[("x-request-id", "lb-1234-abcd")],
    )
    .await;
    assert_ne!(fresh, "lb-1234-abcd");
}

#[tokio::test]
async fn an_untrusted_peers_forwarding_headers_never_reach_the_upstream_as_sent() {
    let up = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        let mut seen = serde_json::Map::new();
        for (name, value) in req.headers() {
            seen.insert(name.to_string(), value.to_str().unwrap().into());
        }
        Response::new(full(Value::Object(seen).to_string()))
    })
    .await;
    let spoofed = [
        ("x-forwarded-for", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6;proto=https"),
        ("x-real-ip", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-prefix", "/admin"),
    ];
    let forwarded = |gw: &Gateway| {
        let mut req =
            Request::get(gw.url("/rest/v1/profiles/1")).header("host", "profiles.example");
        for (k, v) in spoofed {
            req = req.header(k, v);
        }
        let req = req.body(full("")).unwrap();
        async move {
            let response = within("request", client().request(req)).await.unwrap();
            let seen: Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
            seen
        }
    };
    let gw = Gateway::start(up.addr, "").await;
    let seen = forwarded(&gw).await;
    assert_eq!(
        seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1",
        "appended to, per the contract"
    );
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "profiles.example");
    for removed in [
        "forwarded",
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
    ] {
        assert_eq!(seen[removed], Value::Null, "{removed}");
    }
    let trusting = Gateway::start(up.addr, "trusted_proxies: [\"127.0.0.1/32\"]\n").await;
    let seen = forwarded(&trusting).await;
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-forwarded-host"], "evil.example");
    assert_eq!(seen["x-real-ip"], "6.6.6.6");
}

/// The access-log lines of the gateway in `dir` once there are `n`, as JSON.
async fn lines_in(dir: &Path, n: usize) -> Vec<Value> {
    lines(&dir.join("access.log"), n).await
}

#[tokio::test]
async fn upstream_failures_client_aborts_and_http2_each_get_a_line() {
    use tokio::io::AsyncWriteExt;

    // /hang never answers (→ 504); /upload reports that its head arrived, then reads.
    let (head_seen, mut heads) = tokio::sync::mpsc::unbounded_channel::<()>();
    let up = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let head_seen = head_seen.clone();
        async move {
            match req.uri().path() {
                "/hang" => std::future::pending().await,
                "/upload" => {
                    let _ = head_seen.send(());
                    let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                    Response::new(full("read"))
                }
                _ => Response::new(full("ok")),
            }
        }
    })
    .await;
    let log_yaml = "access_log: { target: access.log, format: json }\n";
    let text = format!(
        "upstream:\n  url: \"http://{}\"\n  request_timeout: 300ms\n{log_yaml}{}",
        up.addr,
        admin_yaml()
    );
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let gw = Gateway::start_text(dir.clone(), &text).await.unwrap();

    // 504: the upstream's head does not come within request_timeout.
    let (timed_out, timed_out_id, body) = send(gw.url("/hang"), "GET", &[]).await;
    assert_eq!(timed_out, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body["request_id"], timed_out_id.as_str());

    // A client that goes away in the middle of its upload.
    let mut socket = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    socket
        .write_all(b"POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 100000\r\n\r\nfirst-part")
        .await
        .unwrap();
    within("the upload reaching the upstream", heads.recv())
        .await
        .unwrap();
    drop(socket);
    let logged = lines_in(dir.path(), 2).await;

    // HTTP/2 (prior knowledge).
    let request = Request::get(gw.url("/over-h2")).body(full("")).unwrap();
    let response = within("h2 request", h2c_client().request(request))
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let h2_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(body_bytes(response).await, "ok");
    let logged = [logged, lines_in(dir.path(), 3).await.split_off(2)].concat();

    let hung = &logged[0];
    assert_eq!(hung["request_id"], timed_out_id.as_str());
    assert_eq!(hung["path"], "/hang");
    assert_eq!(hung["status"], 504);
    assert_eq!(hung["route"], "other");
    assert_eq!(hung["complete"], true, "the 504 itself was sent whole");
    assert!(hung["duration_ms"].as_f64().unwrap() >= 300.0);

    let aborted = &logged[1];
    assert_eq!(aborted["path"], "/upload");
    assert_eq!(aborted["method"], "POST");
    assert_eq!(aborted["status"], 400, "as nginx logs a body cut short");
    assert_eq!(
        aborted["bytes_in"], 10,
        "what arrived before the client left"
    );
    assert_eq!(aborted["complete"], false, "{aborted}");

    let h2 = &logged[2];
    assert_eq!(h2["proto"], "HTTP/2");
    assert_eq!(h2["request_id"], h2_id.as_str());
    assert_eq!(h2["status"], 200);
    assert_eq!(h2["bytes_out"], 2);
    assert_eq!(h2["complete"], true);

    // 502: nothing listens at the upstream's address.
    let dead = dead_address().await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let text = format!(
        "upstream:\n  url: \"http://{dead}\"\n{log_yaml}{}",
        admin_yaml()
    );
    let gw = Gateway::start_text(dir.clone(), &text).await.unwrap();
    let (bad_gateway, bad_gateway_id, body) = send(gw.url("/rest/v1/profiles/1"), "GET", &[]).await;
    assert_eq!(bad_gateway, StatusCode::BAD_GATEWAY);
    assert_eq!(body["request_id"], bad_gateway_id.as_str());
    let failed = &lines_in(dir.path(), 1).await[0];
    assert_eq!(failed["request_id"], bad_gateway_id.as_str());
    assert_eq!(failed["status"], 502);
    assert_eq!(failed["upstream_ms"], Value::Null, "{failed}");
}

#[tokio::test]
async fn report_mode_logs_each_would_be_refusal_and_the_previous_token_by_its_id() {
    let up = Upstream::start(|_req| async { Response::new(full("ok")) }).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let extra = format!(
        "{}access_log: {{ target: access.log, format: json }}\n",
        admin_yaml()
    );
    let (child, at) = serve(dir.path(), up.addr, &extra);
    let proxy = |p: &str| format!("http://{}{p}", at.proxy);
    let approver = format!("Bearer {}", keys().approver);
    let admin = |method: &str, p: &str, body: &str| {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{p}", at.admin))
            .header("authorization", &approver)
            .body(full(body.to_string()))
            .unwrap();
        async move {
            let response = within("admin", client().request(req)).await.unwrap();
            let bytes = body_bytes(response).await;
            serde_json::from_slice::<Value>(&bytes).unwrap()
        }
    };
    admin(
        "PUT",
        "/admin/v1/tenants/acme/settings",
        r#"{"mode": "report"}"#,
    )
    .await;
    let first = admin("POST", "/admin/v1/tenants/acme/token", "{}").await;
    admin(
        "POST",
        "/admin/v1/tenants/acme/token",
        r#"{"previous_valid_for": 600}"#,
    )
    .await;
    let old = format!("Bearer {}", first["token"].as_str().unwrap());

    let batch = proxy("/m2/acme/profile/batchUpdate");
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "would_refuse:missing"),
        (
            &[("authorization", "Bearer authgate_tk_wrong")],
            "would_refuse:invalid",
        ),
        (
            &[("authorization", "Bearer not a token")],
            "would_refuse:malformed",
        ),
        (&[("authorization", &old)], "ok"),
    ];
    for (headers, _) in &cases {
        assert_eq!(send(batch.clone(), "POST", headers).await.0, StatusCode::OK);
    }
    let logged = lines(&log, cases.len()).await;
    for ((_, decision), line) in cases.iter().zip(&logged) {
        assert_eq!(line["decision"], *decision, "{line}");
        assert_eq!(line["status"], 200, "forwarded: {line}");
    }
    assert_eq!(
        logged[3]["token_id"], first["id"],
        "the previous token, by its id"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(first["token"].as_str().unwrap()),
        "no token in the log"
    );
    let status = tokio::task::spawn_blocking(move || terminate_and_wait(child))
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}
