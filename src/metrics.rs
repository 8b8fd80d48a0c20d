//! Metric names, the process-wide Prometheus recorder, and pre-registered handles for
//! the request path.
//!
//! The `metrics` facade has one global recorder per process; [`install`] sets it once
//! and every gateway in the process (tests start many) shares it. Hot-path counters are
//! resolved to handles once, at start-up, so a request costs atomic adds, not map
//! lookups.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Proxied requests, by `route_class` (`protected`, `other`) and `status_class` (`2xx`…).
pub const REQUESTS: &str = "authgate_requests_total";
/// Seconds from sending the request upstream to receiving the response head.
pub const UPSTREAM_DURATION: &str = "authgate_upstream_duration_seconds";
/// Failures talking to the upstream, by `kind` (`connect`, `tls`, `timeout`, `other`).
pub const UPSTREAM_ERRORS: &str = "authgate_upstream_errors_total";
/// Requests being handled by the proxy listener.
pub const IN_FLIGHT: &str = "authgate_requests_in_flight";
/// Open client connections on the proxy listener.
pub const OPEN_CONNECTIONS: &str = "authgate_open_connections";
/// Idle HTTP/1.1 connections on the proxy listener holding no buffer until their next byte.
pub const PARKED_CONNECTIONS: &str = "authgate_parked_connections";
/// Open proxy connections on each connection runtime, by `runtime` (0, 1, …).
pub const RUNTIME_CONNECTIONS: &str = "authgate_runtime_connections";
/// Connections closed by the gateway, by `reason` (`header_timeout`, `idle`, `send_timeout`).
pub const CONNECTIONS_CLOSED: &str = "authgate_connections_closed_total";
/// Connections the proxy listener closed over their PROXY protocol header, by `reason`
/// (`untrusted`, `missing`, `malformed`, `truncated`).
pub const PROXY_PROTOCOL_REJECTED: &str = "authgate_proxy_protocol_rejected_total";

/// Auth decisions on protected routes, by `tenant`, `mode` (`on`, `report`; `off` for
/// `not_required`) and `reason` (see [`AUTH_REASONS`]): in mode `report` a reason other
/// than `ok` is a refusal that would have happened, and the request was forwarded.
/// Only tenants with stored state get their own label; the rest share `tenant="_other"`,
/// so traffic cannot grow the metric set.
pub const AUTH_DECISIONS: &str = "authgate_auth_decisions_total";
/// Requests accepted with a tenant's previous token (during a rotation's overlap), by
/// `tenant`: flat once every caller has switched to the new one.
pub const PREVIOUS_TOKEN_ACCEPTED: &str = "authgate_previous_token_accepted_total";
/// When this replica last accepted a tenant's token, in Unix seconds (0: not since it
/// started), by `tenant` and `token` (`current`, `previous`); refreshed at every scrape.
/// Across replicas, `max by (tenant, token)` is the deployment's last use.
pub const TOKEN_LAST_USED: &str = "authgate_token_last_used_timestamp_seconds";
/// Tokens generated, by `tenant`.
pub const ROTATIONS: &str = "authgate_token_rotations_total";
/// Seconds until the tenant's current token expires (negative once expired), by `tenant`.
pub const TOKEN_EXPIRY: &str = "authgate_token_expiry_seconds";
/// The state revision this replica serves.
pub const STATE_REVISION: &str = "authgate_state_revision";
/// How many revisions this replica is behind the newest one it has heard of (from change
/// messages, lease renewals and log reads); 0 when in step (Redis store).
pub const STATE_LAG: &str = "authgate_state_lag_revisions";
/// 1 while this replica refuses protected routes because its Redis lease ran out (or it
/// has not synced yet); always 0 with the file store.
pub const STATE_FENCED: &str = "authgate_state_fenced";
/// Lease renewals (and acknowledgements) sent to Redis, by `result` (`ok`, `failed`).
pub const LEASE_RENEWALS: &str = "authgate_lease_renewals_total";
/// Full state reloads from Redis (start-up, reconnection, gap, epoch change).
pub const STATE_RESYNCS: &str = "authgate_state_resyncs_total";
/// Seconds an admin change waited for the replicas' acknowledgements (Redis store).
pub const ACK_WAIT: &str = "authgate_ack_wait_seconds";
/// Seconds until the certificate a TLS listener serves expires (negative once expired),
/// by `listener` (`proxy`, `admin`); refreshed on (re)load and at every scrape.
pub const TLS_CERT_EXPIRY: &str = "authgate_tls_certificate_expiry_seconds";

/// Config reloads (SIGHUP, `POST /admin/v1/reload`), by `result` (`ok`, `refused`).
pub const CONFIG_RELOADS: &str = "authgate_config_reloads_total";
/// The config revision this process serves: 1 at start, +1 per applied reload (the
/// file's SHA-256 is in `/admin/v1/whoami`).
pub const CONFIG_REVISION: &str = "authgate_config_revision";

/// Access-log lines dropped because the writer's queue was full (refreshed every few
/// seconds).
pub const ACCESS_LOG_DROPPED: &str = "authgate_access_log_dropped_total";

/// Reasons of [`AUTH_DECISIONS`], indexed by [`crate::auth::decide::Reason`].
pub const AUTH_REASONS: [&str; 6] = [
    "missing",
    "malformed",
    "invalid",
    "expired",
    "ok",
    "not_required",
];

/// Label value shared by tenants without stored state.
pub const OTHER_TENANT: &str = "_other";

/// Reasons decided on a token, in both checking modes (all but `not_required`, the last).
pub const CHECKED_REASONS: usize = AUTH_REASONS.len() - 1;

/// Auth decision counters of one tenant label, by mode and reason (counted by
/// `Decision::count` in `auth::decide`).
#[derive(Debug, Clone)]
pub struct TenantCounters {
    /// Mode `on`, by the index of [`AUTH_REASONS`].
    pub on: [Counter; CHECKED_REASONS],
    /// Mode `report`, likewise.
    pub report: [Counter; CHECKED_REASONS],
    pub not_required: Counter,
    pub previous_accepted: Counter,
}

impl TenantCounters {
    /// The counters of `tenant`'s label.
    pub fn new(tenant: &str) -> TenantCounters {
        let one = |mode: &'static str, reason: &'static str| counter!(AUTH_DECISIONS, "tenant" => tenant.to_string(), "mode" => mode, "reason" => reason);
        let checked = |mode| std::array::from_fn(|i| one(mode, AUTH_REASONS[i]));
        TenantCounters {
            on: checked("on"),
            report: checked("report"),
            not_required: one("off", AUTH_REASONS[CHECKED_REASONS]),
            previous_accepted: counter!(PREVIOUS_TOKEN_ACCEPTED, "tenant" => tenant.to_string()),
        }
    }
}

pub fn config_reload(applied: bool) {
    let result = if applied { "ok" } else { "refused" };
    counter!(CONFIG_RELOADS, "result" => result).increment(1);
}

pub fn config_revision(revision: u64) {
    gauge!(CONFIG_REVISION).set(revision as f64);
}

/// Sets the last-use gauges of every tenant's tokens (called when metrics are scraped):
/// `(tenant, token label, Unix seconds or 0)`.
pub fn token_last_used<'a>(uses: impl Iterator<Item = (&'a str, &'static str, u64)>) {
    for (tenant, token, at) in uses {
        gauge!(TOKEN_LAST_USED, "tenant" => tenant.to_string(), "token" => token).set(at as f64);
    }
}

pub fn state_revision(revision: u64) {
    gauge!(STATE_REVISION).set(revision as f64);
}

pub fn state_lag(heard: u64, applied: u64) {
    gauge!(STATE_LAG).set(heard.saturating_sub(applied) as f64);
}

pub fn renewal(ok: bool) {
    counter!(LEASE_RENEWALS, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

pub fn resync() {
    counter!(STATE_RESYNCS).increment(1);
}

/// The open-connections gauge of connection runtime `index`.
pub fn runtime_connections(index: usize) -> Gauge {
    gauge!(RUNTIME_CONNECTIONS, "runtime" => index.to_string())
}

pub fn ack_wait(waited: std::time::Duration) {
    histogram!(ACK_WAIT).record(waited.as_secs_f64());
}

pub fn rotation(tenant: &str) {
    counter!(ROTATIONS, "tenant" => tenant.to_string()).increment(1);
}

/// Sets the expiry gauge of every tenant from its token's expiry (Unix ms), if it has
/// one (called when metrics are scraped).
pub fn token_expiry<'a>(tenants: impl Iterator<Item = (&'a str, Option<u64>)>, now_ms: u64) {
    for (tenant, expires_at_ms) in tenants {
        let gauge = gauge!(TOKEN_EXPIRY, "tenant" => tenant.to_string());
        match expires_at_ms {
            Some(at) => gauge.set((at as f64 - now_ms as f64) / 1000.0),
            None => gauge.set(0.0),
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(UPSTREAM_DURATION.into()), LATENCY_BUCKETS)
                .expect("bucket list is not empty")
                .set_buckets_for_metric(Matcher::Full(ACK_WAIT.into()), LATENCY_BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed by an embedding program; then
            // ours only renders what it was given, which is an empty page.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
            }
            handle
        })
        .clone()
}

/// Route classes, used as an index into [`ProxyMetrics::requests`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Protected = 0,
    Other = 1,
}

/// Handles the proxy touches on every request.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    requests: [[Counter; 5]; 2],
    pub upstream_duration: Histogram,
    pub upstream_connect_errors: Counter,
    pub upstream_tls_errors: Counter,
    pub upstream_timeouts: Counter,
    pub upstream_other_errors: Counter,
    pub in_flight: Gauge,
    pub open_connections: Gauge,
    pub parked_connections: Gauge,
    pub closed_header_timeout: Counter,
    pub closed_idle: Counter,
    pub closed_send_timeout: Counter,
    /// Auth counters for tenants without stored state.
    pub other_tenant: TenantCounters,
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl ProxyMetrics {
    pub fn new() -> Self {
        let class = |route: &'static str| {
            STATUS_CLASSES.map(|s| counter!(REQUESTS, "route_class" => route, "status_class" => s))
        };
        let error = |kind: &'static str| counter!(UPSTREAM_ERRORS, "kind" => kind);
        let closed = |reason: &'static str| counter!(CONNECTIONS_CLOSED, "reason" => reason);
        ProxyMetrics {
            requests: [class("protected"), class("other")],
            upstream_duration: histogram!(UPSTREAM_DURATION),
            upstream_connect_errors: error("connect"),
            upstream_tls_errors: error("tls"),
            upstream_timeouts: error("timeout"),
            upstream_other_errors: error("other"),
            in_flight: gauge!(IN_FLIGHT),
            open_connections: gauge!(OPEN_CONNECTIONS),
            parked_connections: gauge!(PARKED_CONNECTIONS),
            closed_header_timeout: closed("header_timeout"),
            closed_idle: closed("idle"),
            closed_send_timeout: closed("send_timeout"),
            other_tenant: TenantCounters::new(OTHER_TENANT),
        }
    }

    /// Counts one finished request.
    pub fn request(&self, route: RouteClass, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests[route as usize][class].increment(1);
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}
