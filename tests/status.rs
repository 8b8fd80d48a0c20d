//! The status listener (`listen.status`) and `authgate probe`, through the real binary:
//! the probes answer in plain HTTP without an admin key or a client certificate, while
//! the admin listener (with `tls.admin.client_ca`) still demands both.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;

use http::{Request, StatusCode};
use support::process::{await_listening, terminate_and_wait};
use support::tls::*;
use support::*;

/// `authgate probe URL`: its exit success and what it printed.
fn probe(url: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["probe", url, "--timeout", "5s"])
        .output()
        .unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), printed)
}

fn serve(config: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["serve", "-c"])
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_without_a_client_certificate_while_the_admin_api_demands_one() {
    let server_ca = TestCa::new("admin server CA");
    let admins_ca = TestCa::new("admins CA");
    let dir = Arc::new(tempfile::tempdir().unwrap());
    server_ca
        .leaf("admin", &["localhost"])
        .write(dir.path(), "admin");
    std::fs::write(dir.path().join("admins-ca.pem"), admins_ca.pem()).unwrap();
    let config = support::process::write_config(
        dir.path(),
        dead_address().await,
        &format!(
            "tls:\n  admin: {{ cert: admin.pem, key: admin.key, client_ca: admins-ca.pem }}\n{}",
            admin_yaml()
        ),
    );
    // listen.status goes into the `listen:` line write_config wrote.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "admin: \"127.0.0.1:0\" }",
        "admin: \"127.0.0.1:0\", status: \"127.0.0.1:0\" }",
    );
    std::fs::write(&config, text).unwrap();
    let mut child = serve(&config);
    let listening = await_listening(&mut child, "gateway");
    let status = listening.status.expect("the status listener is on");
    let admin: SocketAddr = listening.admin.parse().unwrap();

    let (ok, printed) = probe(&format!("http://{status}/healthz"));
    assert!(ok, "{printed}");
    assert!(printed.contains("200 OK"), "{printed}");
    let (ok, printed) = probe(&format!("http://{status}/readyz"));
    assert!(ok && printed.contains("200"), "{printed}");
    let metrics = reqwest_text(&format!("http://{status}/metrics")).await;
    assert!(metrics.contains("authgate_"), "{metrics}");

    // Only the probes: the admin API is not reachable through the status listener, with
    // or without a key.
    let (ok, printed) = probe(&format!("http://{status}/admin/v1/tenants"));
    assert!(!ok && printed.contains("404"), "{printed}");
    let req = Request::get(format!("http://{status}/admin/v1/tenants"))
        .header("authorization", format!("Bearer {}", keys().approver))
        .body(full(""))
        .unwrap();
    let response = within("a status answer", client().request(req))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // The admin listener still refuses a client without a certificate, probes included.
    for path in ["/healthz", "/admin/v1/tenants"] {
        let config = client_config(&server_ca, &["http/1.1"], None);
        let req = Request::get(path).body(full("")).unwrap();
        assert!(
            https_request(admin, config, req).await.is_err(),
            "{path}: the handshake must be refused without a client certificate"
        );
    }
    let ops = admins_ca.leaf("ops", &["ops"]);
    let with_cert = client_config(&server_ca, &["http/1.1"], Some(&ops));
    let req = Request::get("/admin/v1/tenants").body(full("")).unwrap();
    let ex = https_request(admin, with_cert, req).await.unwrap();
    assert_eq!(
        ex.response.status(),
        StatusCode::UNAUTHORIZED,
        "key still needed"
    );

    assert!(terminate_and_wait(child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_can_leave_the_probes_to_the_status_listener() {
    let dir = tempfile::tempdir().unwrap();
    let config = support::process::write_config(dir.path(), dead_address().await, &admin_yaml());
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "admin: \"127.0.0.1:0\" }",
        "admin: \"127.0.0.1:0\", status: \"127.0.0.1:0\", admin_probes: false }",
    );
    std::fs::write(&config, text).unwrap();
    let mut child = serve(&config);
    let listening = await_listening(&mut child, "gateway");
    let status = listening.status.unwrap();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (ok, printed) = probe(&format!("http://{}{path}", listening.admin));
        assert!(!ok && printed.contains("404"), "admin {path}: {printed}");
        let (ok, printed) = probe(&format!("http://{status}{path}"));
        assert!(ok && printed.contains("200"), "status {path}: {printed}");
    }
    // The admin API itself is unchanged.
    let req = Request::get(format!("http://{}/admin/v1/tenants", listening.admin))
        .header("authorization", format!("Bearer {}", keys().viewer))
        .body(full(""))
        .unwrap();
    let response = within("an admin answer", client().request(req))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(terminate_and_wait(child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_fails_on_a_non_2xx_answer_and_on_no_answer() {
    let upstream = Upstream::start(|_req| async {
        http::Response::builder()
            .status(503)
            .body(full("draining"))
            .unwrap()
    })
    .await;
    let (ok, printed) = probe(&format!("http://{}/readyz", upstream.addr));
    assert!(!ok && printed.contains("503"), "{printed}");
    let (ok, printed) = probe(&format!("http://{}/readyz", dead_address().await));
    assert!(!ok && printed.contains("cannot connect"), "{printed}");
    let (ok, printed) = probe("https://localhost/readyz");
    assert!(!ok && printed.contains("not an http:// URL"), "{printed}");
}

async fn reqwest_text(url: &str) -> String {
    let req = Request::get(url).body(full("")).unwrap();
    let response = within("an answer", client().request(req)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    String::from_utf8(body.to_bytes().to_vec()).unwrap()
}
