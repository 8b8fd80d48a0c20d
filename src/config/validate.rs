//! Step two of parsing: every raw value checked, defaults applied, problems collected.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{Method, Uri};
use serde_yaml::Value;

use super::locate::{self, Seg};
use super::raw::RawConfig;
use super::*;

/// Collects problems with their key path and line.
pub(super) struct Problems<'a> {
    src: &'a str,
    list: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub fn new(src: &'a str) -> Self {
        Problems {
            src,
            list: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn push(&mut self, path: &[Seg], message: String) {
        self.list.push(Problem {
            key: locate::display(path),
            line: locate::line_of(self.src, path),
            message,
        });
    }

    /// Something worth fixing that does not make the config invalid.
    pub fn warn(&mut self, path: &[Seg], message: String) {
        self.warnings.push(Problem {
            key: locate::display(path),
            line: locate::line_of(self.src, path),
            message,
        });
    }

    pub fn finish(mut self, mut config: Config) -> Result<Config, Vec<Problem>> {
        if self.list.is_empty() {
            self.warnings.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            config.warnings = self.warnings;
            Ok(config)
        } else {
            self.list.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            Err(self.list)
        }
    }
}

fn k(key: &str) -> Seg {
    Seg::Key(key.to_string())
}

fn path(keys: &[&str]) -> Vec<Seg> {
    keys.iter().map(|key| k(key)).collect()
}

/// Applies defaults and checks every value; the returned config is only used when
/// `problems` stays empty.
pub(super) fn from_raw(raw: RawConfig, base: &Path, p: &mut Problems<'_>) -> Config {
    let listen = Listen {
        proxy: addr(raw.listen.proxy, "0.0.0.0:8080", &["listen", "proxy"], p),
        admin: addr(raw.listen.admin, "127.0.0.1:9090", &["listen", "admin"], p),
    };
    let upstream = upstream(raw.upstream, base, p);
    let tls = super::certs::listeners(raw.tls, base, p);
    let protected_routes = routes(raw.protected_routes, p);
    let tenant_param = match raw.tenant_param {
        None => Some("client".to_string()),
        Some(Value::Null) => None,
        Some(Value::String(s)) if s == "none" => None,
        Some(Value::String(s)) if !s.is_empty() && s.chars().all(is_param_char) => Some(s),
        Some(_) => {
            let msg = "expected a parameter name (letters, digits, `_`) or `none`";
            p.push(&path(&["tenant_param"]), msg.into());
            None
        }
    };
    let tokens = Tokens {
        default_ttl: duration(raw.tokens.default_ttl, "24h", &["tokens", "default_ttl"], p),
        max_ttl: duration(raw.tokens.max_ttl, "90d", &["tokens", "max_ttl"], p),
    };
    if tokens.default_ttl > tokens.max_ttl {
        let msg = "must not be longer than tokens.max_ttl".to_string();
        p.push(&path(&["tokens", "default_ttl"]), msg);
    }
    let limits = limits(raw.limits, p);
    let shutdown_timeout = duration(raw.shutdown_timeout, "30s", &["shutdown_timeout"], p);
    let raw_redis = raw.state.redis;
    let had_redis = raw_redis.is_some();
    let state = match raw.state.backend.as_deref().unwrap_or("file") {
        "file" => {
            let relative = Path::new(raw.state.path.as_deref().unwrap_or("./data/state.json"));
            // `./` segments add nothing but noise to error messages.
            let path = base
                .join(relative)
                .components()
                .filter(|c| *c != std::path::Component::CurDir)
                .collect();
            State::File { path }
        }
        "redis" => {
            if raw.state.path.is_some() {
                let msg = "`path` is for backend `file`; remove it".to_string();
                p.push(&path(&["state", "path"]), msg);
            }
            State::Redis(redis_state(raw_redis.unwrap_or_default(), p))
        }
        other => {
            let msg = format!("unknown backend `{other}`; expected `file` or `redis`");
            p.push(&path(&["state", "backend"]), msg);
            State::File { path: base.into() }
        }
    };
    if had_redis && !matches!(state, State::Redis(_)) {
        let msg = "settings for backend `redis`, but `state.backend` is not `redis`".into();
        p.push(&path(&["state", "redis"]), msg);
    }
    let admin = Admin {
        keys: admin_keys(raw.admin.keys, p),
    };
    let runtime = Runtime {
        worker_threads: raw.runtime.worker_threads.unwrap_or(0),
    };
    let log = Log {
        format: match raw.log.format.as_deref().unwrap_or("human") {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                let msg = format!("unknown format `{other}`; expected `human` or `json`");
                p.push(&path(&["log", "format"]), msg);
                LogFormat::Human
            }
        },
        level: raw.log.level.unwrap_or_else(|| "info".into()),
    };
    Config {
        listen,
        upstream,
        protected_routes,
        case_insensitive_paths: case_insensitive_paths(raw.case_insensitive_paths, p),
        tenant_param,
        tokens,
        limits,
        shutdown_timeout,
        state,
        admin,
        runtime,
        log,
        tls,
        warnings: Vec::new(),
    }
}

fn is_param_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn addr(raw: Option<String>, default: &str, key: &[&str], p: &mut Problems<'_>) -> SocketAddr {
    let text = raw.as_deref().unwrap_or(default);
    text.parse().unwrap_or_else(|_| {
        let msg = format!("`{text}` is not an address; expected IP:PORT such as 127.0.0.1:8080");
        p.push(&path(key), msg);
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

/// A human duration (`2s`, `500ms`, `24h`, `90d`); bare numbers are refused because
/// their unit would be a guess.
fn duration(raw: Option<Value>, default: &str, key: &[&str], p: &mut Problems<'_>) -> Duration {
    let fallback = humantime::parse_duration(default).expect("defaults are valid durations");
    let text = match raw {
        None => return fallback,
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => {
            let msg = format!("`{n}` has no unit; write e.g. `{n}s` or `{n}ms`");
            p.push(&path(key), msg);
            return fallback;
        }
        Some(_) => {
            p.push(&path(key), "expected a duration such as `30s`".into());
            return fallback;
        }
    };
    match humantime::parse_duration(&text) {
        Ok(d) if d.is_zero() => {
            p.push(&path(key), "must be longer than zero".into());
            fallback
        }
        Ok(d) => d,
        Err(e) => {
            let msg = format!("`{text}` is not a duration ({e}); use e.g. `2s`, `24h`, `90d`");
            p.push(&path(key), msg);
            fallback
        }
    }
}

fn upstream(raw: super::raw::RawUpstream, base: &Path, p: &mut Problems<'_>) -> Upstream {
    let key = ["upstream", "url"];
    let mut origin = Uri::from_static("http://127.0.0.1:8081");
    let mut base_path = String::new();
    match raw.url {
        None => p.push(&path(&["upstream"]), "`url` is required".into()),
        Some(text) => match text.parse::<Uri>() {
            Ok(uri) => match (uri.scheme_str(), uri.authority()) {
                (Some(scheme @ ("http" | "https")), Some(authority))
                    if !authority.as_str().contains('@') =>
                {
                    let built = Uri::builder()
                        .scheme(scheme)
                        .authority(authority.clone())
                        .path_and_query("/")
                        .build();
                    if let Ok(built) = built {
                        origin = built;
                    }
                    base_path = uri.path().trim_end_matches('/').to_string();
                    if uri.query().is_some() {
                        p.push(&path(&key), format!("`{text}` must not have a query"));
                    }
                }
                _ => p.push(
                    &path(&key),
                    format!(
                        "`{text}` is not an http:// or https:// URL with a host (and no user info)"
                    ),
                ),
            },
            Err(e) => p.push(&path(&key), format!("`{text}` is not a URL: {e}")),
        },
    }
    let https = origin.scheme() == Some(&http::uri::Scheme::HTTPS);
    Upstream {
        tls: super::certs::upstream(raw.tls, https, base, p),
        origin,
        base_path,
        connect_timeout: duration(
            raw.connect_timeout,
            "2s",
            &["upstream", "connect_timeout"],
            p,
        ),
        request_timeout: duration(
            raw.request_timeout,
            "60s",
            &["upstream", "request_timeout"],
            p,
        ),
        pool_idle_timeout: duration(
            raw.pool_idle_timeout,
            "50s",
            &["upstream", "pool_idle_timeout"],
            p,
        ),
        pool_max_idle: raw.pool_max_idle.unwrap_or(256),
    }
}

fn routes(raw: Option<Vec<super::raw::RawRoute>>, p: &mut Problems<'_>) -> Vec<ProtectedRoute> {
    let Some(raw) = raw else {
        return [
            "/m2/{client}/profile/batchUpdate",
            "/m2/{client}/v2/profile/batchUpdate",
        ]
        .into_iter()
        .map(|path| ProtectedRoute {
            methods: Vec::new(),
            path: path.into(),
        })
        .collect();
    };
    let mut out = Vec::new();
    let mut router = matchit::Router::new();
    for (i, route) in raw.into_iter().enumerate() {
        let at = |key: &str| vec![k("protected_routes"), Seg::Index(i), k(key)];
        let mut methods = Vec::new();
        match &route.methods {
            None => {}
            Some(listed) if listed.is_empty() => p.push(
                &at("methods"),
                "leave `methods` out to cover every method, or list at least one".into(),
            ),
            Some(_) => p.warn(
                &at("methods"),
                "a lenient backend may accept other methods on this path; leave `methods` out \
                 to protect every method (override headers on other methods are refused)"
                    .into(),
            ),
        }
        for m in route.methods.iter().flatten() {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(method) => methods.push(method),
                Err(_) => p.push(&at("methods"), format!("`{m}` is not an HTTP method")),
            }
        }
        let Some(route_path) = route.path else {
            p.push(&at("path"), "`path` is required".into());
            continue;
        };
        if !route_path.starts_with('/') {
            p.push(&at("path"), format!("`{route_path}` must start with `/`"));
            continue;
        }
        // Two identical templates are allowed (e.g. different methods); matchit only has
        // to accept each distinct template once.
        if !out.iter().any(|r: &ProtectedRoute| r.path == route_path) {
            if let Err(e) = router.insert(route_path.clone(), ()) {
                p.push(&at("path"), format!("`{route_path}`: {e}"));
                continue;
            }
        }
        out.push(ProtectedRoute {
            methods,
            path: route_path,
        });
    }
    out
}

fn case_insensitive_paths(raw: Option<bool>, p: &mut Problems<'_>) -> bool {
    if raw == Some(false) {
        p.warn(
            &path(&["case_insensitive_paths"]),
            "literal path segments compare case-sensitively: only right for a backend known \
             to route case-sensitively (Express, IIS, ASP.NET and some Spring setups do not)"
                .into(),
        );
    }
    raw.unwrap_or(true)
}

fn limits(raw: super::raw::RawLimits, p: &mut Problems<'_>) -> Limits {
    let max_header_bytes = raw.max_header_bytes.unwrap_or(65536);
    // hyper's read buffer cannot be smaller than 8 KiB.
    if !(8192..=16 << 20).contains(&max_header_bytes) {
        let msg = format!("{max_header_bytes} is out of range 8192..=16777216");
        p.push(&path(&["limits", "max_header_bytes"]), msg);
    }
    let max_connections = raw.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        p.push(
            &path(&["limits", "max_connections"]),
            "must be at least 1".into(),
        );
    }
    Limits {
        max_header_bytes: max_header_bytes.clamp(8192, 16 << 20) as usize,
        header_read_timeout: duration(
            raw.header_read_timeout,
            "10s",
            &["limits", "header_read_timeout"],
            p,
        ),
        idle_timeout: duration(raw.idle_timeout, "60s", &["limits", "idle_timeout"], p),
        body_read_timeout: duration(
            raw.body_read_timeout,
            "30s",
            &["limits", "body_read_timeout"],
            p,
        ),
        send_timeout: duration(raw.send_timeout, "30s", &["limits", "send_timeout"], p),
        max_connections: max_connections.max(1) as usize,
        max_body_bytes: raw.max_body_bytes.unwrap_or(50 * 1024 * 1024),
    }
}

fn admin_keys(raw: Vec<super::raw::RawAdminKey>, p: &mut Problems<'_>) -> Vec<AdminKey> {
    let mut keys: Vec<AdminKey> = Vec::new();
    for (i, key) in raw.into_iter().enumerate() {
        let at = |f: &str| vec![k("admin"), k("keys"), Seg::Index(i), k(f)];
        let name = key.name.unwrap_or_default();
        if name.is_empty() {
            p.push(
                &at("name"),
                "`name` is required (it is written to the audit log)".into(),
            );
        } else if keys.iter().any(|k| k.name == name) {
            p.push(&at("name"), format!("`{name}` is used by another key"));
        }
        let role = match key.role.as_deref() {
            Some("approver") => Role::Approver,
            Some("viewer") => Role::Viewer,
            other => {
                let msg = format!("{other:?} is not a role; expected `approver` or `viewer`");
                p.push(&at("role"), msg);
                Role::Viewer
            }
        };
        let mut sha256 = [0u8; 32];
        match key.sha256.map(|h| hex::decode_to_slice(h, &mut sha256)) {
            Some(Ok(())) => {}
            _ => p.push(
                &at("sha256"),
                "expected the 64-hex-digit SHA-256 of the key (`authgate admin-key` prints it)"
                    .into(),
            ),
        }
        keys.push(AdminKey { name, role, sha256 });
    }
    keys
}

/// More Redis replicas than any deployment runs: a larger `wait_replicas` is a typo, and
/// every change would fail waiting for replicas that do not exist.
const MAX_WAIT_REPLICAS: u64 = 100;

/// `state.redis`: the URL is required; the lease must outlast several heartbeats (a
/// replica keeps serving through a missed renewal or two) and the writers' wait.
fn redis_state(raw: super::raw::RawRedis, p: &mut Problems<'_>) -> RedisState {
    let at = |key: &str| path(&["state", "redis", key]);
    let url = match raw.url {
        None => {
            p.push(&path(&["state", "redis"]), "`url` is required".into());
            String::new()
        }
        Some(url) => {
            if let Err(e) = redis::Client::open(url.as_str()) {
                let msg = format!("`{url}` is not a Redis URL ({e}); expected redis://host:port");
                p.push(&at("url"), msg);
            }
            url
        }
    };
    let key_prefix = raw.key_prefix.unwrap_or_else(|| "authgate".into());
    let plain = |c: char| c.is_ascii_graphic() && !matches!(c, '{' | '}');
    if key_prefix.is_empty() || !key_prefix.chars().all(plain) {
        let msg = "use printable characters without spaces, `{` or `}`".into();
        p.push(&at("key_prefix"), msg);
    }
    let lease = duration(raw.lease, "1500ms", &["state", "redis", "lease"], p);
    let heartbeat = duration(raw.heartbeat, "250ms", &["state", "redis", "heartbeat"], p);
    if lease <= heartbeat * 3 {
        let msg = format!(
            "must be longer than three heartbeats ({})",
            humantime::format_duration(heartbeat * 3)
        );
        p.push(&at("lease"), msg);
    }
    let ack_timeout = match raw.ack_timeout {
        None => lease + Duration::from_millis(500),
        some => duration(some, "2s", &["state", "redis", "ack_timeout"], p),
    };
    if ack_timeout < lease {
        let msg = "must be at least `lease`: a writer waits out a silent replica's lease".into();
        p.push(&at("ack_timeout"), msg);
    }
    let wait_replicas = raw.wait_replicas.unwrap_or(0);
    if wait_replicas > MAX_WAIT_REPLICAS {
        let msg = format!(
            "at most {MAX_WAIT_REPLICAS}: the number of Redis replicas (`--replicaof`) that must confirm each change; 0 turns it off"
        );
        p.push(&at("wait_replicas"), msg);
    }
    let replica = raw.replica.unwrap_or_else(default_replica_name);
    let plain = |c: char| c.is_ascii_graphic();
    if replica.is_empty() || replica.len() > 128 || !replica.chars().all(plain) {
        let msg = "use 1 to 128 printable characters without spaces".into();
        p.push(&at("replica"), msg);
    }
    RedisState {
        url,
        key_prefix,
        lease,
        heartbeat,
        ack_timeout,
        wait_replicas,
        replica,
    }
}

/// `hostname-pid-random`: unique per process, readable in `/admin/v1/cluster`.
fn default_replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "authgate".into());
    let mut random = [0u8; 3];
    let _ = getrandom::fill(&mut random);
    format!("{host}-{}-{}", std::process::id(), hex::encode(random))
}
