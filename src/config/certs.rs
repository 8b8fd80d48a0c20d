//! The `tls:` section and `upstream.tls`: paths resolved against the config file's
//! folder, and the files themselves checked (readable, parseable, key matching its
//! certificate, inside the validity window), each problem blamed on its key and line.
//! A certificate expiring within [`crate::tls::EXPIRY_WARNING`] is a warning, not a
//! problem.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use rustls_pki_types::ServerName;

use super::locate::Seg;
use super::raw::{RawAdminTls, RawListenerTls, RawTls, RawUpstreamTls};
use super::validate::Problems;
use super::{CertFiles, ListenerTls, Tls, UpstreamTls};
use crate::tls::files::{self, Standing, Validity};
use crate::tls::rfc3339;

fn at(keys: &[&str]) -> Vec<Seg> {
    keys.iter().map(|k| Seg::Key(k.to_string())).collect()
}

/// `relative` against the config file's folder, without `./` noise.
pub(super) fn resolve(base: &Path, relative: &str) -> PathBuf {
    base.join(relative)
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

pub(super) fn listeners(raw: RawTls, base: &Path, p: &mut Problems<'_>) -> Tls {
    let now = SystemTime::now();
    Tls {
        proxy: raw.proxy.and_then(|RawListenerTls { cert, key }| {
            listener("proxy", cert, key, None, base, now, p)
        }),
        admin: raw.admin.and_then(
            |RawAdminTls {
                 cert,
                 key,
                 client_ca,
             }| { listener("admin", cert, key, client_ca, base, now, p) },
        ),
    }
}

fn listener(
    name: &str,
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    base: &Path,
    now: SystemTime,
    p: &mut Problems<'_>,
) -> Option<ListenerTls> {
    let pair = cert_files(&["tls", name], cert, key, base, now, p);
    let client_ca = client_ca.map(|ca| {
        let ca = resolve(base, &ca);
        ca_bundle(&ca, &at(&["tls", name, "client_ca"]), now, p);
        ca
    });
    let CertFiles { cert, key } = pair?;
    Some(ListenerTls {
        cert,
        key,
        client_ca,
    })
}

/// Requires both `cert` and `key` under `prefix`, and checks the pair.
fn cert_files(
    prefix: &[&str],
    cert: Option<String>,
    key: Option<String>,
    base: &Path,
    now: SystemTime,
    p: &mut Problems<'_>,
) -> Option<CertFiles> {
    let key_at = |k: &str| at(&[prefix, &[k]].concat());
    let (cert_at, key_at) = (key_at("cert"), key_at("key"));
    let msg = "is required: a PEM file (certificate chain for `cert`, private key for `key`)";
    if cert.is_none() {
        p.push(&cert_at, msg.into());
    }
    if key.is_none() {
        p.push(&key_at, msg.into());
    }
    // Whatever is named is checked, so one run reports every problem.
    let cert = cert.map(|c| resolve(base, &c));
    let key = key.map(|k| resolve(base, &k));
    let chain = cert.as_ref().and_then(|cert| {
        files::load_chain(cert)
            .map_err(|e| p.push(&cert_at, e.to_string()))
            .ok()
    });
    let signing = key.as_ref().and_then(|key| {
        files::load_key(key)
            .map_err(|e| p.push(&key_at, e.to_string()))
            .ok()
    });
    if let (Some(chain), Some(cert)) = (&chain, &cert) {
        validity(
            cert,
            "the certificate",
            &chain.validity,
            &cert_at,
            true,
            now,
            p,
        );
    }
    let (cert, key) = (cert?, key?);
    if let (Some(chain), Some(signing)) = (&chain, signing) {
        if let Err(e) = files::certified_key(chain, signing, &cert, &key) {
            p.push(&key_at, e.to_string());
        }
    }
    Some(CertFiles { cert, key })
}

/// A CA bundle must hold at least one usable certificate; expired or expiring ones are
/// warnings (bundles often carry old roots).
fn ca_bundle(path: &Path, key: &[Seg], now: SystemTime, p: &mut Problems<'_>) {
    match files::load_roots(path) {
        Err(e) => p.push(key, e.to_string()),
        Ok((_, validities)) => {
            for (i, v) in (1..).zip(&validities) {
                let what = format!("CA certificate {i}");
                validity(path, &what, v, key, false, now, p);
            }
        }
    }
}

/// Expired or not yet valid: a problem when `strict`, else a warning; expiring soon: a
/// warning.
fn validity(
    path: &Path,
    what: &str,
    v: &Validity,
    key: &[Seg],
    strict: bool,
    now: SystemTime,
    p: &mut Problems<'_>,
) {
    let file = path.display();
    let msg = match v.standing(now) {
        Standing::Valid => return,
        Standing::ExpiresSoon(left) => {
            let days = left.as_secs() / 86_400;
            let at = rfc3339(v.not_after);
            p.warn(
                key,
                format!("{file}: {what} expires in {days} day(s), at {at}; renew it"),
            );
            return;
        }
        Standing::Expired => format!("{file}: {what} expired at {}", rfc3339(v.not_after)),
        Standing::NotYetValid => {
            format!(
                "{file}: {what} is not valid before {}",
                rfc3339(v.not_before)
            )
        }
    };
    if strict {
        p.push(key, msg);
    } else {
        p.warn(key, msg);
    }
}

pub(super) fn upstream(
    raw: Option<RawUpstreamTls>,
    https: bool,
    base: &Path,
    p: &mut Problems<'_>,
) -> UpstreamTls {
    let msg = "applies only to an https:// upstream.url; change the URL or remove this";
    client(&["upstream", "tls"], raw, https, msg, base, p)
}

/// A TLS client's settings under `prefix` (`upstream.tls`, `state.redis.tls`): a CA
/// bundle, a server name, an optional client certificate. `on` says whether the URL asks
/// for TLS at all; settings for a plain URL are `unused`, a problem.
pub(super) fn client(
    prefix: &[&str],
    raw: Option<RawUpstreamTls>,
    on: bool,
    unused: &str,
    base: &Path,
    p: &mut Problems<'_>,
) -> UpstreamTls {
    let Some(raw) = raw else {
        return UpstreamTls::default();
    };
    let now = SystemTime::now();
    let key = |k: &str| at(&[prefix, &[k]].concat());
    let any =
        raw.ca.is_some() || raw.server_name.is_some() || raw.cert.is_some() || raw.key.is_some();
    if any && !on {
        p.push(&at(prefix), unused.into());
    }
    let ca = raw.ca.map(|ca| {
        let ca = resolve(base, &ca);
        ca_bundle(&ca, &key("ca"), now, p);
        ca
    });
    let server_name = raw.server_name.and_then(|name| {
        ServerName::try_from(name.clone())
            .map_err(|_| {
                let msg = format!("`{name}` is not a DNS name or IP address");
                p.push(&key("server_name"), msg);
            })
            .ok()
    });
    let client_cert = match (raw.cert, raw.key) {
        (None, None) => None,
        (cert, key) => cert_files(prefix, cert, key, base, now, p),
    };
    UpstreamTls {
        ca,
        server_name,
        client_cert,
    }
}

#[cfg(test)]
mod tests;
