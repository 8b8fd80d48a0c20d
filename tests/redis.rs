//! Several replicas sharing their state in Redis: real `redis-server`, three replicas of
//! the real binary, a real upstream, all on free ports started per test. Skipped (with
//! a message) when redis-server is not installed, unless AUTHGATE_REQUIRE_TOOLS is set.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use support::redis::*;
use support::relay;
use support::*;

/// The default lease; fencing and writers' waits are bounded by it.
const LEASE: Duration = Duration::from_millis(1500);

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

/// A child process killed when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn token_of(answer: &serde_json::Value) -> String {
    answer["token"].as_str().unwrap().to_string()
}

fn all_acknowledged(answer: &serde_json::Value, n: usize) -> bool {
    let replicas = answer["replicas"].as_array().unwrap();
    replicas.len() == n && replicas.iter().all(|r| r["acknowledged"] == true)
}

/// Redis' current revision, as `GET /admin/v1/cluster` through `r` reports it.
async fn redis_revision(r: &Replica) -> u64 {
    let (status, doc) = r.admin("GET", "/admin/v1/cluster", "").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    doc["revision"].as_u64().unwrap()
}

/// `GET /metrics` on a replica's admin listener.
async fn metrics_of(r: &Replica) -> String {
    let bytes = within("metrics", async {
        let req = http::Request::get(format!("http://{}/metrics", r.admin))
            .body(full(""))
            .unwrap();
        body_bytes(client().request(req).await.unwrap()).await
    })
    .await;
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The value of an unlabelled gauge or counter in a Prometheus text page.
fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

/// Rotates through `writer` while replica `absent` cannot answer: the call returns
/// within the lease, naming `absent` as not acknowledged and `present` as acknowledged.
/// Returns the answer and how long the call took.
async fn rotate_without(
    writer: &Replica,
    present: &[&str],
    absent: &str,
) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let answer = writer.rotate().await;
    let waited = started.elapsed();
    assert!(waited < LEASE + Duration::from_millis(700), "{waited:?}");
    let replicas = answer["replicas"].as_array().unwrap();
    let of = |name: &str| replicas.iter().find(|r| r["replica"] == name).unwrap();
    assert_eq!(of(absent)["acknowledged"], false, "{answer}");
    for name in present {
        assert_eq!(of(name)["acknowledged"], true, "{answer}");
    }
    (answer, waited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotations_through_a_are_in_force_on_b_and_c_at_once_under_load() {
    if !have_redis() {
        return;
    }
    const ROTATIONS: usize = 200;
    let cluster = Cluster::start(3, "").await;
    cluster.require_auth().await;
    let [a, b, c] = &cluster.replicas[..] else {
        unreachable!()
    };
    let mut current = token_of(&a.rotate().await);

    // Load: clients hammer every replica with the most recently replaced token. It was
    // published as dead only after its rotation answered, so any 200 is a stale accept.
    let dead: Arc<Mutex<Option<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let stale = Arc::new(AtomicUsize::new(0));
    let targets: Vec<String> = cluster.replicas.iter().map(|r| r.proxy.clone()).collect();
    let mut load = Vec::new();
    for i in 0..6 {
        let (dead, stop, sent, stale) = (dead.clone(), stop.clone(), sent.clone(), stale.clone());
        let target = targets[i % targets.len()].clone();
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let token = dead.lock().unwrap().clone();
                let Some(token) = token else {
                    tokio::task::yield_now().await;
                    continue;
                };
                let status = batch_at(&target, Some(&token)).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if status == StatusCode::OK {
                    stale.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    let mut unacknowledged = 0;
    for i in 0..ROTATIONS {
        let answer = a.rotate().await;
        if !all_acknowledged(&answer, 3) {
            unacknowledged += 1;
        }
        let old = std::mem::replace(&mut current, token_of(&answer));
        *dead.lock().unwrap() = Some(old.clone());
        for r in [b, c] {
            assert_eq!(
                r.batch(Some(&old)).await,
                StatusCode::UNAUTHORIZED,
                "rotation {i}: old token on {}",
                r.name
            );
        }
        for r in [a, b, c] {
            assert_eq!(
                r.batch(Some(&current)).await,
                StatusCode::OK,
                "rotation {i}: new token on {}",
                r.name
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    eprintln!("{ROTATIONS} rotations, {sent} concurrent requests with replaced tokens, {unacknowledged} rotations not acknowledged by all");
    assert_eq!(stale.load(Ordering::Relaxed), 0, "stale tokens accepted");
    assert!(sent > ROTATIONS, "the load ran ({sent} requests)");
    assert_eq!(unacknowledged, 0, "every healthy replica acknowledges");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_haproxy_no_replaced_token_gets_through() {
    if !have_redis() || !have_tool("haproxy", "-v") {
        return;
    }
    let cluster = Cluster::start(3, "").await;
    cluster.require_auth().await;
    let port = free_port();
    let servers: String = cluster
        .replicas
        .iter()
        .map(|r| format!("  server {} {}\n", r.name, r.proxy))
        .collect();
    let cfg = cluster.dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 1000\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\nfrontend in\n  bind 127.0.0.1:{port}\n  default_backend gateways\nbackend gateways\n  balance roundrobin\n{servers}"
        ),
    )
    .unwrap();
    let _haproxy = Killed(
        std::process::Command::new("haproxy")
            .args(["-db", "-f", cfg.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lb = format!("127.0.0.1:{port}");
    eventually("haproxy to listen", PATIENCE, || async {
        tokio::net::TcpStream::connect(&lb).await.is_ok()
    })
    .await;
    let a = &cluster.replicas[0];
    let mut current = token_of(&a.rotate().await);
    let mut stale = 0;
    for i in 0..100 {
        // Rotate through a different replica each time.
        let writer = &cluster.replicas[i % 3];
        let old = std::mem::replace(&mut current, token_of(&writer.rotate().await));
        // Round-robin: three requests reach three different replicas.
        for _ in 0..3 {
            if batch_at(&lb, Some(&old)).await != StatusCode::UNAUTHORIZED {
                stale += 1;
            }
            assert_eq!(batch_at(&lb, Some(&current)).await, StatusCode::OK);
        }
    }
    assert_eq!(stale, 0, "replaced tokens accepted through haproxy");
}

/// How Redis goes away in [`redis_fault_fences_then_everything_converges`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RedisFault {
    /// `CLIENT PAUSE <ms> ALL`: connections stay up, every command waits. It ends by
    /// itself (`CLIENT UNPAUSE` would wait behind the pause too), so it is a timed window.
    Paused,
    /// SIGSTOP, then SIGCONT.
    Frozen,
    /// SIGKILL, then a restart on the same port from its append-only file.
    Killed,
}

/// A timed fault window long enough for the fences to close (within a lease) and a
/// rotation to fail (bounded by a lease) while Redis is paused. Not a synchronisation:
/// the test asserts that both happened before it ended.
const PAUSE: Duration = Duration::from_millis(3 * LEASE.as_millis() as u64 + 1000);

/// Redis goes away as `fault` says while three replicas serve: protected routes refuse
/// within the lease and unprotected ones pass; a rotation attempted meanwhile answers a
/// clear 503; when Redis is back every replica converges on one revision (lag 0, the
/// token from before the fault still valid: nothing was lost or half-applied) and a new
/// rotation is in force everywhere.
async fn redis_fault_fences_then_everything_converges(fault: RedisFault) {
    let redis = match fault {
        RedisFault::Killed => Redis::start_persistent(),
        RedisFault::Paused | RedisFault::Frozen => Redis::start(),
    };
    let mut cluster = Cluster::start_with(redis, 3, "").await;
    cluster.require_auth().await;
    let token = token_of(&cluster.replicas[0].rotate().await);
    let revision = redis_revision(&cluster.replicas[0]).await;

    let began = Instant::now();
    match fault {
        RedisFault::Paused => {
            let ms = PAUSE.as_millis().to_string();
            cluster.redis.cmd(&["CLIENT", "PAUSE", &ms, "ALL"]);
        }
        RedisFault::Frozen => cluster.redis.signal("STOP"),
        RedisFault::Killed => cluster.redis.kill(),
    }
    for r in &cluster.replicas {
        eventually(
            "protected routes to refuse",
            LEASE + Duration::from_secs(1),
            || async { r.batch(Some(&token)).await == StatusCode::SERVICE_UNAVAILABLE },
        )
        .await;
        assert_eq!(r.ready().await, StatusCode::SERVICE_UNAVAILABLE);
        // Unprotected traffic goes on.
        let other = get_status(&format!(
            "http://{}/rest/v1/profiles/1?client=acme",
            r.proxy
        ))
        .await;
        assert_eq!(other, StatusCode::OK, "{}", r.name);
    }
    assert!(
        began.elapsed() < LEASE + Duration::from_secs(1),
        "{fault:?}: fenced within the lease: {:?}",
        began.elapsed()
    );
    let started = Instant::now();
    let (status, answer) = cluster.replicas[1]
        .admin("POST", "/admin/v1/tenants/acme/token", "")
        .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{fault:?}: {answer}"
    );
    assert_eq!(answer["error"], "state_unavailable", "{answer}");
    // Redis was unresponsive before the call, so the script was never sent.
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing changed")),
        "{answer}"
    );
    assert!(started.elapsed() < LEASE + Duration::from_secs(2));
    if fault == RedisFault::Paused {
        assert!(
            began.elapsed() < PAUSE,
            "the checks ran inside the pause window: {:?}",
            began.elapsed()
        );
    }

    match fault {
        RedisFault::Paused => {} // ends by itself
        RedisFault::Frozen => cluster.redis.signal("CONT"),
        RedisFault::Killed => cluster.redis.restart(),
    }
    for r in &cluster.replicas {
        r.wait_ready_for(PAUSE + Duration::from_secs(5)).await;
    }
    // The rotation attempted meanwhile never reached Redis (its PING or connection
    // failed first), so every replica is back on the revision from before the fault;
    // after SIGKILL that proves the restart kept the data.
    assert_eq!(redis_revision(&cluster.replicas[0]).await, revision);
    for r in &cluster.replicas {
        let metrics = metrics_of(r).await;
        assert_eq!(gauge(&metrics, "authgate_state_revision"), revision as f64);
        assert_eq!(gauge(&metrics, "authgate_state_lag_revisions"), 0.0);
        assert_eq!(gauge(&metrics, "authgate_state_fenced"), 0.0);
        assert_eq!(r.batch(Some(&token)).await, StatusCode::OK, "{}", r.name);
    }
    let old = token;
    let token = token_of(&cluster.replicas[2].rotate().await);
    for r in &cluster.replicas {
        assert_eq!(r.batch(Some(&token)).await, StatusCode::OK, "{}", r.name);
        assert_eq!(
            r.batch(Some(&old)).await,
            StatusCode::UNAUTHORIZED,
            "{}",
            r.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_paused_fences_protected_routes_then_everything_converges() {
    if have_redis() {
        redis_fault_fences_then_everything_converges(RedisFault::Paused).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_frozen_fences_protected_routes_then_everything_converges() {
    if have_redis() {
        redis_fault_fences_then_everything_converges(RedisFault::Frozen).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_fences_protected_routes_then_restarts_with_its_data_and_converges() {
    if have_redis() {
        redis_fault_fences_then_everything_converges(RedisFault::Killed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_empty_refuses_changes_and_fences_until_cluster_init() {
    if !have_redis() {
        return;
    }
    let mut cluster = Cluster::start(3, "").await;
    cluster.require_auth().await;
    let token = token_of(&cluster.replicas[0].rotate().await);

    cluster.redis.restart_empty();
    for r in &cluster.replicas {
        eventually(
            "replicas to fence",
            LEASE + Duration::from_secs(2),
            || async { r.batch(Some(&token)).await == StatusCode::SERVICE_UNAVAILABLE },
        )
        .await;
        assert_eq!(r.ready().await, StatusCode::SERVICE_UNAVAILABLE);
    }
    let (status, answer) = cluster.replicas[1]
        .admin("POST", "/admin/v1/tenants/acme/token", "")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("authgate cluster init"),
        "{answer}"
    );
    // Still fenced a lease later: nothing falls back to "authentication off".
    tokio::time::sleep(LEASE).await; // a timed fault window, not a synchronisation
    for r in &cluster.replicas {
        assert_eq!(r.batch(None).await, StatusCode::SERVICE_UNAVAILABLE);
    }

    let (ok, out) = cluster_init(&cluster.replicas[0].config, false);
    assert!(ok, "{out}");
    assert!(out.contains("epoch"), "{out}");
    for r in &cluster.replicas {
        r.wait_ready_for(Duration::from_secs(5)).await;
    }
    cluster.require_auth().await;
    let token = token_of(&cluster.replicas[2].rotate().await);
    for r in &cluster.replicas {
        assert_eq!(r.batch(Some(&token)).await, StatusCode::OK, "{}", r.name);
        assert_eq!(r.batch(None).await, StatusCode::UNAUTHORIZED, "{}", r.name);
    }
    let (ok, out) = cluster_init(&cluster.replicas[0].config, false);
    assert!(!ok, "a second init refuses without --force: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_subscriptions_are_detected_and_no_revision_is_skipped() {
    if !have_redis() {
        return;
    }
    let cluster = Cluster::start(3, "").await;
    cluster.require_auth().await;
    let [a, b, c] = &cluster.replicas[..] else {
        unreachable!()
    };
    let mut current = token_of(&a.rotate().await);
    for i in 0..60 {
        if i % 3 == 0 {
            cluster.redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        }
        let answer = a.rotate().await;
        let old = std::mem::replace(&mut current, token_of(&answer));
        for r in [b, c] {
            // Acknowledged or not, a replica never accepts the replaced token.
            let status = r.batch(Some(&old)).await;
            assert!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::SERVICE_UNAVAILABLE,
                "rotation {i}: {} answered {status} to the old token ({answer})",
                r.name
            );
        }
    }
    for r in [a, b, c] {
        r.wait_ready().await;
        assert_eq!(r.batch(Some(&current)).await, StatusCode::OK);
    }
    let resyncs = gauge(&metrics_of(b).await, "authgate_state_resyncs_total");
    assert!(resyncs >= 10.0, "b resynced after each kill: {resyncs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_replica_is_named_and_the_writer_returns_within_the_lease() {
    if !have_redis() {
        return;
    }
    let cluster = Cluster::start(3, "").await;
    cluster.require_auth().await;
    let [a, b, c] = &cluster.replicas[..] else {
        unreachable!()
    };
    let old = token_of(&a.rotate().await);

    c.signal("STOP");
    let new = token_of(&rotate_without(a, &["a", "b"], "c").await.0);
    assert_eq!(b.batch(Some(&old)).await, StatusCode::UNAUTHORIZED);

    c.signal("CONT");
    // When it wakes, its fence is closed (the lease ran out), so the old token is
    // never honoured; it resyncs and serves the new one.
    let first = c.batch(Some(&old)).await;
    assert!(
        first == StatusCode::UNAUTHORIZED || first == StatusCode::SERVICE_UNAVAILABLE,
        "{first}"
    );
    c.wait_ready_for(Duration::from_secs(5)).await;
    assert_eq!(c.batch(Some(&old)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(c.batch(Some(&new)).await, StatusCode::OK);
    // Once it is back, rotations wait for it again.
    let answer = b.rotate().await;
    assert!(all_acknowledged(&answer, 3), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_cut_off_by_a_blackhole_is_named_fenced_and_resyncs_when_reconnected() {
    if !have_redis() {
        return;
    }
    let cluster = Cluster::start(2, "").await;
    cluster.require_auth().await;
    let [a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    // c reaches Redis only through the relay.
    let redis_addr = format!("127.0.0.1:{}", cluster.redis.port).parse().unwrap();
    let relay = relay::Relay::start(redis_addr).await;
    let config = replica_config(
        cluster.dir.path(),
        "c",
        &format!("redis://{}", relay.addr),
        cluster.upstream.addr,
        "",
    );
    let c = Replica::spawn(&config, "c");
    c.wait_ready().await;
    let old = token_of(&a.rotate().await);
    assert_eq!(c.batch(Some(&old)).await, StatusCode::OK);

    relay.cut();
    let (answer, waited) = rotate_without(a, &["a", "b"], "c").await;
    let new = token_of(&answer);
    // By the time the writer stopped waiting for c, c's own lease had run out: it
    // refuses protected routes (within the lease of the cut) and passes the rest.
    assert_eq!(c.batch(Some(&old)).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(c.batch(Some(&new)).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(c.ready().await, StatusCode::SERVICE_UNAVAILABLE);
    let other = get_status(&format!(
        "http://{}/rest/v1/profiles/1?client=acme",
        c.proxy
    ))
    .await;
    assert_eq!(other, StatusCode::OK);
    assert_eq!(b.batch(Some(&old)).await, StatusCode::UNAUTHORIZED);

    relay.heal();
    // Until it has resynced it refuses; it never honours the replaced token.
    let resynced = eventually("c to resync", PATIENCE, || async {
        let status = c.batch(Some(&old)).await;
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::SERVICE_UNAVAILABLE,
            "c answered {status} to the replaced token"
        );
        c.ready().await == StatusCode::OK
    })
    .await;
    eprintln!("cut off: the writer returned after {waited:?}; c served again {resynced:?} after the relay healed");
    assert_eq!(c.batch(Some(&old)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(c.batch(Some(&new)).await, StatusCode::OK);
    assert_eq!(
        gauge(&metrics_of(&c).await, "authgate_state_lag_revisions"),
        0.0
    );
    // Reconnected, c holds a lease again: rotations wait for it.
    let answer = b.rotate().await;
    assert!(all_acknowledged(&answer, 3), "{answer}");
    assert_eq!(c.batch(Some(&new)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(c.batch(Some(&token_of(&answer))).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_replicas_confirms_changes_on_a_redis_replica_and_fails_clearly_without_it() {
    if !have_redis() {
        return;
    }
    let primary = Redis::start();
    let follower = Redis::start_replica_of(&primary);
    eventually("the Redis replica to sync", PATIENCE, || async {
        primary.info("replication").contains("connected_slaves:1")
            && follower
                .info("replication")
                .contains("master_link_status:up")
    })
    .await;
    let cluster = Cluster::start_with(primary, 2, ", wait_replicas: 1").await;
    cluster.require_auth().await;
    let [a, b] = &cluster.replicas[..] else {
        unreachable!()
    };
    let started = Instant::now();
    let answer = a.rotate().await;
    let confirmed_in = started.elapsed();
    assert!(all_acknowledged(&answer, 2), "{answer}");
    let old = token_of(&answer);

    // A Redis replica that stops answering: the change lands on the primary, WAIT gets
    // no confirmation within ack_timeout, and the call says exactly that.
    follower.signal("STOP");
    let started = Instant::now();
    let (status, answer) = a.admin("POST", "/admin/v1/tenants/acme/token", "").await;
    let failed_in = started.elapsed();
    follower.signal("CONT");
    eprintln!("WAIT 1: confirmed in {confirmed_in:?}; with the Redis replica stopped, refused in {failed_in:?}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"], "state_unavailable", "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("applied on the Redis primary"), "{answer}");
    assert!(
        message.contains("not confirmed on 1 Redis replica"),
        "{answer}"
    );
    assert!(
        answer.get("token").is_none(),
        "no token handed out: {answer}"
    );
    // ack_timeout (default lease + 500 ms) bounds the whole wait.
    let ack_timeout = LEASE + Duration::from_millis(500);
    assert!(
        failed_in < ack_timeout + Duration::from_millis(700),
        "{failed_in:?}"
    );
    // It did take effect, on the primary and every gateway replica: the replaced token is
    // dead, and the tenant is at the revision the error named.
    let revision = answer["revision"].as_u64().unwrap();
    for r in [a, b] {
        assert_eq!(
            r.batch(Some(&old)).await,
            StatusCode::UNAUTHORIZED,
            "{}",
            r.name
        );
        let (_, doc) = r.admin("GET", "/admin/v1/tenants/acme", "").await;
        assert_eq!(doc["revision"], revision, "{doc}");
    }

    // The Redis replica is back: changes are confirmed again.
    let answer = b.rotate().await;
    assert!(all_acknowledged(&answer, 2), "{answer}");
    assert_eq!(a.batch(Some(&token_of(&answer))).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotations_with_if_match_one_gets_409() {
    if !have_redis() {
        return;
    }
    let cluster = Cluster::start(3, "").await;
    cluster.require_auth().await;
    for round in 0..10 {
        let (_, doc) = cluster.replicas[0]
            .admin("GET", "/admin/v1/tenants/acme", "")
            .await;
        let revision = doc["revision"].as_u64().unwrap().to_string();
        let [a, b, _] = &cluster.replicas[..] else {
            unreachable!()
        };
        let header = [("if-match", revision.as_str())];
        let path = "/admin/v1/tenants/acme/token";
        let (first, second) = tokio::join!(
            a.admin_with("POST", path, "", &header),
            b.admin_with("POST", path, "", &header)
        );
        let mut statuses = [first.0, second.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "round {round}: {first:?} {second:?}"
        );
        let loser = if first.0 == StatusCode::CONFLICT {
            &first.1
        } else {
            &second.1
        };
        assert_eq!(loser["error"], "conflict");
    }
    // Without If-Match, last writer wins and every replica agrees on the final revision.
    let path = "/admin/v1/tenants/acme/token";
    let (first, second) = tokio::join!(
        cluster.replicas[0].admin("POST", path, ""),
        cluster.replicas[1].admin("POST", path, "")
    );
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!(second.0, StatusCode::CREATED);
    let mut revisions = Vec::new();
    for r in &cluster.replicas {
        let (_, doc) = r.admin("GET", "/admin/v1/tenants/acme", "").await;
        revisions.push(doc["revision"].clone());
    }
    assert!(revisions.windows(2).all(|w| w[0] == w[1]), "{revisions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_endpoint_lists_replicas_and_a_restarted_replica_waits_for_the_state() {
    if !have_redis() {
        return;
    }
    let cluster = Cluster::start(2, "").await;
    cluster.require_auth().await;
    let token = token_of(&cluster.replicas[0].rotate().await);
    let (status, doc) = cluster.replicas[1]
        .admin("GET", "/admin/v1/cluster", "")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["revision"], 2, "{doc}");
    assert!(
        doc["epoch"].as_str().is_some_and(|e| e.len() == 32),
        "{doc}"
    );
    let replicas = doc["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2, "{doc}");
    assert!(replicas
        .iter()
        .all(|r| r["live"] == true && r["applied_revision"] == 2));

    // A new replica serves protected routes only once it holds the current revision.
    let config = replica_config(
        cluster.dir.path(),
        "late",
        &cluster.redis.url(),
        cluster.upstream.addr,
        "",
    );
    let late = Replica::spawn(&config, "late");
    let first = late.batch(Some(&token)).await;
    assert!(
        first == StatusCode::OK || first == StatusCode::SERVICE_UNAVAILABLE,
        "never 401 for the current token, never 200 before it is synced: {first}"
    );
    late.wait_ready().await;
    assert_eq!(late.batch(Some(&token)).await, StatusCode::OK);
    assert_eq!(late.batch(None).await, StatusCode::UNAUTHORIZED);
}

/// `cargo test --release --test redis -- --ignored --nocapture rotate_latency`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark; run with --ignored --nocapture"]
async fn rotate_latency_benchmark() {
    if !have_redis() {
        return;
    }
    for n in [1, 2, 4] {
        let cluster = Cluster::start(n, "").await;
        cluster.require_auth().await;
        let a = &cluster.replicas[0];
        for _ in 0..50 {
            a.rotate().await;
        }
        let mut times = Vec::new();
        let all = Instant::now();
        for _ in 0..500 {
            let t = Instant::now();
            let answer = a.rotate().await;
            times.push(t.elapsed());
            assert!(all_acknowledged(&answer, n), "{answer}");
        }
        let wall = all.elapsed();
        times.sort();
        let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        eprintln!(
            "rotate, {n} replica(s): 500 calls in {wall:.2?} ({:.2?} each); p50 {:.2?} p99 {:.2?} max {:.2?}",
            wall / 500,
            pct(0.50),
            pct(0.99),
            times[times.len() - 1]
        );
    }
}

fn since_epoch() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

/// Sleeps until the wall clock reads `at`: the behaviour under test is a deadline.
async fn sleep_until_unix(at: Duration) {
    if let Some(left) = at.checked_sub(since_epoch()) {
        tokio::time::sleep(left).await;
    }
}

/// Every replica answers `token` on the batch route with `expected`.
async fn everywhere(replicas: &[Replica], token: Option<&str>, expected: StatusCode, what: &str) {
    for r in replicas {
        assert_eq!(r.batch(token).await, expected, "{what} on {}", r.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn modes_and_overlaps_are_the_same_on_every_replica_around_the_deadline() {
    if !have_redis() {
        return;
    }
    let cluster = Cluster::start(3, "").await;
    let replicas = &cluster.replicas[..];
    let [a, b, c] = replicas else { unreachable!() };
    let settings = "/admin/v1/tenants/acme/settings";
    let token_path = "/admin/v1/tenants/acme/token";

    // report through a, on through b: in force on every replica when each call returns.
    let (status, doc) = a.admin("PUT", settings, r#"{"mode":"report"}"#).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert!(all_acknowledged(&doc, 3), "{doc}");
    everywhere(replicas, None, StatusCode::OK, "tokenless in report").await;
    let (status, doc) = b.admin("PUT", settings, r#"{"mode":"on"}"#).await;
    assert_eq!(
        (status, &doc["mode"]),
        (StatusCode::OK, &"on".into()),
        "{doc}"
    );
    everywhere(
        replicas,
        None,
        StatusCode::UNAUTHORIZED,
        "tokenless once on",
    )
    .await;

    // An overlap of 2 s through c: the deadline is state, the same on every replica.
    let old = token_of(&a.rotate().await);
    let sent = since_epoch();
    let (status, answer) = c
        .admin("POST", token_path, r#"{"previous_valid_for": 2}"#)
        .await;
    let returned = since_epoch();
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert!(all_acknowledged(&answer, 3), "{answer}");
    let new = token_of(&answer);
    everywhere(
        replicas,
        Some(&old),
        StatusCode::OK,
        "old token right after",
    )
    .await;
    everywhere(replicas, Some(&new), StatusCode::OK, "new token").await;
    for r in replicas {
        let (_, doc) = r.admin("GET", "/admin/v1/tenants/acme", "").await;
        let until = &doc["previous_token"]["valid_until"];
        assert_eq!(until, &answer["previous_valid_until"], "{} {doc}", r.name);
    }
    let deadline_earliest = sent + Duration::from_secs(2);
    sleep_until_unix(deadline_earliest - Duration::from_millis(400)).await;
    everywhere(
        replicas,
        Some(&old),
        StatusCode::OK,
        "just before the deadline",
    )
    .await;
    assert!(
        since_epoch() < deadline_earliest,
        "the checks before the deadline came too late"
    );
    sleep_until_unix(returned + Duration::from_secs(2)).await;
    everywhere(
        replicas,
        Some(&old),
        StatusCode::UNAUTHORIZED,
        "from the deadline on",
    )
    .await;
    everywhere(
        replicas,
        Some(&new),
        StatusCode::OK,
        "new token after the deadline",
    )
    .await;

    // A third token during an overlap ends the first at once; DELETE ends both.
    let overlap = r#"{"previous_valid_for": 60}"#;
    let (_, second) = a.admin("POST", token_path, overlap).await;
    let second = token_of(&second);
    everywhere(replicas, Some(&new), StatusCode::OK, "inside its overlap").await;
    let (status, third) = b.admin("POST", token_path, overlap).await;
    assert_eq!(status, StatusCode::CREATED, "{third}");
    everywhere(
        replicas,
        Some(&new),
        StatusCode::UNAUTHORIZED,
        "the first of three",
    )
    .await;
    everywhere(
        replicas,
        Some(&second),
        StatusCode::OK,
        "the previous of three",
    )
    .await;
    let (status, _) = c.admin("DELETE", token_path, "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for token in [&second, &token_of(&third)] {
        everywhere(
            replicas,
            Some(token),
            StatusCode::UNAUTHORIZED,
            "after DELETE",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_replica_refuses_protected_routes_in_report_mode_too() {
    if !have_redis() {
        return;
    }
    let cluster = Cluster::start(1, "").await;
    let r = &cluster.replicas[0];
    let (status, doc) = r
        .admin(
            "PUT",
            "/admin/v1/tenants/acme/settings",
            r#"{"mode":"report"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(r.batch(None).await, StatusCode::OK, "report forwards");
    cluster.redis.signal("STOP");
    // Cut off, it cannot know the tenant's mode: 503 rather than forward.
    eventually(
        "the replica to fence",
        LEASE + Duration::from_secs(2),
        || async { r.batch(None).await == StatusCode::SERVICE_UNAVAILABLE },
    )
    .await;
    cluster.redis.signal("CONT");
    eventually("the replica to serve again", PATIENCE, || async {
        r.batch(None).await == StatusCode::OK
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_stored_before_modes_and_overlaps_loads_with_its_meaning() {
    if !have_redis() {
        return;
    }
    let cluster = Cluster::start(1, "").await;
    // The hash and log entry an older authgate wrote: `require`, no `mode`, no `prev_*`.
    let token = "authgate_tk_legacyTokenWrittenByAnOlderAuthgate0000000000";
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    };
    let far = (since_epoch().as_millis() + 3_600_000).to_string();
    let rev = match cluster.redis.cmd(&["INCR", "{authgate}:rev"]) {
        ::redis::Value::Int(n) => n.to_string(),
        other => panic!("{other:?}"),
    };
    let fields = [
        "require",
        "1",
        "sha256",
        &digest,
        "created_ms",
        "1",
        "expires_ms",
        &far,
    ];
    let mut hset = vec!["HSET", "{authgate}:t:legacy"];
    hset.extend(fields);
    hset.extend(["revision", &rev]);
    cluster.redis.cmd(&hset);
    cluster.redis.cmd(&["SADD", "{authgate}:tenants", "legacy"]);
    // A replica started now loads it from a snapshot.
    let config = replica_config(
        cluster.dir.path(),
        "b",
        &cluster.redis.url(),
        cluster.upstream.addr,
        "",
    );
    let b = Replica::spawn(&config, "b");
    b.wait_ready().await;
    let batch = |token: Option<&str>| {
        let mut req = http::Request::post(format!(
            "http://{}/m2/legacy/v2/profile/batchUpdate",
            b.proxy
        ));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req.body(full("batch=x")).unwrap();
        async move {
            within("POST", client().request(req))
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        batch(None).await,
        StatusCode::UNAUTHORIZED,
        "require 1 is mode on"
    );
    assert_eq!(batch(Some(token)).await, StatusCode::OK);
    let (_, doc) = b.admin("GET", "/admin/v1/tenants/legacy", "").await;
    assert_eq!(doc["mode"], "on", "{doc}");
    assert_eq!(doc["previous_token"], serde_json::Value::Null, "{doc}");
}
