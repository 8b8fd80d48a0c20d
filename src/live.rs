//! The running configuration and its live reload (SIGHUP, `POST /admin/v1/reload`).
//!
//! Everything a reload may change is one immutable [`Live`] value behind one `ArcSwap`
//! held by the [`Reloader`]: the validated config, the route table built from it, the
//! upstream pool, and each listener's connection options. The proxy loads it once per
//! request and the admin router once per admin call, and keep that `Arc` to the end of
//! the request, so a request sees the old config or the new one, never a mix, and an
//! in-flight request keeps the upstream pool it started on. New connections take their
//! clocks and limits from the value current at accept.
//!
//! A reload, in order ([`Reloader::reload`]):
//! 1. read and validate the whole file, with the checks of `authgate check`;
//! 2. refuse any change to a key that needs a restart ([`needs_restart`]);
//! 3. build every fallible piece: the upstream pool (its TLS files), each TLS listener's
//!    new certificate, the log level;
//! 4. only when all of that worked, swap in the new value and the TLS configs.
//!
//! Any problem at steps 1–3 changes nothing: each is logged and returned (the admin API
//! answers 422 with the list). Reloads are serialised by a mutex; a SIGHUP arriving
//! during one folds into the next.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{generated_replica_name, needs_restart, Config, Problem, State};
use crate::metrics::ProxyMetrics;
use crate::routes::RouteTable;
use crate::server::{proxy_protocol, ServeOptions};
use crate::tls::{Acceptors, TlsError};
use crate::upstream::Pool;

/// Applies a new `log.level` (an `EnvFilter` directive) or says why it cannot; the
/// binary's log subscriber provides it.
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What a reload may change, built from one validated config.
#[derive(Debug)]
pub struct Live {
    pub config: Config,
    /// 1 for the config the process started with, +1 per applied reload.
    pub revision: u64,
    pub routes: RouteTable,
    /// Shared with the previous value when `upstream` did not change and is plain
    /// HTTP, so a reload keeps the warm connections.
    pub pool: Arc<Pool>,
    /// The options of connections accepted from now on, per listener.
    pub proxy_serve: Arc<ServeOptions>,
    pub admin_serve: Arc<ServeOptions>,
}

/// A reload that changed nothing, and why.
#[derive(Debug, Clone)]
pub struct Refused {
    pub problems: Vec<Problem>,
}

/// The outcome of an applied reload.
#[derive(Debug, Clone)]
pub struct Applied {
    pub revision: u64,
    pub sha256: String,
}

/// Holds the [`Live`] value and replaces it on reload.
pub struct Reloader {
    live: ArcSwap<Live>,
    /// The file reloads re-read; `None` for a gateway started from text (tests, the
    /// demo), whose reloads only re-read the TLS files.
    path: Option<PathBuf>,
    acceptors: Arc<Acceptors>,
    metrics: ProxyMetrics,
    log_level: Option<LogLevelSetter>,
    /// One reload at a time.
    running: Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .field("revision", &self.live.load().revision)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// The first value, from the config the process started with. Fails only when the
    /// upstream's TLS files cannot be loaded.
    pub fn new(
        config: Config,
        path: Option<PathBuf>,
        acceptors: Arc<Acceptors>,
        metrics: ProxyMetrics,
        log_level: Option<LogLevelSetter>,
    ) -> Result<Reloader, TlsError> {
        let pool = Arc::new(pool(&config)?);
        let live = build(config, 1, pool, &acceptors, &metrics);
        crate::metrics::config_revision(1);
        Ok(Reloader {
            live: ArcSwap::from_pointee(live),
            path,
            acceptors,
            metrics,
            log_level,
            running: Mutex::new(()),
        })
    }

    /// The value in force now; keep it for the whole request.
    pub fn current(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// The TLS listeners (for `POST /admin/v1/reload-tls` and the expiry gauges).
    pub fn acceptors(&self) -> &Arc<Acceptors> {
        &self.acceptors
    }

    /// Re-reads the config file and applies it whole, or changes nothing. `cause`
    /// (`SIGHUP`, `admin API (ops)`) goes to the audit log. Blocking (file reads).
    pub fn reload(&self, cause: &str) -> Result<Applied, Refused> {
        let _one = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = self.try_reload();
        match &outcome {
            Ok(applied) => {
                crate::metrics::config_reload(true);
                crate::metrics::config_revision(applied.revision);
                tracing::info!(
                    target: "audit",
                    %cause,
                    action = "config_reloaded",
                    revision = applied.revision,
                    sha256 = %applied.sha256,
                    "config reloaded; new requests use it"
                );
            }
            Err(refused) => {
                crate::metrics::config_reload(false);
                for problem in &refused.problems {
                    tracing::error!(%cause, "config reload refused: {problem}");
                }
                tracing::warn!(
                    target: "audit",
                    %cause,
                    action = "config_reload_refused",
                    problems = refused.problems.len(),
                    "config reload refused; the running config stays in force"
                );
            }
        }
        outcome
    }

    fn try_reload(&self) -> Result<Applied, Refused> {
        let old = self.live.load_full();
        let Some(path) = &self.path else {
            // No file to re-read: the TLS files are all there is to reload.
            let refused: Vec<Problem> = self
                .acceptors
                .reload("reload")
                .into_iter()
                .filter_map(|r| {
                    r.outcome
                        .err()
                        .map(|e| whole(format!("tls.{}: {e}", r.listener)))
                })
                .collect();
            if !refused.is_empty() {
                return Err(Refused { problems: refused });
            }
            return Ok(Applied {
                revision: old.revision,
                sha256: old.config.sha256.clone(),
            });
        };
        let text = std::fs::read_to_string(path).map_err(|e| Refused {
            problems: vec![whole(format!("cannot read {}: {e}", path.display()))],
        })?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        let mut config = Config::parse(&text, base).map_err(|problems| Refused { problems })?;
        if let (State::Redis(old), State::Redis(new)) = (&old.config.state, &mut config.state) {
            if generated_replica_name(&new.replica) {
                new.replica = old.replica.clone();
            }
        }
        let problems = needs_restart(&old.config, &config, &text);
        if !problems.is_empty() {
            return Err(Refused { problems });
        }
        // Every fallible piece first; nothing is in service until all were built.
        let mut problems = Vec::new();
        let reuse = old.config.upstream == config.upstream
            && config.upstream.origin.scheme_str() == Some("http");
        let pool = if reuse {
            Some(old.pool.clone())
        } else {
            match pool(&config) {
                Ok(pool) => Some(Arc::new(pool)),
                Err(e) => {
                    problems.push(whole(format!("upstream.tls: {e}")));
                    None
                }
            }
        };
        let mut staged = Vec::new();
        let sources = [
            (&self.acceptors.proxy, &config.tls.proxy),
            (&self.acceptors.admin, &config.tls.admin),
        ];
        for (acceptor, source) in sources {
            if let (Some(acceptor), Some(source)) = (acceptor, source) {
                match acceptor.stage(source) {
                    Ok(s) => staged.push((acceptor.clone(), s)),
                    Err(e) => problems.push(whole(format!("tls.{}: {e}", acceptor.listener()))),
                }
            }
        }
        if !problems.is_empty() {
            return Err(Refused { problems });
        }
        if let Some(set_level) = &self.log_level {
            if config.log.level != old.config.log.level {
                set_level(&config.log.level).map_err(|e| Refused {
                    problems: vec![whole(format!("log.level: {e}"))],
                })?;
            }
        }
        // Commit: nothing below can fail.
        for (acceptor, s) in staged {
            acceptor.commit(s);
        }
        self.acceptors.record_expiry(std::time::SystemTime::now());
        for warning in &config.warnings {
            tracing::warn!("config: {warning}");
        }
        let pool = pool.expect("no problem means the pool was built");
        let revision = old.revision + 1;
        let live = build(config, revision, pool, &self.acceptors, &self.metrics);
        let sha256 = live.config.sha256.clone();
        self.live.store(Arc::new(live));
        Ok(Applied { revision, sha256 })
    }
}

/// A problem with the whole reload rather than one key.
fn whole(message: String) -> Problem {
    Problem {
        key: String::new(),
        line: None,
        message,
    }
}

fn build(
    config: Config,
    revision: u64,
    pool: Arc<Pool>,
    acceptors: &Acceptors,
    metrics: &ProxyMetrics,
) -> Live {
    let (proxy_serve, admin_serve) = serve_options(&config, metrics, acceptors);
    Live {
        routes: RouteTable::new(
            &config.protected_routes,
            config.case_insensitive_paths,
            config.tenant_param.clone(),
        ),
        pool,
        proxy_serve: Arc::new(proxy_serve),
        admin_serve: Arc::new(admin_serve),
        revision,
        config,
    }
}

/// The upstream pool `config.upstream` describes, one list per connection runtime.
/// Fails only when its TLS files cannot be loaded.
fn pool(config: &Config) -> Result<Pool, TlsError> {
    let upstream = &config.upstream;
    use hyper_util::client::legacy::connect::HttpConnector;
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(upstream.connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(std::time::Duration::from_secs(60)));
    let connector = crate::tls::upstream_connector(connector, &upstream.tls)?;
    Ok(Pool::new(
        connector,
        upstream.origin.clone(),
        upstream.pool_max_idle,
        upstream.pool_idle_timeout,
        crate::runtime::shards(&config.runtime),
    ))
}

/// The proxy listener's connection limits, metrics and PROXY protocol, and the admin
/// listener's (the same clocks, fewer connections, no proxy metrics, no PROXY protocol).
fn serve_options(
    config: &Config,
    metrics: &ProxyMetrics,
    acceptors: &Acceptors,
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
        proxy_protocol: proxy_protocol::Settings::new(
            config.listen.proxy_protocol,
            Arc::new(config.trusted_proxies.clone()),
        ),
        park: crate::server::Parking {
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
        proxy_protocol: proxy_protocol::Settings::default(),
        park: crate::server::Parking {
            parked: None,
            ..proxy.park.clone()
        },
        ..proxy.clone()
    };
    (proxy, admin)
}
