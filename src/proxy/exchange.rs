//! One request's record, filled in as the handler learns it: its request id, the real
//! client, the route class, and (when an access log is kept) what the decision said and
//! how long the upstream took. It feeds the metrics, the response's request-id header,
//! JSON error bodies and the access-log line written when the response body is done.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};
use hyper::body::Incoming;

use crate::access_log::{AccessLogger, Record};
use crate::body::OnEnd;
use crate::config::TrustedProxies;
use crate::metrics::RouteClass;
use crate::server::Peer;

/// What the handler knows about one request.
#[derive(Debug)]
pub struct Exchange {
    pub class: RouteClass,
    pub request_id: HeaderValue,
    /// Whether the connection's client is a trusted proxy (its forwarding headers count).
    pub trusted: bool,
    /// Collected only when the access log is on.
    pub log: Option<Logged>,
}

/// The access-log fields beyond what every request needs.
#[derive(Debug)]
pub struct Logged {
    started: Instant,
    time: SystemTime,
    client: IpAddr,
    peer: SocketAddr,
    method: Method,
    /// The request's URI (a shared, reference-counted copy), for its path.
    uri: Uri,
    /// The normalised path, when normalising changed it.
    pub path: Option<String>,
    proto: &'static str,
    pub tenant: Option<String>,
    pub decision: Option<&'static str>,
    /// The token's public id ([`crate::auth::token::TokenDigest::id_bytes`]).
    pub token_id: Option<[u8; 12]>,
    pub upstream_ms: Option<f64>,
    trace_id: Option<String>,
    pub bytes_in: Arc<AtomicU64>,
    /// The request body broke off (the client went away mid-upload, or sent a broken
    /// body): the exchange is incomplete whatever happens to the response.
    pub request_broken: bool,
}

impl Exchange {
    pub fn start(
        req: &Request<Incoming>,
        peer: &Peer,
        trusted_proxies: &TrustedProxies,
        id_header: &HeaderName,
        logging: bool,
    ) -> Exchange {
        let trusted = trusted_proxies.contains(peer.client.ip());
        let request_id = req
            .headers()
            .get(id_header)
            .filter(|id| trusted && well_formed(id))
            .cloned()
            .unwrap_or_else(new_request_id);
        let log = logging.then(|| Logged {
            started: Instant::now(),
            time: SystemTime::now(),
            client: client_address(req.headers(), peer, trusted_proxies),
            peer: peer.addr,
            method: req.method().clone(),
            uri: req.uri().clone(),
            path: None,
            proto: proto(req.version()),
            tenant: None,
            decision: None,
            token_id: None,
            upstream_ms: None,
            trace_id: trace_id(req.headers()),
            bytes_in: Arc::new(AtomicU64::new(0)),
            request_broken: false,
        });
        Exchange {
            class: RouteClass::Other,
            request_id,
            trusted,
            log,
        }
    }

    /// The access-log hook for the response with `status`, if the log is on.
    pub fn finish(self, logger: &Arc<AccessLogger>, status: u16) -> Option<Box<dyn OnEnd>> {
        let log = self.log?;
        Some(Box::new(Pending {
            logger: logger.clone(),
            request_id: self.request_id,
            class: self.class,
            status,
            log,
        }))
    }
}

/// A line waiting for its response body to end.
struct Pending {
    logger: Arc<AccessLogger>,
    request_id: HeaderValue,
    class: RouteClass,
    status: u16,
    log: Logged,
}

impl OnEnd for Pending {
    fn ended(self: Box<Self>, bytes_out: u64, complete: bool) {
        let Pending {
            logger,
            request_id,
            class,
            status,
            log,
        } = *self;
        let record = Record {
            time: log.time,
            request_id: request_id.to_str().unwrap_or("-"),
            client: log.client,
            peer: log.peer,
            method: log.method.as_str(),
            path: log.path.as_deref().unwrap_or(log.uri.path()),
            proto: log.proto,
            status,
            bytes_in: log.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            duration_ms: log.started.elapsed().as_secs_f64() * 1000.0,
            upstream_ms: log.upstream_ms,
            tenant: log.tenant.as_deref(),
            route: match class {
                RouteClass::Protected => "protected",
                RouteClass::Other => "other",
            },
            decision: log.decision,
            token_id: log
                .token_id
                .as_ref()
                .and_then(|id| std::str::from_utf8(id).ok()),
            trace_id: log.trace_id.as_deref(),
            complete: complete && !log.request_broken,
        };
        logger.write(&record);
    }
}

/// A request id a trusted peer may hand on: 1–128 of `A–Z a–z 0–9 - _ . : ~`.
fn well_formed(id: &HeaderValue) -> bool {
    let id = id.as_bytes();
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'~'))
}

/// 128 random bits from a CSPRNG seeded by the OS, as 32 hex digits.
fn new_request_id() -> HeaderValue {
    let bits: u128 = rand::random();
    HeaderValue::from_str(&format!("{bits:032x}")).expect("hex is a valid header value")
}

/// The real client: the connection's client (the PROXY source or the TCP peer), or,
/// when that is a trusted proxy, the rightmost `X-Forwarded-For` address that is not.
pub fn client_address(headers: &HeaderMap, peer: &Peer, trusted: &TrustedProxies) -> IpAddr {
    let mut client = peer.client.ip().to_canonical();
    if !trusted.contains(client) {
        return client;
    }
    let lines: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    for line in lines.iter().rev() {
        let Ok(line) = line.to_str() else {
            return client;
        };
        for element in line.rsplit(',') {
            let Some(ip) = parse_forwarded_ip(element.trim()) else {
                return client;
            };
            client = ip;
            if !trusted.contains(ip) {
                return ip;
            }
        }
    }
    client
}

/// An `X-Forwarded-For` element: an IP, maybe with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded_ip(element: &str) -> Option<IpAddr> {
    if let Ok(ip) = element.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    element
        .parse::<SocketAddr>()
        .ok()
        .map(|addr| addr.ip().to_canonical())
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    let hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && id.bytes().any(|b| b != b'0')).then(|| id.to_ascii_lowercase())
}

fn proto(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_forwarded_address() {
        let lb = Peer::new("10.0.0.2:4000".parse().unwrap());
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["6.6.6.6, 1.2.3.4", "10.0.0.9"]);
        assert_eq!(
            client_address(&h, &lb, &t),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        let direct = Peer::new("8.8.8.8:4000".parse().unwrap());
        assert_eq!(
            client_address(&h, &direct, &t),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
        let garbage = xff(&["1.2.3.4, not-an-ip"]);
        assert_eq!(
            client_address(&garbage, &lb, &t),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn request_ids_are_fresh_and_well_formed() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(well_formed(&a));
        assert!(!well_formed(&HeaderValue::from_static("a b")));
        assert!(!well_formed(
            &HeaderValue::from_str(&"a".repeat(129)).unwrap()
        ));
    }

    #[test]
    fn the_trace_id_comes_from_traceparent() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            trace_id(&h).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        h.insert(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(trace_id(&h), None);
    }
}
