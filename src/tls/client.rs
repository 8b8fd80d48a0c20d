//! The upstream side: the connector the proxy's pooled client dials through, and how a
//! TLS failure is recognised in an upstream error.
//!
//! `http://` upstreams pass through untouched. `https://` ones are verified against
//! Mozilla's roots (webpki-roots, compiled in, so a minimal container image needs no CA
//! bundle) or, when `upstream.tls.ca` is set, against that CA bundle only. Verification
//! cannot be turned off.

use std::sync::Arc;
use std::time::SystemTime;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, RootCertStore};

use super::settings::UpstreamTls;
use super::{files, provider, TlsError, VERSIONS};

/// The proxy's connector: plain TCP for `http://`, rustls for `https://`.
pub type UpstreamConnector = HttpsConnector<HttpConnector>;

/// Wraps the proxy's TCP connector with TLS configured from `upstream.tls`.
pub fn upstream_connector(
    mut http: HttpConnector,
    tls: &UpstreamTls,
) -> Result<UpstreamConnector, TlsError> {
    // The HTTPS layer decides by scheme; the TCP layer must let `https://` through.
    http.enforce_http(false);
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(client_config(tls, SystemTime::now())?)
        .https_or_http();
    let builder = match &tls.server_name {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name.clone())),
        None => builder,
    };
    // The upstream always gets HTTP/1.1, so no ALPN is offered.
    Ok(builder.enable_http1().wrap_connector(http))
}

/// The rustls client config for the upstream.
pub fn client_config(tls: &UpstreamTls, now: SystemTime) -> Result<ClientConfig, TlsError> {
    let roots = match &tls.ca {
        Some(ca) => files::load_roots(ca)?.0,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots);
    Ok(match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let identity = files::load_identity(&client.cert, &client.key, now)?;
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(identity.key)))
        }
    })
}
