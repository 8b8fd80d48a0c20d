//! Test helpers: the real gateway on port-0 listeners, small real upstream servers, and
//! real HTTP clients. Every wait here is on an event, bounded by a generous timeout so
//! a broken gateway fails the test instead of hanging it.
#![allow(dead_code)] // each test binary uses a different subset

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use authgate::{Config, Listeners};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound on any single wait in a test.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The protected bulk-update route of tenant `acme`.
pub const BATCH: &str = "/m2/acme/v2/profile/batchUpdate";

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Awaits `fut`, failing the test with `what` if it takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Admin keys every test gateway accepts.
pub struct Keys {
    pub approver: String,
    pub viewer: String,
}

/// The admin keys, generated once per test binary.
pub fn keys() -> &'static Keys {
    static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let new = || {
            authgate::auth::token::generate(authgate::auth::token::ADMIN_KEY_PREFIX)
                .unwrap()
                .value
        };
        Keys {
            approver: new(),
            viewer: new(),
        }
    })
}

/// The `admin:` config section holding [`keys`]' digests.
pub fn admin_yaml() -> String {
    let digest = |k: &str| authgate::auth::token::Digest::of(k).to_hex();
    format!(
        "admin:\n  keys:\n    - {{ name: ops, role: approver, sha256: \"{}\" }}\n    - {{ name: auditor, role: viewer, sha256: \"{}\" }}\n",
        digest(&keys().approver),
        digest(&keys().viewer)
    )
}

/// A gateway running in this process, with its own state directory.
pub struct Gateway {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: std::sync::Arc<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), authgate::Error>>,
}

impl Gateway {
    /// Starts a gateway in front of `upstream` with extra YAML config lines appended,
    /// and the test admin keys.
    pub async fn start(upstream: SocketAddr, extra_yaml: &str) -> Gateway {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        Gateway::start_in(dir, upstream, extra_yaml)
            .await
            .expect("gateway starts")
    }

    /// Starts a gateway whose state lives in `dir` (to restart on the same state).
    pub async fn start_in(
        dir: std::sync::Arc<tempfile::TempDir>,
        upstream: SocketAddr,
        extra_yaml: &str,
    ) -> Result<Gateway, authgate::Error> {
        let text = format!(
            "upstream:\n  url: \"http://{upstream}\"\n{extra_yaml}\n{}",
            admin_yaml()
        );
        Gateway::start_text(dir, &text).await
    }

    /// Starts a gateway on the whole config `text`; relative paths in it resolve in `dir`.
    pub async fn start_text(
        dir: std::sync::Arc<tempfile::TempDir>,
        text: &str,
    ) -> Result<Gateway, authgate::Error> {
        let mut config = Config::parse(text, dir.path()).unwrap_or_else(|p| panic!("{p:#?}"));
        if let Some(after) = park_after_override() {
            config.limits.park_after = after;
        }
        // Opening the store first surfaces a bad state file as an error of its own.
        authgate::state::StateHandle::open(authgate::open_store(&config)?).await?;
        let listeners = Listeners {
            proxy: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            status: None,
        };
        let proxy = listeners.proxy_addr().unwrap();
        let admin = listeners.admin_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(authgate::run(config, listeners, async move {
            let _ = stopped.await;
        }));
        Ok(Gateway {
            proxy,
            admin,
            dir,
            stop: Some(stop),
            task,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Signals shutdown without waiting for the drain.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        within("the gateway to stop", &mut self.task)
            .await
            .expect("gateway task")
            .expect("gateway run");
    }

    pub async fn join(self) -> Result<(), authgate::Error> {
        within("the gateway to stop", self.task)
            .await
            .expect("gateway task")
    }
}

/// A real upstream HTTP server running `handler` for every request.
pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve_http(stream, handler.clone()));
            }
        });
        Upstream { addr, task }
    }
}

/// Serves one upstream connection (HTTP/1.1 or HTTP/2) with `handler`.
pub async fn serve_http<IO, F, Fut>(io: IO, handler: Arc<F>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let service = service_fn(move |req| {
        let fut = handler(req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address nothing listens on.
pub async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// An HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A cleartext HTTP/2 (prior knowledge) client.
pub fn h2c_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// The park delay every gateway of this test binary runs with, whatever its config says:
/// `AUTHGATE_TEST_PARK_AFTER` (`0s` parks every idle connection at once) for any suite,
/// else 0 for the suites compiled into tests/park_at_once.rs.
pub fn park_after_override() -> Option<Duration> {
    if let Some(after) = std::env::var_os("AUTHGATE_TEST_PARK_AFTER") {
        let after = after.to_str().expect("AUTHGATE_TEST_PARK_AFTER is UTF-8");
        return Some(
            humantime::parse_duration(after).expect("AUTHGATE_TEST_PARK_AFTER is a duration"),
        );
    }
    module_path!()
        .starts_with("park_at_once::")
        .then_some(Duration::ZERO)
}

/// The admin listener's `/metrics` page.
pub async fn metrics_text(gw: &Gateway) -> String {
    let response = within(
        "metrics",
        client().get(gw.admin_url("/metrics").parse().unwrap()),
    )
    .await
    .unwrap();
    String::from_utf8(body_bytes(response).await.to_vec()).unwrap()
}

/// The value of the first sample line starting with `series` in a `/metrics` page.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// POST to the protected batch route at `addr` (`host:port`) with `token`.
pub async fn batch_at(addr: &str, token: Option<&str>) -> http::StatusCode {
    let mut req = Request::post(format!("http://{addr}{BATCH}"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    within("POST", client().request(req.body(full("")).unwrap()))
        .await
        .unwrap()
        .status()
}

/// Reads a whole response body.
pub async fn body_bytes(response: Response<Incoming>) -> Bytes {
    within("a response body", response.into_body().collect())
        .await
        .expect("response body")
        .to_bytes()
}

/// Reads a whole request body (in an upstream handler).
pub async fn request_bytes(request: Request<Incoming>) -> Bytes {
    request
        .into_body()
        .collect()
        .await
        .expect("request body")
        .to_bytes()
}

/// Whether an external tool can run; a test skips (with a message) when it cannot,
/// unless `AUTHGATE_REQUIRE_TOOLS` is set, as in CI, where a missing tool fails.
pub fn have_tool(name: &str, version_arg: &str) -> bool {
    let found = std::process::Command::new(name)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("AUTHGATE_REQUIRE_TOOLS").is_none(),
            "{name} is required (AUTHGATE_REQUIRE_TOOLS is set) but cannot run"
        );
        eprintln!("SKIPPED: {name} is not installed");
    }
    found
}

pub mod admin;
pub mod haproxy;
pub mod lenient;
pub mod load;
pub mod redis;
pub mod relay;
pub mod sentinel;
pub mod tls;

pub mod scripted;

pub mod process;
