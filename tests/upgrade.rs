//! Zero-downtime binary upgrade (SIGUSR2) through the real binary: load on kept-alive
//! and new connections, HTTP/1.1 and h2c, an upload in flight, and rotations across
//! ten upgrades in a row; a new process that fails to start (a broken config, or a
//! failure after it took the state) leaves the old one serving with its state; systemd
//! learns the new main PID.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use support::process::{lines, value_after, wait_for_line};
use support::*;

/// Unprotected: every replica forwards it whatever the state.
const PROFILE: &str = "/m2/acme/profile/update?mbox3rdPartyId=1";

/// `authgate serve` and the processes that replaced it by upgrades.
struct Upgrading {
    /// The first process (this test's child); later ones are its descendants, reaped
    /// by this test as their subreaper.
    first: Option<Child>,
    pid: u32,
    proxy: String,
    admin: String,
    config: PathBuf,
    upstream: std::net::SocketAddr,
    /// Every process's stderr (the new processes inherit the first one's).
    log: Arc<Mutex<mpsc::Receiver<String>>>,
    dir: tempfile::TempDir,
}

fn text(upstream: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nupstream: {{ url: \"http://{upstream}\" }}\nstate: {{ path: state.json }}\ntokens: {{ default_ttl: 1h }}\n{}{extra}",
        admin_yaml()
    )
}

impl Upgrading {
    fn start(upstream: std::net::SocketAddr, envs: &[(&str, &std::path::Path)]) -> Upgrading {
        Upgrading::start_text(upstream, &text(upstream, ""), envs)
    }

    /// Starts `authgate serve` on a config file holding `config`.
    fn start_text(
        upstream: std::net::SocketAddr,
        config_text: &str,
        envs: &[(&str, &std::path::Path)],
    ) -> Upgrading {
        // The processes an upgrade starts outlive their parent: be their reaper, so
        // each one's exit status can be read.
        rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("authgate.yaml");
        std::fs::write(&config, config_text).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_authgate"));
        command
            .args(["serve", "-c"])
            .arg(&config)
            .stderr(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let rx = lines(child.stderr.take().unwrap());
        let listening = wait_for_line(&rx, "listening");
        Upgrading {
            pid: child.id(),
            first: Some(child),
            proxy: value_after(&listening, "proxy=").to_string(),
            admin: value_after(&listening, "admin=").to_string(),
            config,
            upstream,
            log: Arc::new(Mutex::new(rx)),
            dir,
        }
    }

    /// The next log line (of any of the processes) containing `needle`.
    async fn line(&self, needle: &'static str) -> String {
        self.lines(&[needle]).await.remove(0)
    }

    /// The next log line containing each of `needles`, in whichever order the
    /// processes write them.
    async fn lines(&self, needles: &[&'static str]) -> Vec<String> {
        log_lines(&self.log, needles).await
    }

    /// SIGUSR2 to the serving process; returns once the new one serves and the old one
    /// has exited 0. `in_flight` runs between the old one's drain starting and its exit.
    async fn upgrade_with<F: std::future::Future<Output = ()>>(
        &mut self,
        in_flight: impl FnOnce(u32) -> F,
    ) {
        let old = self.pid;
        kill(old, "-USR2");
        let lines = self
            .lines(&[
                "upgrade: this process serves now",
                "this one stops accepting and drains",
            ])
            .await;
        self.pid = value_after(&lines[0], "pid=").parse().unwrap();
        assert_ne!(self.pid, old);
        in_flight(self.pid).await;
        let first = self.first.take();
        let status = tokio::task::spawn_blocking(move || match first {
            Some(mut child) => child.wait().unwrap().code(),
            None => exit_code(old),
        });
        let status = within("the old process to exit", status).await.unwrap();
        assert_eq!(status, Some(0), "the old process (pid {old}) exits 0");
    }

    async fn upgrade(&mut self) {
        self.upgrade_with(|_| async {}).await;
    }

    /// SIGTERM to the serving process, which exits 0.
    async fn stop(mut self) {
        kill(self.pid, "-TERM");
        let (first, pid) = (self.first.take(), std::mem::take(&mut self.pid));
        let status = tokio::task::spawn_blocking(move || match first {
            Some(mut child) => child.wait().unwrap().code(),
            None => exit_code(pid),
        });
        assert_eq!(within("exit", status).await.unwrap(), Some(0));
    }

    fn write_config(&self, extra: &str) {
        std::fs::write(&self.config, text(self.upstream, extra)).unwrap();
    }

    async fn admin(&self, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
        admin(&self.admin, method, path, body).await
    }

    async fn rotate(&self) -> (String, u64) {
        rotate(&self.admin).await
    }

    /// Tenant `acme` in mode `on`.
    async fn enforce(&self) {
        let (status, doc) = self
            .admin(
                "PUT",
                "/admin/v1/tenants/acme/settings",
                r#"{"mode": "on"}"#,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{doc}");
    }

    async fn revision(&self) -> u64 {
        let (status, doc) = self.admin("GET", "/admin/v1/tenants/acme", "").await;
        assert_eq!(status, StatusCode::OK, "{doc}");
        doc["revision"].as_u64().unwrap()
    }
}

/// An approver's admin call.
async fn admin(addr: &str, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {}", keys().approver))
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .unwrap();
    let response = within("admin call", client().request(req)).await.unwrap();
    let status = response.status();
    let bytes = body_bytes(response).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A rotation for `acme` as an operator's script makes it: again after a 503 with
/// `Retry-After` (nothing changed). The new token and its revision.
async fn rotate(addr: &str) -> (String, u64) {
    loop {
        let (status, answer) = admin(addr, "POST", "/admin/v1/tenants/acme/token", "{}").await;
        match status {
            StatusCode::CREATED => {
                return (
                    answer["token"].as_str().unwrap().to_string(),
                    answer["revision"].as_u64().unwrap(),
                )
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(
                    answer["message"].as_str().unwrap().contains("handing over"),
                    "{answer}"
                );
            }
            other => panic!("rotation: {other} {answer}"),
        }
    }
}

impl Drop for Upgrading {
    /// A failed test leaves no gateway behind.
    fn drop(&mut self) {
        if self.pid != 0 {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

/// The next log line containing each of `needles`, in whichever order the processes
/// write them.
async fn log_lines(
    log: &Arc<Mutex<mpsc::Receiver<String>>>,
    needles: &[&'static str],
) -> Vec<String> {
    let log = log.clone();
    let needles = needles.to_vec();
    let found = tokio::task::spawn_blocking(move || {
        let rx = log.lock().unwrap();
        let echo = std::env::var_os("AUTHGATE_TEST_LOGS").is_some();
        let mut found: Vec<Option<String>> = vec![None; needles.len()];
        while found.iter().any(Option::is_none) {
            let line = rx.recv_timeout(PATIENCE).map_err(|e| {
                format!("no line containing each of {needles:?} ({e}); found {found:?}")
            })?;
            if echo {
                eprintln!("[gateway] {line}");
            }
            if let Some(at) = needles
                .iter()
                .zip(&found)
                .position(|(needle, seen)| seen.is_none() && line.contains(needle))
            {
                found[at] = Some(line);
            }
        }
        Ok::<_, String>(found.into_iter().flatten().collect())
    });
    found.await.unwrap().unwrap_or_else(|e| panic!("{e}"))
}

fn kill(pid: u32, signal: &str) {
    assert!(Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// Waits for `pid` (a descendant this process reaps) to exit; its exit code.
fn exit_code(pid: u32) -> Option<i32> {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    let (_, status) = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .unwrap()
        .unwrap();
    status.exit_status()
}

/// GET → `ok`; POST → the length of the body it read.
async fn upstream(arrived: mpsc::Sender<()>) -> Upstream {
    let arrived = Arc::new(Mutex::new(arrived));
    Upstream::start(move |req| {
        let arrived = arrived.clone();
        async move {
            if req.method() == http::Method::POST {
                let _ = arrived.lock().unwrap().send(());
                let body = request_bytes(req).await;
                http::Response::new(full(body.len().to_string()))
            } else {
                http::Response::new(full("ok"))
            }
        }
    })
    .await
}

fn ok(body: &Bytes) -> bool {
    body.as_ref() == b"ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_upgrades_under_load_refuse_no_connection_and_lose_no_request_or_change() {
    let (arrived, arrivals) = mpsc::channel();
    let backend = upstream(arrived).await;
    let mut gw = Upgrading::start(backend.addr, &[]);
    gw.enforce().await;
    let first = gw.rotate().await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = load::clients(&gw.proxy, PROFILE, stop.clone(), ok);
    // Rotations all along, hand-overs included: each applied exactly once.
    let rotations = {
        let (stop, addr) = (stop.clone(), gw.admin.clone());
        tokio::spawn(async move {
            let mut tokens = vec![];
            while !stop.load(Ordering::Relaxed) {
                tokens.push(rotate(&addr).await);
            }
            tokens
        })
    };

    // The first upgrade with an upload half sent: it finishes on the old process.
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let (mut sender, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(1);
    let upload = {
        let url = format!("http://{}/m2/acme/profile/update", gw.proxy);
        let req = Request::post(url).body(body.boxed()).unwrap();
        tokio::spawn(client().request(req))
    };
    sender
        .send_data(Bytes::from(vec![b'a'; 64 * 1024]))
        .await
        .unwrap();
    let arrivals = tokio::task::spawn_blocking(move || {
        arrivals.recv_timeout(PATIENCE).unwrap();
        arrivals
    })
    .await
    .unwrap();
    let log = gw.log.clone();
    gw.upgrade_with(|new| async move {
        // A second upgrade while the first old process still drains is refused: two
        // processes would share one replica name.
        kill(new, "-USR2");
        log_lines(
            &log,
            &["upgrade refused: the process this one replaced is still draining"],
        )
        .await;
        sender
            .send_data(Bytes::from(vec![b'b'; 64 * 1024]))
            .await
            .unwrap();
        drop(sender);
        let response = within("the upload", upload).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_bytes(response).await.as_ref(), b"131072");
    })
    .await;
    drop(arrivals);
    for _ in 1..10 {
        gw.upgrade().await;
    }

    stop.store(true, Ordering::Relaxed);
    let (sent, retried) = load::settle(load).await;
    let tokens = rotations.await.unwrap();
    assert!(sent > 200, "the clients kept sending ({sent})");
    assert!(tokens.len() >= 2, "rotations ran across the upgrades");
    // Applied once each: the revisions follow one another, and the state holds them all.
    let mut revisions = vec![first.1];
    revisions.extend(tokens.iter().map(|(_, revision)| *revision));
    assert!(
        revisions.windows(2).all(|w| w[1] == w[0] + 1),
        "{revisions:?}"
    );
    assert_eq!(gw.revision().await, *revisions.last().unwrap());
    let (last, _) = tokens.last().unwrap();
    assert_eq!(batch_at(&gw.proxy, Some(last)).await, StatusCode::OK);
    for (old, _) in std::iter::once(&first).chain(&tokens[..tokens.len() - 1]) {
        assert_eq!(
            batch_at(&gw.proxy, Some(old)).await,
            StatusCode::UNAUTHORIZED
        );
    }
    eprintln!(
        "10 upgrades: {sent} requests, none failed ({retried} resent after an idle kept-alive connection closed as they went out); {} rotations applied once each",
        tokens.len()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_fails_to_start_leaves_the_old_one_serving_with_its_state() {
    let (arrived, _arrivals) = mpsc::channel();
    let backend = upstream(arrived).await;
    let mut gw = Upgrading::start(backend.addr, &[]);
    gw.enforce().await;
    let (t1, _) = gw.rotate().await;

    // A config with three problems: the new process ends before it asks for the state.
    std::fs::write(
        &gw.config,
        "listen: { proxy: nowhere }\nupstream: { url: \"ftp://x\" }\nbogus: 1\n",
    )
    .unwrap();
    kill(gw.pid, "-USR2");
    let failed = gw.line("upgrade failed").await;
    assert!(failed.contains("exited"), "{failed}");
    assert_eq!(batch_at(&gw.proxy, Some(&t1)).await, StatusCode::OK);
    let (t2, _) = gw.rotate().await;
    assert_eq!(
        batch_at(&gw.proxy, Some(&t1)).await,
        StatusCode::UNAUTHORIZED
    );

    // A failure after the old process lent it the state (the access log's folder is
    // missing): the old one takes the state back and takes changes again.
    let missing = gw.dir.path().join("missing/access.log");
    gw.write_config(&format!(
        "access_log: {{ target: \"{}\" }}\n",
        missing.display()
    ));
    kill(gw.pid, "-USR2");
    gw.line("access_log.target: cannot open").await;
    let failed = gw.line("upgrade failed").await;
    assert!(!failed.contains("stay refused"), "{failed}");
    assert_eq!(batch_at(&gw.proxy, Some(&t2)).await, StatusCode::OK);
    let (t3, revision) = gw.rotate().await;
    assert_eq!(
        batch_at(&gw.proxy, Some(&t2)).await,
        StatusCode::UNAUTHORIZED
    );
    // And holds the state file's lock again: a second gateway on it is refused.
    let second = gw.dir.path().join("second.yaml");
    std::fs::write(&second, text(backend.addr, "")).unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["serve", "-c"])
        .arg(&second)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("another authgate process holds"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Fixed, the upgrade goes through and the new process has every change.
    gw.write_config("");
    gw.upgrade().await;
    assert_eq!(gw.revision().await, revision);
    assert_eq!(batch_at(&gw.proxy, Some(&t3)).await, StatusCode::OK);
    assert_eq!(
        batch_at(&gw.proxy, Some(&t2)).await,
        StatusCode::UNAUTHORIZED
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_learns_that_the_gateway_is_ready_and_the_new_main_pid() {
    let (arrived, _arrivals) = mpsc::channel();
    let backend = upstream(arrived).await;
    let sockets = tempfile::tempdir().unwrap();
    let path = sockets.path().join("notify");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(PATIENCE)).unwrap();
    let receive = |notify: &UnixDatagram| {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    let mut gw = Upgrading::start(backend.addr, &[("NOTIFY_SOCKET", &path)]);
    assert_eq!(receive(&notify).trim(), "READY=1");
    gw.upgrade().await;
    let told = receive(&notify);
    assert_eq!(
        told.lines().collect::<Vec<_>>(),
        [format!("MAINPID={}", gw.pid).as_str(), "READY=1"],
        "{told}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_state_the_new_process_serves_as_a_replica_of_its_own_name() {
    use support::redis::{cluster_init, have_redis, Redis};
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let (arrived, _arrivals) = mpsc::channel();
    let backend = upstream(arrived).await;
    let config = format!(
        "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nupstream: {{ url: \"http://{}\" }}\nstate:\n  backend: redis\n  redis: {{ url: \"{}\", replica: gw }}\ntokens: {{ default_ttl: 1h }}\n{}",
        backend.addr,
        redis.url(),
        admin_yaml()
    );
    let mut gw = Upgrading::start_text(backend.addr, &config, &[]);
    let (ok, out) = cluster_init(&gw.config, false);
    assert!(ok, "{out}");
    within("the replica to serve protected routes", async {
        while batch_at(&gw.proxy, None).await == StatusCode::SERVICE_UNAVAILABLE {
            tokio::task::yield_now().await;
        }
    })
    .await;
    gw.enforce().await;
    let mut last = gw.rotate().await.0;
    // Twice: to the other name and back.
    for name in ["gw~upgraded", "gw"] {
        gw.upgrade().await;
        let (status, cluster) = gw.admin("GET", "/admin/v1/cluster", "").await;
        assert_eq!(status, StatusCode::OK, "{cluster}");
        assert_eq!(cluster["replica"], name, "{cluster}");
        // The old process left: it no longer holds a lease a writer would wait on.
        let names: Vec<_> = cluster["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["replica"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, [name], "{cluster}");
        let (next, _) = gw.rotate().await;
        assert_eq!(
            batch_at(&gw.proxy, Some(&last)).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(batch_at(&gw.proxy, Some(&next)).await, StatusCode::OK);
        last = next;
    }
    gw.stop().await;
}
