//! The listener side: each TLS listener's `rustls::ServerConfig`, swappable at run time.
//!
//! An [`Acceptor`] holds the files a listener's certificate comes from and one
//! `ArcSwap` of what it serves now (config and validity together, so they cannot
//! disagree). A handshake loads the current config once; a reload builds a complete new
//! config from the files and swaps it in only when every check passed, so a broken
//! replacement never reaches a client and connections already open are untouched.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use metrics::gauge;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::ServerConfig;
use tokio::sync::Notify;

use super::files::{self, Standing, Validity};
use super::settings::{ListenerTls, Tls};
use super::{provider, rfc3339, TlsError, VERSIONS};
use crate::metrics::TLS_CERT_EXPIRY;

/// ALPN protocols offered by the listeners, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// What a listener serves now, and the files it came from.
#[derive(Debug)]
struct Served {
    source: ListenerTls,
    config: Arc<ServerConfig>,
    validity: Validity,
}

/// A listener config built from (possibly new) files, not yet in service: a config
/// reload builds every piece first and puts them in service only when all were built.
#[derive(Debug)]
pub struct Staged(Served);

/// One listener's TLS config, reloadable from its files.
pub struct Acceptor {
    listener: &'static str,
    served: ArcSwap<Served>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("listener", &self.listener)
            .field("source", &self.served.load().source)
            .field("validity", &self.validity())
            .finish()
    }
}

impl Acceptor {
    /// Loads `source`; `listener` (`proxy`, `admin`) names it in logs and metrics.
    pub fn load(listener: &'static str, source: ListenerTls) -> Result<Acceptor, TlsError> {
        let served = build(&source, SystemTime::now())?;
        Ok(Acceptor {
            listener,
            served: ArcSwap::from_pointee(served),
        })
    }

    pub fn listener(&self) -> &'static str {
        self.listener
    }

    /// The validity of the certificate new handshakes get.
    pub fn validity(&self) -> Validity {
        self.served.load().validity
    }

    /// The config for one new handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.served.load().config.clone()
    }

    /// Re-reads the files; on any problem the current config stays in service.
    pub fn reload(&self) -> Result<Validity, TlsError> {
        let source = self.served.load().source.clone();
        let staged = self.stage(&source)?;
        let validity = staged.0.validity;
        self.commit(staged);
        Ok(validity)
    }

    /// Builds the config of `source` (the same files or new ones) without serving it.
    pub fn stage(&self, source: &ListenerTls) -> Result<Staged, TlsError> {
        build(source, SystemTime::now()).map(Staged)
    }

    /// Puts a staged config in service: new handshakes use it.
    pub fn commit(&self, staged: Staged) {
        self.served.store(Arc::new(staged.0));
        log_served(
            self,
            SystemTime::now(),
            "TLS certificate reloaded; new handshakes use it",
        );
    }
}

fn build(source: &ListenerTls, now: SystemTime) -> Result<Served, TlsError> {
    let identity = files::load_identity(&source.cert, &source.key, now)?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS)?;
    let builder = match &source.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let (roots, _) = files::load_roots(ca)?;
            // Required, not merely offered: a client without a certificate from this CA
            // fails the handshake.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::BadCa {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(identity.key)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Served {
        source: source.clone(),
        config: Arc::new(config),
        validity: identity.validity,
    })
}

/// The TLS listeners of one gateway.
#[derive(Debug, Default)]
pub struct Acceptors {
    pub proxy: Option<Arc<Acceptor>>,
    pub admin: Option<Arc<Acceptor>>,
}

/// The outcome of reloading one listener.
#[derive(Debug)]
pub struct Reloaded {
    pub listener: &'static str,
    pub outcome: Result<Validity, TlsError>,
}

impl Acceptors {
    /// Loads every listener named in `tls:`; the first problem stops the start.
    pub fn load(tls: &Tls) -> Result<Acceptors, TlsError> {
        let load = |listener, source: &Option<ListenerTls>| {
            source
                .clone()
                .map(|source| Acceptor::load(listener, source).map(Arc::new))
                .transpose()
        };
        let acceptors = Acceptors {
            proxy: load("proxy", &tls.proxy)?,
            admin: load("admin", &tls.admin)?,
        };
        let now = SystemTime::now();
        for acceptor in acceptors.iter() {
            log_served(acceptor, now, "TLS certificate loaded");
        }
        acceptors.record_expiry(now);
        Ok(acceptors)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Acceptor>> {
        self.proxy.iter().chain(self.admin.iter())
    }

    /// Re-reads every listener's files. Listeners are independent: one refused
    /// replacement keeps that listener's current certificate and does not stop the others.
    /// `cause` (`SIGHUP`, the admin key's name) goes to the log.
    pub fn reload(&self, cause: &str) -> Vec<Reloaded> {
        let now = SystemTime::now();
        let outcomes = self
            .iter()
            .map(|acceptor| {
                let outcome = acceptor.reload();
                match &outcome {
                    Ok(_) => {}
                    Err(e) => tracing::error!(
                        listener = acceptor.listener,
                        %cause,
                        error = %e,
                        "new TLS certificate refused; the previous one stays in service"
                    ),
                }
                Reloaded {
                    listener: acceptor.listener,
                    outcome,
                }
            })
            .collect();
        self.record_expiry(now);
        outcomes
    }

    /// Sets each listener's seconds-to-expiry gauge.
    pub fn record_expiry(&self, now: SystemTime) {
        for acceptor in self.iter() {
            gauge!(TLS_CERT_EXPIRY, "listener" => acceptor.listener)
                .set(acceptor.validity().seconds_left(now));
        }
    }
}

fn log_served(acceptor: &Acceptor, now: SystemTime, what: &str) {
    let validity = acceptor.validity();
    let cert = acceptor.served.load().source.cert.display().to_string();
    let not_after = rfc3339(validity.not_after);
    match validity.standing(now) {
        Standing::ExpiresSoon(left) => tracing::warn!(
            listener = acceptor.listener,
            %cert,
            %not_after,
            days_left = left.as_secs() / 86_400,
            "{what}; it expires soon, renew it"
        ),
        _ => tracing::info!(listener = acceptor.listener, %cert, %not_after, "{what}"),
    }
}

/// Asks a running gateway to re-read its listener certificates; `main.rs` fires it on
/// SIGHUP. Triggers that arrive while a reload runs fold into one more reload.
#[derive(Debug, Clone, Default)]
pub struct ReloadTrigger(Arc<Notify>);

impl ReloadTrigger {
    pub fn trigger(&self) {
        self.0.notify_one();
    }

    pub async fn triggered(&self) {
        self.0.notified().await;
    }
}
