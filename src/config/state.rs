//! The `state` section: backend `file` (the path resolved against the config file's
//! folder) or `redis` with its `state.redis` settings: the URL (`redis://`, `rediss://`
//! for TLS, `unix://`), `tls` (checked like the other TLS files), `password_file`,
//! `sentinel`, and the lease protocol's timing. Passwords never appear in a message:
//! URLs are shown with theirs replaced by `***`, password files are named, not quoted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::certs;
use super::raw::{RawSentinel, RawState};
use super::validate::{duration, path, Problems};
use super::{RedisState, State};

/// `state`: `file` by default.
pub(super) fn state(raw: RawState, base: &Path, p: &mut Problems<'_>) -> State {
    let raw_redis = raw.redis;
    let had_redis = raw_redis.is_some();
    let state = match raw.backend.as_deref().unwrap_or("file") {
        "file" => {
            let relative = Path::new(raw.path.as_deref().unwrap_or("./data/state.json"));
            // `./` segments add nothing but noise to error messages.
            let path = base
                .join(relative)
                .components()
                .filter(|c| *c != std::path::Component::CurDir)
                .collect();
            State::File { path }
        }
        "redis" => {
            if raw.path.is_some() {
                let msg = "`path` is for backend `file`; remove it".to_string();
                p.push(&path(&["state", "path"]), msg);
            }
            State::Redis(redis_state(raw_redis.unwrap_or_default(), base, p))
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
    state
}

/// More Redis replicas than any deployment runs: a larger `wait_replicas` is a typo, and
/// every change would fail waiting for replicas that do not exist.
const MAX_WAIT_REPLICAS: u64 = 100;

/// `state.redis`: the URL is required; the lease must outlast several heartbeats (a
/// replica keeps serving through a missed renewal or two) and the writers' wait.
fn redis_state(raw: super::raw::RawRedis, base: &Path, p: &mut Problems<'_>) -> RedisState {
    let at = |key: &str| path(&["state", "redis", key]);
    let url = match raw.url {
        None => {
            p.push(&path(&["state", "redis"]), "`url` is required".into());
            String::new()
        }
        Some(url) => url,
    };
    let parsed = (!url.is_empty()).then(|| check_url(&url, p)).flatten();
    let tls_url = parsed.as_ref().is_some_and(|u| u.tls);
    let tls = certs::client(
        &["state", "redis", "tls"],
        raw.tls,
        tls_url,
        "applies only to a rediss:// state.redis.url (TLS); change the URL or remove this",
        base,
        p,
    );
    let tls = tls_url.then(|| Box::new(tls));
    let password_file = raw.password_file.map(|file| {
        let file = certs::resolve(base, &file);
        check_password_file(&file, &at("password_file"), p);
        file
    });
    if let Some(parsed) = &parsed {
        if parsed.password && password_file.is_some() {
            let msg =
                "the URL holds a password and `password_file` names another; keep one (the file)"
                    .into();
            p.push(&at("password_file"), msg);
        } else if parsed.password {
            let msg = "the URL holds a password, so it is wherever this file is copied; move it to a file named by `state.redis.password_file`".into();
            p.warn(&at("url"), msg);
        }
    }
    let sentinel = raw
        .sentinel
        .and_then(|raw| sentinel(raw, base, p))
        .map(Box::new);
    if sentinel.is_some() && parsed.as_ref().is_some_and(|u| u.unix) {
        let msg =
            "a unix:// URL cannot be combined with `sentinel`: sentinels answer with TCP addresses"
                .into();
        p.push(&at("sentinel"), msg);
    }
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
        tls,
        password_file,
        sentinel,
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

/// `state.redis.sentinel`: where to ask for the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSentinel {
    /// The name the sentinels monitor the primary under (`sentinel monitor <name> …`).
    pub master_name: String,
    /// `host:port` of each sentinel, asked in turn.
    pub nodes: Vec<(String, u16)>,
    /// The sentinels' own password (`requirepass` in sentinel.conf), if any.
    pub password: Option<Secret>,
    /// The file holding it, read at start instead.
    pub password_file: Option<PathBuf>,
}

/// A password from the config file: compared, never shown (`Debug` prints `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Debug for RedisState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisState")
            .field("url", &redact_url(&self.url))
            .field("tls", &self.tls)
            .field("password_file", &self.password_file)
            .field("sentinel", &self.sentinel)
            .field("key_prefix", &self.key_prefix)
            .field("lease", &self.lease)
            .field("heartbeat", &self.heartbeat)
            .field("ack_timeout", &self.ack_timeout)
            .field("wait_replicas", &self.wait_replicas)
            .field("replica", &self.replica)
            .finish()
    }
}

/// `url` with the password in its user part replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let user = &rest[..at];
    let user = match user.split_once(':') {
        Some((name, _)) => format!("{name}:***"),
        None => user.to_string(),
    };
    format!("{scheme}://{user}{}", &rest[at..])
}

/// A password file's contents without the trailing line break; an error names the file,
/// never what it holds. The store reads it at start; a reload may call it again.
pub fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read password file {}: {e}", path.display()))?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(format!("{}: the password file is empty", path.display()));
    }
    if password.contains(['\n', '\r']) {
        return Err(format!(
            "{}: the password file holds more than one line",
            path.display()
        ));
    }
    Ok(password.to_string())
}

/// What the config check learned from the URL.
struct UrlFacts {
    tls: bool,
    unix: bool,
    password: bool,
}

/// Parses the URL the way the store will (`rediss://` as `redis://` plus TLS); every
/// message shows it redacted.
fn check_url(url: &str, p: &mut Problems<'_>) -> Option<UrlFacts> {
    let at = path(&["state", "redis", "url"]);
    let shown = redact_url(url);
    let (tls, plain) = match url.strip_prefix("rediss://") {
        Some(rest) => (true, format!("redis://{rest}")),
        None => (false, url.to_string()),
    };
    if tls && plain.contains('#') {
        let msg = format!("`{shown}`: a URL fragment (`#insecure`) is not accepted; certificate verification cannot be turned off (set `state.redis.tls.ca` for a private CA)");
        p.push(&at, msg);
        return None;
    }
    match redis::IntoConnectionInfo::into_connection_info(plain.as_str()) {
        Err(e) => {
            let msg = format!("`{shown}` is not a Redis URL ({e}); expected redis://host:port, rediss://host:port (TLS) or unix:///path");
            p.push(&at, msg);
            None
        }
        Ok(info) => Some(UrlFacts {
            tls,
            unix: matches!(info.addr, redis::ConnectionAddr::Unix(_)),
            password: info.redis.password.is_some(),
        }),
    }
}

/// The file must be readable and hold a password; its contents are never shown. One
/// that others may read is a warning.
fn check_password_file(file: &Path, at: &[super::Seg], p: &mut Problems<'_>) {
    match read_password(file) {
        Err(e) => p.push(at, e),
        Ok(_) => {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(file) {
                if meta.permissions().mode() & 0o004 != 0 {
                    let msg = format!("{}: readable by every user; `chmod o-r` it", file.display());
                    p.warn(at, msg);
                }
            }
        }
    }
}

fn sentinel(raw: RawSentinel, base: &Path, p: &mut Problems<'_>) -> Option<RedisSentinel> {
    let at = |key: &str| path(&["state", "redis", "sentinel", key]);
    let master_name = raw.master_name.unwrap_or_default();
    if master_name.is_empty() || !master_name.chars().all(|c| c.is_ascii_graphic()) {
        let msg =
            "is required: the name the sentinels monitor the primary under (printable, no spaces)";
        p.push(&at("master_name"), msg.into());
    }
    let raw_nodes = raw.nodes.unwrap_or_default();
    if raw_nodes.is_empty() {
        let msg = "is required: one or more `host:port` of sentinels".into();
        p.push(&at("nodes"), msg);
    }
    let mut nodes = Vec::new();
    for (i, node) in raw_nodes.iter().enumerate() {
        let split = node
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.trim_matches(['[', ']']), port.parse().ok()?)));
        match split {
            Some((host, port)) if !host.is_empty() && port != 0 => {
                nodes.push((host.to_string(), port))
            }
            _ => {
                let mut key = at("nodes");
                key.push(super::Seg::Index(i));
                p.push(&key, format!("`{node}` is not host:port"));
            }
        }
    }
    let password_file = raw.password_file.map(|file| {
        let file = certs::resolve(base, &file);
        check_password_file(&file, &at("password_file"), p);
        file
    });
    if raw.password.is_some() && password_file.is_some() {
        let msg = "`password` and `password_file` both set; keep one (the file)".into();
        p.push(&at("password"), msg);
    } else if raw.password.is_some() {
        let msg = "a password in the config file is wherever this file is copied; move it to a file named by `password_file`".into();
        p.warn(&at("password"), msg);
    }
    Some(RedisSentinel {
        master_name,
        nodes,
        password: raw.password.map(Secret),
        password_file,
    })
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn a_urls_password_is_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_url("redis://:hunter2@10.0.0.5:6379/0"),
            "redis://:***@10.0.0.5:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:p%40ss@redis.internal/1"),
            "rediss://app:***@redis.internal/1"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("redis://app@host/0"), "redis://app@host/0");
    }
}
