//! `authgate probe URL`: one plain-HTTP `GET`, for container health checks and exec
//! probes (the image has no curl). Meant for the status listener (`listen.status`),
//! which speaks plain HTTP without an admin key or client certificate.
//!
//! The answer's status is what counts: the command exits 0 on a 2xx and non-zero on
//! anything else, including no answer within the timeout.

use std::time::Duration;

use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a probe got no status.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("`{0}` is not an http:// URL with a host and port")]
    BadUrl(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// `GET url` over HTTP/1.1; the response status, with the body read to its end.
pub async fn probe(url: &str, timeout: Duration) -> Result<StatusCode, ProbeError> {
    let uri: Uri = url.parse().map_err(|_| ProbeError::BadUrl(url.into()))?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(authority)) => authority.clone(),
        _ => return Err(ProbeError::BadUrl(url.into())),
    };
    let addr = match authority.port_u16() {
        Some(_) => authority.as_str().to_string(),
        None => format!("{}:80", authority.host()),
    };
    let exchange = async {
        let stream = TcpStream::connect(&addr)
            .await
            .map_err(|source| ProbeError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let req = Request::get(target)
            .header(header::HOST, authority.as_str())
            .header(header::USER_AGENT, "authgate-probe")
            .body(Empty::<bytes::Bytes>::new())
            .expect("a path and a host make a request");
        let response = sender.send_request(req).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}
