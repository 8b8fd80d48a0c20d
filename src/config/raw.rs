//! The file's shape as serde sees it: every key optional, values that need checking kept
//! as YAML scalars so that one bad value does not stop the others from being checked.
//!
//! Unknown keys are collected by `serde_ignored` (see [`super::parse`]) rather than
//! `deny_unknown_fields`, which would stop at the first one.

use serde::Deserialize;
use serde_yaml::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawConfig {
    pub listen: RawListen,
    pub upstream: RawUpstream,
    pub protected_routes: Option<Vec<RawRoute>>,
    /// `None`: the default, `true`.
    pub case_insensitive_paths: Option<bool>,
    /// `None` when the key is absent (default `client`); `Some(Value::Null)` for `~`.
    #[serde(deserialize_with = "present")]
    pub tenant_param: Option<Value>,
    pub tokens: RawTokens,
    pub limits: RawLimits,
    pub shutdown_timeout: Option<Value>,
    pub state: RawState,
    pub admin: RawAdmin,
    pub runtime: RawRuntime,
    pub log: RawLog,
    pub tls: RawTls,
    pub trusted_proxies: Vec<String>,
    pub access_log: RawAccessLog,
    pub request_id: RawRequestId,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawAccessLog {
    pub target: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRequestId {
    pub header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawListen {
    pub proxy: Option<String>,
    pub admin: Option<String>,
    pub proxy_protocol: Option<String>,
    pub status: Option<String>,
    pub admin_probes: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawUpstream {
    pub url: Option<String>,
    pub connect_timeout: Option<Value>,
    pub request_timeout: Option<Value>,
    pub pool_idle_timeout: Option<Value>,
    pub pool_max_idle: Option<usize>,
    pub tls: Option<RawUpstreamTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawUpstreamTls {
    pub ca: Option<String>,
    pub server_name: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawTls {
    pub proxy: Option<RawListenerTls>,
    pub admin: Option<RawAdminTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawListenerTls {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawAdminTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRoute {
    /// `None`: every method.
    pub methods: Option<Vec<String>>,
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawTokens {
    pub default_ttl: Option<Value>,
    pub max_ttl: Option<Value>,
    pub max_overlap: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawLimits {
    pub max_header_bytes: Option<u64>,
    pub header_read_timeout: Option<Value>,
    pub idle_timeout: Option<Value>,
    pub body_read_timeout: Option<Value>,
    pub send_timeout: Option<Value>,
    pub max_connections: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub park_after: Option<Value>,
    pub park_at_once_above: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawState {
    pub backend: Option<String>,
    pub path: Option<String>,
    pub redis: Option<RawRedis>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRedis {
    pub url: Option<String>,
    pub key_prefix: Option<String>,
    pub lease: Option<Value>,
    pub heartbeat: Option<Value>,
    pub ack_timeout: Option<Value>,
    pub wait_replicas: Option<u64>,
    pub replica: Option<String>,
    pub tls: Option<RawUpstreamTls>,
    pub password_file: Option<String>,
    pub sentinel: Option<RawSentinel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawSentinel {
    pub master_name: Option<String>,
    pub nodes: Option<Vec<String>>,
    pub password: Option<String>,
    pub password_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawAdmin {
    pub keys: Vec<RawAdminKey>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawAdminKey {
    pub name: Option<String>,
    pub role: Option<String>,
    pub sha256: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRuntime {
    pub worker_threads: Option<usize>,
    pub work_stealing: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// Keeps an explicit YAML null apart from an absent key (plain `Option` folds them).
fn present<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(de).map(Some)
}
