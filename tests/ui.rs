//! The admin web page: its files, the security headers on every admin response, the
//! `whoami` endpoint it relies on, and the whole operator scenario in headless Chromium
//! (`tests/ui/e2e.mjs`, playwright-core driving Debian's `/usr/bin/chromium`) against
//! the real gateway in front of a real upstream.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use http::{HeaderMap, Request, Response, StatusCode};
use serde_json::{json, Value};
use support::admin::{call, gateway, generate, require};
use support::*;

/// One admin call returning the status, headers and raw body.
async fn fetch(gw: &Gateway, method: &str, path: &str, key: Option<&str>) -> Response<Vec<u8>> {
    let mut req = Request::builder().method(method).uri(gw.admin_url(path));
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    let body = if method == "PUT" {
        r#"{"require_authentication": true}"#
    } else {
        ""
    };
    let response = within(
        "admin call",
        client().request(req.body(full(body)).unwrap()),
    )
    .await
    .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let mut answer = Response::new(body_bytes(response).await.to_vec());
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    answer
}

fn assert_secure(what: &str, headers: &HeaderMap) {
    let get = |name: &str| {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let csp = get("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: {csp}");
    }
    assert!(
        !csp.contains("unsafe") && !csp.contains("http"),
        "{what}: {csp}"
    );
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(get("cache-control"), "no-store", "{what}");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert!(headers.get("set-cookie").is_none(), "{what}");
}

#[tokio::test]
async fn every_admin_response_has_the_security_headers() {
    let gw = gateway().await;
    let approver = Some(keys().approver.as_str());
    let viewer = Some(keys().viewer.as_str());
    let cases: &[(&str, &str, Option<&str>, StatusCode)] = &[
        ("GET", "/healthz", None, StatusCode::OK),
        ("GET", "/readyz", None, StatusCode::OK),
        ("GET", "/metrics", None, StatusCode::OK),
        ("GET", "/admin/", None, StatusCode::FOUND),
        ("GET", "/admin/ui/", None, StatusCode::OK),
        ("HEAD", "/admin/ui/", None, StatusCode::OK),
        ("GET", "/admin/ui/app.js", None, StatusCode::OK),
        ("GET", "/admin/ui/app.css", None, StatusCode::OK),
        ("GET", "/admin/ui/nothing.js", None, StatusCode::NOT_FOUND),
        ("GET", "/admin/v1/whoami", viewer, StatusCode::OK),
        ("GET", "/admin/v1/tenants", None, StatusCode::UNAUTHORIZED),
        ("GET", "/admin/v1/tenants", viewer, StatusCode::OK),
        ("GET", "/admin/v1/tenants/acme", viewer, StatusCode::OK),
        (
            "PUT",
            "/admin/v1/tenants/acme/settings",
            viewer,
            StatusCode::FORBIDDEN,
        ),
        (
            "PUT",
            "/admin/v1/tenants/acme/settings",
            approver,
            StatusCode::OK,
        ),
        (
            "POST",
            "/admin/v1/tenants/acme/token",
            approver,
            StatusCode::CREATED,
        ),
        (
            "DELETE",
            "/admin/v1/tenants/acme/token",
            approver,
            StatusCode::NO_CONTENT,
        ),
        (
            "GET",
            "/admin/v1/tenants/a%2Fb",
            approver,
            StatusCode::BAD_REQUEST,
        ),
        (
            "DELETE",
            "/admin/ui/",
            approver,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        ("GET", "/nothing", None, StatusCode::NOT_FOUND),
    ];
    for (method, path, key, status) in cases {
        let response = fetch(&gw, method, path, *key).await;
        let what = format!("{method} {path}");
        assert_eq!(response.status(), *status, "{what}");
        assert_secure(&what, response.headers());
    }
}

#[tokio::test]
async fn the_page_is_served_from_the_binary_without_a_key() {
    let gw = gateway().await;
    for (path, content_type, needle) in [
        (
            "/admin/ui/",
            "text/html; charset=utf-8",
            r#"<script type="module" src="app.js"></script>"#,
        ),
        (
            "/admin/ui/app.js",
            "text/javascript; charset=utf-8",
            "sessionStorage",
        ),
        ("/admin/ui/app.css", "text/css; charset=utf-8", "@media"),
        ("/admin/ui/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let response = fetch(&gw, "GET", path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        let text = String::from_utf8(response.into_body()).unwrap();
        assert!(text.contains(needle), "{path}");
    }
    for module in ["api.js", "format.js", "page.js", "tenant.js"] {
        let response = fetch(&gw, "GET", &format!("/admin/ui/{module}"), None).await;
        assert_eq!(response.status(), StatusCode::OK, "{module}");
        assert_eq!(
            response.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
    }
    let missing = fetch(&gw, "GET", "/admin/ui/../../Cargo.toml", None).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = serde_json::from_slice(missing.body()).unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn admin_paths_redirect_to_the_page() {
    let gw = gateway().await;
    for path in ["/admin", "/admin/", "/admin/ui"] {
        let response = fetch(&gw, "GET", path, None).await;
        assert_eq!(response.status(), StatusCode::FOUND, "{path}");
        assert_eq!(response.headers()["location"], "/admin/ui/", "{path}");
    }
    let response = fetch(&gw, "POST", "/admin/", None).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn whoami_names_the_key_its_role_and_the_token_lifetimes() {
    let gw = gateway().await;
    let (status, me) = call(&gw, "GET", "/admin/v1/whoami", Some(&keys().approver), None).await;
    assert_eq!(status, StatusCode::OK);
    let config = me["config"].clone();
    assert_eq!(config["revision"], 1, "{me}");
    assert_eq!(config["sha256"].as_str().map(str::len), Some(64), "{me}");
    assert_eq!(
        me,
        json!({"name": "ops", "role": "approver", "max_ttl_seconds": 7200, "default_ttl_seconds": 3600, "max_overlap_seconds": 3600, "config": config})
    );
    let (status, me) = call(&gw, "GET", "/admin/v1/whoami", Some(&keys().viewer), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["name"], "auditor");
    assert_eq!(me["role"], "viewer");
    let (status, body) = call(&gw, "GET", "/admin/v1/whoami", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");
    let wrong = format!("{}x", keys().viewer);
    let (status, _) = call(&gw, "GET", "/admin/v1/whoami", Some(&wrong), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &gw,
        "POST",
        "/admin/v1/whoami",
        Some(&keys().approver),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

/// Where the browser test leaves its screenshots: `target/ui-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("ui-screenshots")
}

/// Whether the browser test can run: Chromium, node, and `npm ci` done in `tests/ui`.
fn browser_tools() -> bool {
    if !have_tool("chromium", "--version") || !have_tool("node", "--version") {
        return false;
    }
    let module =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ui/node_modules/playwright-core");
    if !module.is_dir() {
        assert!(
            std::env::var_os("AUTHGATE_REQUIRE_TOOLS").is_none(),
            "playwright-core is required (AUTHGATE_REQUIRE_TOOLS is set): run `npm ci` in tests/ui"
        );
        eprintln!("SKIPPED: playwright-core is not installed; run `npm ci` in tests/ui");
        return false;
    }
    true
}

/// The upstream: answers bulk updates like the profile backend and counts what it saw.
struct Seen {
    batches: AtomicUsize,
    authorization: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_rotates_a_token_in_the_browser() {
    if !browser_tools() {
        return;
    }
    let seen = Arc::new(Seen {
        batches: AtomicUsize::new(0),
        authorization: AtomicUsize::new(0),
    });
    let counter = seen.clone();
    let up = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let seen = counter.clone();
        async move {
            if req.headers().contains_key("authorization") {
                seen.authorization.fetch_add(1, Ordering::SeqCst);
            }
            let batch = req.uri().path().ends_with("/batchUpdate");
            let body = request_bytes(req).await;
            assert!(!batch || body.starts_with(b"batch="), "a form body");
            seen.batches.fetch_add(usize::from(batch), Ordering::SeqCst);
            let xml = "<response><success>true</success><batchStatus>http://backend/m2/acme/profile/batchStatus?batchId=1</batchStatus><message>Batch submitted for processing</message></response>";
            http::Response::builder()
                .header("content-type", "application/xml")
                .body(full(xml))
                .unwrap()
        }
    })
    .await;
    let gw = Gateway::start(up.addr, "tokens: { default_ttl: 24h, max_ttl: 90d }\n").await;

    // Tenant "beta" holds a token that expires within a second, for the list's "Expired".
    require(&gw, "beta", true).await;
    generate(&gw, "beta", Some(r#"{"expires_in": 1}"#)).await;
    let (_, beta) = call(
        &gw,
        "GET",
        "/admin/v1/tenants/beta",
        Some(&keys().viewer),
        None,
    )
    .await;
    let expired_at = humantime::parse_rfc3339(beta["token"]["expires_at"].as_str().unwrap())
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();

    let shots = screenshot_dir();
    let started = Instant::now();
    let child = std::process::Command::new("node")
        .arg("tests/ui/e2e.mjs")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("AUTHGATE_ADMIN_URL", format!("http://{}", gw.admin))
        .env("AUTHGATE_PROXY_URL", format!("http://{}", gw.proxy))
        .env("AUTHGATE_APPROVER_KEY", &keys().approver)
        .env("AUTHGATE_VIEWER_KEY", &keys().viewer)
        .env("AUTHGATE_EXPIRED_AT_MS", expired_at.to_string())
        .env("AUTHGATE_SCREENSHOTS", &shots)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node starts");
    let pid = child.id();
    // The script has its own 150 s watchdog; this one only guards against a hung node.
    let waited = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let output = match waited {
        Ok(joined) => joined.unwrap().unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("the browser test did not finish within 180 s");
        }
    };
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "tests/ui/e2e.mjs failed: {}",
        output.status
    );
    println!(
        "browser scenario took {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // What the browser did reached the gateway's state, and the backend saw no token.
    let (_, acme) = call(
        &gw,
        "GET",
        "/admin/v1/tenants/acme",
        Some(&keys().viewer),
        None,
    )
    .await;
    assert_eq!(acme["require_authentication"], true);
    assert!(acme["token"].is_object(), "{acme}");
    assert!(
        seen.batches.load(Ordering::SeqCst) >= 4,
        "bulk updates forwarded"
    );
    assert_eq!(
        seen.authorization.load(Ordering::SeqCst),
        0,
        "the backend never saw a token"
    );
    for name in [
        "tenants-desktop.png",
        "tenant-desktop.png",
        "tenants-360.png",
        "tenant-360.png",
    ] {
        let size = std::fs::metadata(shots.join(name)).map_or(0, |m| m.len());
        assert!(size > 1000, "screenshot {name} saved");
    }
}
