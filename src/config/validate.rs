//! Step two of parsing: every raw value checked, defaults applied, problems collected.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::Uri;
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

pub(super) fn k(key: &str) -> Seg {
    Seg::Key(key.to_string())
}

pub(super) fn path(keys: &[&str]) -> Vec<Seg> {
    keys.iter().map(|key| k(key)).collect()
}

/// Applies defaults and checks every value; the returned config is only used when
/// `problems` stays empty.
pub(super) fn from_raw(raw: RawConfig, base: &Path, p: &mut Problems<'_>) -> Config {
    let listen = Listen {
        proxy: addr(raw.listen.proxy, "0.0.0.0:8080", &["listen", "proxy"], p),
        admin: addr(raw.listen.admin, "127.0.0.1:9090", &["listen", "admin"], p),
        proxy_protocol: super::edge::proxy_protocol(raw.listen.proxy_protocol, p),
        status: raw
            .listen
            .status
            .map(|text| addr(Some(text), "", &["listen", "status"], p)),
        admin_probes: raw.listen.admin_probes.unwrap_or(true),
    };
    if let Some(status) = listen.status {
        let taken = [("proxy", listen.proxy), ("admin", listen.admin)];
        for (name, other) in taken {
            if status == other && status.port() != 0 {
                let msg = format!("`{status}` is already listen.{name}'s address");
                p.push(&path(&["listen", "status"]), msg);
            }
        }
    }
    if !listen.admin_probes && listen.status.is_none() {
        let msg = "the probes would be answered nowhere; set listen.status too".to_string();
        p.push(&path(&["listen", "admin_probes"]), msg);
    }
    let upstream = upstream(raw.upstream, base, p);
    let tls = super::certs::listeners(raw.tls, base, p);
    let protected_routes = super::routing::routes(raw.protected_routes, p);
    let tenant_param = super::routing::tenant_param(raw.tenant_param, p);
    let tokens = Tokens {
        default_ttl: duration(raw.tokens.default_ttl, "24h", &["tokens", "default_ttl"], p),
        max_ttl: duration(raw.tokens.max_ttl, "90d", &["tokens", "max_ttl"], p),
        max_overlap: duration(raw.tokens.max_overlap, "1h", &["tokens", "max_overlap"], p),
    };
    if tokens.default_ttl > tokens.max_ttl {
        let msg = "must not be longer than tokens.max_ttl".to_string();
        p.push(&path(&["tokens", "default_ttl"]), msg);
    }
    let limits = limits(raw.limits, p);
    let shutdown_timeout = duration(raw.shutdown_timeout, "30s", &["shutdown_timeout"], p);
    let state = super::state::state(raw.state, base, p);
    let admin = Admin {
        keys: admin_keys(raw.admin.keys, p),
    };
    let runtime = Runtime {
        worker_threads: raw.runtime.worker_threads.unwrap_or(0),
        work_stealing: raw.runtime.work_stealing.unwrap_or(false),
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
        case_insensitive_paths: super::routing::case_insensitive_paths(
            raw.case_insensitive_paths,
            p,
        ),
        tenant_param,
        tokens,
        limits,
        shutdown_timeout,
        state,
        admin,
        runtime,
        log,
        tls,
        trusted_proxies: super::edge::trusted_proxies(raw.trusted_proxies, p),
        access_log: super::edge::access_log(raw.access_log, base, p),
        request_id: super::edge::request_id(raw.request_id, p),
        warnings: Vec::new(),
        sha256: String::new(),
    }
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
pub(super) fn duration(
    raw: Option<Value>,
    default: &str,
    key: &[&str],
    p: &mut Problems<'_>,
) -> Duration {
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

/// A duration where 0 means "at once" (`limits.park_after`).
fn duration_or_zero(
    raw: Option<Value>,
    default: &str,
    key: &[&str],
    p: &mut Problems<'_>,
) -> Duration {
    match &raw {
        Some(Value::String(s)) if humantime::parse_duration(s).is_ok_and(|d| d.is_zero()) => {
            Duration::ZERO
        }
        _ => duration(raw, default, key, p),
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
        pool_max_idle: raw.pool_max_idle.unwrap_or(64),
    }
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
        park_after: duration_or_zero(raw.park_after, "1s", &["limits", "park_after"], p),
        park_at_once_above: raw
            .park_at_once_above
            .map_or(256, |n| usize::try_from(n).unwrap_or(usize::MAX)),
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
