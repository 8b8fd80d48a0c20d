//! Live config reload through the real binary: SIGHUP and `POST /admin/v1/reload`.
//! Admin keys, protected routes and the upstream change at once; a broken file or a
//! key that needs a restart changes nothing; traffic flows through reloads without a
//! failed request; reloads do not grow the process.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Request, StatusCode};
use serde_json::Value;
use support::process::{await_listening, signal, terminate_and_wait};
use support::*;

/// A running `authgate serve` and the file it reloads.
struct Running {
    child: Child,
    proxy: String,
    admin: String,
    config: PathBuf,
    upstream: SocketAddr,
    _dir: tempfile::TempDir,
}

/// The config file: both listeners on port 0, `upstream`, the test admin keys, then
/// `extra`.
fn text(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nupstream: {{ url: \"http://{upstream}\" }}\nstate: {{ path: state.json }}\n{}{extra}",
        admin_yaml()
    )
}

impl Running {
    fn start(upstream: SocketAddr, extra: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("authgate.yaml");
        std::fs::write(&config, text(upstream, extra)).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_authgate"))
            .args(["serve", "-c"])
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let listening = await_listening(&mut child, "gateway");
        Running {
            child,
            proxy: listening.proxy,
            admin: listening.admin,
            config,
            upstream,
            _dir: dir,
        }
    }

    /// Rewrites the config file: the listeners, upstream and admin keys as at start,
    /// then `extra`.
    fn rewrite(&self, extra: &str) {
        std::fs::write(&self.config, text(self.upstream, extra)).unwrap();
    }

    fn write_whole(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    async fn call(&self, method: &str, path: &str, key: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin));
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let req = req.body(full("")).unwrap();
        let response = within("admin call", client().request(req)).await.unwrap();
        let status = response.status();
        let bytes = body_bytes(response).await;
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }

    async fn reload(&self) -> (StatusCode, Value) {
        self.call("POST", "/admin/v1/reload", Some(&keys().approver))
            .await
    }

    /// The config revision `/admin/v1/whoami` reports.
    async fn revision(&self) -> u64 {
        let (status, doc) = self
            .call("GET", "/admin/v1/whoami", Some(&keys().viewer))
            .await;
        assert_eq!(status, StatusCode::OK, "{doc}");
        doc["config"]["revision"].as_u64().unwrap()
    }

    /// SIGHUP, then waits until the reload it started has been applied.
    async fn sighup_and_wait(&self, revision: u64) {
        signal(&self.child, "-HUP");
        within("the SIGHUP reload", async {
            while self.revision().await < revision {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }

    async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.admin);
        let response = within("metrics", client().get(url.parse().unwrap()))
            .await
            .unwrap();
        String::from_utf8(body_bytes(response).await.to_vec()).unwrap()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn stop(self) {
        assert!(terminate_and_wait(self.child).success());
    }
}

async fn ok_upstream(name: &'static str) -> Upstream {
    Upstream::start(move |_req| async move { http::Response::new(full(name)) }).await
}

fn new_key() -> String {
    authgate::auth::token::generate(authgate::auth::token::ADMIN_KEY_PREFIX)
        .unwrap()
        .value
}

fn key_entry(name: &str, role: &str, key: &str) -> String {
    let digest = authgate::auth::token::Digest::of(key).to_hex();
    format!("    - {{ name: {name}, role: {role}, sha256: \"{digest}\" }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_or_changed_admin_key_is_refused_on_the_very_next_call() {
    let upstream = ok_upstream("up").await;
    let (ci, deploy) = (new_key(), new_key());
    // Two more approvers, in the same `admin.keys` list as the test keys.
    let both = key_entry("ci", "approver", &ci) + &key_entry("deploy", "approver", &deploy);
    let gw = Running::start(upstream.addr, &both);
    let whoami = |key: &str| {
        let key = key.to_string();
        let gw = &gw;
        async move { gw.call("GET", "/admin/v1/whoami", Some(&key)).await.0 }
    };
    for key in [&ci, &deploy, &keys().approver, &keys().viewer] {
        assert_eq!(whoami(key).await, StatusCode::OK);
    }

    // `ci` removed from the file, SIGHUP: refused from the next call on.
    gw.rewrite(&key_entry("deploy", "approver", &deploy));
    gw.sighup_and_wait(2).await;
    assert_eq!(whoami(&ci).await, StatusCode::UNAUTHORIZED);
    let (status, _) = gw
        .call("POST", "/admin/v1/tenants/acme/token", Some(&ci))
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "nor may it change anything"
    );
    for key in [&deploy, &keys().approver, &keys().viewer] {
        assert_eq!(
            whoami(key).await,
            StatusCode::OK,
            "the other keys still work"
        );
    }

    // `deploy` given a new key through the API: the old one is dead when it answers.
    let replacement = new_key();
    gw.rewrite(&key_entry("deploy", "approver", &replacement));
    let (status, answer) = gw.reload().await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["revision"], 3);
    assert_eq!(whoami(&deploy).await, StatusCode::UNAUTHORIZED);
    assert_eq!(whoami(&replacement).await, StatusCode::OK);

    let metrics = gw.metrics().await;
    assert_eq!(
        sample(&metrics, r#"authgate_config_reloads_total{result="ok"}"#),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "authgate_config_revision"), Some(3.0));
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_protected_route_is_enforced_after_reload() {
    let upstream = ok_upstream("profile").await;
    let gw = Running::start(upstream.addr, "");
    let body = r#"{"require_authentication": true}"#;
    let req = Request::put(format!(
        "http://{}/admin/v1/tenants/acme/settings",
        gw.admin
    ))
    .header("authorization", format!("Bearer {}", keys().approver))
    .body(full(body))
    .unwrap();
    let response = within("settings", client().request(req)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let fetch = || async {
        let url = format!("http://{}/rest/v1/profiles/42?client=acme", gw.proxy);
        within("fetch", client().get(url.parse().unwrap()))
            .await
            .unwrap()
            .status()
    };
    assert_eq!(fetch().await, StatusCode::OK, "not protected yet");

    gw.rewrite(
        "protected_routes:\n  - { path: \"/m2/{client}/v2/profile/batchUpdate\" }\n  - { path: \"/rest/v1/profiles/{id}\" }\n",
    );
    let (status, answer) = gw.reload().await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(fetch().await, StatusCode::UNAUTHORIZED, "protected now");
    let (whoami_status, doc) = gw
        .call("GET", "/admin/v1/whoami", Some(&keys().viewer))
        .await;
    assert_eq!(whoami_status, StatusCode::OK);
    assert_eq!(doc["config"]["sha256"], answer["sha256"]);
    let on_disk = std::fs::read(&gw.config).unwrap();
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&on_disk))
    };
    assert_eq!(doc["config"]["sha256"], digest.as_str());
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_changes_nothing_and_names_every_problem() {
    let upstream = ok_upstream("up").await;
    let ci = new_key();
    let mut gw = Running::start(upstream.addr, &key_entry("ci", "approver", &ci));
    let (_, before) = gw
        .call("GET", "/admin/v1/whoami", Some(&keys().viewer))
        .await;

    // Three problems, and a key removal that must not happen either.
    let broken = format!(
        "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nupstream: {{ url: \"not a url\" }}\ntokens: {{ default_ttl: forever }}\nlimits:\n  max_conections: 5\n{}",
        admin_yaml()
    );
    gw.write_whole(&broken);
    let (status, answer) = gw.reload().await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"], "config_refused");
    let problems: Vec<&str> = answer["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    for (key, line) in [
        ("upstream.url", 2),
        ("tokens.default_ttl", 3),
        ("limits.max_conections", 5),
    ] {
        let want = format!("line {line}: {key}");
        assert!(
            problems.iter().any(|p| p.starts_with(&want)),
            "{want} in {problems:?}"
        );
    }

    // SIGHUP with the same file: refused too, the process stays up.
    signal(&gw.child, "-HUP");
    within("the refused SIGHUP reload", async {
        loop {
            let metrics = gw.metrics().await;
            let refused = sample(
                &metrics,
                r#"authgate_config_reloads_total{result="refused"}"#,
            );
            if refused == Some(2.0) {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(gw.alive());
    // The old config still serves: the proxy, the removed key, the same revision.
    let url = format!("http://{}/anything", gw.proxy);
    let response = within("proxy", client().get(url.parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, after) = gw.call("GET", "/admin/v1/whoami", Some(&ci)).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["config"], before["config"]);
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_change_is_refused_by_name_as_needing_a_restart() {
    let upstream = ok_upstream("up").await;
    let ci = new_key();
    let gw = Running::start(upstream.addr, &key_entry("ci", "approver", &ci));
    // The proxy moved, and `ci` removed in the same edit: neither applies.
    let moved = text(upstream.addr, "").replace("proxy: \"127.0.0.1:0\"", "proxy: \"127.0.0.1:1\"");
    gw.write_whole(&moved);
    let (status, answer) = gw.reload().await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let problems = answer["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{answer}");
    let problem = problems[0].as_str().unwrap();
    assert!(
        problem.starts_with("line 1: listen.proxy:") && problem.contains("needs a restart"),
        "{problem}"
    );
    let (status, _) = gw.call("GET", "/admin/v1/whoami", Some(&ci)).await;
    assert_eq!(status, StatusCode::OK, "nothing changed");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request_and_switch_the_upstream() {
    let hits = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let counted = |name: &'static str, hits: Arc<AtomicUsize>| {
        Upstream::start(move |_req| {
            hits.fetch_add(1, Ordering::Relaxed);
            async move { http::Response::new(full(name)) }
        })
    };
    let one = counted("one", hits[0].clone()).await;
    let two = counted("two", hits[1].clone()).await;
    let gw = Running::start(one.addr, "");
    let stop = Arc::new(AtomicBool::new(false));
    let one_or_two = |body: &bytes::Bytes| body.as_ref() == b"one" || body.as_ref() == b"two";
    let path = "/m2/acme/profile/update?mbox3rdPartyId=1";
    let tasks = load::clients(&gw.proxy, path, stop.clone(), one_or_two);

    for round in 0..20u64 {
        let upstream = if round % 2 == 0 { two.addr } else { one.addr };
        let limits = format!("limits: {{ idle_timeout: {}s }}\n", 30 + round);
        gw.write_whole(&text(upstream, &limits));
        if round % 2 == 0 {
            let (status, answer) = gw.reload().await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        } else {
            gw.sighup_and_wait(round + 2).await;
        }
        // New requests go to the new upstream: wait until it has served some.
        let before = hits[usize::from(upstream == two.addr)].load(Ordering::Relaxed);
        within("traffic on the new upstream", async {
            while hits[usize::from(upstream == two.addr)].load(Ordering::Relaxed) < before + 20 {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let (total, retried) = load::settle(tasks).await;
    // A reload closes no connection.
    assert_eq!(retried, 0);
    assert!(total > 200, "the clients kept sending ({total})");
    eprintln!("{total} requests across 20 reloads, none failed");
    gw.stop();
}

/// The process's resident set, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_leave_the_resident_set_flat() {
    let one = ok_upstream("one").await;
    let two = ok_upstream("two").await;
    // A large config (2,000 protected routes), so that a value kept alive per reload
    // (a leaked route table, pool or task) would show in the resident set.
    let routes: String = (0..2000)
        .map(|i| format!("  - {{ path: \"/m2/{{client}}/r{i}/profile/batchUpdate\" }}\n"))
        .collect();
    let extra = format!("protected_routes:\n{routes}");
    let gw = Running::start(one.addr, &extra);
    let pid = gw.child.id();
    let round = |i: usize| {
        let upstream = if i % 2 == 0 { two.addr } else { one.addr };
        gw.write_whole(&text(upstream, &extra));
        let gw = &gw;
        async move {
            let (status, answer) = gw.reload().await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            let url = format!("http://{}/m2/acme/r7/profile/batchUpdate", gw.proxy);
            let response = within("proxy", client().get(url.parse().unwrap()))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    };
    // Warm-up: allocator arenas and pools reach their working size.
    for i in 0..10 {
        round(i).await;
    }
    let before = rss_kib(pid);
    for i in 0..50 {
        round(i).await;
    }
    let after = rss_kib(pid);
    let revision = gw.revision().await;
    assert_eq!(revision, 61);
    assert!(
        after <= before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 50 reloads"
    );
    eprintln!("RSS over 50 reloads: {before} KiB → {after} KiB");
    gw.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_the_same_state_file_refuses_to_start() {
    let upstream = ok_upstream("up").await;
    let gw = Running::start(upstream.addr, "");
    let second = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["serve", "-c"])
        .arg(&gw.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(
        err.contains("another authgate process holds") && err.contains("state.json.lock"),
        "{err}"
    );
    // The first one still serves.
    let (status, _) = gw
        .call("GET", "/admin/v1/whoami", Some(&keys().viewer))
        .await;
    assert_eq!(status, StatusCode::OK);
    gw.stop();
}
