//! Admin API calls as an operator would make them with curl.

use http::{Request, StatusCode};
use serde_json::Value;

use super::*;

/// A gateway for admin API tests: no upstream (nothing is proxied), token lifetimes of
/// one hour by default and two at most.
pub async fn gateway() -> Gateway {
    Gateway::start(
        dead_address().await,
        "tokens: { default_ttl: 1h, max_ttl: 2h }\n",
    )
    .await
}

/// One admin call; returns the status and the JSON body (`Null` when empty).
pub async fn call(
    gw: &Gateway,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(gw.admin_url(path));
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(full(body.unwrap_or("").to_string())).unwrap();
    let response = within("admin call", client().request(req)).await.unwrap();
    let status = response.status();
    let bytes = body_bytes(response).await;
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {bytes:?}"))
    };
    (status, json)
}

/// Turns `require_authentication` on or off for `tenant`.
pub async fn require(gw: &Gateway, tenant: &str, on: bool) {
    let body = format!("{{\"require_authentication\": {on}}}");
    let path = format!("/admin/v1/tenants/{tenant}/settings");
    let (status, doc) = call(gw, "PUT", &path, Some(&keys().approver), Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["require_authentication"], on);
}

/// Generates a token for `tenant` and returns it.
pub async fn generate(gw: &Gateway, tenant: &str, body: Option<&str>) -> String {
    let path = format!("/admin/v1/tenants/{tenant}/token");
    let (status, answer) = call(gw, "POST", &path, Some(&keys().approver), body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["token_type"], "Bearer");
    answer["token"].as_str().unwrap().to_string()
}

/// Reads `tenant`'s document with the viewer key.
pub async fn document(gw: &Gateway, tenant: &str) -> (StatusCode, Value) {
    let path = format!("/admin/v1/tenants/{tenant}");
    call(gw, "GET", &path, Some(&keys().viewer), None).await
}

/// Sets `tenant`'s mode (`off`, `report`, `on`); returns the tenant document.
pub async fn set_mode(gw: &Gateway, tenant: &str, mode: &str) -> Value {
    let body = format!("{{\"mode\": \"{mode}\"}}");
    let path = format!("/admin/v1/tenants/{tenant}/settings");
    let (status, doc) = call(gw, "PUT", &path, Some(&keys().approver), Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["mode"], mode);
    assert_eq!(doc["require_authentication"], mode == "on");
    doc
}

/// Generates a token for `tenant` with `body`; returns the whole 201 answer.
pub async fn rotate(gw: &Gateway, tenant: &str, body: &str) -> Value {
    let path = format!("/admin/v1/tenants/{tenant}/token");
    let (status, answer) = call(gw, "POST", &path, Some(&keys().approver), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer
}
