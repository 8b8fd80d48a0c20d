//! The real `authgate` binary: `check`, `serve` with SIGTERM, and the `demo` walkthrough.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::process::*;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

fn authgate(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run authgate")
}

#[test]
fn check_accepts_the_example_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
    let out = authgate(&["check", "-c", example.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_names_every_problem_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "upstream:\n  url: \"not a url\"\n  request_timeout: forever\nlimits:\n  max_conections: 5\n",
    )
    .unwrap();
    let out = authgate(&["check", "-c", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2: upstream.url"), "{err}");
    assert!(
        err.contains("line 3: upstream.request_timeout: `forever`"),
        "{err}"
    );
    assert!(
        err.contains("line 5: limits.max_conections: unknown key"),
        "{err}"
    );
    assert!(err.contains("3 problem(s)"), "{err}");
}

#[test]
fn check_reports_a_missing_file() {
    let out = authgate(&["check", "-c", "/nonexistent/authgate.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/authgate.yaml"));
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_proxies_and_exits_zero_on_sigterm() {
    let upstream =
        Upstream::start(|_req| async { http::Response::new(full("from upstream")) }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), upstream.addr, "");
    let mut child = Command::new(BIN)
        .args(["serve", "-c", config.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let line = wait_for_line(&stderr, "listening");
    let proxy = value_after(&line, "proxy=").to_string();
    let admin = value_after(&line, "admin=").to_string();

    let response = within(
        "GET",
        client().get(format!("http://{proxy}/p").parse().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(body_bytes(response).await, "from upstream");
    let ready = within(
        "readyz",
        client().get(format!("http://{admin}/readyz").parse().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(ready.status(), 200);

    let status = tokio::task::spawn_blocking(move || terminate_and_wait(child))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    wait_for_line(&stderr, "stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_walkthrough_commands_succeed() {
    if !have_tool("curl", "--version") {
        return;
    }
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--proxy",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    wait_for_line(&stdout, "Try it");
    // The walkthrough: indented lines up to the blank line, run as one bash script.
    let mut script = String::from("set -euo pipefail\n");
    loop {
        let line = stdout.recv_timeout(PATIENCE).expect("demo output");
        if line.trim().is_empty() {
            break;
        }
        script.push_str(line.trim_start());
        script.push('\n');
    }
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash").args(["-c", &script]).output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = [
        "<success>true</success>",
        "\"require_authentication\":true",
        "HTTP/1.1 401",
        "token: authgate_tk_",
        "<success>true</success>",
        "<status>complete</status>",
        "\"color\":\"green\"",
        "401 with the old token",
        "\"fingerprint\":\"sha256:",
        "ready",
        "authgate_auth_decisions_total{",
    ];
    let mut rest = text.as_ref();
    for marker in expected {
        let at = rest
            .find(marker)
            .unwrap_or_else(|| panic!("{marker:?} missing, in order, from:\n{text}"));
        rest = &rest[at + marker.len()..];
    }
    let status = tokio::task::spawn_blocking(move || terminate_and_wait(child))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = authgate(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("frobnicate"));
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_never_contain_a_token_or_an_admin_key() {
    let upstream = Upstream::start(|_req| async { http::Response::new(full("ok")) }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), upstream.addr, &admin_yaml());
    let mut child = Command::new(BIN)
        .args(["serve", "-c", config.to_str().unwrap()])
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let line = wait_for_line(&stderr, "listening");
    let proxy = value_after(&line, "proxy=").to_string();
    let admin = value_after(&line, "admin=").to_string();
    let admin_call = |method: &str, path: &str, key: &str, body: &str| {
        http::Request::builder()
            .method(method)
            .uri(format!("http://{admin}{path}"))
            .header("authorization", format!("Bearer {key}"))
            .body(full(body.to_string()))
            .unwrap()
    };
    let c = client();
    let on = admin_call(
        "PUT",
        "/admin/v1/tenants/acme/settings",
        &keys().approver,
        r#"{"require_authentication":true}"#,
    );
    assert_eq!(within("PUT", c.request(on)).await.unwrap().status(), 200);
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let generate = admin_call("POST", "/admin/v1/tenants/acme/token", &keys().approver, "");
        let body = body_bytes(within("POST", c.request(generate)).await.unwrap()).await;
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        tokens.push(json["token"].as_str().unwrap().to_string());
    }
    // Uses of current, dead, malformed and query-string tokens, and a viewer's refused write.
    let batch = format!("http://{proxy}/m2/acme/v2/profile/batchUpdate");
    for auth in [&tokens[1], &tokens[0], &format!("{},x", tokens[1])] {
        let req = http::Request::post(&batch)
            .header("authorization", format!("Bearer {auth}"))
            .body(full(""))
            .unwrap();
        within("POST", c.request(req)).await.unwrap();
    }
    let req = http::Request::post(format!("{batch}?access_token={}", tokens[1]))
        .body(full(""))
        .unwrap();
    within("POST", c.request(req)).await.unwrap();
    let denied = admin_call("DELETE", "/admin/v1/tenants/acme/token", &keys().viewer, "");
    assert_eq!(
        within("DELETE", c.request(denied)).await.unwrap().status(),
        403
    );

    let status = tokio::task::spawn_blocking(move || terminate_and_wait(child))
        .await
        .unwrap();
    assert!(status.success());
    let log: Vec<String> = stderr.try_iter().collect();
    let log = log.join("\n");
    for secret in tokens.iter().chain([&keys().approver, &keys().viewer]) {
        assert!(
            !log.contains(secret.as_str()),
            "a secret reached the log:\n{log}"
        );
        // Not even the random part without its prefix.
        assert!(
            !log.contains(&secret[12..]),
            "a secret reached the log:\n{log}"
        );
    }
    assert!(
        log.contains("request refused"),
        "rejections are logged (without secrets):\n{log}"
    );
    let audits: Vec<&str> = log.lines().filter(|l| l.contains("audit")).collect();
    assert!(
        audits
            .iter()
            .any(|l| l.contains("actor=\"ops\"") || l.contains("actor=ops")),
        "{log}"
    );
    assert!(
        audits
            .iter()
            .any(|l| l.contains("token_generated") && l.contains("new_token=\"sha256:")),
        "{log}"
    );
}
