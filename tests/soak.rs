//! Load with faults: a steady stream of bulk updates through the real binary while the
//! token rotates every second and the upstream is restarted twice. Nothing crashes,
//! memory settles, every answer is the upstream's or a documented error, and no stale
//! token is ever accepted after its rotation returned.
//!
//! CI runs it for `AUTHGATE_SOAK_SECS` (default 15) seconds; the full soak is
//! `AUTHGATE_SOAK_SECS=60 cargo test --release --test soak -- --nocapture`.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use support::*;
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// An upstream that can be stopped and started again on the same address.
struct Restartable {
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Restartable {
    async fn start(addr: SocketAddr) -> Restartable {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(full("ok")))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
            // Dropping the JoinSet (when this task is aborted) closes every connection.
        });
        Restartable {
            addr,
            task: Some(task),
        }
    }

    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_rotations_and_upstream_restarts() {
    let secs: u64 = std::env::var("AUTHGATE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let duration = Duration::from_secs(secs);
    let mut upstream = Restartable::start("127.0.0.1:0".parse().unwrap()).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("authgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nupstream: {{ url: \"http://{}\", connect_timeout: 500ms, request_timeout: 5s }}\nlog: {{ level: warn }}\n{}",
            upstream.addr,
            admin_yaml()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "-c", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = loop {
        let line = rx.recv_timeout(PATIENCE).expect("gateway start");
        if line.contains("listening") {
            break line;
        }
    };
    let value = |key: &str| {
        let at = line.find(key).unwrap() + key.len();
        line[at..].split_whitespace().next().unwrap().to_string()
    };
    let (proxy, admin) = (value("proxy="), value("admin="));
    let rotate = {
        let admin = admin.clone();
        move |body: &'static str, path: &'static str, method: &'static str| {
            let req = Request::builder()
                .method(method)
                .uri(format!("http://{admin}{path}"))
                .header("authorization", format!("Bearer {}", keys().approver))
                .body(full(body))
                .unwrap();
            client().request(req)
        }
    };
    let on = rotate(
        r#"{"require_authentication":true}"#,
        "/admin/v1/tenants/acme/settings",
        "PUT",
    );
    assert_eq!(
        within("settings", on).await.unwrap().status(),
        StatusCode::OK
    );
    let first = body_bytes(
        within("token", rotate("", "/admin/v1/tenants/acme/token", "POST"))
            .await
            .unwrap(),
    )
    .await;
    let first: serde_json::Value = serde_json::from_slice(&first).unwrap();

    let tokens = Arc::new(RwLock::new(vec![first["token"]
        .as_str()
        .unwrap()
        .to_string()]));
    let dead_since: Arc<RwLock<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<Mutex<HashMap<u16, usize>>> = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let stale_refused = Arc::new(AtomicUsize::new(0));

    // Steady load: 8 clients, one request every 10 ms each (about 800 requests/s).
    let mut workers = Vec::new();
    for w in 0..8 {
        let (tokens, dead_since, stop) = (tokens.clone(), dead_since.clone(), stop.clone());
        let (counts, violations, stale_refused) =
            (counts.clone(), violations.clone(), stale_refused.clone());
        let url = format!("http://{proxy}{BATCH}");
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let token = {
                    let all = tokens.read().unwrap();
                    let back = if (n + w) % 5 == 0 { 1 } else { 0 };
                    all[all.len().saturating_sub(1 + back)].clone()
                };
                let sent_at = Instant::now();
                let req = Request::post(&url)
                    .header("authorization", format!("Bearer {token}"))
                    .body(full("batch=thirdPartyId%0Av1"))
                    .unwrap();
                let Ok(response) = within("a response", c.request(req)).await else {
                    violations.lock().unwrap().push("connection error".into());
                    continue;
                };
                let status = response.status();
                let body = body_bytes(response).await;
                *counts.lock().unwrap().entry(status.as_u16()).or_default() += 1;
                let killed = dead_since.read().unwrap().get(&token).copied();
                let stale = killed.is_some_and(|at| at < sent_at);
                let json =
                    || serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
                let fine = match status.as_u16() {
                    200 => body == "ok" && !stale,
                    401 => json()["error"] == "invalid_token",
                    502 => json()["error"] == "bad_gateway",
                    504 => json()["error"] == "gateway_timeout",
                    _ => false,
                };
                if stale && status == StatusCode::UNAUTHORIZED {
                    stale_refused.fetch_add(1, Ordering::Relaxed);
                }
                if !fine {
                    violations
                        .lock()
                        .unwrap()
                        .push(format!("{status} stale={stale} {body:?}"));
                }
            }
        }));
    }

    let started = Instant::now();
    let mut warm_rss = None;
    let mut restarts = 0;
    let mut rotations = 0;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let old = tokens.read().unwrap().last().cloned().unwrap();
        let answer = within(
            "rotation",
            rotate("", "/admin/v1/tenants/acme/token", "POST"),
        )
        .await
        .unwrap();
        assert_eq!(answer.status(), StatusCode::CREATED);
        let answer: serde_json::Value = serde_json::from_slice(&body_bytes(answer).await).unwrap();
        dead_since.write().unwrap().insert(old, Instant::now());
        tokens
            .write()
            .unwrap()
            .push(answer["token"].as_str().unwrap().to_string());
        rotations += 1;
        let elapsed = started.elapsed();
        if warm_rss.is_none() && elapsed >= duration / 5 {
            warm_rss = Some(rss_kib(pid));
        }
        // Two upstream restarts, at a third and at two thirds of the run.
        if restarts < 2 && elapsed >= duration * (restarts + 1) / 3 {
            let addr = upstream.addr;
            upstream.stop().await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            upstream = Restartable::start(addr).await;
            restarts += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        within("a worker to stop", w).await.unwrap();
    }
    let end_rss = rss_kib(pid);
    assert!(child.try_wait().unwrap().is_none(), "the gateway died");
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();

    let counts = counts.lock().unwrap().clone();
    let total: usize = counts.values().sum();
    let warm = warm_rss.unwrap();
    eprintln!(
        "soak {secs}s: {total} requests {counts:?}, {rotations} rotations, {restarts} upstream restarts, \
         {} stale tokens refused, RSS {warm} KiB after warm-up, {end_rss} KiB at the end",
        stale_refused.load(Ordering::Relaxed)
    );
    let violations = violations.lock().unwrap();
    assert!(
        violations.is_empty(),
        "{} bad answers, first: {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    assert!(status.success(), "{status:?}");
    assert_eq!(restarts, 2);
    assert!(
        counts.get(&200).copied().unwrap_or(0) > total / 2,
        "{counts:?}"
    );
    assert!(
        stale_refused.load(Ordering::Relaxed) > 0,
        "the stale-token path was exercised"
    );
    assert!(
        end_rss * 10 <= warm * 11,
        "RSS grew from {warm} KiB to {end_rss} KiB"
    );
}
