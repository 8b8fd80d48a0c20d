//! TLS through the real `authgate` binary: the log line naming an upstream TLS error,
//! SIGHUP reloading the certificates of a running process, and `authgate check` on
//! certificate files. Certificates are made here with rcgen.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use http::{Request, Response, StatusCode};
use support::process::*;
use support::tls::*;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

fn get(path: &str) -> Request<TestBody> {
    Request::get(path).body(full("")).unwrap()
}

/// A running `authgate serve`; killed if the test fails before stopping it, so no
/// process outlives the test.
struct Running(Option<Child>);

impl Running {
    fn take(mut self) -> Child {
        self.0.take().expect("still running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `authgate serve` on `config` (in `dir`), returning it, its stderr lines and the
/// proxy address it reports.
fn serve(dir: &std::path::Path, config: &str) -> (Running, mpsc::Receiver<String>, SocketAddr) {
    let file = dir.join("authgate.yaml");
    std::fs::write(&file, config).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "-c", file.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let child = Running(Some(child));
    let line = wait_for_line(&stderr, "listening");
    let proxy = value_after(&line, "proxy=").parse().unwrap();
    (child, stderr, proxy)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_names_the_upstream_tls_error() {
    let backend_ca = TestCa::new("backend CA");
    let leaf = backend_ca.leaf("profiles", &["profiles.internal"]);
    let upstream = Upstream::start_tls(server_config(&leaf, None), |_req| async {
        Response::new(full("must not be reached"))
    })
    .await;
    let cases = [
        (
            TestCa::new("some other CA").pem(),
            "profiles.internal",
            "UnknownIssuer",
        ),
        (backend_ca.pem(), "billing.internal", "not valid for name"),
    ];
    for (ca, name, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
        let config = format!(
            "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nupstream:\n  url: \"https://{}\"\n  tls: {{ ca: ca.pem, server_name: {name} }}\n",
            upstream.addr
        );
        let (child, stderr, proxy) = serve(dir.path(), &config);
        let response = within(
            "GET",
            client().get(format!("http://{proxy}/p").parse().unwrap()),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{reason}");
        let line = wait_for_line(&stderr, "upstream TLS failed");
        assert!(
            line.contains("invalid peer certificate") && line.contains(reason),
            "{line}"
        );
        let status = tokio::task::spawn_blocking(move || terminate_and_wait(child.take()))
            .await
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificates_of_the_running_binary() {
    let upstream = Upstream::start(|_req| async { Response::new(full("ok")) }).await;
    let ca = TestCa::new("gateway CA");
    let first = ca.leaf("gateway, generation 1", &["localhost"]);
    let second = ca.leaf("gateway, generation 2", &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    first.write(dir.path(), "gateway");
    let config = format!(
        "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nupstream: {{ url: \"http://{}\" }}\ntls:\n  proxy: {{ cert: gateway.pem, key: gateway.key }}\n",
        upstream.addr
    );
    let (child, stderr, proxy) = serve(dir.path(), &config);
    let client_tls = client_config(&ca, &["h2"], None);
    let ex = https_request(proxy, client_tls.clone(), get("/x"))
        .await
        .unwrap();
    assert_eq!(ex.server_cert, first.der);

    second.write(dir.path(), "gateway");
    signal(child.0.as_ref().unwrap(), "-HUP");
    wait_for_line(&stderr, "TLS certificate reloaded");
    let ex = https_request(proxy, client_tls.clone(), get("/x"))
        .await
        .unwrap();
    assert_eq!(ex.server_cert, second.der);
    assert_eq!(ex.response.status(), StatusCode::OK);

    std::fs::write(dir.path().join("gateway.key"), "").unwrap();
    signal(child.0.as_ref().unwrap(), "-HUP");
    // SIGHUP reloads the whole config: a broken key file refuses all of it.
    let line = wait_for_line(&stderr, "config reload refused");
    assert!(
        line.contains("tls.proxy.key") && line.contains("no private key found"),
        "{line}"
    );
    let ex = https_request(proxy, client_tls, get("/x")).await.unwrap();
    assert_eq!(ex.server_cert, second.der, "the previous certificate stays");

    let status = tokio::task::spawn_blocking(move || terminate_and_wait(child.take()))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn check_validates_the_certificate_files() {
    let ca = TestCa::new("gateway CA");
    let dir = tempfile::tempdir().unwrap();
    ca.leaf_for_days("soon", &["localhost"], 10)
        .write(dir.path(), "soon");
    ca.leaf("other", &["localhost"]).write(dir.path(), "other");
    let file = dir.path().join("authgate.yaml");
    let check = |text: &str| {
        std::fs::write(&file, text).unwrap();
        Command::new(BIN)
            .args(["check", "-c", file.to_str().unwrap()])
            .output()
            .unwrap()
    };

    let out = check(
        "upstream: { url: \"http://a\" }\ntls:\n  proxy: { cert: soon.pem, key: soon.key }\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: line 3: tls.proxy.cert: ") && err.contains("expires in 9 day(s)"),
        "{err}"
    );

    let out = check(
        "upstream:\n  url: \"https://backend\"\n  tls: { ca: nowhere.pem }\ntls:\n  proxy: { cert: soon.pem, key: other.key }\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(
        err.contains("line 3: upstream.tls.ca: cannot read "),
        "{err}"
    );
    assert!(
        err.contains("line 5: tls.proxy.key: ") && err.contains("is not the private key"),
        "{err}"
    );
}
