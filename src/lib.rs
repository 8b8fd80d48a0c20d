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
//! - [`live`]: the running config as one swappable value, and its reload.
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
//! - [`probe`]: `authgate probe URL`, a plain-HTTP health check for containers.
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
pub mod live;
pub mod metrics;
pub mod probe;
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
use std::path::PathBuf;
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
    /// `listen.status`, when configured.
    pub status: Option<TcpListener>,
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
            status: match config.listen.status {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            },
        })
    }

    pub fn proxy_addr(&self) -> io::Result<SocketAddr> {
        self.proxy.local_addr()
    }

    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    pub fn status_addr(&self) -> io::Result<Option<SocketAddr>> {
        self.status
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
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
    run_with(config, listeners, shutdown, RunOptions::default()).await
}

/// What the binary adds to [`run`]: the file reloads re-read, the trigger that starts
/// one (SIGHUP), and how a reload changes the log level.
#[derive(Default)]
pub struct RunOptions {
    /// The config file (`serve -c`); `None`: reloads re-read only the TLS files.
    pub config_path: Option<PathBuf>,
    /// Fired on SIGHUP: reload (see [`live`]).
    pub reload: tls::ReloadTrigger,
    pub log_level: Option<live::LogLevelSetter>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

/// [`run`], reloading the config each time `options.reload` fires.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    options: RunOptions,
) -> Result<(), Error> {
    for warning in &config.warnings {
        tracing::warn!("config: {warning}");
    }
    let prometheus = metrics::install();
    // File store: one writer per file, for as long as this process runs.
    let _state_lock = match &config.state {
        config::State::File { path } => Some(state::lock::acquire(path)?),
        config::State::Redis(_) => None,
    };
    let state = Arc::new(StateHandle::open(open_store(&config)?).await?);
    // Redis: the replica loop (sync, acknowledgements, lease); stopped after the drain.
    let sync_stop = CancellationToken::new();
    let sync = state.start(sync_stop.clone());
    let acceptors = Arc::new(tls::Acceptors::load(&config.tls)?);
    let proxy_metrics = metrics::ProxyMetrics::new();
    let readiness = Arc::new(Readiness::default());
    let access_log = access_log::AccessLogger::open(&config.access_log)?.map(Arc::new);
    let https = config.tls.proxy.is_some();
    let live = Arc::new(live::Reloader::new(
        config,
        options.config_path,
        acceptors,
        proxy_metrics.clone(),
        options.log_level,
    )?);
    let proxy = Arc::new(Proxy::new(
        live.clone(),
        https,
        state.clone(),
        proxy_metrics,
        access_log.clone(),
    ));
    let admin = Arc::new(Admin::new(
        live.clone(),
        state,
        readiness.clone(),
        prometheus.clone(),
    ));

    let proxy_life = lifecycle();
    let admin_life = lifecycle();
    let current = |pick: fn(&live::Live) -> Arc<ServeOptions>| {
        let live = live.clone();
        move || pick(&live.current())
    };
    proxy_life.tracker.spawn(server::serve(
        listeners.proxy,
        proxy,
        current(|l| l.proxy_serve.clone()),
        proxy_life.clone(),
    ));
    if let Some(status) = listeners.status {
        // Plain HTTP whatever `tls.admin` says: probes present no client certificate.
        let status_options = current(|l| {
            Arc::new(ServeOptions {
                tls: None,
                ..(*l.admin_serve).clone()
            })
        });
        let probes = Arc::new(admin::Probes(admin.clone()));
        admin_life.tracker.spawn(server::serve(
            status,
            probes,
            status_options,
            admin_life.clone(),
        ));
    }
    admin_life.tracker.spawn(server::serve(
        listeners.admin,
        admin,
        current(|l| l.admin_serve.clone()),
        admin_life.clone(),
    ));
    let upkeep = tokio::spawn(upkeep(prometheus, access_log.clone()));
    let log_upkeep = access_log.map(|log| tokio::spawn(log.maintain()));
    let reloader = tokio::spawn(reload_on(options.reload, live.clone()));
    tracing::info!("gateway running");

    shutdown.await;
    let shutdown_timeout = live.current().config.shutdown_timeout;
    tracing::info!(timeout = ?shutdown_timeout, "draining");
    readiness.start_draining();
    drain(&proxy_life, shutdown_timeout).await;
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

/// Reloads the config whenever `reload` fires (SIGHUP); triggers arriving during a
/// reload fold into one more.
async fn reload_on(reload: tls::ReloadTrigger, live: Arc<live::Reloader>) {
    loop {
        reload.triggered().await;
        let live = live.clone();
        // Problems are logged by the reload itself.
        let _ = tokio::task::spawn_blocking(move || live.reload("SIGHUP")).await;
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
