//! authgate: a reverse-proxy authentication gateway for legacy profile backends.
//!
//! # Layout
//!
//! Dependencies run one way (`tests/module_graph.rs` fails on a cycle): [`server`] →
//! [`body`]; [`proxy`] and [`admin`] → [`error`] → [`body`] → [`upstream`] → [`tls`];
//! [`error`] → [`auth`] → [`routes`], [`state`], [`metrics`]; [`config`] → [`tls`] →
//! [`time`].
//!
//! - [`config`]: YAML → validated [`Config`], every problem reported at once.
//! - [`server`]: accept loop, connection limits, the per-connection clocks, drain.
//! - [`proxy`]: the proxy listener's handler, read top-down: handle → admit (framing,
//!   the decision, the fence, the body limit) → forward; its header rules.
//! - [`upstream`]: the connection pool, the request-body limiter, the pooled response
//!   body, and the sorting of a failed exchange.
//! - [`auth`]: Bearer parsing, path normalisation, token digests, the pure decision.
//! - [`routes`]: the protected route table, strict and loose matching.
//! - [`state`]: tenant state, its immutable snapshots, and the stores behind them.
//! - [`admin`]: the admin listener: one route table, one function per endpoint.
//! - [`error`]: gateway errors, one response record per error, every conversion.
//! - [`body`]: the response body type shared by both listeners.
//! - [`metrics`]: metric names, the Prometheus recorder, per-request handles.
//! - [`tls`]: certificate files, reloadable listener TLS, the upstream TLS connector.
//! - [`time`]: the wall clock and RFC 3339.
//! - [`sample_backend`]: an in-memory stand-in for the legacy profile service.
//! - [`demo`]: `authgate demo`, the gateway and the sample backend together.
//!
//! [`run`] takes already-bound [`Listeners`] and a shutdown future, so tests bind port 0
//! and read the addresses before starting it.

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod body;
pub mod config;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod sample_backend;
pub mod server;
pub mod state;
pub mod time;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::admin::{Admin, Readiness};
use crate::proxy::Proxy;
use crate::server::{Lifecycle, ServeOptions};
use crate::state::{file::FileStore, StateHandle, StateStore, StoreError};

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("cannot load the state: {0}")]
    State(#[from] StoreError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

/// The store the config names. Fails only for a Redis URL the redis crate refuses,
/// which `authgate check` has already reported.
pub fn open_store(config: &Config) -> Result<Box<dyn StateStore>, StoreError> {
    Ok(match &config.state {
        config::State::File { path } => Box::new(FileStore::new(path.clone())),
        config::State::Redis(redis) => Box::new(state::redis::RedisStore::new(redis.clone())?),
    })
}

/// The gateway's bound sockets.
#[derive(Debug)]
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config.listen`.
    pub async fn bind(config: &Config) -> io::Result<Listeners> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
        };
        Ok(Listeners {
            proxy: bind(config.listen.proxy).await?,
            admin: bind(config.listen.admin).await?,
        })
    }

    pub fn proxy_addr(&self) -> io::Result<SocketAddr> {
        self.proxy.local_addr()
    }

    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }
}

/// Loads the state, then runs the gateway until `shutdown` resolves, then drains:
/// `/readyz` answers 503 at once, the proxy listener stops accepting, in-flight requests
/// get up to `shutdown_timeout` to finish, and whatever is left is dropped.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    run_with_reload(config, listeners, shutdown, tls::ReloadTrigger::default()).await
}

/// [`run`], re-reading the TLS listeners' certificates each time `reload` fires
/// (`main.rs` fires it on SIGHUP).
pub async fn run_with_reload(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    reload: tls::ReloadTrigger,
) -> Result<(), Error> {
    for warning in &config.warnings {
        tracing::warn!("config: {warning}");
    }
    let prometheus = metrics::install();
    let state = Arc::new(StateHandle::open(open_store(&config)?).await?);
    // Redis: the replica loop (sync, acknowledgements, lease); stopped after the drain.
    let sync_stop = CancellationToken::new();
    let sync = state.start(sync_stop.clone());
    let acceptors = Arc::new(tls::Acceptors::load(&config.tls)?);
    let proxy_metrics = metrics::ProxyMetrics::new();
    let readiness = Arc::new(Readiness::default());
    let (proxy_opts, admin_opts) = serve_options(&config, &proxy_metrics, &acceptors);
    let access_log = access_log::AccessLogger::open(&config.access_log)?.map(Arc::new);
    let proxy = Arc::new(Proxy::new(
        &config,
        state.clone(),
        proxy_metrics,
        access_log.clone(),
    )?);
    let admin = Arc::new(Admin::new(
        &config,
        state,
        readiness.clone(),
        prometheus.clone(),
        acceptors.clone(),
    ));

    let proxy_life = lifecycle();
    let admin_life = lifecycle();
    proxy_life.tracker.spawn(server::serve(
        listeners.proxy,
        proxy,
        proxy_opts,
        proxy_life.clone(),
    ));
    admin_life.tracker.spawn(server::serve(
        listeners.admin,
        admin,
        admin_opts,
        admin_life.clone(),
    ));
    let upkeep = tokio::spawn(upkeep(prometheus, access_log.clone()));
    let log_upkeep = access_log.map(|log| tokio::spawn(log.maintain()));
    let reloader = tokio::spawn(reload_tls_on(reload, acceptors.clone()));
    tracing::info!("gateway running");

    shutdown.await;
    tracing::info!(timeout = ?config.shutdown_timeout, "draining");
    readiness.start_draining();
    drain(&proxy_life, config.shutdown_timeout).await;
    drain(&admin_life, Duration::from_secs(1)).await;
    upkeep.abort();
    sync_stop.cancel();
    if let Some(sync) = sync {
        let _ = tokio::time::timeout(Duration::from_secs(2), sync).await;
    }
    reloader.abort();
    if let Some(log_upkeep) = log_upkeep {
        log_upkeep.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// The proxy listener's connection limits, metrics and PROXY protocol, and the admin
/// listener's (the same clocks, fewer connections, no proxy metrics, no PROXY protocol).
fn serve_options(
    config: &Config,
    metrics: &metrics::ProxyMetrics,
    acceptors: &tls::Acceptors,
) -> (ServeOptions, ServeOptions) {
    let limits = &config.limits;
    let proxy = ServeOptions {
        header_read_timeout: limits.header_read_timeout,
        idle_timeout: limits.idle_timeout,
        send_timeout: limits.send_timeout,
        max_header_bytes: limits.max_header_bytes,
        max_connections: limits.max_connections,
        open_connections: Some(metrics.open_connections.clone()),
        in_flight: Some(metrics.in_flight.clone()),
        closed_header_timeout: Some(metrics.closed_header_timeout.clone()),
        closed_idle: Some(metrics.closed_idle.clone()),
        closed_send_timeout: Some(metrics.closed_send_timeout.clone()),
        tls: acceptors.proxy.clone(),
        proxy_protocol: server::proxy_protocol::Settings::new(
            config.listen.proxy_protocol,
            Arc::new(config.trusted_proxies.clone()),
        ),
        park: server::Parking {
            after: limits.park_after,
            at_once_above: limits.park_at_once_above,
            parked: Some(metrics.parked_connections.clone()),
        },
    };
    let admin = ServeOptions {
        max_connections: 256,
        open_connections: None,
        in_flight: None,
        closed_header_timeout: None,
        closed_idle: None,
        closed_send_timeout: None,
        tls: acceptors.admin.clone(),
        proxy_protocol: server::proxy_protocol::Settings::default(),
        park: server::Parking {
            parked: None,
            ..proxy.park.clone()
        },
        ..proxy.clone()
    };
    (proxy, admin)
}

/// Keeps the Prometheus histograms' windows moving, and the access log's drop count.
async fn upkeep(
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    access_log: Option<Arc<access_log::AccessLogger>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        prometheus.run_upkeep();
        if let Some(log) = &access_log {
            ::metrics::counter!(metrics::ACCESS_LOG_DROPPED).absolute(log.dropped());
        }
    }
}

/// Reloads the listeners' certificates whenever `reload` fires (SIGHUP).
async fn reload_tls_on(reload: tls::ReloadTrigger, acceptors: Arc<tls::Acceptors>) {
    loop {
        reload.triggered().await;
        acceptors.reload("signal");
    }
}

fn lifecycle() -> Lifecycle {
    Lifecycle {
        shutdown: CancellationToken::new(),
        force: CancellationToken::new(),
        tracker: TaskTracker::new(),
    }
}

/// Stops accepting, waits up to `timeout` for open connections, then drops the rest.
async fn drain(life: &Lifecycle, timeout: Duration) {
    life.shutdown.cancel();
    life.tracker.close();
    if tokio::time::timeout(timeout, life.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing the remaining connections");
        life.force.cancel();
        life.tracker.wait().await;
    }
}
