//! The header rules of one proxied exchange (the contract's proxy semantics 2, 5, 6):
//! hop-by-hop headers (and those named in `Connection`) dropped both ways; towards the
//! upstream, headers that make some backends route elsewhere (`X-Original-URL`,
//! `X-Rewrite-URL`) and any `Authorization` holding a gateway secret dropped,
//! `Content-Length` written canonically, `X-Forwarded-For` appended to,
//! `X-Forwarded-Proto` and `X-Forwarded-Host` set, this hop added to `Via`, and `Host`
//! kept (or taken from an HTTP/2 `:authority`).

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::request;
use http::Version;

use crate::auth::token;
use crate::server::Peer;

/// Headers that describe one hop and are never forwarded (RFC 9110 §7.6.1).
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
const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_REWRITE_URL: HeaderName = HeaderName::from_static("x-rewrite-url");

/// Forwarding headers only a trusted proxy may set; removed from anyone else's requests.
const UNTRUSTED_FORWARDING: [&str; 4] = [
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

/// Rewrites a client request's headers for the upstream. `https` says whether the
/// client reached the gateway over TLS; `trusted`, whether the client is a trusted
/// proxy, whose `X-Forwarded-Proto`/`-Host`, `Forwarded`, `X-Real-IP`,
/// `X-Forwarded-Port` and `X-Forwarded-Prefix` are kept (anyone else's are overwritten
/// or removed).
pub fn to_upstream(head: &mut request::Parts, peer: &Peer, https: bool, trusted: bool) {
    let given_host = head.headers.get(header::HOST).cloned();
    let has_host = given_host.is_some();
    let host = given_host.or_else(|| head.uri.authority().and_then(|a| a.as_str().parse().ok()));
    let headers = &mut head.headers;
    // With `Expect`, which the gateway answers itself.
    strip_hop_by_hop(headers, true);
    if !headers.is_empty() {
        strip_request_only(headers, trusted);
    }
    canonical_content_length(headers);
    append_forwarded_for(headers, &peer.forwarded_for);
    if !(trusted && headers.contains_key(X_FORWARDED_PROTO)) {
        let proto = HeaderValue::from_static(if https { "https" } else { "http" });
        headers.insert(X_FORWARDED_PROTO, proto);
    }
    let keep_host = trusted && headers.contains_key(X_FORWARDED_HOST);
    if let Some(host) = host {
        if !keep_host {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
        // HTTP/2 carries the host in `:authority`; the HTTP/1.1 upstream needs `Host`.
        if !has_host {
            headers.insert(header::HOST, host);
        }
    } else if !keep_host {
        headers.remove(X_FORWARDED_HOST);
    }
    append_via(headers, head.version);
}

/// Removes `X-Original-URL` and `X-Rewrite-URL` (Symfony, Zend and IIS route by them),
/// an untrusted client's [`UNTRUSTED_FORWARDING`] headers, and every `Authorization`
/// header holding a gateway token or admin key. One scan over the names finds them.
fn strip_request_only(headers: &mut HeaderMap, trusted: bool) {
    let (mut rewrites, mut forwarding) = (false, false);
    for name in headers.keys() {
        let name = name.as_str();
        rewrites |= matches!(name, "x-original-url" | "x-rewrite-url");
        forwarding |= !trusted && UNTRUSTED_FORWARDING.contains(&name);
    }
    if rewrites {
        headers.remove(X_ORIGINAL_URL);
        headers.remove(X_REWRITE_URL);
    }
    if forwarding {
        for name in UNTRUSTED_FORWARDING {
            headers.remove(name);
        }
    }
    let leaked = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .any(|v| token::holds_secret(v.as_bytes()));
    if leaked {
        let kept: Vec<HeaderValue> = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter(|v| !token::holds_secret(v.as_bytes()))
            .cloned()
            .collect();
        headers.remove(header::AUTHORIZATION);
        for value in kept {
            headers.append(header::AUTHORIZATION, value);
        }
    }
}

/// `Content-Length` as digits without leading zeros (`010` → `10`): hyper accepted the
/// value, but a backend may read `010` another way (octal, or as a different length).
fn canonical_content_length(headers: &mut HeaderMap) {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return;
    };
    let bytes = value.as_bytes();
    if bytes.len() > 1 && bytes[0] == b'0' || bytes.contains(&b',') || bytes.contains(&b' ') {
        let parsed = value
            .to_str()
            .ok()
            .and_then(|v| v.split(',').next()?.trim().parse::<u64>().ok());
        if let Some(n) = parsed {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
}

/// Rewrites the upstream's response headers for the client.
pub fn to_client(headers: &mut HeaderMap, received: Version) {
    strip_hop_by_hop(headers, false);
    append_via(headers, received);
}

/// Removes hop-by-hop headers, including every header named in `Connection`, and, on
/// a request, `Expect`.
///
/// One scan over the (few) header names finds the hop-by-hop ones present: a `match`
/// on the name is a length check and a compare, where removing every hop-by-hop name
/// blindly would hash nine names for every message.
fn strip_hop_by_hop(headers: &mut HeaderMap, request: bool) {
    let mut present: [Option<HeaderName>; HOP_BY_HOP.len() + 1] = Default::default();
    let mut found = 0;
    for name in headers.keys() {
        let drop = is_hop_by_hop(name.as_str()) || request && name == header::EXPECT;
        if drop && !present[..found].contains(&Some(name.clone())) {
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
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(entry) => {
            entry.insert(client.clone());
        }
        Entry::Occupied(mut entry) => {
            if let Some(value) = joined(entry.iter(), client.as_bytes()) {
                entry.insert(value);
            }
        }
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
    match headers.entry(header::VIA) {
        Entry::Vacant(entry) => {
            entry.insert(HeaderValue::from_static(hop));
        }
        Entry::Occupied(mut entry) => {
            let value = joined(entry.iter(), hop.as_bytes())
                .unwrap_or_else(|| HeaderValue::from_static(hop));
            entry.insert(value);
        }
    }
}

/// One header value: the `values` of a list header, then `last`, joined with `, `.
/// `None` when the result is not a valid value.
fn joined<'a>(values: impl Iterator<Item = &'a HeaderValue>, last: &[u8]) -> Option<HeaderValue> {
    let mut joined = Vec::new();
    for v in values {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(last);
    HeaderValue::from_bytes(&joined).ok()
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
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn expect_is_dropped_from_requests_only() {
        let mut h = map(&[("expect", "100-continue"), ("x-kept", "yes")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        strip_hop_by_hop(&mut h, true);
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
