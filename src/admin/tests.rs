//! The admin router in process, with plain `Full` bodies: the order of checks (404,
//! 405, 401, 403, 400), the key checked before the body is read, and every route
//! answering exactly the methods its `Allow` header names.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::Value;

use super::routes::ROUTES;
use super::*;
use crate::state::file::FileStore;

const APPROVER: &str = "authgate_ak_unit_test_approver";
const VIEWER: &str = "authgate_ak_unit_test_viewer";
const SETTINGS: &str = "/admin/v1/tenants/acme/settings";
const TOKEN: &str = "/admin/v1/tenants/acme/token";

/// An admin router over a file store in a temporary folder (kept as long as it is).
struct Fixture {
    admin: Admin,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let approver = Digest::of(APPROVER).to_hex();
    let viewer = Digest::of(VIEWER).to_hex();
    let yaml = format!(
        "upstream: {{ url: \"http://127.0.0.1:9\" }}
tokens: {{ default_ttl: 1h, max_ttl: 2h }}
admin:
  keys:
    - {{ name: ops, role: approver, sha256: \"{approver}\" }}
    - {{ name: auditor, role: viewer, sha256: \"{viewer}\" }}
"
    );
    let config = crate::config::Config::parse(&yaml, dir.path()).unwrap();
    let store = FileStore::new(dir.path().join("state.json"));
    let state = Arc::new(StateHandle::open(Box::new(store)).await.unwrap());
    let metrics = PrometheusBuilder::new().build_recorder().handle();
    let live = crate::live::Reloader::new(config, None, Arc::default(), Default::default(), None);
    let admin = Admin::new(Arc::new(live.unwrap()), state, Arc::default(), metrics);
    Fixture { admin, _dir: dir }
}

fn request<B>(method: &str, path: &str, key: Option<&str>, body: B) -> Request<B> {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    req.body(body).unwrap()
}

/// One call with a `Full` body: the status, the headers and the JSON body (`Null` when
/// empty or not JSON).
async fn call(
    admin: &Admin,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (StatusCode, HeaderMap, Value) {
    let body = Full::new(Bytes::from(body.to_string()));
    let response = admin.serve(request(method, path, key, body)).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

/// A body that must not be read: polling it fails the test.
struct Unread;

impl http_body::Body for Unread {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        panic!("the body was read before the admin key was checked")
    }
}

#[tokio::test]
async fn checks_run_in_order_404_405_401_403_400() {
    let f = fixture().await;
    let bad = "not json";
    let cases: &[(&str, &str, Option<&str>, StatusCode, &str)] = &[
        (
            "PATCH",
            "/admin/v1/nothing",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            SETTINGS,
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "PUT",
            SETTINGS,
            None,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "PUT",
            SETTINGS,
            Some("authgate_ak_nobody"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "PUT",
            SETTINGS,
            Some(VIEWER),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "PUT",
            SETTINGS,
            Some(APPROVER),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (method, path, key, status, error) in cases {
        let (got, _, body) = call(&f.admin, method, path, *key, bad).await;
        assert_eq!(got, *status, "{method} {path} {key:?}");
        assert_eq!(body["error"], *error, "{method} {path} {key:?}");
    }
    let (_, _, body) = call(&f.admin, "PUT", SETTINGS, Some(APPROVER), bad).await;
    assert_eq!(body["field"], "body");
    let good = r#"{"require_authentication": true}"#;
    let (status, _, doc) = call(&f.admin, "PUT", SETTINGS, Some(APPROVER), good).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["require_authentication"], true);
}

#[tokio::test]
async fn the_role_is_checked_before_the_tenant_name_and_if_match() {
    let f = fixture().await;
    let path = "/admin/v1/tenants/a%2Fb/token";
    let (status, _, _) = call(&f.admin, "POST", path, Some(VIEWER), "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = call(&f.admin, "POST", path, Some(APPROVER), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "tenant");
    let mut req = request("DELETE", TOKEN, Some(VIEWER), Full::new(Bytes::new()));
    req.headers_mut()
        .insert(header::IF_MATCH, "nonsense".parse().unwrap());
    assert_eq!(f.admin.serve(req).await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_key_is_checked_before_the_body_is_read() {
    let f = fixture().await;
    for (method, path, key, status) in [
        ("PUT", SETTINGS, None, StatusCode::UNAUTHORIZED),
        ("PUT", SETTINGS, Some(VIEWER), StatusCode::FORBIDDEN),
        ("POST", TOKEN, None, StatusCode::UNAUTHORIZED),
        ("POST", TOKEN, Some(VIEWER), StatusCode::FORBIDDEN),
        ("GET", TOKEN, Some(APPROVER), StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let response = f.admin.serve(request(method, path, key, Unread)).await;
        assert_eq!(response.status(), status, "{method} {path} {key:?}");
    }
}

#[tokio::test]
async fn every_route_answers_exactly_the_methods_its_allow_header_names() {
    let f = fixture().await;
    let all = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"];
    for route in ROUTES {
        let path = route
            .path
            .replace("{tenant}", "acme")
            .replace("{*asset}", "app.js");
        let listed: Vec<&str> = route.methods.iter().map(|(m, _)| m.as_str()).collect();
        for method in all {
            let (status, headers, _) = call(&f.admin, method, &path, Some(APPROVER), "").await;
            let what = format!("{method} {path}: {status}");
            if listed.contains(&method) {
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
                assert_ne!(status, StatusCode::NOT_FOUND, "{what}");
            } else {
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
                assert_eq!(headers[header::ALLOW], listed.join(", "), "{what}");
            }
        }
    }
}

#[tokio::test]
async fn allow_headers_name_what_each_kind_of_route_takes() {
    let f = fixture().await;
    for (method, path, allow) in [
        ("POST", "/healthz", "GET, HEAD"),
        ("POST", "/admin/", "GET, HEAD"),
        ("DELETE", "/admin/ui/", "GET, HEAD"),
        ("GET", SETTINGS, "PUT"),
        ("GET", TOKEN, "POST, DELETE"),
        ("GET", "/admin/v1/reload-tls", "POST"),
        ("PUT", "/admin/v1/tenants/acme", "GET, HEAD"),
    ] {
        let (status, headers, _) = call(&f.admin, method, path, None, "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(headers[header::ALLOW], allow, "{method} {path}");
    }
    let (status, headers, _) = call(&f.admin, "GET", "/nothing", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(headers.get(header::ALLOW).is_none(), "no Allow on a 404");
}

#[tokio::test]
async fn every_answer_carries_the_browser_security_headers() {
    let f = fixture().await;
    for (method, path, key) in [
        ("GET", "/healthz", None),
        ("GET", "/nothing", None),
        ("POST", "/healthz", None),
        ("GET", "/admin/v1/tenants", None),
        ("GET", "/admin/v1/tenants", Some(VIEWER)),
    ] {
        let (_, headers, _) = call(&f.admin, method, path, key, "").await;
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{method} {path}");
        assert!(
            headers.contains_key(header::CONTENT_SECURITY_POLICY),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn the_file_store_reports_its_backend_only() {
    let f = fixture().await;
    let (status, _, doc) = call(&f.admin, "GET", "/admin/v1/cluster", Some(VIEWER), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc, serde_json::json!({ "backend": "file" }));
}

#[tokio::test]
async fn the_openapi_document_is_served_as_committed_to_a_viewer() {
    let f = fixture().await;
    let path = "/admin/v1/openapi.json";
    let (status, headers, _) = call(&f.admin, "GET", path, None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    let response = f
        .admin
        .serve(request("GET", path, Some(VIEWER), Full::new(Bytes::new())))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let committed = include_str!("../../openapi/admin.json");
    assert_eq!(bytes, committed.as_bytes());
}

/// Every documented operation answers a missing key as its role says: 401 where it
/// names one, never 401 where it names none; and a viewer key gets 403 exactly on
/// the approver operations.
#[tokio::test]
async fn every_operation_needs_the_role_the_document_names() {
    let f = fixture().await;
    let doc: Value = serde_json::from_str(super::openapi::DOCUMENT).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{tenant}", "acme")
            .replace("{asset}", "app.js");
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_ascii_uppercase();
            let role = op["x-authgate-role"].as_str();
            let what = format!("{method} {path} ({role:?})");
            let (status, _, _) = call(&f.admin, &method, &concrete, None, "").await;
            assert_eq!(status == StatusCode::UNAUTHORIZED, role.is_some(), "{what}");
            let (status, _, _) = call(&f.admin, &method, &concrete, Some(VIEWER), "").await;
            assert_eq!(
                status == StatusCode::FORBIDDEN,
                role == Some("approver"),
                "{what}"
            );
        }
    }
}
