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
//! - [`upgrade`]: SIGUSR2, handing the listening sockets and the state to a new binary.
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
pub mod runtime;
pub mod sample_backend;
pub mod server;
pub mod state;
pub mod time;
pub mod tls;
pub mod upgrade;
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

/// A listening socket on `addr`; the error names the address.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

impl Listeners {
    /// Binds the addresses in `config.listen`.
    pub async fn bind(config: &Config) -> io::Result<Listeners> {
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
/// one (SIGHUP), how a reload changes the log level, and the upgrade (SIGUSR2).
#[derive(Default)]
pub struct RunOptions {
    /// The config file (`serve -c`); `None`: reloads re-read only the TLS files.
    pub config_path: Option<PathBuf>,
    /// Fired on SIGHUP: reload (see [`live`]).
    pub reload: tls::ReloadTrigger,
    pub log_level: Option<live::LogLevelSetter>,
    /// Fired on SIGUSR2: hand over to a new process (see [`upgrade`]); `None`: never.
    pub upgrade: Option<tls::ReloadTrigger>,
    /// This process was started by an upgrade: the rest of its hand-over.
    pub hand_over: Option<upgrade::HandOver>,
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
    mut config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    mut options: RunOptions,
) -> Result<(), Error> {
    for warning in &config.warnings {
        tracing::warn!("config: {warning}");
    }
    let prometheus = metrics::install();
    let alternate = options
        .hand_over
        .as_ref()
        .is_some_and(|h| h.alternate_replica);
    if let config::State::Redis(redis) = &mut config.state {
        redis.replica = upgrade::replica_name(&redis.replica, alternate);
    }
    let sockets = match options.upgrade {
        Some(_) => Some(upgrade::Sockets::of(&listeners)?),
        None => None,
    };
    if let Some(hand_over) = &mut options.hand_over {
        hand_over.take_state().await?;
    }
    // File store: one writer per file, for as long as this process runs (lent to an
    // upgrade's new process).
    let state_lock = match &config.state {
        config::State::File { path } => Some(Arc::new(state::lock::Held::acquire(path)?)),
        config::State::Redis(_) => None,
    };
    let store = upgrade::store_identity(&config.state);
    let state = Arc::new(StateHandle::open(open_store(&config)?).await?);
    // Logged once the state is loaded (and its lock held): a process that says it
    // listens is the one serving this state.
    tracing::info!(
        proxy = %listeners.proxy_addr()?,
        admin = %listeners.admin_addr()?,
        status = %listeners.status_addr()?.map_or("off".to_string(), |a| a.to_string()),
        upstream = %config.upstream.origin,
        "listening"
    );
    if options.hand_over.is_some() && state_lock.is_some() {
        // Started by an upgrade: no change until the old process has stopped serving
        // from its copy of the state (its `fenced`).
        state.freeze().await;
    }
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
        state.clone(),
        readiness.clone(),
        prometheus.clone(),
    ));

    if options.hand_over.is_some() {
        // Redis: accept only once protected routes can be served (the first renewal);
        // a Redis that cannot be reached fences the old process too.
        let wait = live
            .current()
            .config
            .shutdown_timeout
            .min(upgrade::TIMEOUT / 2);
        if tokio::time::timeout(wait, state.confirmed()).await.is_err() {
            tracing::warn!("upgrade: the shared state is not confirmed yet; serving fenced");
        }
    }
    // Proxy connections are spread over one current-thread runtime per worker thread.
    let workers = runtime::Workers::start(runtime::shards(&live.current().config.runtime))?;
    let proxy_life = Lifecycle {
        workers: workers.clone(),
        ..lifecycle()
    };
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
    let predecessor = match options.hand_over {
        Some(hand_over) => {
            let predecessor = hand_over.ready().await?;
            state.unfreeze();
            tracing::info!(pid = std::process::id(), "upgrade: this process serves now");
            Some(predecessor)
        }
        None => {
            upgrade::notify_systemd(&[sd_notify::NotifyState::Ready]);
            None
        }
    };
    tracing::info!("gateway running");

    let upgraded = CancellationToken::new();
    let upgrade_stop = CancellationToken::new();
    let upgrader = match (options.upgrade, sockets) {
        (Some(trigger), Some(sockets)) => Some(tokio::spawn(upgrade_on(
            Upgrader {
                sockets,
                state: state.clone(),
                lock: state_lock,
                alternate: !alternate,
                store,
                predecessor,
            },
            trigger,
            upgraded.clone(),
            upgrade_stop.clone(),
        ))),
        _ => None,
    };
    tokio::select! {
        () = shutdown => {}
        () = upgraded.cancelled() => {}
    }
    // A hand-over in progress is settled (undone) before the drain, never cut short.
    upgrade_stop.cancel();
    let successor = match upgrader {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    let shutdown_timeout = live.current().config.shutdown_timeout;
    tracing::info!(timeout = ?shutdown_timeout, "draining");
    if successor.is_some() {
        // The new process has the admin and status sockets too: stop taking them now.
        admin_life.shutdown.cancel();
    } else {
        readiness.start_draining();
    }
    drain(&proxy_life, shutdown_timeout).await;
    drain(&admin_life, Duration::from_secs(1)).await;
    if let Some(workers) = workers {
        workers.stop();
    }
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
    // Held to here: the new process reads this process's exit from the channel.
    drop(successor);
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

/// What an upgrade hands over, and to whom.
struct Upgrader {
    sockets: upgrade::Sockets,
    state: Arc<StateHandle>,
    lock: Option<Arc<state::lock::Held>>,
    /// The replica name the new process takes ([`upgrade::replica_name`]).
    alternate: bool,
    store: String,
    /// The process this one replaced, if it did: no upgrade until it has exited (two
    /// at once would put two processes under one replica name).
    predecessor: Option<upgrade::Predecessor>,
}

/// Hands over to a new process each time `trigger` fires (SIGUSR2), until one serves;
/// then cancels `upgraded` and returns the new process's side, which this process holds
/// until it exits. `stop` (this process stops) ends the wait, and settles a hand-over
/// in progress first.
async fn upgrade_on(
    up: Upgrader,
    trigger: tls::ReloadTrigger,
    upgraded: CancellationToken,
    stop: CancellationToken,
) -> Option<upgrade::Successor> {
    loop {
        tokio::select! {
            () = trigger.triggered() => {}
            () = stop.cancelled() => return None,
        }
        if !upgrade::Predecessor::gone(up.predecessor.as_ref()) {
            tracing::error!("upgrade refused: the process this one replaced is still draining; send SIGUSR2 again once it has exited");
            continue;
        }
        match hand_over(&up, &stop).await {
            Ok(successor) => {
                let pid = successor.child.id().unwrap_or_default();
                tracing::info!(
                    pid,
                    "upgrade: the new process serves; this one stops accepting and drains"
                );
                upgraded.cancel();
                return Some(successor);
            }
            Err(why) => tracing::error!("upgrade failed: {why}; this process serves on"),
        }
    }
}

/// One hand-over ([`upgrade`]'s steps, this process's side).
async fn hand_over(up: &Upgrader, stop: &CancellationToken) -> Result<upgrade::Successor, String> {
    use upgrade::Step;
    let (state, lock) = (&up.state, up.lock.as_deref());
    let mut successor =
        upgrade::start(&up.sockets, up.alternate, &up.store).map_err(|e| e.to_string())?;
    let pid = successor.child.id().unwrap_or_default();
    tracing::info!(pid, "upgrade: started the new process");
    let mut lent = false;
    let steps = async {
        loop {
            let step = tokio::select! {
                step = successor.next() => step?,
                () = stop.cancelled() => return Err("this process was asked to stop during the hand-over".to_string()),
            };
            match step {
                Step::State if !lent => {
                    if let Some(lock) = lock {
                        state.freeze().await;
                        lock.release();
                    }
                    lent = true;
                    successor
                        .released()
                        .await
                        .map_err(|e| format!("cannot answer the new process: {e}"))?;
                }
                Step::State => return Err("the new process asked for the state twice".to_string()),
                Step::Ready => {
                    // Step 5: stop serving from this copy, then let the new process take
                    // changes.
                    if lock.is_some() {
                        state.hand_over();
                    }
                    return successor
                        .fenced()
                        .await
                        .map_err(|e| format!("the new process went away at its last step: {e}"));
                }
            }
        }
    };
    let outcome = tokio::time::timeout(upgrade::TIMEOUT, steps)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the new process did not serve within {:?}",
                upgrade::TIMEOUT
            ))
        });
    let Err(why) = outcome else {
        return Ok(successor);
    };
    // The new process took no change (it takes them only after `fenced` arrived).
    successor.kill().await;
    if let (Some(lock), true) = (lock, lent) {
        let back = match lock.retake() {
            Ok(()) => state.thaw().await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the state lock cannot be taken back: {e}")),
        };
        if let Err(e) = back {
            // Fail closed: the state may not be what this process holds.
            state.hand_over();
            return Err(format!(
                "{why}; and {e}: changes and protected routes stay refused; restart this process"
            ));
        }
        state.resume();
    }
    Err(why)
}

fn lifecycle() -> Lifecycle {
    Lifecycle {
        shutdown: CancellationToken::new(),
        force: CancellationToken::new(),
        tracker: TaskTracker::new(),
        workers: None,
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
