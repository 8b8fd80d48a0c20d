//! The proxy listener's handler: admits a client request (or refuses it), forwards it
//! through the upstream pool, and hands the upstream's response back, streaming both
//! bodies.
//!
//! Top-down, one request: [`Proxy::handle`] → [`Proxy::serve`] → [`Proxy::admit`]
//! (framing, then [`decide`] on the current state snapshot: path normalised, route and
//! tenant found, token checked; the fence; the body limit) → [`Proxy::forward`]
//! ([`headers::to_upstream`], the upstream's base path and the normalised path in the
//! URI, [`Pool::send`] under `request_timeout`, [`headers::to_client`]). A refusal or
//! failure is a [`GatewayError`], turned into a response in one place,
//! [`GatewayError::into_response`].

mod drain;
mod exchange;
mod headers;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap};
use http::request;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;

use exchange::Exchange;

use crate::access_log::AccessLogger;
use crate::auth::decide::{decide, Outcome};
use crate::body::Body;
use crate::error::GatewayError;
use crate::live::{Live, Reloader};
use crate::metrics::{ProxyMetrics, RouteClass};
use crate::server::{Handler, Peer};
use crate::state::StateHandle;
use crate::upstream::{describe, Failure, PoolError, RequestBody};

/// The proxy: the live config (upstream pool, route table, limits), state and metrics.
#[derive(Debug)]
pub struct Proxy {
    /// Loaded once per request: the request sees one config from head to end.
    live: Arc<Reloader>,
    /// Whether clients reach this listener over TLS (`X-Forwarded-Proto`).
    https: bool,
    state: Arc<StateHandle>,
    metrics: ProxyMetrics,
    access_log: Option<Arc<AccessLogger>>,
}

/// A request cleared to go upstream.
#[derive(Debug)]
struct Admitted {
    /// The normalised path, when it differs from the one received.
    rewritten: Option<String>,
    /// The most body bytes that may follow it.
    body_limit: u64,
}

impl Handler for Proxy {
    async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
        let live = self.live.current();
        let config = &live.config;
        let mut exchange = Exchange::start(
            &req,
            peer,
            &config.trusted_proxies,
            &config.request_id.header,
            self.access_log.is_some(),
        );
        let mut response = match self.serve(&live, req, peer, &mut exchange).await {
            Ok(response) => response,
            Err(e) => {
                if let (GatewayError::ClientBody(_), Some(log)) = (&e, &mut exchange.log) {
                    log.request_broken = true;
                }
                e.into_response_for(exchange.request_id.to_str().unwrap_or_default())
            }
        };
        let status = response.status();
        self.metrics.request(exchange.class, status);
        let id = exchange.request_id.clone();
        response
            .headers_mut()
            .insert(config.request_id.header.clone(), id);
        match &self.access_log {
            Some(log) => match exchange.finish(log, status.as_u16()) {
                Some(hook) => response.map(|body| body.on_end(hook)),
                None => response,
            },
            None => response,
        }
    }
}

impl Proxy {
    /// `https`: whether the proxy listener speaks TLS (`tls.proxy`, fixed until a restart).
    pub fn new(
        live: Arc<Reloader>,
        https: bool,
        state: Arc<StateHandle>,
        metrics: ProxyMetrics,
        access_log: Option<Arc<AccessLogger>>,
    ) -> Proxy {
        Proxy {
            live,
            https,
            state,
            metrics,
            access_log,
        }
    }

    async fn serve(
        &self,
        live: &Live,
        req: Request<Incoming>,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, GatewayError> {
        let (mut head, body) = req.into_parts();
        let body_read_timeout = live.config.limits.body_read_timeout;
        let admitted = match self.admit(live, &mut head, peer, exchange) {
            Ok(admitted) => admitted,
            Err(e) => {
                drain::discard(&head, body, body_read_timeout).await;
                return Err(e);
            }
        };
        let counter = exchange.log.as_ref().map(|log| log.bytes_in.clone());
        let body = RequestBody::new(body, admitted.body_limit, body_read_timeout).counting(counter);
        self.forward(live, head, body, admitted.rewritten, peer, exchange)
            .await
    }

    /// Whether the request may go upstream, decided on the current snapshot. An allowed
    /// request loses its `Authorization` header: the backend never sees the token.
    fn admit(
        &self,
        live: &Live,
        head: &mut request::Parts,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Result<Admitted, GatewayError> {
        check_framing(head)?;
        let (outcome, rewritten, strip) = {
            let snapshot = self.state.snapshot();
            let now_ms = crate::time::now_ms();
            let mut decision = decide(&live.routes, &snapshot, head, now_ms);
            exchange.class = decision.class;
            if let Some(log) = &mut exchange.log {
                if let Cow::Owned(path) = &decision.path {
                    log.path = Some(path.clone());
                }
                log.tenant = decision.tenant.take();
                log.decision = decision.outcome.label();
                log.token_id = decision.token.map(|t| t.digest.id_bytes());
            }
            decision.count(&self.metrics.other_tenant);
            if let Some(used) = decision.used {
                used.touch(now_ms / 1000);
            }
            let rewritten = match decision.path {
                Cow::Owned(path) => Some(path),
                Cow::Borrowed(_) => None,
            };
            // A request that presented one of the tenant's tokens loses `Authorization`
            // whatever the verdict (in mode `report` it is forwarded); any other
            // authgate secret is stripped by `headers::to_upstream`.
            let strip = decision.token.is_some();
            (decision.outcome, rewritten, strip)
        };
        // Redis store: a replica whose lease ran out cannot know the current tokens (nor
        // whether the tenant requires one), so every protected route waits. Checked
        // after the snapshot was loaded: one clock read, no I/O.
        if outcome.reason().is_some() && self.state.fenced() {
            return Err(GatewayError::Fenced);
        }
        if let Outcome::Rejected(rejection) = outcome {
            // The path only: queries may carry secrets.
            tracing::debug!(?rejection, method = %head.method, path = %head.uri.path(), peer = %peer.addr, "request refused");
            return Err(rejection.into());
        }
        if strip {
            head.headers.remove(header::AUTHORIZATION);
        }
        let mut body_limit = u64::MAX;
        if exchange.class == RouteClass::Protected {
            body_limit = live.config.limits.max_body_bytes;
            if content_length(&head.headers).is_some_and(|n| n > body_limit) {
                return Err(GatewayError::PayloadTooLarge);
            }
        }
        Ok(Admitted {
            rewritten,
            body_limit,
        })
    }

    /// Sends the admitted request upstream and returns the upstream's response.
    async fn forward(
        &self,
        live: &Live,
        mut head: request::Parts,
        body: RequestBody,
        rewritten: Option<String>,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, GatewayError> {
        headers::to_upstream(&mut head, peer, self.https, exchange.trusted);
        let id = exchange.request_id.clone();
        head.headers
            .insert(live.config.request_id.header.clone(), id);
        head.uri = upstream_uri(&live.config.upstream.base_path, &head.uri, rewritten)?;
        head.version = Version::HTTP_11;

        let started = Instant::now();
        let sent = live.pool.send(Request::from_parts(head, body));
        let request_timeout = live.config.upstream.request_timeout;
        let response = match tokio::time::timeout(request_timeout, sent).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(self.failed(e)),
            Err(_) => {
                self.metrics.upstream_timeouts.increment(1);
                return Err(GatewayError::UpstreamTimeout);
            }
        };
        let upstream = started.elapsed().as_secs_f64();
        self.metrics.upstream_duration.record(upstream);
        if let Some(log) = &mut exchange.log {
            log.upstream_ms = Some(upstream * 1000.0);
        }

        let (mut parts, body) = response.into_parts();
        headers::to_client(&mut parts.headers, parts.version);
        parts.version = Version::HTTP_11;
        Ok(Response::from_parts(parts, body.into()))
    }

    /// Counts and logs a failed exchange. Details go to the log, never to the client.
    fn failed(&self, e: PoolError) -> GatewayError {
        let failure = e.classify();
        match &failure {
            Failure::Tls(e, tls) => {
                self.metrics.upstream_tls_errors.increment(1);
                tracing::warn!(tls_error = %tls, error = %describe(e), "upstream TLS failed");
            }
            Failure::Connect(e) => {
                self.metrics.upstream_connect_errors.increment(1);
                tracing::warn!(error = %describe(e), "upstream unreachable");
            }
            Failure::BodyTooLarge => {}
            Failure::BodyTimeout => tracing::debug!("client request body stalled; aborted"),
            Failure::ClientBody(e) => {
                tracing::debug!(error = %describe(e), "client request body failed");
            }
            Failure::Other(e) => {
                self.metrics.upstream_other_errors.increment(1);
                tracing::warn!(error = %describe(e), "upstream request failed");
            }
        }
        failure.into()
    }
}

/// The upstream request target (origin-form): the upstream's base path, then the
/// request's path (normalised, when `rewritten` is given) and its query.
fn upstream_uri(base: &str, uri: &Uri, rewritten: Option<String>) -> Result<Uri, GatewayError> {
    let pq = uri.path_and_query();
    let pq = match (pq, rewritten) {
        (Some(pq), None) if base.is_empty() => pq.clone(),
        (pq, rewritten) => {
            let path = rewritten.as_deref().unwrap_or_else(|| uri.path());
            let joined = match pq.and_then(PathAndQuery::query) {
                Some(query) => format!("{base}{path}?{query}"),
                None => format!("{base}{path}"),
            };
            joined.parse().map_err(|_| GatewayError::BadPath)?
        }
    };
    Ok(Uri::from(pq))
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
fn check_framing(head: &request::Parts) -> Result<(), GatewayError> {
    let mut te = head.headers.get_all(header::TRANSFER_ENCODING).iter();
    match (te.next(), te.next()) {
        (None, _) => Ok(()),
        (Some(value), None) if value.as_bytes().eq_ignore_ascii_case(b"chunked") => Ok(()),
        (Some(_), _) => Err(GatewayError::UnsupportedTransferCoding),
    }
}
