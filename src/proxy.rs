//! The proxy listener's handler: rewrites a client request for the upstream, sends it
//! through the pooled client, and hands the upstream's response back, streaming both
//! bodies.
//!
//! Flow: `handle` → [`decide`] on the current state snapshot (path normalised, route and
//! tenant found, token checked) → rejected requests are answered here, never forwarded →
//! `forward` (headers rewritten per the contract's proxy semantics 5–7, the upstream's
//! base path and the normalised path in the URI, the gateway's token removed) → the
//! upstream [`Pool`] with `request_timeout` on the response head → response headers
//! cleaned → back to the client. Errors become responses in exactly one place,
//! [`GatewayError::into_response`].

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::auth::decide::{decide, Outcome, Rejection};
use crate::body::Body;
use crate::config::{Config, Upstream};
use crate::error::GatewayError;
use crate::metrics::{ProxyMetrics, RouteClass};
use crate::pool::{Pool, PoolError};
use crate::routes::RouteTable;
use crate::server::{Handler, Peer};
use crate::state::StateHandle;
use crate::tls::TlsError;

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1), plus
/// `Expect`, which the gateway answers itself.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The proxy: upstream client, route table, state and metrics.
#[derive(Debug)]
pub struct Proxy {
    pool: Pool,
    upstream: Upstream,
    scheme: Scheme,
    routes: RouteTable,
    state: Arc<StateHandle>,
    max_body_bytes: u64,
    body_read_timeout: Duration,
    metrics: ProxyMetrics,
}

impl Proxy {
    /// Fails only when `upstream.tls` files cannot be loaded.
    pub fn new(
        config: &Config,
        state: Arc<StateHandle>,
        metrics: ProxyMetrics,
    ) -> Result<Proxy, TlsError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.upstream.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let connector = crate::tls::upstream_connector(connector, &config.upstream.tls)?;
        let pool = Pool::new(
            connector,
            config.upstream.origin.clone(),
            config.upstream.pool_max_idle,
            config.upstream.pool_idle_timeout,
        );
        Ok(Proxy {
            pool,
            upstream: config.upstream.clone(),
            scheme: match config.tls.proxy {
                Some(_) => Scheme::HTTPS,
                None => Scheme::HTTP,
            },
            routes: RouteTable::new(
                &config.protected_routes,
                config.case_insensitive_paths,
                config.tenant_param.clone(),
            ),
            state,
            max_body_bytes: config.limits.max_body_bytes,
            body_read_timeout: config.limits.body_read_timeout,
            metrics,
        })
    }

    /// Checks the request against the current snapshot, then forwards or refuses it.
    async fn serve(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
    ) -> (RouteClass, Result<Response<Body>, GatewayError>) {
        let (mut parts, body) = req.into_parts();
        if let Err(e) = check_framing(&parts) {
            return (RouteClass::Other, Err(e));
        }
        let (class, outcome, path) = {
            let snapshot = self.state.snapshot();
            let decision = decide(&self.routes, &snapshot, &parts, now_ms());
            if let Some(reason) = decision.outcome.reason() {
                let counters = decision.counters.unwrap_or(&self.metrics.other_tenant);
                counters.by_reason[reason as usize].increment(1);
            }
            let path = match decision.path {
                Cow::Owned(path) => Some(path),
                Cow::Borrowed(_) => None,
            };
            (decision.class, decision.outcome, path)
        };
        // Redis store: a replica whose lease ran out cannot know the current tokens (nor
        // whether the tenant requires one), so every protected route waits. Checked
        // after the snapshot was loaded: one clock read, no I/O.
        if outcome.reason().is_some() && self.state.fenced() {
            return (class, Err(GatewayError::Fenced));
        }
        let mut limit = u64::MAX;
        match outcome {
            Outcome::Rejected(rejection) => {
                // The path only: queries may carry secrets.
                tracing::debug!(?rejection, method = %parts.method, path = %parts.uri.path(), peer = %peer.addr, "request refused");
                return (class, Err(rejection.into()));
            }
            Outcome::Allowed => {
                // The backend never sees the gateway's token.
                parts.headers.remove(header::AUTHORIZATION);
            }
            Outcome::Unprotected | Outcome::NotRequired => {}
        }
        if class == RouteClass::Protected {
            limit = self.max_body_bytes;
            if content_length(&parts.headers).is_some_and(|n| n > limit) {
                return (class, Err(GatewayError::PayloadTooLarge));
            }
        }
        let body = RequestBody {
            inner: body,
            remaining: limit,
            timeout: self.body_read_timeout,
            stalled: None,
        };
        (class, self.forward(parts, body, path, peer).await)
    }

    async fn forward(
        &self,
        mut parts: http::request::Parts,
        body: RequestBody,
        path: Option<String>,
        peer: &Peer,
    ) -> Result<Response<Body>, GatewayError> {
        let host = parts
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| parts.uri.authority().and_then(|a| a.as_str().parse().ok()));
        let received = parts.version;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::EXPECT);
        let headers = &mut parts.headers;
        append_forwarded_for(headers, &peer.forwarded_for);
        let proto = HeaderValue::from_static(if self.scheme == Scheme::HTTPS {
            "https"
        } else {
            "http"
        });
        headers.insert(X_FORWARDED_PROTO, proto);
        if let Some(host) = host {
            headers.insert(X_FORWARDED_HOST, host.clone());
            // HTTP/2 carries the host in `:authority`; the HTTP/1.1 upstream needs `Host`.
            headers.entry(header::HOST).or_insert(host);
        } else {
            headers.remove(X_FORWARDED_HOST);
        }
        append_via(headers, received);
        parts.uri = self.upstream_uri(&parts.uri, path)?;
        parts.version = Version::HTTP_11;

        let started = Instant::now();
        let sent = self.pool.send(Request::from_parts(parts, body));
        let (response, conn) = match tokio::time::timeout(self.upstream.request_timeout, sent).await
        {
            Ok(Ok(sent)) => sent,
            Ok(Err(e)) => return Err(self.classify(e)),
            Err(_) => {
                self.metrics.upstream_timeouts.increment(1);
                return Err(GatewayError::UpstreamTimeout);
            }
        };
        self.metrics
            .upstream_duration
            .record(started.elapsed().as_secs_f64());

        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        append_via(&mut parts.headers, parts.version);
        parts.version = Version::HTTP_11;
        Ok(Response::from_parts(parts, Body::streamed(body, conn)))
    }

    /// The upstream request target (origin-form): the upstream's base path, then the
    /// request's (normalised, when `path` is given) path and its query.
    fn upstream_uri(&self, uri: &Uri, path: Option<String>) -> Result<Uri, GatewayError> {
        let pq = uri.path_and_query();
        let pq = match (pq, path) {
            (Some(pq), None) if self.upstream.base_path.is_empty() => pq.clone(),
            (pq, path) => {
                let path = path.as_deref().unwrap_or_else(|| uri.path());
                let base = &self.upstream.base_path;
                let joined = match pq.and_then(PathAndQuery::query) {
                    Some(query) => format!("{base}{path}?{query}"),
                    None => format!("{base}{path}"),
                };
                joined.parse().map_err(|_| GatewayError::BadPath)?
            }
        };
        Ok(Uri::from(pq))
    }

    /// Sorts a client error: unreachable upstream, client body failure, or another
    /// upstream failure. Details go to the log, never to the client.
    fn classify(&self, e: PoolError) -> GatewayError {
        // Wrong CA, wrong name, expired certificate, handshake alert: never retried
        // without verification, logged with rustls' own words.
        if let Some(tls) = crate::tls::rustls_error(&e) {
            self.metrics.upstream_tls_errors.increment(1);
            tracing::warn!(tls_error = %tls, error = %error_chain(&e), "upstream TLS failed");
            return GatewayError::UpstreamConnect(Box::new(e));
        }
        if matches!(e, PoolError::Connect(_)) {
            self.metrics.upstream_connect_errors.increment(1);
            tracing::warn!(error = %error_chain(&e), "upstream unreachable");
            return GatewayError::UpstreamConnect(Box::new(e));
        }
        if caused_by::<BodyTooLarge>(&e) {
            return GatewayError::PayloadTooLarge;
        }
        if caused_by::<BodyTimeout>(&e) {
            tracing::debug!("client request body stalled; aborted");
            return GatewayError::ClientTimeout;
        }
        if caused_by_request_body(&e) {
            tracing::debug!(error = %error_chain(&e), "client request body failed");
            return GatewayError::ClientBody(Box::new(e));
        }
        self.metrics.upstream_other_errors.increment(1);
        tracing::warn!(error = %error_chain(&e), "upstream request failed");
        GatewayError::UpstreamFailed(Box::new(e))
    }
}

impl Handler for Proxy {
    async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
        let (class, result) = self.serve(req, peer).await;
        let response = match result {
            Ok(response) => response,
            Err(e) => e.into_response(),
        };
        self.metrics.request(class, response.status());
        response
    }
}

impl From<Rejection> for GatewayError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::BadPath(_) | Rejection::AmbiguousPath => GatewayError::BadPath,
            Rejection::BadTenant => GatewayError::BadTenant,
            Rejection::Missing => GatewayError::MissingToken,
            Rejection::Malformed => GatewayError::MalformedCredentials,
            Rejection::Invalid => GatewayError::InvalidToken,
            Rejection::Expired => GatewayError::ExpiredToken,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Refuses a transfer coding other than a lone `chunked`: the body would reach the
/// upstream still encoded (say, gzip) without the header that says so. hyper already
/// refuses a final coding other than `chunked`, conflicting lengths, and Content-Length
/// next to Transfer-Encoding (dropped, connection closed: RFC 9112 §6.3).
fn check_framing(head: &http::request::Parts) -> Result<(), GatewayError> {
    let mut te = head.headers.get_all(header::TRANSFER_ENCODING).iter();
    match (te.next(), te.next()) {
        (None, _) => Ok(()),
        (Some(value), None) if value.as_bytes().eq_ignore_ascii_case(b"chunked") => Ok(()),
        (Some(_), _) => Err(GatewayError::UnsupportedTransferCoding),
    }
}

/// The client's request body on its way upstream: cut off past `remaining` bytes, or
/// when no data arrives for `timeout`.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    remaining: u64,
    timeout: Duration,
    /// Armed lazily the first time the body has to wait, so a body that arrives in one
    /// go costs no timer.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// No request body data arrived within `limits.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled past limits.body_read_timeout")]
struct BodyTimeout;

/// The body exceeded `limits.max_body_bytes` while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds limits.max_body_bytes")]
struct BodyTooLarge;

impl http_body::Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    this.remaining -= len;
                }
                if let Some(sleep) = &mut this.stalled {
                    let deadline = tokio::time::Instant::now() + this.timeout;
                    sleep.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether an `E` is somewhere in the error's chain.
fn caused_by<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.is::<E>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
///
/// One scan over the (few) header names finds the hop-by-hop ones present: a `match`
/// on the name is a length check and a compare, where removing every hop-by-hop name
/// blindly would hash nine names for every message.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present: [Option<HeaderName>; HOP_BY_HOP.len()] = Default::default();
    let mut found = 0;
    for name in headers.keys() {
        if is_hop_by_hop(name.as_str()) && !present[..found].contains(&Some(name.clone())) {
            present[found] = Some(name.clone());
            found += 1;
        }
    }
    if found == 0 {
        return;
    }
    // Tokens other than `close` and `keep-alive` name further headers to drop; the
    // vector only allocates when there is one.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("close") || token.eq_ignore_ascii_case("keep-alive") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named.into_iter().chain(present.into_iter().flatten()) {
        headers.remove(name);
    }
}

/// The names of [`HOP_BY_HOP`], as the compiler's string match.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Appends the peer's address to `X-Forwarded-For`, merging several header lines into one.
fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
    let mut existing = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if existing.peek().is_none() {
        headers.insert(X_FORWARDED_FOR, client.clone());
        return;
    }
    let mut joined = Vec::new();
    for v in existing {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(client.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// Appends this hop to `Via` (RFC 9110 §7.6.3), keeping earlier hops.
fn append_via(headers: &mut HeaderMap, version: Version) {
    let hop = match version {
        Version::HTTP_09 => "0.9 authgate",
        Version::HTTP_10 => "1.0 authgate",
        Version::HTTP_2 => "2 authgate",
        Version::HTTP_3 => "3 authgate",
        _ => "1.1 authgate",
    };
    let value = match headers.get(header::VIA) {
        None => HeaderValue::from_static(hop),
        Some(_) => {
            let mut joined = Vec::new();
            for v in headers.get_all(header::VIA) {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(hop.as_bytes());
            match HeaderValue::from_bytes(&joined) {
                Ok(v) => v,
                Err(_) => HeaderValue::from_static(hop),
            }
        }
    };
    headers.insert(header::VIA, value);
}

/// True when the client's request body failed while being sent upstream (the client
/// went away or broke framing): a client fault, never reported as a 502.
fn caused_by_request_body(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_user() || h.is_body_write_aborted() {
                return true;
            }
        }
        source = err.source();
    }
    false
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic Zm9v"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn the_hop_by_hop_list_and_its_match_agree() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name.as_str()), "{name}");
        }
        assert!(!is_hop_by_hop("authorization"));
    }

    #[test]
    fn forwarded_for_appends_and_merges_lines() {
        let peer = Peer::new("[::ffff:10.1.2.3]:5000".parse().unwrap());
        let peer = &peer.forwarded_for;
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, peer);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        append_forwarded_for(&mut h, peer);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3");
    }

    #[test]
    fn via_names_the_received_protocol() {
        let mut h = map(&[("via", "1.0 lb")]);
        append_via(&mut h, Version::HTTP_2);
        assert_eq!(h["via"], "1.0 lb, 2 authgate");
        let mut h = HeaderMap::new();
        append_via(&mut h, Version::HTTP_11);
        assert_eq!(h["via"], "1.1 authgate");
    }
}
