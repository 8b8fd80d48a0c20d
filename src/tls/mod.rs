//! TLS with rustls: certificate files in, reloadable listener configs and the upstream
//! connector out.
//!
//! Flow:
//! - [`files`] reads PEM files (rustls-pki-types' `PemObject`) and checks them: every
//!   certificate parses, the key belongs to the certificate, the certificate is inside
//!   its validity window. The config check (`authgate check`) and every (re)load use it.
//! - [`server`] builds a listener's `rustls::ServerConfig` (TLS 1.2 and 1.3, ALPN `h2`
//!   and `http/1.1`, optional client certificates) and keeps it in an [`Acceptor`]: one
//!   `ArcSwap` that a reload replaces; every new handshake loads it once, so open
//!   connections keep the config they started with.
//! - [`stream`] is the connection's IO: [`ServerStream`] performs the handshake lazily,
//!   inside the connection task on its first read, under the server's header-read clock.
//! - [`client`] builds the upstream connector (hyper-rustls).
//! - [`settings`] holds the validated TLS settings the config hands over.

pub mod client;
pub mod files;
pub mod server;
pub mod settings;
pub mod stream;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;

pub use client::{upstream_connector, UpstreamConnector};
pub use files::Validity;
pub use server::{Acceptor, Acceptors, ReloadTrigger, Reloaded};
pub use stream::ServerStream;

/// A certificate closer than this to its expiry is reported by `authgate check` and on
/// every load.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// Protocol versions offered on every TLS connection: 1.3 and 1.2, nothing older.
pub static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The one crypto provider (ring with its default, AEAD-only cipher suites), chosen
/// explicitly so no process-wide default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Why certificate files could not be used. Messages name the file; none holds key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid PEM: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{}: no certificate found (expected a PEM `BEGIN CERTIFICATE` block)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: certificate {index} is not a valid X.509 certificate: {reason}", path.display())]
    BadCertificate {
        path: PathBuf,
        /// 1-based position in the file.
        index: usize,
        reason: String,
    },
    #[error(
        "{}: no private key found (expected a PEM `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY` block)",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error("{}: unusable private key: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("{} is not the private key of the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: the certificate expired at {}", path.display(), rfc3339(*not_after))]
    Expired {
        path: PathBuf,
        not_after: SystemTime,
    },
    #[error("{}: the certificate is not valid before {}", path.display(), rfc3339(*not_before))]
    NotYetValid {
        path: PathBuf,
        not_before: SystemTime,
    },
    #[error("{}: no usable CA certificate: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// `2026-01-31T12:00:00Z`.
pub use crate::time::rfc3339;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
