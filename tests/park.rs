//! Parked idle connections (`limits.park_after`), on the real binary so that the parked
//! gauge (`authgate_parked_connections`) is this gateway's alone: bytes that arrive on a
//! parked connection are all served, in order, and the head clock, the idle clock and
//! the drain hold for parked connections as for any other. And the connection runtimes
//! (`runtime.worker_threads`): connections spread over them, each with its own pool.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use support::process::{await_listening, signal, write_config, Listening};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// An upstream answering `ok` and recording each request's path.
async fn recording() -> (Upstream, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let up = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        record.lock().unwrap().push(req.uri().path().to_string());
        async { Response::new(full("ok")) }
    })
    .await;
    (up, seen)
}

struct Running {
    child: Child,
    at: Listening,
    _dir: tempfile::TempDir,
}

fn serve(upstream: std::net::SocketAddr, limits: &str) -> Running {
    serve_config(upstream, &format!("limits: {{ {limits} }}\n"))
}

fn serve_config(upstream: std::net::SocketAddr, yaml: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), upstream, yaml);
    let mut child = Command::new(BIN)
        .args(["serve", "-c", config.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let at = await_listening(&mut child, "gateway");
    Running {
        child,
        at,
        _dir: dir,
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    async fn metric(&self, series: &str) -> f64 {
        let url = format!("http://{}/metrics", self.at.admin);
        let response = within("metrics", client().get(url.parse().unwrap()))
            .await
            .unwrap();
        let text = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
        sample(&text, series).unwrap_or(0.0)
    }

    /// Waits until exactly `n` connections are parked.
    async fn parked(&self, n: f64) {
        within("the parked count", async {
            while self.metric("authgate_parked_connections").await != n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.at.proxy).await.unwrap()
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n")
}

/// Reads one response (the upstream's `ok`, framed by Content-Length): its status line.
async fn response(stream: &mut TcpStream) -> String {
    within("a response", async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed: {head:?}");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("content-length");
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.unwrap();
        head.lines().next().unwrap().to_string()
    })
    .await
}

/// Waits for the gateway to close `stream` (end of stream or reset), with nothing said.
async fn closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let _ = within("the gateway to close", stream.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn pipelined_requests_on_a_parked_connection_are_all_served_in_order() {
    let (up, seen) = recording().await;
    let gw = serve(up.addr, "park_after: 0s");
    let mut conn = gw.connect().await;
    conn.write_all(get("/first").as_bytes()).await.unwrap();
    assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
    gw.parked(1.0).await;

    let three = format!("{}{}{}", get("/a"), get("/b"), get("/c"));
    conn.write_all(three.as_bytes()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
    }
    gw.parked(1.0).await;
    assert_eq!(*seen.lock().unwrap(), ["/first", "/a", "/b", "/c"]);
}

#[tokio::test]
async fn a_head_split_across_an_unpark_is_served() {
    let (up, seen) = recording().await;
    let gw = serve(up.addr, "park_after: 0s");
    let mut conn = gw.connect().await;
    conn.write_all(get("/first").as_bytes()).await.unwrap();
    assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
    gw.parked(1.0).await;

    let head = get("/split");
    let (start, end) = head.split_at(9);
    conn.write_all(start.as_bytes()).await.unwrap();
    // Unparked by the first bytes, and not parked again while the head is unfinished.
    gw.parked(0.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.metric("authgate_parked_connections").await, 0.0);
    conn.write_all(end.as_bytes()).await.unwrap();
    assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
    gw.parked(1.0).await;
    assert_eq!(*seen.lock().unwrap(), ["/first", "/split"]);
}

#[tokio::test]
async fn a_slowloris_after_an_unpark_meets_the_head_clock() {
    let (up, seen) = recording().await;
    let gw = serve(up.addr, "park_after: 0s, header_read_timeout: 500ms");
    let mut conn = gw.connect().await;
    conn.write_all(get("/first").as_bytes()).await.unwrap();
    assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
    gw.parked(1.0).await;

    let started = Instant::now();
    conn.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    closed(&mut conn).await;
    let waited = started.elapsed();
    // The watchdog's clocks count whole milliseconds.
    assert!(waited >= Duration::from_millis(495), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let timeouts = r#"authgate_connections_closed_total{reason="header_timeout"}"#;
    assert_eq!(gw.metric(timeouts).await, 1.0);
    assert_eq!(*seen.lock().unwrap(), ["/first"]);
}

#[tokio::test]
async fn the_idle_timeout_closes_a_parked_connection_counting_from_the_last_response() {
    let (up, _seen) = recording().await;
    // Parked after 100 ms of idleness (the delayed path), closed after 1 s of it.
    let gw = serve(up.addr, "park_after: 100ms, idle_timeout: 1s");
    let mut conn = gw.connect().await;
    conn.write_all(get("/first").as_bytes()).await.unwrap();
    assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
    let answered = Instant::now();
    gw.parked(1.0).await;
    assert!(answered.elapsed() < Duration::from_secs(1));

    closed(&mut conn).await;
    let waited = answered.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let idle = r#"authgate_connections_closed_total{reason="idle"}"#;
    assert_eq!(gw.metric(idle).await, 1.0);
    gw.parked(0.0).await;
}

#[tokio::test]
async fn a_busy_keep_alive_connection_is_not_parked_before_the_delay() {
    let (up, _seen) = recording().await;
    let gw = serve(up.addr, "park_after: 2s");
    let mut conn = gw.connect().await;
    for _ in 0..20 {
        conn.write_all(get("/busy").as_bytes()).await.unwrap();
        assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
        assert_eq!(gw.metric("authgate_parked_connections").await, 0.0);
    }
    gw.parked(1.0).await;
    conn.write_all(get("/again").as_bytes()).await.unwrap();
    assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
}

/// Raises this process's soft limit of open files to its hard limit when below `needed`;
/// fails, naming the limit, when even the hard limit is below it.
fn raise_open_file_limit(needed: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|soft| soft < needed) {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).expect("raise RLIMIT_NOFILE to its hard limit");
    }
    let soft = getrlimit(Resource::Nofile).current;
    assert!(
        soft.map_or(true, |soft| soft >= needed),
        "RLIMIT_NOFILE is {soft:?}, below the {needed} open files this test needs"
    );
}

#[tokio::test]
async fn sigterm_closes_every_parked_connection_and_exits_0() {
    const CONNS: usize = 10_000;
    // A socket per connection here and in the gateway, which inherits the limit.
    raise_open_file_limit(CONNS as u64 + 500);
    let (up, _seen) = recording().await;
    let mut gw = serve(up.addr, "park_after: 0s, max_connections: 10100");
    let mut conns = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let mut conn = gw.connect().await;
        conn.write_all(get("/idle").as_bytes()).await.unwrap();
        assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
        conns.push(conn);
    }
    gw.parked(CONNS as f64).await;

    let started = Instant::now();
    signal(&gw.child, "-TERM");
    for conn in &mut conns {
        closed(conn).await;
    }
    let status = within("exit after SIGTERM", async {
        loop {
            if let Some(status) = gw.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "{status:?}");
    // Parked connections close at once, not at the end of `shutdown_timeout` (30 s).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn http2_prior_knowledge_is_still_detected() {
    let (up, seen) = recording().await;
    let gw = serve(up.addr, "park_after: 0s");
    let url = format!("http://{}/h2", gw.at.proxy);
    for _ in 0..3 {
        let response = within("h2c GET", h2c_client().get(url.parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(body_bytes(response).await, "ok");
    }
    assert_eq!(*seen.lock().unwrap(), ["/h2", "/h2", "/h2"]);
    // And HTTP/1.1 requests whose method starts like the preface are HTTP/1.1.
    let mut conn = gw.connect().await;
    conn.write_all(b"PRIVATE /x HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let status = response(&mut conn).await;
    assert!(status.starts_with("HTTP/1.1 "), "{status}");
}

/// An upstream answering `ok` that counts the connections it accepted.
async fn counting() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let handler =
        Arc::new(|_req: Request<hyper::body::Incoming>| async { Response::new(full("ok")) });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(serve_http(stream, handler.clone()));
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn connections_spread_over_the_runtimes_each_with_its_own_upstream_pool() {
    let (upstream, accepted) = counting().await;
    let gw = serve_config(
        upstream,
        "runtime: { worker_threads: 2 }\nlimits: { park_after: 0s }\n",
    );
    // Six connections, opened one after another, each served one request.
    let mut conns = Vec::new();
    for i in 0..6 {
        let mut conn = gw.connect().await;
        conn.write_all(get(&format!("/{i}")).as_bytes())
            .await
            .unwrap();
        assert_eq!(response(&mut conn).await, "HTTP/1.1 200 OK");
        conns.push(conn);
    }
    let threads = std::fs::read_dir(format!("/proc/{}/task", gw.child.id()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|name| name.trim() == "authgate-rt-1")
        .count();
    assert_eq!(
        threads, 1,
        "one thread besides the main one serves connections"
    );
    let on = |runtime: usize| format!("authgate_runtime_connections{{runtime=\"{runtime}\"}}");
    assert_eq!(gw.metric(&on(0)).await, 3.0);
    assert_eq!(gw.metric(&on(1)).await, 3.0);
    // One request at a time, on every connection in turn (parked in between): a pool
    // shared by the runtimes would carry them all on one upstream connection; one pool
    // per runtime opens one upstream connection on each.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    for (i, conn) in conns.iter_mut().enumerate() {
        conn.write_all(get(&format!("/again/{i}")).as_bytes())
            .await
            .unwrap();
        assert_eq!(response(conn).await, "HTTP/1.1 200 OK");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    // HTTP/2 prior knowledge is served on either runtime as well.
    let url = format!("http://{}/h2", gw.at.proxy);
    for _ in 0..2 {
        let response = within("h2c GET", h2c_client().get(url.parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(body_bytes(response).await, "ok");
    }
    drop(conns);
    within("the connections to be counted closed", async {
        while gw.metric(&on(0)).await + gw.metric(&on(1)).await != 0.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
