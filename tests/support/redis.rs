//! Several replicas of the real binary sharing a real `redis-server`, each started per
//! test on free ports. Waits poll an endpoint with a bounded number of tries.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use serde_json::Value;

use super::process::await_listening_into;
use super::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// A port that was free a moment ago (bound to 0 and released for the child to take).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether redis-server can run (else the test prints SKIPPED and returns).
pub fn have_redis() -> bool {
    have_tool("redis-server", "--version")
}

/// A `redis-server`, killed when dropped: without persistence unless started with
/// [`Redis::start_persistent`].
pub struct Redis {
    pub port: u16,
    /// `--tls-port`, when started with TLS ([`RedisOptions::tls`]); `port` stays plain
    /// for the test's own commands.
    pub tls_port: Option<u16>,
    /// `requirepass` (also `masterauth`), used by the test's own commands.
    pub password: Option<String>,
    child: Child,
    /// Arguments beyond port, bind and dir (persistence, `--replicaof`), kept for restarts.
    args: Vec<String>,
    /// Its own working directory, kept across [`Redis::restart`]: a Redis replica writes
    /// the snapshot it syncs from as `dump.rdb` there, and every server loads a
    /// `dump.rdb` it finds at start, so a shared directory would leak one test's state
    /// into another's "empty" Redis.
    dir: Arc<tempfile::TempDir>,
}

type Dir = Arc<tempfile::TempDir>;

fn new_dir() -> Dir {
    Arc::new(tempfile::tempdir().unwrap())
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// No persistence: an RDB snapshot never, an append-only file never.
const VOLATILE: [&str; 4] = ["--save", "", "--appendonly", "no"];

/// TLS files for `redis-server --tls-port`.
#[derive(Clone)]
pub struct RedisTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA client certificates must be issued by (`--tls-ca-cert-file`).
    pub ca: PathBuf,
    /// `--tls-auth-clients yes`: a client certificate is required.
    pub auth_clients: bool,
}

/// How [`Redis::start_opts`] starts a server (volatile, like [`Redis::start`]).
#[derive(Clone, Default)]
pub struct RedisOptions {
    pub password: Option<String>,
    pub tls: Option<RedisTlsFiles>,
    /// `--replicaof 127.0.0.1 <port>`.
    pub replica_of: Option<u16>,
}

impl Redis {
    /// Starts on a free port. Tests run in parallel and a port found free can be taken
    /// before redis-server binds it; then this server exits and another test's would
    /// answer our `PING`, mixing two clusters. So a start only counts when our own
    /// process is the one still running, else it is tried again on another port.
    pub fn start() -> Redis {
        Redis::start_with(owned(&VOLATILE))
    }

    /// A server that writes every change to its append-only file before answering
    /// (`appendfsync always`), so a SIGKILL loses nothing and [`Redis::restart`] brings
    /// the data back.
    pub fn start_persistent() -> Redis {
        Redis::start_with(owned(&[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]))
    }

    /// A Redis replica (`--replicaof`) of `primary`, without persistence.
    pub fn start_replica_of(primary: &Redis) -> Redis {
        // The primary otherwise waits 5 s for more replicas before a diskless full sync.
        primary.cmd(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
        let port = primary.port.to_string();
        let mut args = owned(&VOLATILE);
        args.extend(owned(&["--replicaof", "127.0.0.1", &port]));
        Redis::start_with(args)
    }

    fn start_with(args: Vec<String>) -> Redis {
        for _ in 0..10 {
            if let Some(redis) = Redis::try_start_on(free_port(), &args, new_dir(), None) {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 10 free ports");
    }

    /// A volatile server with a password, TLS or `--replicaof`, as `opts` says.
    pub fn start_opts(opts: &RedisOptions) -> Redis {
        for _ in 0..10 {
            let mut args = owned(&VOLATILE);
            if let Some(password) = &opts.password {
                args.extend(owned(&[
                    "--requirepass",
                    password,
                    "--masterauth",
                    password,
                ]));
            }
            let tls_port = opts.tls.as_ref().map(|tls| {
                let port = free_port();
                args.extend(owned(&[
                    "--tls-port",
                    &port.to_string(),
                    "--tls-cert-file",
                    tls.cert.to_str().unwrap(),
                    "--tls-key-file",
                    tls.key.to_str().unwrap(),
                    "--tls-ca-cert-file",
                    tls.ca.to_str().unwrap(),
                    "--tls-auth-clients",
                    if tls.auth_clients { "yes" } else { "no" },
                ]));
                port
            });
            if let Some(primary) = opts.replica_of {
                args.extend(owned(&["--replicaof", "127.0.0.1", &primary.to_string()]));
            }
            if let Some(mut redis) =
                Redis::try_start_on(free_port(), &args, new_dir(), opts.password.clone())
            {
                redis.tls_port = tls_port;
                return redis;
            }
        }
        panic!("redis-server did not start on any of 10 free ports");
    }

    /// Starts an empty server on `port` (a restart on the same port) and waits until it
    /// answers `PING`.
    pub fn start_on(port: u16) -> Redis {
        Redis::try_start_on(port, &owned(&VOLATILE), new_dir(), None)
            .unwrap_or_else(|| panic!("redis-server on {port} did not start"))
    }

    fn try_start_on(
        port: u16,
        args: &[String],
        dir: Dir,
        password: Option<String>,
    ) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let mut redis = Redis {
            port,
            tls_port: None,
            password,
            child,
            args: args.to_vec(),
            dir,
        };
        for _ in 0..200 {
            if !matches!(redis.child.try_wait(), Ok(None)) {
                return None; // ours exited: the port was taken
            }
            if let Ok(info) = redis.try_cmd(&["INFO", "server"]) {
                // Answered: only ours if the server says it is our process.
                let text = info_text(info);
                let pid = format!("process_id:{}", redis.child.id());
                return text.lines().any(|l| l.trim() == pid).then_some(redis);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    /// `INFO <section>` as text.
    pub fn info(&self, section: &str) -> String {
        info_text(self.cmd(&["INFO", section]))
    }

    /// The plain port's URL, with the password if there is one (the test's own
    /// commands; replicas get theirs from `password_file`).
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_cmd(&self, args: &[&str]) -> ::redis::RedisResult<::redis::Value> {
        let client = ::redis::Client::open(self.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut cmd = ::redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
    }

    pub fn cmd(&self, args: &[&str]) -> ::redis::Value {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// Kills the server and starts an empty one on the same port.
    pub fn restart_empty(&mut self) {
        self.kill();
        *self = Redis::start_on(self.port);
    }

    /// SIGKILL: no shutdown, no final save.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port with the same arguments: a persistent
    /// one comes back with its data.
    pub fn restart(&mut self) {
        self.kill();
        let (args, dir) = (self.args.clone(), self.dir.clone());
        let (password, tls_port) = (self.password.clone(), self.tls_port);
        *self = Redis::try_start_on(self.port, &args, dir, password)
            .unwrap_or_else(|| panic!("redis-server did not restart on {}", self.port));
        self.tls_port = tls_port;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = signal_quiet(self.pid(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn info_text(info: ::redis::Value) -> String {
    match info {
        ::redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        ::redis::Value::VerbatimString { text, .. } => text,
        other => format!("{other:?}"),
    }
}

pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Writes a replica's config into `dir` and returns its path.
pub fn replica_config(
    dir: &Path,
    name: &str,
    redis_url: &str,
    upstream: SocketAddr,
    extra: &str,
) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nupstream: {{ url: \"http://{upstream}\" }}\nstate:\n  backend: redis\n  redis: {{ url: \"{redis_url}\", replica: {name}{extra} }}\n{}",
            admin_yaml()
        ),
    )
    .unwrap();
    path
}

/// `authgate cluster init -c config`; returns (success, stdout + stderr).
pub fn cluster_init(config: &Path, force: bool) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["cluster", "init", "-c", config.to_str().unwrap()]);
    if force {
        cmd.arg("--force");
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// One `authgate serve` process in redis mode.
pub struct Replica {
    pub name: String,
    pub proxy: String,
    pub admin: String,
    pub config: PathBuf,
    /// Every line it logged so far.
    pub logs: Arc<std::sync::Mutex<Vec<String>>>,
    child: Child,
}

impl Replica {
    /// Starts the binary and waits for its listening line (not for readiness).
    pub fn spawn(config: &Path, name: &str) -> Replica {
        Replica::spawn_logging(config, name, "warn,authgate=info")
    }

    /// [`Replica::spawn`] with `RUST_LOG=rust_log`.
    pub fn spawn_logging(config: &Path, name: &str, rust_log: &str) -> Replica {
        let child = Command::new(BIN)
            .args(["serve", "-c", config.to_str().unwrap()])
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Owned (and so killed on a panic) from here on.
        let mut replica = Replica {
            name: name.to_string(),
            proxy: String::new(),
            admin: String::new(),
            config: config.to_path_buf(),
            logs: Arc::default(),
            child,
        };
        let listening = await_listening_into(&mut replica.child, name, Some(replica.logs.clone()));
        replica.proxy = listening.proxy;
        replica.admin = listening.admin;
        replica
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    pub async fn ready(&self) -> StatusCode {
        get_status(&format!("http://{}/readyz", self.admin)).await
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        self.wait_ready_for(PATIENCE).await;
    }

    pub async fn wait_ready_for(&self, limit: Duration) {
        let start = Instant::now();
        while self.ready().await != StatusCode::OK {
            assert!(
                start.elapsed() < limit,
                "{} not ready within {limit:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POST to the protected batch route with `token`.
    pub async fn batch(&self, token: Option<&str>) -> StatusCode {
        batch_at(&self.proxy, token).await
    }

    pub async fn admin(&self, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
        self.admin_with(method, path, body, &[]).await
    }

    pub async fn admin_with(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin))
            .header("authorization", format!("Bearer {}", keys().approver));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let response = within(
            "admin",
            client().request(req.body(full(body.to_string())).unwrap()),
        )
        .await
        .unwrap();
        let status = response.status();
        let bytes = body_bytes(response).await;
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    /// Rotates acme's token; returns the answer (status 201 asserted).
    pub async fn rotate(&self) -> Value {
        let (status, answer) = self.admin("POST", "/admin/v1/tenants/acme/token", "").await;
        assert_eq!(status, StatusCode::CREATED, "{}: {answer}", self.name);
        answer
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = signal_quiet(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal_quiet(pid: u32, sig: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
}

pub async fn get_status(url: &str) -> StatusCode {
    let req = Request::get(url).body(full("")).unwrap();
    match tokio::time::timeout(Duration::from_secs(5), client().request(req)).await {
        Ok(Ok(response)) => response.status(),
        _ => StatusCode::GATEWAY_TIMEOUT,
    }
}

/// A deployment: Redis, an upstream answering 200, and `n` initialised replicas, ready.
pub struct Cluster {
    pub redis: Redis,
    pub upstream: Upstream,
    pub replicas: Vec<Replica>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(n: usize, extra: &str) -> Cluster {
        Cluster::start_with(Redis::start(), n, extra).await
    }

    /// [`Cluster::start`] on a Redis the test chose (persistent, with replicas…).
    pub async fn start_with(redis: Redis, n: usize, extra: &str) -> Cluster {
        let url = redis.url();
        Cluster::start_at(redis, &url, n, extra).await
    }

    /// [`Cluster::start_with`], the replicas reaching Redis at `url` (TLS, sentinels).
    pub async fn start_at(redis: Redis, url: &str, n: usize, extra: &str) -> Cluster {
        Cluster::start_logging(redis, url, n, extra, "warn,authgate=info").await
    }

    /// [`Cluster::start_at`] with the replicas logging at `RUST_LOG=rust_log`.
    pub async fn start_logging(
        redis: Redis,
        url: &str,
        n: usize,
        extra: &str,
        rust_log: &str,
    ) -> Cluster {
        let upstream = Upstream::start(|_r| async { http::Response::new(full("ok")) }).await;
        let dir = tempfile::tempdir().unwrap();
        let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let configs: Vec<PathBuf> = names[..n]
            .iter()
            .map(|name| replica_config(dir.path(), name, url, upstream.addr, extra))
            .collect();
        let (ok, out) = cluster_init(&configs[0], false);
        assert!(ok, "{out}");
        let replicas: Vec<Replica> = configs
            .iter()
            .zip(names)
            .map(|(config, name)| Replica::spawn_logging(config, name, rust_log))
            .collect();
        for r in &replicas {
            r.wait_ready().await;
        }
        Cluster {
            redis,
            upstream,
            replicas,
            dir,
        }
    }

    /// Turns authentication on for acme through the first replica.
    pub async fn require_auth(&self) {
        let (status, doc) = self.replicas[0]
            .admin(
                "PUT",
                "/admin/v1/tenants/acme/settings",
                r#"{"require_authentication":true}"#,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{doc}");
    }
}
