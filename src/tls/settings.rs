//! The validated TLS settings the config hands to the listeners and the upstream
//! connector: PEM file paths (resolved against the config file's folder) and names.
//! Defined here, not in `config`, so that `tls` needs nothing from `config`.

use std::path::PathBuf;

/// TLS on the listeners (`tls:`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub proxy: Option<ListenerTls>,
    pub admin: Option<ListenerTls>,
}

/// A listener's PEM files, resolved against the config file's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// TLS to an `https://` upstream (`upstream.tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Trust only these CAs instead of the built-in public roots.
    pub ca: Option<PathBuf>,
    /// Name sent as SNI and verified in the certificate, instead of the URL's host.
    pub server_name: Option<rustls_pki_types::ServerName<'static>>,
    /// Client certificate for backends that require mutual TLS.
    pub client_cert: Option<CertFiles>,
}

/// A certificate chain and its private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}
