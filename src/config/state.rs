//! The `state` section: backend `file` (the path resolved against the config file's
//! folder) or `redis` with its `state.redis` settings.

use std::path::Path;
use std::time::Duration;

use super::raw::RawState;
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
    state
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
