//! PEM files: certificate chains, private keys and CA bundles, read with
//! rustls-pki-types' `PemObject`, and the checks made before any of them is served:
//! every certificate parses, the key belongs to the leaf certificate, the leaf is inside
//! its validity window.
//!
//! Each step blames one file, so `authgate check` can point at the config key to fix.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::{CertifiedKey, SigningKey};
use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_cert::certificate::{CertificateInner, Raw};
use x509_cert::der::Decode;

use super::{provider, TlsError, EXPIRY_WARNING};

/// A certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Where `now` falls in a certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Valid,
    /// Valid, but for less than [`EXPIRY_WARNING`] more.
    ExpiresSoon(Duration),
    Expired,
    NotYetValid,
}

impl Validity {
    /// The validity of one DER certificate. Parsing is lenient (the `Raw` profile): only
    /// the dates are read here, rustls judges the rest.
    pub fn of(cert: &CertificateDer<'_>) -> Result<Validity, String> {
        let parsed = CertificateInner::<Raw>::from_der(cert.as_ref()).map_err(|e| e.to_string())?;
        let v = &parsed.tbs_certificate.validity;
        Ok(Validity {
            not_before: UNIX_EPOCH + v.not_before.to_unix_duration(),
            not_after: UNIX_EPOCH + v.not_after.to_unix_duration(),
        })
    }

    pub fn standing(&self, now: SystemTime) -> Standing {
        if now < self.not_before {
            return Standing::NotYetValid;
        }
        match self.not_after.duration_since(now) {
            Err(_) => Standing::Expired,
            Ok(left) if left < EXPIRY_WARNING => Standing::ExpiresSoon(left),
            Ok(_) => Standing::Valid,
        }
    }

    /// Seconds until `not_after`; negative once it has passed.
    pub fn seconds_left(&self, now: SystemTime) -> f64 {
        match self.not_after.duration_since(now) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        }
    }

    /// Refuses a certificate that is expired or not yet valid (`path` names it).
    pub fn ensure_current(&self, path: &Path, now: SystemTime) -> Result<(), TlsError> {
        match self.standing(now) {
            Standing::Valid | Standing::ExpiresSoon(_) => Ok(()),
            Standing::Expired => Err(TlsError::Expired {
                path: path.into(),
                not_after: self.not_after,
            }),
            Standing::NotYetValid => Err(TlsError::NotYetValid {
                path: path.into(),
                not_before: self.not_before,
            }),
        }
    }
}

/// A certificate chain (leaf first) and the validity of its leaf.
#[derive(Debug, Clone)]
pub struct Chain {
    pub certs: Vec<CertificateDer<'static>>,
    pub validity: Validity,
}

/// Reads every certificate of a PEM file; the first is the leaf.
pub fn load_chain(path: &Path) -> Result<Chain, TlsError> {
    let certs = load_certs(path)?;
    let validity = Validity::of(&certs[0]).map_err(|reason| TlsError::BadCertificate {
        path: path.into(),
        index: 1,
        reason,
    })?;
    for (index, cert) in (1..).zip(&certs).skip(1) {
        Validity::of(cert).map_err(|reason| TlsError::BadCertificate {
            path: path.into(),
            index,
            reason,
        })?;
    }
    Ok(Chain { certs, validity })
}

/// Every `CERTIFICATE` block of a PEM file (at least one).
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file, ready to sign.
pub fn load_key(path: &Path) -> Result<Arc<dyn SigningKey>, TlsError> {
    let der = PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey { path: path.into() },
        e => pem_error(path, e),
    })?;
    provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::BadKey {
            path: path.into(),
            reason: e.to_string(),
        })
}

/// Pairs a chain with its key, refusing a key that belongs to another certificate.
pub fn certified_key(
    chain: &Chain,
    key: Arc<dyn SigningKey>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let certified = CertifiedKey::new(chain.certs.clone(), key);
    match certified.keys_match() {
        // `Unknown`: the key type cannot name its public key; rustls accepts it too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert_path.into(),
            key: key_path.into(),
        }),
        Err(e) => Err(TlsError::BadCertificate {
            path: cert_path.into(),
            index: 1,
            reason: e.to_string(),
        }),
    }
}

/// A certificate, its key, and when it is valid: what a listener serves or a client presents.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: Arc<CertifiedKey>,
    pub validity: Validity,
}

/// Loads and checks a certificate and its key, refusing an expired or not yet valid one.
pub fn load_identity(cert: &Path, key: &Path, now: SystemTime) -> Result<Identity, TlsError> {
    let chain = load_chain(cert)?;
    let signing = load_key(key)?;
    let certified = certified_key(&chain, signing, cert, key)?;
    chain.validity.ensure_current(cert, now)?;
    Ok(Identity {
        key: Arc::new(certified),
        validity: chain.validity,
    })
}

/// A CA bundle as trust anchors, and the validity of each certificate in it.
pub fn load_roots(path: &Path) -> Result<(RootCertStore, Vec<Validity>), TlsError> {
    let certs = load_certs(path)?;
    let mut roots = RootCertStore::empty();
    let mut validities = Vec::with_capacity(certs.len());
    for (index, cert) in (1..).zip(certs) {
        let bad = |reason: String| TlsError::BadCertificate {
            path: path.into(),
            index,
            reason,
        };
        validities.push(Validity::of(&cert).map_err(bad)?);
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    Ok((roots, validities))
}

fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    match e {
        pem::Error::Io(source) => TlsError::Read {
            path: path.into(),
            source,
        },
        pem::Error::NoItemsFound => TlsError::NoCertificate { path: path.into() },
        other => TlsError::Pem {
            path: path.into(),
            reason: other.to_string(),
        },
    }
}
