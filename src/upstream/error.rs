//! Why an exchange with the upstream failed, sorted for the proxy: the upstream's fault
//! (unreachable, TLS refused, failed mid-exchange) or the client's (its request body was
//! too large, stalled, or broke off), which must never be reported as a 502.
//!
//! Causes are found by walking the error's chain once ([`chain`]), opening the
//! `io::Error`s whose `source()` skips the error they wrap (rustls travels inside them).

use std::error::Error as StdError;

use super::request_body::{BodyTimeout, BodyTooLarge};

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a request got no response from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection could be opened (refused, unreachable, TLS handshake failed).
    #[error("connecting to the upstream failed: {0}")]
    Connect(#[source] BoxError),
    /// The request was sent, and the exchange failed. (Not `transparent`: the
    /// `hyper::Error` itself must stay in the chain, where a failed client body shows.)
    #[error("the upstream exchange failed")]
    Request(#[from] hyper::Error),
}

/// Whose fault a [`PoolError`] is, and what kind.
#[derive(Debug)]
pub enum Failure {
    /// The TLS handshake with the upstream failed (wrong CA, wrong name, expired
    /// certificate, alert); never retried without verification.
    Tls(PoolError, rustls::Error),
    /// No connection could be opened.
    Connect(PoolError),
    /// The client's body went over `limits.max_body_bytes` while streaming.
    BodyTooLarge,
    /// The client's body stopped arriving for `limits.body_read_timeout`.
    BodyTimeout,
    /// The client's body failed (the client went away or broke framing).
    ClientBody(PoolError),
    /// The upstream failed after the request was sent.
    Other(PoolError),
}

impl PoolError {
    /// Sorts the error by its causes.
    pub fn classify(self) -> Failure {
        if let Some(tls) = rustls_error(&self).cloned() {
            return Failure::Tls(self, tls);
        }
        if matches!(self, PoolError::Connect(_)) {
            return Failure::Connect(self);
        }
        let mut client_body = false;
        for cause in chain(&self) {
            if cause.is::<BodyTooLarge>() {
                return Failure::BodyTooLarge;
            }
            if cause.is::<BodyTimeout>() {
                return Failure::BodyTimeout;
            }
            client_body |= cause
                .downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_user() || h.is_body_write_aborted());
        }
        if client_body {
            Failure::ClientBody(self)
        } else {
            Failure::Other(self)
        }
    }
}

/// The error and its causes, outermost first, looking inside `io::Error`s too.
pub fn chain<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut pending: Vec<&'a (dyn StdError + 'static)> = vec![e];
    std::iter::from_fn(move || {
        let err = pending.pop()?;
        if let Some(next) = err.source() {
            pending.push(next);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            pending.push(inner);
        }
        Some(err)
    })
}

/// The rustls error somewhere in an upstream error's chain, if TLS is what failed.
pub fn rustls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    chain(e).find_map(|err| err.downcast_ref::<rustls::Error>())
}

/// The error and its causes on one line, for the log (never for the client).
pub fn describe(e: &(dyn StdError + 'static)) -> String {
    let causes = std::iter::successors(Some(e), |&err| err.source());
    causes
        .map(|err| err.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn a_tls_error_is_found_inside_nested_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = io::Error::new(io::ErrorKind::InvalidData, tls);
        let outer = io::Error::other(inner);
        let found = rustls_error(&outer).expect("found");
        assert!(found.to_string().contains("UnknownIssuer"), "{found}");
        assert!(rustls_error(&io::Error::other("connection refused")).is_none());
    }

    #[test]
    fn a_stalled_or_oversized_client_body_is_the_clients_fault() {
        let wrapped = |e: BoxError| PoolError::Connect(Box::new(io::Error::other(e)));
        // Connect errors are the upstream's even when they mention a body: only the
        // exchange can fail on the client's body.
        assert!(matches!(
            wrapped(Box::new(BodyTooLarge)).classify(),
            Failure::Connect(_)
        ));
        let describe_it = describe(&wrapped("refused".into()));
        assert!(
            describe_it.starts_with("connecting to the upstream failed"),
            "{describe_it}"
        );
    }
}
