//! How a connection to Redis is made: the URL's address, or the primary the sentinels
//! name ([`super::sentinel`]); TCP or a Unix socket; TLS with rustls for `rediss://`
//! (the same client config as an `https://` upstream: `state.redis.tls.ca` or the
//! built-in roots, an optional client certificate, `server_name` instead of the host
//! dialled); then the redis crate's connection setup (AUTH with the password from the
//! URL or `password_file`, SELECT) on that stream.
//!
//! The TLS handshake is ours, not the redis crate's: its rustls feature (0.32) verifies
//! the URL's host only, so an address a sentinel answers with (an IP) could not be
//! checked against the certificate's DNS name, and it loads its own roots.
//!
//! Every dial also says which primary it reached: [`Dialer::generation`] counts the
//! primaries seen, so a connection made before a failover is recognised as stale.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ::redis::aio::{MultiplexedConnection, PubSub};
use ::redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::sentinel::Sentinels;
use crate::config::{read_password, redact_url, RedisState};
use crate::state::StoreError;

/// A byte stream to Redis: TCP, TLS over TCP, or a Unix socket.
pub(super) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Where to dial.
#[derive(Debug)]
enum Target {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
    Sentinel(Sentinels),
}

/// TLS settings for `rediss://`.
#[derive(Debug)]
pub(super) struct Tls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl Tls {
    /// Wraps `tcp` in TLS, verifying the certificate for `server_name` (else `host`).
    pub(super) async fn wrap(
        &self,
        tcp: tokio::net::TcpStream,
        host: &str,
    ) -> Result<Box<dyn Io>, Failure> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_string())
                .map_err(|_| Failure::Refused(format!("`{host}` is not a TLS server name")))?,
        };
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        match connector.connect(name, tcp).await {
            Ok(tls) => Ok(Box::new(tls)),
            Err(e) => Err(match tls_reason(&e) {
                // A certificate that fails verification, a client certificate refused,
                // a server that speaks no TLS: the settings are wrong, retrying is futile.
                Some(reason) => Failure::Refused(format!("TLS to {host}: {reason}")),
                None => Failure::Unreachable(format!("TLS to {host}: {e}")),
            }),
        }
    }
}

/// The rustls error in `e`'s causes (looking inside `io::Error`s), if TLS is what failed.
fn tls_reason(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut pending = vec![e];
    while let Some(err) = pending.pop() {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            pending.push(inner);
        }
        if let Some(next) = err.source() {
            pending.push(next);
        }
    }
    None
}

/// Why a dial failed: `Refused` is a setting that will not work (TLS verification, a
/// password Redis refused), `Unreachable` may pass by itself.
#[derive(Debug)]
pub(super) enum Failure {
    Refused(String),
    Unreachable(String),
}

impl Failure {
    pub(super) fn message(self) -> String {
        match self {
            Failure::Refused(m) | Failure::Unreachable(m) => m,
        }
    }

    fn from_redis(e: ::redis::RedisError, what: &str) -> Failure {
        // TLS 1.3 clients finish the handshake before the server checks their
        // certificate: its refusal arrives on the first read, here.
        if let Some(reason) = tls_reason(&e) {
            return Failure::Refused(format!("{what}: TLS: {reason}"));
        }
        let msg = format!("{what}: {e}");
        if e.kind() == ::redis::ErrorKind::AuthenticationFailed
            || e.code().is_some_and(|c| c == "WRONGPASS" || c == "NOAUTH")
        {
            Failure::Refused(msg)
        } else {
            Failure::Unreachable(msg)
        }
    }
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> StoreError {
        StoreError::Unavailable(f.message())
    }
}

/// Makes connections to the primary. `Debug` leaves the credentials out.
pub(super) struct Dialer {
    target: Target,
    tls: Option<Tls>,
    /// Database, user and password for the connection setup (never logged).
    info: RedisConnectionInfo,
    /// The last primary reached and how many different ones were seen (starts at 1).
    primary: Mutex<Option<(String, u16)>>,
    generation: AtomicU64,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("target", &self.target)
            .field("tls", &self.tls.is_some())
            .field("db", &self.info.db)
            .field("primary", &self.primary)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Dialer {
    /// Reads the password files and builds the TLS config; nothing is dialled yet.
    pub(super) fn new(settings: &RedisState) -> Result<Dialer, StoreError> {
        let shown = redact_url(&settings.url);
        let bad = |e: ::redis::RedisError| {
            StoreError::Unavailable(format!("state.redis.url `{shown}`: {e}"))
        };
        let plain = match settings.url.strip_prefix("rediss://") {
            Some(rest) => format!("redis://{rest}"),
            None => settings.url.clone(),
        };
        let parsed = plain.as_str().into_connection_info().map_err(bad)?;
        let mut info = parsed.redis;
        if let Some(file) = &settings.password_file {
            info.password = Some(read_password(file).map_err(StoreError::Unavailable)?);
        }
        let tls = match &settings.tls {
            None => None,
            Some(tls) => Some(Tls {
                config: Arc::new(
                    crate::tls::client::client_config(tls, SystemTime::now())
                        .map_err(|e| StoreError::Unavailable(format!("state.redis.tls: {e}")))?,
                ),
                server_name: tls.server_name.clone(),
            }),
        };
        let target = match (&settings.sentinel, parsed.addr) {
            (Some(sentinel), _) => Target::Sentinel(Sentinels::new(sentinel)?),
            (None, ConnectionAddr::Tcp(host, port)) => Target::Tcp { host, port },
            (None, ConnectionAddr::Unix(path)) => Target::Unix(path),
            (None, _) => {
                return Err(StoreError::Unavailable(format!(
                    "state.redis.url `{shown}`: unsupported address"
                )))
            }
        };
        Ok(Dialer {
            target,
            tls,
            info,
            primary: Mutex::new(None),
            generation: AtomicU64::new(1),
        })
    }

    /// How many different primaries this process has reached (a failover adds one).
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Records that `addr` is the primary; returns the generation it belongs to.
    fn reached(&self, addr: (String, u16)) -> u64 {
        let mut primary = self.primary.lock().unwrap_or_else(|e| e.into_inner());
        match primary.as_ref() {
            Some(known) if *known == addr => self.generation(),
            Some(known) => {
                tracing::warn!(old = %format!("{}:{}", known.0, known.1), new = %format!("{}:{}", addr.0, addr.1), "the Redis primary changed");
                *primary = Some(addr);
                self.generation.fetch_add(1, Ordering::AcqRel) + 1
            }
            None => {
                *primary = Some(addr);
                self.generation()
            }
        }
    }

    /// A multiplexed connection to the primary, set up (AUTH, SELECT), and the
    /// generation of the primary it reached. With sentinels, the node they name must
    /// answer `ROLE` with `master`, else the next sentinel is asked.
    pub(super) async fn multiplexed(
        &self,
        config: &AsyncConnectionConfig,
        timeout: Duration,
    ) -> Result<(MultiplexedConnection, u64), Failure> {
        match &self.target {
            Target::Sentinel(sentinels) => {
                let (conn, addr) = sentinels.primary(self, config, timeout).await?;
                Ok((conn, self.reached(addr)))
            }
            Target::Tcp { host, port } => {
                let stream = self.tcp(host, *port).await?;
                let conn = self.setup(stream, config).await?;
                Ok((conn, self.reached((host.clone(), *port))))
            }
            Target::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| Failure::Unreachable(format!("{}: {e}", path.display())))?;
                let conn = self.setup(Box::new(stream), config).await?;
                Ok((conn, self.generation()))
            }
        }
    }

    /// A pub/sub connection to the primary, and its generation. With sentinels and
    /// `verify`, the primary is found and verified first (a subscription to a node that
    /// is no longer the primary would hear nothing); without, the primary last reached
    /// is used when there is one (the writers' ack hints, which polling backs up).
    pub(super) async fn pubsub(
        &self,
        timeout: Duration,
        verify: bool,
    ) -> Result<(PubSub, u64), Failure> {
        let known = match (&self.target, verify) {
            (Target::Sentinel(_), false) => self
                .primary
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            _ => None,
        };
        let (stream, generation) = match (&self.target, known) {
            (Target::Sentinel(_), Some((host, port))) => {
                let generation = self.generation();
                (self.tcp(&host, port).await?, generation)
            }
            (target, _) => match target {
                Target::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(|e| Failure::Unreachable(format!("{}: {e}", path.display())))?;
                    (Box::new(stream) as Box<dyn Io>, self.generation())
                }
                Target::Sentinel(sentinels) => {
                    let config = AsyncConnectionConfig::new().set_response_timeout(timeout);
                    let (_, (host, port)) = sentinels.primary(self, &config, timeout).await?;
                    let generation = self.reached((host.clone(), port));
                    (self.tcp(&host, port).await?, generation)
                }
                Target::Tcp { host, port } => (self.tcp(host, *port).await?, self.generation()),
            },
        };
        let pubsub = PubSub::new(&self.info, stream)
            .await
            .map_err(|e| Failure::from_redis(e, "pub/sub connection"))?;
        Ok((pubsub, generation))
    }

    /// TCP (no Nagle: every call is one small request waiting for its answer), then TLS
    /// for `rediss://`.
    pub(super) async fn tcp(&self, host: &str, port: u16) -> Result<Box<dyn Io>, Failure> {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| Failure::Unreachable(format!("{host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(tls) => tls.wrap(tcp, host).await,
        }
    }

    /// The redis crate's setup on `stream` (AUTH, SELECT) with this deployment's
    /// credentials; the connection's driver runs as its own task until every handle to
    /// the connection is dropped.
    pub(super) async fn setup(
        &self,
        stream: Box<dyn Io>,
        config: &AsyncConnectionConfig,
    ) -> Result<MultiplexedConnection, Failure> {
        setup(&self.info, stream, config).await
    }
}

/// Connection setup with `info`'s credentials (shared with the sentinel connections).
pub(super) async fn setup(
    info: &RedisConnectionInfo,
    stream: Box<dyn Io>,
    config: &AsyncConnectionConfig,
) -> Result<MultiplexedConnection, Failure> {
    let (conn, driver) = MultiplexedConnection::new_with_config(info, stream, config.clone())
        .await
        .map_err(|e| Failure::from_redis(e, "connection setup"))?;
    tokio::spawn(driver);
    Ok(conn)
}
