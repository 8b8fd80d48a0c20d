//! Token enforcement end to end: the operator's lifecycle, rotation races, path
//! spellings, tenant isolation, expiry, and `Expect: 100-continue`.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use support::admin::{call, document, generate, require};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upstream answering 200 and recording the path and `Authorization` of each request.
async fn upstream() -> (Upstream, Arc<Mutex<Vec<(String, Option<String>)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let up = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string());
            log.lock().unwrap().push((req.uri().to_string(), auth));
            let _ = request_bytes(req).await;
            Response::new(full("ok"))
        }
    })
    .await;
    (up, seen)
}

/// POSTs a batch to `path` with an optional token; returns status, headers and JSON body.
async fn post(
    gw: &Gateway,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let mut req = Request::post(gw.url(path));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let response = within("POST", client().request(req.body(full("batch=x")).unwrap()))
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = body_bytes(response).await;
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

fn challenge(headers: &http::HeaderMap) -> &str {
    headers["www-authenticate"].to_str().unwrap()
}

#[tokio::test]
async fn the_operator_lifecycle_with_curl() {
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;

    // Authentication off: the bulk update passes without a token.
    assert_eq!(post(&gw, BATCH, None).await.0, StatusCode::OK);

    // On: no token → 401 with a bare Bearer challenge.
    require(&gw, "acme", true).await;
    let (status, headers, body) = post(&gw, BATCH, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&headers), r#"Bearer realm="authgate""#);
    assert_eq!(body["error"], "missing_token");

    // Generate: the token passes and the upstream never sees it.
    let first = generate(&gw, "acme", None).await;
    assert!(first.starts_with("authgate_tk_"));
    let (status, _, _) = post(&gw, BATCH, Some(&first)).await;
    assert_eq!(status, StatusCode::OK);
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        last,
        (BATCH.to_string(), None),
        "token stripped before forwarding"
    );

    // Regenerate: the old token is dead at once, the new one passes.
    let second = generate(&gw, "acme", Some(r#"{"expires_in": 3600}"#)).await;
    let (status, headers, body) = post(&gw, BATCH, Some(&first)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&headers),
        r#"Bearer realm="authgate", error="invalid_token", error_description="invalid token""#
    );
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(post(&gw, BATCH, Some(&second)).await.0, StatusCode::OK);

    // The document shows the token's public facts.
    let (status, doc) = document(&gw, "acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["require_authentication"], true);
    assert_eq!(doc["token"]["id"].as_str().unwrap().len(), 12);
    assert!(!doc.to_string().contains(&second));

    // Revoke: every token fails.
    let (status, _) = call(
        &gw,
        "DELETE",
        "/admin/v1/tenants/acme/token",
        Some(&keys().approver),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        post(&gw, BATCH, Some(&second)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&gw, BATCH, Some(&first)).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Off: passes again without a token.
    require(&gw, "acme", false).await;
    assert_eq!(post(&gw, BATCH, None).await.0, StatusCode::OK);
    assert!(seen.lock().unwrap().iter().all(|(_, auth)| auth.is_none()));
}

#[tokio::test]
async fn malformed_credentials_are_400_invalid_request() {
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    require(&gw, "acme", true).await;
    let token = generate(&gw, "acme", None).await;
    for bad in [
        "Bearer",
        "Bearer ",
        "Bearer a,b",
        "Bearer a b",
        "Bearer \"quoted\"",
    ] {
        let req = Request::post(gw.url(BATCH))
            .header("authorization", bad)
            .body(full(""))
            .unwrap();
        let response = within("POST", client().request(req)).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer realm="authgate", error="invalid_request""#
        );
    }
    // Two Authorization headers, even both valid.
    let req = Request::post(gw.url(BATCH))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .body(full(""))
        .unwrap();
    let response = within("POST", client().request(req)).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Another scheme is no Bearer credentials at all; a query token is ignored.
    let req = Request::post(gw.url(BATCH))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .body(full(""))
        .unwrap();
    assert_eq!(
        within("POST", client().request(req))
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let with_query = format!("{BATCH}?access_token={token}");
    assert_eq!(
        post(&gw, &with_query, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn an_expired_token_is_refused_saying_so() {
    let (up, _) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    require(&gw, "acme", true).await;
    let token = generate(&gw, "acme", Some(r#"{"expires_in": 1}"#)).await;
    assert_eq!(post(&gw, BATCH, Some(&token)).await.0, StatusCode::OK);
    // The behaviour under test is the passage of time: wait out the token's second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, headers, body) = post(&gw, BATCH, Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&headers),
        r#"Bearer realm="authgate", error="invalid_token", error_description="token expired""#
    );
    assert_eq!(body["message"], "token expired");
}

#[tokio::test]
async fn other_tenants_and_unprotected_routes_are_unaffected() {
    let (up, _) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    require(&gw, "acme", true).await;
    generate(&gw, "acme", None).await;
    require(&gw, "globex", false).await;
    assert_eq!(post(&gw, BATCH, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        post(&gw, "/m2/globex/v2/profile/batchUpdate", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        post(&gw, "/m2/initech/profile/batchUpdate", None).await.0,
        StatusCode::OK
    );
    for path in [
        "/m2/acme/profile/batchStatus?batchId=1",
        "/rest/v1/profiles/thirdPartyId/v1?client=acme",
        "/m2/acme/profile/update?mbox3rdPartyId=v1&profile.a=b",
    ] {
        let response = within("GET", client().get(gw.url(path).parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn spellings_of_a_protected_path_never_pass_without_a_token() {
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    require(&gw, "acme", true).await;
    let token = generate(&gw, "acme", None).await;
    let spellings = [
        "/%6D2/acme/v2/profile/batchUpdate",
        "/m2/acme/v2/profile/%62atchUpdate",
        "//m2/acme/v2/profile/batchUpdate",
        "/m2//acme///v2/profile/batchUpdate",
        "/x/../m2/acme/v2/profile/batchUpdate",
        "/m2/./acme/v2/profile/batchUpdate",
        "/m2/acme/v2/profile/batchUpdate/",
        "/m2/acme/v2/profile/batchUpdate;x",
        "/m2/acme;x/v2/profile/batchUpdate",
        "/m2%2Facme/v2/profile/batchUpdate",
        "/m2/acme/v2/profile%2fbatchUpdate",
        "/m2/acme/v2/profile/batchUpdate%3Bx",
        "/m2/acme/v2/profile/%2e/batchUpdate",
        "/m2/acme/v2/profile/batch%2555pdate",
        "/m2/ac%6De/v2/profile/batchUpdate",
        "/m2/acme/v2/profile/batchUpdate%00",
    ];
    for h2 in [false, true] {
        let c = if h2 { h2c_client() } else { client() };
        for path in spellings {
            let req = Request::post(gw.url(path)).body(full("batch=x")).unwrap();
            let response = within("POST", c.request(req)).await.unwrap();
            let status = response.status();
            assert!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST,
                "{path} (h2: {h2}) → {status}"
            );
        }
    }
    // Raw bytes a client library would not send: a backslash.
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    stream
        .write_all(b"POST /m2\\acme/v2/profile/batchUpdate HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    within("answer", stream.read_to_string(&mut answer))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "reached upstream: {:?}",
        seen.lock().unwrap()
    );

    // With the token, the normalised spelling is what the upstream receives.
    let req = Request::post(gw.url("//m2/./acme/v2/profile/%62atchUpdate"))
        .header("authorization", format!("Bearer {token}"))
        .body(full("batch=x"))
        .unwrap();
    assert_eq!(
        within("POST", client().request(req))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(seen.lock().unwrap()[0].0, BATCH);
}

#[tokio::test]
async fn case_insensitive_backends_get_case_insensitive_checks() {
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "case_insensitive_paths: true\n").await;
    require(&gw, "ACME", true).await;
    for path in [
        "/M2/ACME/V2/PROFILE/BATCHUPDATE",
        "/m2/Acme/v2/profile/batchupdate",
        BATCH,
    ] {
        assert_eq!(
            post(&gw, path, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn expect_continue_gets_no_100_before_the_token_is_checked() {
    let (up, _) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    require(&gw, "acme", true).await;
    let token = generate(&gw, "acme", None).await;
    let head = |auth: &str| {
        format!("POST {BATCH} HTTP/1.1\r\nhost: x\r\ncontent-length: 7\r\nexpect: 100-continue\r\n{auth}\r\n")
    };
    // Without a token: the final 401 comes straight away, no 100 Continue.
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    stream.write_all(head("").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within("the 401", stream.read(&mut buf)).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    // With the token: 100 Continue, then the body, then 200.
    let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
    let auth = format!("authorization: Bearer {token}\r\n");
    stream.write_all(head(&auth).as_bytes()).await.unwrap();
    let n = within("the 100", stream.read(&mut buf)).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    stream.write_all(b"batch=x").await.unwrap();
    let mut answer = Vec::new();
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\nok") {
        let n = within("the 200", stream.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"));
}

#[tokio::test]
async fn protected_bodies_over_the_limit_are_413() {
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "limits: { max_body_bytes: 1000 }\n").await;
    let big = "x".repeat(1001);
    let req = Request::post(gw.url(BATCH))
        .body(full(big.clone()))
        .unwrap();
    assert_eq!(
        within("POST", client().request(req))
            .await
            .unwrap()
            .status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Unprotected routes are not limited.
    let req = Request::post(gw.url("/upload")).body(full(big)).unwrap();
    assert_eq!(
        within("POST", client().request(req))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// A refusal that comes before the upload is complete (no token, body too large) reaches
/// an HTTP/2 client whole: the gateway answers, ends its side of the stream, and only
/// then resets the rest of the upload with NO_ERROR (RFC 9113 §8.1). (curl 7.88, as in
/// Debian 12, reports that reset on a large upload as "(92) Stream error": a client bug,
/// curl issue 22984.)
#[tokio::test]
async fn http2_uploads_refused_early_still_get_the_whole_answer() {
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "limits: { max_body_bytes: 100000 }\n").await;
    require(&gw, "acme", true).await;
    // Far beyond the 64 KiB initial stream window: the client is still sending.
    let big = "x".repeat(4 << 20);
    for (auth, status, error) in [
        (None, StatusCode::UNAUTHORIZED, "missing_token"),
        (
            Some("Bearer authgate_tk_wrong"),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
    ] {
        let mut req = Request::post(gw.url(BATCH));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let response = within(
            "POST",
            h2c_client().request(req.body(full(big.clone())).unwrap()),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), status);
        let body: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
        assert_eq!(body["error"], error);
    }
    let token = generate(&gw, "acme", None).await;
    let req = Request::post(gw.url(BATCH))
        .header("authorization", format!("Bearer {token}"))
        .body(full(big))
        .unwrap();
    let response = within("POST", h2c_client().request(req)).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!body_bytes(response).await.is_empty());
    assert!(seen.lock().unwrap().is_empty());
}

/// Many clients keep sending with whatever token they last learnt (often an old one)
/// while the token is rotated again and again, without an overlap (`previous_valid_for`
/// omitted or 0, alternately). Every request sent after the rotation that killed its
/// token had returned must be refused: zero exceptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_with_a_rotated_token_passes_after_the_rotation_returned() {
    const ROTATIONS: usize = 60;
    const MIN_REQUESTS: usize = 10_000;
    const CLIENTS: usize = 16;
    let (up, _) = upstream().await;
    let gw = Arc::new(Gateway::start(up.addr, "").await);
    require(&gw, "acme", true).await;
    let first = generate(&gw, "acme", None).await;

    // Every token issued, and when the rotation that replaced it returned.
    let tokens = Arc::new(RwLock::new(vec![first]));
    let dead_since: Arc<RwLock<HashMap<String, Instant>>> = Arc::default();
    let sent = Arc::new(AtomicUsize::new(0));
    let passed = Arc::new(AtomicUsize::new(0));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut workers = Vec::new();
    for i in 0..CLIENTS {
        let (gw, tokens, dead_since) = (gw.clone(), tokens.clone(), dead_since.clone());
        let (sent, passed, violations, done) = (
            sent.clone(),
            passed.clone(),
            violations.clone(),
            done.clone(),
        );
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut n = 0usize;
            while !done.load(Ordering::Relaxed) || sent.load(Ordering::Relaxed) < MIN_REQUESTS {
                n += 1;
                let token = {
                    let all = tokens.read().unwrap();
                    // Half the time the newest token, otherwise one of the last few.
                    let back = if (n + i) % 2 == 0 { 0 } else { (n % 3) + 1 };
                    all[all.len().saturating_sub(1 + back)].clone()
                };
                let sent_at = Instant::now();
                let req = Request::post(gw.url(BATCH))
                    .header("authorization", format!("Bearer {token}"))
                    .body(full("batch=x"))
                    .unwrap();
                let response = within("POST", c.request(req)).await.unwrap();
                let status = response.status();
                let _ = body_bytes(response).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if status == StatusCode::OK {
                    passed.fetch_add(1, Ordering::Relaxed);
                    let killed = dead_since.read().unwrap().get(&token).copied();
                    if killed.is_some_and(|at| at < sent_at) {
                        violations.lock().unwrap().push(status);
                    }
                } else {
                    assert_eq!(status, StatusCode::UNAUTHORIZED);
                }
            }
        }));
    }
    for n in 0..ROTATIONS {
        let old = tokens.read().unwrap().last().cloned().unwrap();
        // `previous_valid_for` omitted or 0: both keep the seed's rule.
        let body = (n % 2 == 1).then_some(r#"{"previous_valid_for": 0}"#);
        let new = generate(&gw, "acme", body).await;
        // Recorded after the admin response arrived.
        dead_since.write().unwrap().insert(old, Instant::now());
        tokens.write().unwrap().push(new);
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::Relaxed);
    for w in workers {
        within("a client to finish", w).await.unwrap();
    }
    let total = sent.load(Ordering::Relaxed);
    assert!(total >= MIN_REQUESTS, "{total}");
    assert!(
        passed.load(Ordering::Relaxed) > 0,
        "the current token must pass"
    );
    let violations = violations.lock().unwrap();
    assert!(
        violations.is_empty(),
        "{} of {total} requests passed with a dead token",
        violations.len()
    );
}
