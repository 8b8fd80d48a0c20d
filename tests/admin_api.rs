//! Every error status of the admin API, roles, and durable state across restarts.

mod support;

use std::sync::Arc;

use http::StatusCode;
use support::admin::{call, document, gateway, generate, require};
use support::*;

const SETTINGS: &str = "/admin/v1/tenants/acme/settings";
const TOKEN: &str = "/admin/v1/tenants/acme/token";

#[tokio::test]
async fn a_missing_or_unknown_key_is_401() {
    let gw = gateway().await;
    let (status, body) = call(&gw, "GET", "/admin/v1/tenants", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");
    let fake = "authgate_ak_not-a-real-key";
    let (status, _) = call(
        &gw,
        "PUT",
        SETTINGS,
        Some(fake),
        Some(r#"{"require_authentication":true}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&gw, "POST", TOKEN, Some(&keys().approver[1..]), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a key differing in one byte"
    );
}

#[tokio::test]
async fn a_viewer_reads_but_cannot_change_anything() {
    let gw = gateway().await;
    let viewer = Some(keys().viewer.as_str());
    require(&gw, "acme", true).await;
    let (status, list) = call(&gw, "GET", "/admin/v1/tenants", viewer, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["tenants"][0]["tenant"], "acme");
    let (status, doc) = call(&gw, "GET", "/admin/v1/tenants/never-seen", viewer, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["require_authentication"], false);
    assert_eq!(doc["token"], serde_json::Value::Null);
    assert_eq!(doc["revision"], 0);

    let (status, body) = call(&gw, "POST", TOKEN, viewer, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a viewer trying to rotate");
    assert_eq!(body["error"], "forbidden");
    let (status, _) = call(&gw, "DELETE", TOKEN, viewer, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &gw,
        "PUT",
        SETTINGS,
        viewer,
        Some(r#"{"require_authentication":false}"#),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, doc) = call(&gw, "GET", "/admin/v1/tenants/acme", viewer, None).await;
    assert_eq!(doc["require_authentication"], true, "nothing changed");
    assert_eq!(doc["token"], serde_json::Value::Null);
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let gw = gateway().await;
    let key = Some(keys().approver.as_str());
    let (status, _) = call(&gw, "GET", "/admin/v1/nothing", key, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&gw, "GET", "/admin/v1/tenants/acme/other", key, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (method, path) in [
        ("GET", TOKEN),
        ("POST", SETTINGS),
        ("DELETE", "/admin/v1/tenants/acme"),
    ] {
        let (status, body) = call(&gw, method, path, key, None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(body["error"], "method_not_allowed");
    }
}

#[tokio::test]
async fn bad_bodies_are_400_naming_the_field() {
    let gw = gateway().await;
    let key = Some(keys().approver.as_str());
    let cases: &[(&str, &str, &str)] = &[
        ("PUT", "not json", "body"),
        ("PUT", "[]", "body"),
        ("PUT", "{}", "require_authentication"),
        (
            "PUT",
            r#"{"require_authentication":"yes"}"#,
            "require_authentication",
        ),
        (
            "PUT",
            r#"{"require_authentication":true,"extra":1}"#,
            "body",
        ),
        ("POST", r#"{"expires_in":0}"#, "expires_in"),
        ("POST", r#"{"expires_in":-5}"#, "expires_in"),
        ("POST", r#"{"expires_in":1.5}"#, "expires_in"),
        ("POST", r#"{"expires_in":7201.0}"#, "expires_in"),
        ("POST", r#"{"expires_in":1e300}"#, "expires_in"),
        ("POST", r#"{"expires_in":-0.0}"#, "expires_in"),
        ("POST", r#"{"expires_in":"60"}"#, "expires_in"),
        ("POST", r#"{"expires_in":7201}"#, "expires_in"),
        ("POST", r#"{"expires_in":60,"scope":"all"}"#, "body"),
    ];
    for (method, body, field) in cases {
        let path = if *method == "PUT" { SETTINGS } else { TOKEN };
        let (status, answer) = call(&gw, method, path, key, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["field"], *field, "{body} → {answer}");
        assert!(
            answer["message"].as_str().unwrap().starts_with(field),
            "{answer}"
        );
    }
    let (status, answer) = call(
        &gw,
        "PUT",
        "/admin/v1/tenants/a%2Fb/settings",
        key,
        Some(r#"{"require_authentication":true}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["field"], "tenant");
    // The cap is allowed, never clamped: exactly max_ttl works.
    let (status, answer) = call(&gw, "POST", TOKEN, key, Some(r#"{"expires_in":7200}"#)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(answer["expires_in"], 7200);
    // A whole number is one however JSON writes it (JSON Schema's `integer` agrees).
    for spelling in ["3600.0", "3.6e3", "36E2"] {
        let body = format!(r#"{{"expires_in":{spelling}}}"#);
        let (status, answer) = call(&gw, "POST", TOKEN, key, Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{body} → {answer}");
        assert_eq!(answer["expires_in"], 3600, "{body}");
    }
    let (_, list) = call(&gw, "GET", "/admin/v1/tenants", key, None).await;
    assert_eq!(
        list["tenants"].as_array().unwrap().len(),
        1,
        "failed calls stored nothing"
    );
}

/// An admin path is read as the proxy reads a path: `%7E` is `~` and `%41` is `A` (RFC
/// 3986 §6.2.2.2), so a client that escapes unreserved characters reaches the tenant
/// the proxy enforces for.
#[tokio::test]
async fn escaped_unreserved_characters_name_the_same_tenant_as_on_the_proxy() {
    let up = Upstream::start(|_r| async { http::Response::new(full("ok")) }).await;
    let gw = Gateway::start(up.addr, "").await;
    let key = Some(keys().approver.as_str());
    let body = Some(r#"{"require_authentication":true}"#);
    let (status, doc) = call(&gw, "PUT", "/admin/v1/tenants/a%7Eb/settings", key, body).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["tenant"], "a~b");
    let (status, doc) = call(&gw, "GET", "/admin/v1/tenants/%41%7eB", key, None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["tenant"], "a~b");
    assert_eq!(doc["require_authentication"], true);
    for path in [
        "/m2/a~b/v2/profile/batchUpdate",
        "/m2/a%7Eb/v2/profile/batchUpdate",
    ] {
        let tokenless = http::Request::post(gw.url(path)).body(full("")).unwrap();
        let response = within("POST", client().request(tokenless)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // Still refused: an escaped separator, and a path that cannot be normalised.
    let (status, doc) = call(&gw, "GET", "/admin/v1/tenants/a%2Fb", key, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(doc["field"], "tenant");
    let (status, doc) = call(&gw, "GET", "/admin/v1/tenants/a%00b", key, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(doc["error"], "invalid_request");
}

#[tokio::test]
async fn restart_keeps_settings_and_tokens() {
    let (up, _) = (
        Upstream::start(|_r| async { http::Response::new(full("ok")) }).await,
        (),
    );
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let gw = Gateway::start_in(dir.clone(), up.addr, "").await.unwrap();
    require(&gw, "acme", true).await;
    let token = generate(&gw, "acme", None).await;
    let (_, before) = document(&gw, "acme").await;
    gw.shutdown().await;

    let gw = Gateway::start_in(dir, up.addr, "").await.unwrap();
    let (_, after) = document(&gw, "acme").await;
    assert_eq!(before, after);
    let batch = gw.url("/m2/acme/v2/profile/batchUpdate");
    let ok = http::Request::post(&batch)
        .header("authorization", format!("Bearer {token}"))
        .body(full(""))
        .unwrap();
    assert_eq!(
        within("POST", client().request(ok)).await.unwrap().status(),
        StatusCode::OK
    );
    let none = http::Request::post(&batch).body(full("")).unwrap();
    assert_eq!(
        within("POST", client().request(none))
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_corrupt_state_file_stops_start_up() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let state = dir.path().join("data/state.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(
        &state,
        b"{\"version\": 1, \"revision\": 3, \"tenants\": {\"acme\": ",
    )
    .unwrap();
    let err = match Gateway::start_in(dir, dead_address().await, "").await {
        Ok(_) => panic!("started on a corrupt state file"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&state.display().to_string()), "{err}");
    assert!(err.contains("not a valid state file"), "{err}");
}

/// The state directory stops accepting writes (replaced by a file, which fails even for
/// root, unlike permission bits): the rotation answers 503 and the old token stays valid.
#[tokio::test]
async fn a_failed_state_write_answers_503_and_changes_nothing() {
    let up = Upstream::start(|_r| async { http::Response::new(full("ok")) }).await;
    let gw = Gateway::start(up.addr, "").await;
    require(&gw, "acme", true).await;
    let token = generate(&gw, "acme", None).await;
    let data = gw.dir.path().join("data");
    let saved = std::fs::read(data.join("state.json")).unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::write(&data, b"not a directory").unwrap();

    let (status, body) = call(&gw, "POST", TOKEN, Some(&keys().approver), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "state_unavailable");
    let (status, _) = call(&gw, "DELETE", TOKEN, Some(&keys().approver), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let batch = gw.url("/m2/acme/v2/profile/batchUpdate");
    let ok = http::Request::post(&batch)
        .header("authorization", format!("Bearer {token}"))
        .body(full(""))
        .unwrap();
    assert_eq!(
        within("POST", client().request(ok)).await.unwrap().status(),
        StatusCode::OK,
        "old token still valid"
    );
    let (_, doc) = document(&gw, "acme").await;
    assert_eq!(doc["revision"], 2, "in-memory state unchanged");

    // Once the directory is back, the next change succeeds on top of the old state.
    std::fs::remove_file(&data).unwrap();
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("state.json"), saved).unwrap();
    let (status, _) = call(&gw, "DELETE", TOKEN, Some(&keys().approver), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}
