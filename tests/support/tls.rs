//! TLS test helpers: CAs and certificates made with rcgen, PEM files, rustls client
//! configs, one-request HTTPS clients that report the negotiated ALPN protocol and the
//! server's certificate, and an HTTPS upstream.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate signed by a [`TestCa`], with its key.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A 90-day certificate for `names` (DNS names or IP addresses), common name `cn`.
    pub fn leaf(&self, cn: &str, names: &[&str]) -> Leaf {
        self.leaf_for_days(cn, names, 90)
    }

    /// A certificate valid from yesterday for `days` more days.
    pub fn leaf_for_days(&self, cn: &str, names: &[&str], days: i64) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(days);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// This CA as the only trust anchor.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

impl Leaf {
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.der.clone()]
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key_der.clone()).into()
    }

    /// Writes `{name}.pem` and `{name}.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// A client trusting `ca` only, offering `alpn`, presenting `identity` if given.
pub fn client_config(ca: &TestCa, alpn: &[&str], identity: Option<&Leaf>) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots());
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(leaf.chain(), leaf.key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr`, verifying the name `localhost`.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    within(
        "a TLS handshake",
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
}

/// What one HTTPS exchange saw.
pub struct Exchange {
    pub response: Response<Incoming>,
    /// The ALPN protocol negotiated (`None`: none, so HTTP/1.1).
    pub alpn: Option<String>,
    /// The server's certificate.
    pub server_cert: CertificateDer<'static>,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends `req` (origin-form URI, e.g. `/path`) over a new TLS connection, speaking
/// HTTP/2 when ALPN chose `h2`, else HTTP/1.1.
pub async fn https_request(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    req: Request<TestBody>,
) -> Result<Exchange, BoxError> {
    let tls = connect(addr, config).await?;
    let (_, session) = tls.get_ref();
    let alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let server_cert = session.peer_certificates().unwrap()[0].clone();
    let io = TokioIo::new(tls);
    let (mut parts, body) = req.into_parts();
    let response = if alpn.as_deref() == Some("h2") {
        parts.uri = format!("https://localhost:{}{}", addr.port(), parts.uri)
            .parse()
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        within(
            "an HTTP/2 response",
            sender.send_request(Request::from_parts(parts, body)),
        )
        .await?
    } else {
        parts
            .headers
            .entry(http::header::HOST)
            .or_insert_with(|| format!("localhost:{}", addr.port()).parse().unwrap());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        within(
            "an HTTP/1.1 response",
            sender.send_request(Request::from_parts(parts, body)),
        )
        .await?
    };
    Ok(Exchange {
        response,
        alpn,
        server_cert,
    })
}

/// A server config for an HTTPS upstream serving `leaf`; with `client_ca`, clients must
/// present a certificate from it.
pub fn server_config(leaf: &Leaf, client_ca: Option<&TestCa>) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()),
                provider(),
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_single_cert(leaf.chain(), leaf.key()).unwrap())
}

impl Upstream {
    /// A real HTTPS upstream (HTTP/1.1 and HTTP/2) running `handler`.
    pub async fn start_tls<F, Fut>(config: Arc<ServerConfig>, handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(handler);
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        serve_http(tls, handler).await;
                    }
                });
            }
        });
        Upstream { addr, task }
    }
}
