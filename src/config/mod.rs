//! Configuration: YAML text in, a fully validated [`Config`] out.
//!
//! Parsing happens in two steps. [`raw`] is the file's shape as serde sees it, with every
//! key optional; [`Config::from_raw`] then checks every value, applies defaults, and
//! collects *every* problem with its key path and line, so an operator fixes a file in
//! one pass. Nothing downstream ever sees a half-valid config. YAML stays inside this
//! module.

mod certs;
mod edge;
mod locate;
mod raw;
mod restart;
mod routing;
mod state;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, Uri};

pub use crate::tls::settings::{CertFiles, ListenerTls, Tls, UpstreamTls};
pub use edge::{
    AccessLog, AccessLogFormat, AccessLogTarget, ProxyProtocol, RequestId, TrustedProxies,
};
pub use locate::Seg;
pub use restart::{generated_replica_name, needs_restart};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub upstream: Upstream,
    /// TLS on the listeners; plain TCP where `None`.
    pub tls: Tls,
    pub protected_routes: Vec<ProtectedRoute>,
    pub case_insensitive_paths: bool,
    /// The route parameter naming the tenant; `None` puts everything in tenant `default`.
    pub tenant_param: Option<String>,
    pub tokens: Tokens,
    pub limits: Limits,
    pub shutdown_timeout: Duration,
    pub state: State,
    pub admin: Admin,
    pub runtime: Runtime,
    pub log: Log,
    /// Peers whose forwarding and PROXY headers are believed.
    pub trusted_proxies: TrustedProxies,
    pub access_log: AccessLog,
    pub request_id: RequestId,
    /// Things worth fixing that do not stop the gateway (a certificate expiring soon).
    pub warnings: Vec<Problem>,
    /// SHA-256 (hex) of the file's text: which config a replica serves
    /// (`/admin/v1/whoami`).
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// PROXY protocol on the proxy listener.
    pub proxy_protocol: ProxyProtocol,
    /// The status listener: `/healthz`, `/readyz` and `/metrics` in plain HTTP, with no
    /// admin key or client certificate (probes, scrapers). `None`: not opened.
    pub status: Option<SocketAddr>,
    /// Whether the admin listener answers `/healthz`, `/readyz` and `/metrics` too
    /// (default true; false only makes sense with `status` set).
    pub admin_probes: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// `scheme://authority` of the backend, with any base path in `base_path`.
    pub origin: Uri,
    /// Prefix prepended to every forwarded path; empty for none. Never ends with `/`.
    pub base_path: String,
    pub connect_timeout: Duration,
    /// How long the backend may take to send its response head.
    pub request_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// Used when `origin` is `https://`.
    pub tls: UpstreamTls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedRoute {
    pub methods: Vec<Method>,
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// The longest `previous_valid_for` a rotation may ask for.
    pub max_overlap: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Longest pause between two pieces of a request body (slow uploads are cut off).
    pub body_read_timeout: Duration,
    /// Longest a response write may stay blocked (clients that stop reading).
    pub send_timeout: Duration,
    pub max_connections: usize,
    pub max_body_bytes: u64,
    /// Idle this long, an HTTP/1.1 connection on plain TCP gives its buffers back
    /// (parked) until its next byte; 0: at once.
    pub park_after: Duration,
    /// Above this many open connections on a listener, idle ones are parked at once.
    pub park_at_once_above: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// One JSON file, already resolved against the config file's folder.
    File { path: PathBuf },
    /// Shared by several replicas through Redis (`state.redis`).
    Redis(RedisState),
}

/// `state.redis`: where the shared state lives and the lease protocol's timing.
/// `Debug` hides the URL's password (see [`state::RedisState`'s impl](RedisState)).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisState {
    /// `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS) or `unix:///path`.
    pub url: String,
    /// TLS settings for a `rediss://` URL (CA, server name, client certificate); `None`
    /// for a plain URL.
    pub tls: Option<Box<UpstreamTls>>,
    /// The file holding the password (read at start and by whoever re-reads it:
    /// [`read_password`]), instead of one in the URL.
    pub password_file: Option<PathBuf>,
    /// Find the primary through Redis Sentinel instead of the URL's host.
    pub sentinel: Option<Box<RedisSentinel>>,
    /// Every key is `{key_prefix}:…` (one hash tag, so Redis Cluster keeps them together).
    pub key_prefix: String,
    /// How long a renewed lease lets this replica serve protected routes.
    pub lease: Duration,
    /// How often the lease is renewed.
    pub heartbeat: Duration,
    /// Longest a change waits for the replicas' acknowledgements.
    pub ack_timeout: Duration,
    /// How many Redis replicas must confirm a change (`WAIT`) before it is reported
    /// done; 0: do not wait for Redis replicas.
    pub wait_replicas: u64,
    /// This replica's name in leases and acknowledgements.
    pub replica: String,
}

pub use state::{read_password, redact_url, RedisSentinel, Secret};

#[derive(Debug, Clone, Default)]
pub struct Admin {
    pub keys: Vec<AdminKey>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminKey")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Approver,
}

#[derive(Debug, Clone, Default)]
pub struct Runtime {
    /// Threads serving connections; 0 means one per core.
    pub worker_threads: usize,
    /// Several threads share tokio's multi-thread (work-stealing) runtime instead of
    /// running one current-thread runtime each (see [`crate::runtime`]).
    pub work_stealing: bool,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path such as `upstream.url`; empty for a problem with the whole file.
    pub key: String,
    /// 1-based line, when it could be located.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.line, self.key.is_empty()) {
            (Some(line), false) => write!(f, "line {line}: {}: {}", self.key, self.message),
            (Some(line), true) => write!(f, "line {line}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.key, self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} problem(s) in {origin}:\n{}", problems.len(), render(problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads and validates a config file; relative paths inside it resolve against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|problems| ConfigError::Invalid {
            origin: path.display().to_string(),
            problems,
        })
    }

    /// Parses YAML text; `base` is the folder relative paths resolve against.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<Problem>> {
        let mut unknown = Vec::new();
        let parsed = if text.trim().is_empty() {
            Ok(raw::RawConfig::default())
        } else {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_ignored::deserialize(de, |path| unknown.push(ignored_path(&path)))
        };
        let raw: raw::RawConfig = match parsed {
            Ok(raw) => raw,
            Err(e) => {
                return Err(vec![Problem {
                    key: String::new(),
                    line: e.location().map(|l| l.line()),
                    message: e.to_string(),
                }])
            }
        };
        let mut problems = validate::Problems::new(text);
        for path in unknown {
            problems.push(&path, "unknown key (check its spelling and nesting)".into());
        }
        let mut config = validate::from_raw(raw, base, &mut problems);
        config.sha256 = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        };
        problems.finish(config)
    }

    /// The built-in defaults `authgate demo` runs on, pointed at `upstream`, with one
    /// approver key (`ops`) whose digest is `admin_key_sha256`.
    pub fn demo(upstream: SocketAddr, state_dir: &Path, admin_key_sha256: &str) -> Config {
        let text = format!(
            "upstream: {{ url: \"http://{upstream}\" }}\nadmin:\n  keys:\n    - {{ name: ops, role: approver, sha256: \"{admin_key_sha256}\" }}\n"
        );
        let mut config = Config::parse(&text, state_dir).expect("the demo config is valid");
        config.listen.proxy = SocketAddr::from(([127, 0, 0, 1], 0));
        config.listen.admin = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path as P;
    let mut segs = Vec::new();
    let mut cur = path;
    loop {
        match cur {
            P::Root => break,
            P::Seq { parent, index } => {
                segs.push(Seg::Index(*index));
                cur = parent;
            }
            P::Map { parent, key } => {
                segs.push(Seg::Key(key.clone()));
                cur = parent;
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                cur = parent
            }
        }
    }
    segs.reverse();
    segs
}

#[cfg(test)]
mod tests;
