//! Redis Sentinel failover: one primary, one Redis replica, three sentinels (real
//! `redis-server --sentinel`, down after 500 ms), three replicas of the real binary
//! finding the primary through the sentinels, behind a real HAProxy. A client rotates
//! the token continuously (`wait_replicas: 1`) while probes send every replaced token to
//! every replica, and unprotected traffic flows through HAProxy; the primary is killed
//! with SIGKILL, and after the failover the old primary rejoins as a replica and the
//! failover is repeated back. Passwords come from files and appear in no log.
//! Skipped without redis-server and haproxy unless AUTHGATE_REQUIRE_TOOLS is set.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use support::redis::*;
use support::sentinel::*;
use support::*;

/// Polls `check` every 20 ms until it holds, failing after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn secret(dir: &Path, name: &str) -> (String, PathBuf) {
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).unwrap();
    let password = format!("{name}-{}", hex::encode(random));
    let path = dir.join(name);
    std::fs::write(&path, format!("{password}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (password, path)
}

/// Kills the child when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// HAProxy (HTTP mode, round robin) in front of the replicas' proxy listeners.
async fn haproxy(dir: &Path, replicas: &[Replica]) -> (Killed, String) {
    let port = free_port();
    let servers: String = replicas
        .iter()
        .map(|r| format!("  server {} {}\n", r.name, r.proxy))
        .collect();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 1000\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\nfrontend in\n  bind 127.0.0.1:{port}\n  default_backend gateways\nbackend gateways\n  balance roundrobin\n{servers}"
        ),
    )
    .unwrap();
    let child = std::process::Command::new("haproxy")
        .args(["-db", "-f", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lb = format!("127.0.0.1:{port}");
    eventually("haproxy to listen", PATIENCE, || async {
        tokio::net::TcpStream::connect(&lb).await.is_ok()
    })
    .await;
    (Killed(child), lb)
}

/// What the traffic saw during one failover.
#[derive(Default)]
struct Tally {
    /// Tokens from rotations answered 201, in order, with their revisions.
    confirmed: Vec<(String, u64)>,
    /// Rotations answered otherwise (503: not confirmed, or Redis unavailable).
    uncertain: usize,
    /// A replaced token let through (must stay 0).
    stale: usize,
    probes: usize,
    /// Unprotected requests through HAProxy that did not answer 200 (must stay 0).
    unprotected_failed: usize,
    unprotected: usize,
    /// First 201 after the kill.
    first_rotation_after_kill: Option<Instant>,
    /// Per replica: when its protected route started answering 503, and the longest
    /// such stretch.
    fenced_since: [Option<Instant>; 3],
    longest_fence: Duration,
}

async fn get_unprotected(lb: &str) -> StatusCode {
    get_status(&format!("http://{lb}/m2/acme/profile/read")).await
}

/// Runs the traffic until `stop`: a rotator through each replica's admin API in turn, a
/// prober sending the previous (replaced) token and the current one to every replica,
/// and unprotected GETs through HAProxy.
async fn traffic(
    replicas: Arc<Vec<Replica>>,
    lb: String,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    killed_at: Arc<Mutex<Option<Instant>>>,
) {
    let rotator = {
        let (replicas, tally, stop, killed_at) = (
            replicas.clone(),
            tally.clone(),
            stop.clone(),
            killed_at.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let writer = &replicas[i % replicas.len()];
                i += 1;
                let started = Instant::now();
                let (status, answer) = writer
                    .admin("POST", "/admin/v1/tenants/acme/token", "")
                    .await;
                let failed = {
                    let mut t = tally.lock().unwrap();
                    if status == StatusCode::CREATED {
                        let token = answer["token"].as_str().unwrap().to_string();
                        let revision = answer["revision"].as_u64().unwrap();
                        t.confirmed.push((token, revision));
                        let after_kill = killed_at.lock().unwrap().is_some_and(|k| started > k);
                        if t.first_rotation_after_kill.is_none() && after_kill {
                            t.first_rotation_after_kill = Some(Instant::now());
                        }
                        false
                    } else {
                        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
                        t.uncertain += 1;
                        true
                    }
                };
                if failed {
                    // A pause before trying again (not a synchronisation).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    let prober = {
        let (replicas, tally, stop) = (replicas.clone(), tally.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let pair = {
                    let t = tally.lock().unwrap();
                    let n = t.confirmed.len();
                    (n >= 2).then(|| (t.confirmed[n - 2].0.clone(), t.confirmed[n - 1].0.clone()))
                };
                let Some((previous, current)) = pair else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                for (i, r) in replicas.iter().enumerate() {
                    let old = r.batch(Some(&previous)).await;
                    let now = r.batch(Some(&current)).await;
                    let mut t = tally.lock().unwrap();
                    t.probes += 1;
                    if old == StatusCode::OK {
                        t.stale += 1;
                    }
                    let fenced = now == StatusCode::SERVICE_UNAVAILABLE;
                    match (fenced, t.fenced_since[i]) {
                        (true, None) => t.fenced_since[i] = Some(Instant::now()),
                        (false, Some(since)) => {
                            t.longest_fence = t.longest_fence.max(since.elapsed());
                            t.fenced_since[i] = None;
                        }
                        _ => {}
                    }
                }
            }
        })
    };
    let plain = {
        let (tally, stop) = (tally.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let status = get_unprotected(&lb).await;
                let mut t = tally.lock().unwrap();
                t.unprotected += 1;
                if status != StatusCode::OK {
                    t.unprotected_failed += 1;
                }
            }
        })
    };
    for task in [rotator, prober, plain] {
        task.await.unwrap();
    }
}

/// The Redis nodes, sentinels and replicas of the test.
struct Deployment {
    nodes: Vec<Redis>,
    sentinels: Vec<Sentinel>,
    replicas: Arc<Vec<Replica>>,
    lb: String,
    _haproxy: Killed,
    _upstream: Upstream,
    _dir: tempfile::TempDir,
    passwords: Vec<String>,
}

fn wait_synced(replica: &Redis) {
    let start = Instant::now();
    while !replica
        .info("replication")
        .contains("master_link_status:up")
    {
        assert!(start.elapsed() < PATIENCE, "the Redis replica did not sync");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn deploy(redis_replicas: usize) -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let (redis_pw, redis_pw_file) = secret(dir.path(), "redis-password");
    let (sentinel_pw, sentinel_pw_file) = secret(dir.path(), "sentinel-password");
    let opts = RedisOptions {
        password: Some(redis_pw.clone()),
        ..RedisOptions::default()
    };
    let primary = Redis::start_opts(&opts);
    primary.cmd(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    let mut redis_nodes = vec![primary];
    for _ in 0..redis_replicas {
        let replica = Redis::start_opts(&RedisOptions {
            replica_of: Some(redis_nodes[0].port),
            ..opts.clone()
        });
        replica.cmd(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
        wait_synced(&replica);
        redis_nodes.push(replica);
    }
    let primary = &redis_nodes[0];
    let sentinel_opts = SentinelOptions {
        primary_port: primary.port,
        redis_password: Some(&redis_pw),
        password: Some(&sentinel_pw),
        down_after_ms: 500,
        failover_timeout_ms: 2000,
    };
    let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(&sentinel_opts)).collect();
    await_sentinels(&sentinels, primary.port, redis_replicas);
    let nodes: Vec<String> = sentinels
        .iter()
        .map(|s| format!("\"{}\"", s.addr()))
        .collect();
    let extra = format!(
        ", password_file: {}, wait_replicas: 1, sentinel: {{ master_name: {MASTER}, nodes: [{}], password_file: {} }}",
        redis_pw_file.display(),
        nodes.join(", "),
        sentinel_pw_file.display()
    );
    let upstream = Upstream::start(|_r| async { http::Response::new(full("ok")) }).await;
    let names = ["a", "b", "c"];
    let configs: Vec<PathBuf> = names
        .iter()
        .map(|n| replica_config(dir.path(), n, "redis://authgate/0", upstream.addr, &extra))
        .collect();
    let (ok, out) = cluster_init(&configs[0], false);
    assert!(ok, "{out}");
    assert!(
        !out.contains(&redis_pw) && !out.contains(&sentinel_pw),
        "{out}"
    );
    let replicas: Vec<Replica> = configs
        .iter()
        .zip(names)
        .map(|(c, n)| Replica::spawn_logging(c, n, "info"))
        .collect();
    for r in &replicas {
        r.wait_ready().await;
    }
    let (status, doc) = replicas[0]
        .admin(
            "PUT",
            "/admin/v1/tenants/acme/settings",
            r#"{"require_authentication":true}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let (haproxy, lb) = haproxy(dir.path(), &replicas).await;
    Deployment {
        nodes: redis_nodes,
        sentinels,
        replicas: Arc::new(replicas),
        lb,
        _haproxy: haproxy,
        _upstream: upstream,
        _dir: dir,
        passwords: vec![redis_pw, sentinel_pw],
    }
}

/// One failover of `nodes[primary]` under traffic; returns what was measured. With one
/// Redis replica, the killed node is restarted once the other is promoted (it must
/// rejoin before `wait_replicas: 1` can be met again); with more, it stays down.
async fn failover(d: &mut Deployment, primary: usize) -> String {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at = Arc::new(Mutex::new(None));
    let traffic = tokio::spawn(traffic(
        d.replicas.clone(),
        d.lb.clone(),
        tally.clone(),
        stop.clone(),
        killed_at.clone(),
    ));
    // Steady traffic first: rotations confirmed before the kill.
    eventually("rotations before the kill", PATIENCE, || async {
        tally.lock().unwrap().confirmed.len() >= 20
    })
    .await;
    let before = tally.lock().unwrap().confirmed.len();
    let kill = Instant::now();
    d.nodes[primary].kill();
    *killed_at.lock().unwrap() = Some(kill);
    let others: Vec<u16> = (0..d.nodes.len())
        .filter(|&i| i != primary)
        .map(|i| d.nodes[i].port)
        .collect();
    eventually("the sentinels to promote a replica", PATIENCE, || async {
        d.sentinels
            .iter()
            .all(|s| s.primary_port().is_some_and(|port| others.contains(&port)))
    })
    .await;
    let promoted_after = kill.elapsed();
    // With `wait_replicas: 1` a change needs a Redis replica to confirm it; the only
    // one was just promoted, so until the old primary is back (restarted, as an
    // orchestrator would, and made a replica by the sentinels) changes answer 503 "not
    // confirmed", never 201.
    let mut restarted_after = None;
    if d.nodes.len() == 2 {
        let confirmed_at_promotion = tally.lock().unwrap().confirmed.len();
        tokio::task::block_in_place(|| d.nodes[primary].restart());
        restarted_after = Some(kill.elapsed());
        let synced_before = tally.lock().unwrap().confirmed.len();
        assert!(
            synced_before <= confirmed_at_promotion + 1,
            "a change was confirmed while no Redis replica could hold it"
        );
    }
    // Keep going a while on the new primary.
    let resumed = tally.lock().unwrap().confirmed.len();
    eventually("rotations after the failover", PATIENCE, || async {
        tally.lock().unwrap().confirmed.len() >= resumed + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    within("traffic to stop", traffic).await.unwrap();

    let t = std::mem::take(&mut *tally.lock().unwrap());
    let first = t.first_rotation_after_kill.unwrap() - kill;
    assert_eq!(t.stale, 0, "replaced tokens accepted during the failover");
    assert_eq!(
        t.unprotected_failed, 0,
        "unprotected requests failed during the failover ({} of {})",
        t.unprotected_failed, t.unprotected
    );
    // Every confirmed rotation is in force: the last token works everywhere, every one
    // before it is refused everywhere, and the new primary holds its revision.
    let (last, revision) = t.confirmed.last().unwrap().clone();
    let recent = &t.confirmed[t.confirmed.len().saturating_sub(40)..t.confirmed.len() - 1];
    let settle = Instant::now();
    for r in d.replicas.iter() {
        // A replica that is fenced (503) is safe; it must come back within a few leases.
        eventually(
            &format!("{} to serve the last token", r.name),
            PATIENCE,
            || async { r.batch(Some(&last)).await == StatusCode::OK },
        )
        .await;
        for (old, _) in recent {
            assert_eq!(
                r.batch(Some(old)).await,
                StatusCode::UNAUTHORIZED,
                "{}",
                r.name
            );
        }
    }
    let settled = settle.elapsed();
    let (_, cluster) = d.replicas[0].admin("GET", "/admin/v1/cluster", "").await;
    assert!(
        cluster["revision"].as_u64().unwrap() >= revision,
        "{cluster}"
    );
    format!(
        "killed primary :{}: promoted after {promoted_after:?}, old primary restarted after {restarted_after:?}, first 201 after {first:?}, longest protected fence on a replica {:?}; every replica serving the last token {settled:?} after the traffic stopped; {} rotations confirmed ({} before the kill), {} not confirmed (503); {} stale probes of {}; {} unprotected requests, {} failed",
        d.nodes[primary].port,
        t.longest_fence,
        t.confirmed.len(),
        before,
        t.uncertain,
        t.stale,
        t.probes,
        t.unprotected,
        t.unprotected_failed
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_and_back_no_replaced_token_honoured_no_confirmed_change_lost() {
    if !have_redis() || !have_tool("haproxy", "-v") {
        return;
    }
    let mut d = deploy(1).await;
    let first = failover(&mut d, 0).await;
    eprintln!("failover 1: {first}");

    // The old primary came back (empty, no persistence) and the sentinels made it a
    // replica of the new one; fail back to it.
    let old = &d.nodes[0];
    let start = Instant::now();
    while !(old.info("replication").contains("role:slave")
        && old.info("replication").contains("master_link_status:up"))
    {
        assert!(
            start.elapsed() < PATIENCE * 3,
            "the old primary did not rejoin as a replica"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    await_sentinels(&d.sentinels, d.nodes[1].port, 1);
    let second = failover(&mut d, 1).await;
    eprintln!("failover 2: {second}");

    let mut logs = String::new();
    for r in d.replicas.iter() {
        logs.push_str(&r.logs.lock().unwrap().join("\n"));
    }
    assert!(logs.contains("the Redis primary changed"), "{logs}");
    for pw in &d.passwords {
        assert!(
            !logs.contains(pw.as_str()),
            "a password appears in the logs"
        );
    }
}

/// With two Redis replicas, one is left after the failover to confirm changes: rotations
/// succeed again as soon as the sentinels promoted the other, with the killed node down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_with_two_redis_replicas_rotations_resume_at_once() {
    if !have_redis() || !have_tool("haproxy", "-v") {
        return;
    }
    let mut d = deploy(2).await;
    let measured = failover(&mut d, 0).await;
    eprintln!("failover (two Redis replicas): {measured}");
}

/// A primary that lost the newest change (a promoted replica that had not received it):
/// Redis holds an older revision than the replicas applied. They take its state whole,
/// rather than keep serving a token no primary holds, and the next change is in force
/// everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_behind_the_replicas_is_taken_whole_and_the_next_change_is_in_force() {
    if !have_redis() {
        return;
    }
    let cluster = Cluster::start(3, "").await;
    cluster.require_auth().await;
    let first = cluster.replicas[0].rotate().await;
    let t1 = first["token"].as_str().unwrap().to_string();
    let r1 = first["revision"].as_u64().unwrap();
    // What a Redis replica that missed the next change would hold.
    let saved: Vec<(&str, ::redis::Value)> =
        ["{authgate}:t:acme", "{authgate}:log", "{authgate}:acks"]
            .into_iter()
            .map(|key| (key, cluster.redis.cmd(&["DUMP", key])))
            .collect();
    let second = cluster.replicas[1].rotate().await;
    let t2 = second["token"].as_str().unwrap().to_string();
    let r2 = second["revision"].as_u64().unwrap();
    assert_eq!(r2, r1 + 1);
    for r in &cluster.replicas {
        assert_eq!(r.batch(Some(&t2)).await, StatusCode::OK);
    }
    // Roll Redis back to revision r1, as a promoted replica that missed r2 would be.
    restore(&cluster.redis, &saved);
    cluster
        .redis
        .cmd(&["SET", "{authgate}:rev", &r1.to_string()]);
    for r in &cluster.replicas {
        eventually(
            &format!("{} to take the older state", r.name),
            PATIENCE,
            || async {
                r.batch(Some(&t2)).await == StatusCode::UNAUTHORIZED
                    && r.batch(Some(&t1)).await == StatusCode::OK
                    && acked(&cluster.redis, &r.name) == Some(r1)
            },
        )
        .await;
    }
    let third = cluster.replicas[2].rotate().await;
    let t3 = third["token"].as_str().unwrap().to_string();
    for r in &cluster.replicas {
        for old in [&t1, &t2] {
            assert_eq!(
                r.batch(Some(old)).await,
                StatusCode::UNAUTHORIZED,
                "{}",
                r.name
            );
        }
        assert_eq!(r.batch(Some(&t3)).await, StatusCode::OK, "{}", r.name);
    }
}

/// The revision `replica` acknowledged in Redis. One above Redis's revision would let
/// the next writer take the reused number as in force on that replica before it is.
fn acked(redis: &Redis, replica: &str) -> Option<u64> {
    match redis.cmd(&["HGET", "{authgate}:acks", replica]) {
        ::redis::Value::BulkString(bytes) => std::str::from_utf8(&bytes).ok()?.parse().ok(),
        _ => None,
    }
}

/// `RESTORE key 0 <dump> REPLACE` for each saved key.
fn restore(redis: &Redis, saved: &[(&str, ::redis::Value)]) {
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    for (key, dump) in saved {
        let ::redis::Value::BulkString(bytes) = dump else {
            panic!("DUMP {key}: {dump:?}")
        };
        let _: () = ::redis::cmd("RESTORE")
            .arg(*key)
            .arg(0)
            .arg(bytes.as_slice())
            .arg("REPLACE")
            .query(&mut conn)
            .unwrap();
    }
}
