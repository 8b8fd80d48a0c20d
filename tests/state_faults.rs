//! The state file under crashes: `kill -9` of the real binary in the middle of rotations,
//! again and again, then a restart on the same file.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::process::{await_listening, write_config};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

struct Running {
    child: Child,
    proxy: String,
    admin: String,
}

impl Drop for Running {
    /// A failing test must not leave a gateway behind (it would hold the test's output).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `authgate serve` on `config` and waits for its listening line.
#[allow(
    clippy::zombie_processes,
    reason = "the child is reaped by `Running`'s Drop"
)]
fn start(config: &Path) -> Running {
    let child = Command::new(BIN)
        .args(["serve", "-c", config.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Owned (and so killed on a panic) from here on.
    let mut gw = Running {
        child,
        proxy: String::new(),
        admin: String::new(),
    };
    let listening = await_listening(&mut gw.child, "gateway");
    for line in &listening.before {
        assert!(
            !line.contains("ERROR") && !line.contains("cannot load"),
            "{line}"
        );
    }
    gw.proxy = listening.proxy;
    gw.admin = listening.admin;
    gw
}

async fn admin(
    gw: &Running,
    method: &str,
    path: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", gw.admin))
        .header("authorization", format!("Bearer {}", keys().approver))
        .body(full(body.to_string()))
        .unwrap();
    let response = within("admin", client().request(req)).await.unwrap();
    let status = response.status();
    let bytes = body_bytes(response).await;
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_rotations_never_loses_an_acknowledged_token() {
    const CYCLES: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start(|_r| async { http::Response::new(full("ok")) }).await;
    let config = write_config(dir.path(), upstream.addr, &admin_yaml());

    let mut gw = start(&config);
    let (status, _) = admin(
        &gw,
        "PUT",
        "/admin/v1/tenants/acme/settings",
        r#"{"require_authentication":true}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, answer) = admin(&gw, "POST", "/admin/v1/tenants/acme/token", "").await;
    let mut acked = answer["token"].as_str().unwrap().to_string();
    let mut acked_revision = 2u64;
    let mut older: Vec<String> = Vec::new();
    let mut in_flight_applied = 0;
    let mut answered_count = 0;

    for cycle in 0..CYCLES {
        // A few acknowledged rotations, then one in flight when the process is killed.
        for _ in 0..(cycle % 3) {
            let (status, answer) = admin(&gw, "POST", "/admin/v1/tenants/acme/token", "").await;
            assert_eq!(status, StatusCode::CREATED);
            older.push(std::mem::replace(
                &mut acked,
                answer["token"].as_str().unwrap().to_string(),
            ));
            acked_revision += 1;
        }
        let admin_addr = gw.admin.clone();
        let in_flight = tokio::spawn(async move {
            let req = Request::post(format!("http://{admin_addr}/admin/v1/tenants/acme/token"))
                .header("authorization", format!("Bearer {}", keys().approver))
                .body(full(""))
                .unwrap();
            client().request(req).await
        });
        // Vary the moment of death across the rotation's life: before it arrives, during
        // the write and fsync, after the answer. (A timed fault, not a synchronisation.)
        let delay = std::time::Duration::from_micros((cycle as u64 * 397) % 4000);
        tokio::time::sleep(delay).await;
        gw.child.kill().unwrap();
        gw.child.wait().unwrap();
        drop(gw);
        let answered = match in_flight.await.unwrap() {
            // Only a whole answer counts as acknowledged: the kill may cut it short.
            Ok(response) if response.status() == StatusCode::CREATED => {
                match response.into_body().collect().await {
                    Ok(body) => {
                        answered_count += 1;
                        let json: serde_json::Value =
                            serde_json::from_slice(&body.to_bytes()).unwrap();
                        Some(json["token"].as_str().unwrap().to_string())
                    }
                    Err(_) => None,
                }
            }
            _ => None,
        };

        gw = start(&config);
        let (status, doc) = admin(&gw, "GET", "/admin/v1/tenants/acme", "").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "cycle {cycle}: the state file must load"
        );
        assert_eq!(
            doc["require_authentication"], true,
            "cycle {cycle}: never authentication off"
        );
        assert_eq!(
            batch_at(&gw.proxy, None).await,
            StatusCode::UNAUTHORIZED,
            "cycle {cycle}"
        );
        let revision = doc["revision"].as_u64().unwrap();
        if let Some(token) = answered {
            // The response arrived before the kill: it must have been durable.
            assert_eq!(revision, acked_revision + 1, "cycle {cycle}");
            older.push(std::mem::replace(&mut acked, token));
            acked_revision = revision;
        } else if revision == acked_revision + 1 {
            // The in-flight rotation landed without its answer: its unseen token is current.
            in_flight_applied += 1;
            older.push(std::mem::take(&mut acked));
            acked_revision = revision;
            let (_, answer) = admin(&gw, "POST", "/admin/v1/tenants/acme/token", "").await;
            acked = answer["token"].as_str().unwrap().to_string();
            acked_revision += 1;
        } else {
            assert_eq!(
                revision, acked_revision,
                "cycle {cycle}: an acknowledged rotation was lost"
            );
        }
        assert_eq!(
            batch_at(&gw.proxy, Some(&acked)).await,
            StatusCode::OK,
            "cycle {cycle}: the last acknowledged token"
        );
        for (i, old) in older
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty())
            .rev()
            .take(3)
        {
            assert_eq!(
                batch_at(&gw.proxy, Some(old)).await,
                StatusCode::UNAUTHORIZED,
                "cycle {cycle}: old token {i}"
            );
        }
    }
    eprintln!(
        "{CYCLES} kill -9 cycles: {answered_count} in-flight rotations answered before the kill, \
         {in_flight_applied} landed unanswered"
    );
    drop(gw);
    // No temp files are left behind to confuse an operator (a crash may leave one; they
    // are harmless, named .state-*.tmp, and never read).
    let state = std::fs::read_to_string(dir.path().join("data/state.json")).unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&state).is_ok());
}

#[tokio::test]
async fn garbage_or_truncated_state_files_refuse_to_start() {
    for (what, bytes) in [
        ("empty", &b""[..]),
        (
            "truncated",
            &b"{\"version\": 1, \"revision\": 4, \"tenants\": {\"acme\": {\"require_authent"[..],
        ),
        ("binary garbage", &b"\x00\xff\x13\x37garbage"[..]),
        ("wrong shape", &b"[1, 2, 3]"[..]),
        (
            "future version",
            &b"{\"version\": 9, \"revision\": 0, \"tenants\": {}}"[..],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let state = dir.path().join("data/state.json");
        std::fs::write(&state, bytes).unwrap();
        let config = write_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "");
        let out = Command::new(BIN)
            .args(["serve", "-c", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&state.display().to_string()), "{what}: {err}");
        assert!(err.contains("state file"), "{what}: {err}");
    }
}
