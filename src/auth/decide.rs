//! The auth decision: a pure function of the route table, the state snapshot, the
//! request head and the time. No I/O, no locks, nothing mutated; the proxy acts on the
//! result (forwards with the normalised path, or answers the rejection).
//!
//! A protected route is a resource, not a spelling. In order:
//! 1. `CONNECT` is refused (a tunnel would carry anything past the checks);
//! 2. the path is normalised ([`path::normalize`]); a path a lenient backend could read
//!    as another one (`;`, `%2F`, …) that is protected is refused;
//! 3. a path that matches a protected template only loosely (case, suffix, trimmed or
//!    folded characters: [`RouteTable::loosely_matches`]) is refused;
//! 4. on a route that lists methods, another method carrying a method-override header is
//!    refused; without an override it is not protected;
//! 5. the tenant must be a valid tenant name, and a query naming `tenant_param` must
//!    not name another one; it compares in lower case;
//! 6. the tenant's settings and token decide.

use std::borrow::Cow;

use http::request::Parts;

use super::bearer::{self, Credentials};
use super::path;
use super::token::Digest;
use crate::metrics::{RouteClass, TenantCounters};
use crate::routes::{fold_to_ascii, RouteTable};
use crate::state::{Snapshot, TenantState, TokenRecord};

/// Tenant of protected routes whose template and query name no tenant.
pub const DEFAULT_TENANT: &str = "default";

/// What to do with a request.
#[derive(Debug)]
pub struct Decision<'a, 's> {
    /// The normalised path: what was checked, and what the upstream must receive.
    pub path: Cow<'a, str>,
    pub class: RouteClass,
    pub outcome: Outcome,
    /// Counters of the tenant, when it has stored state.
    pub counters: Option<&'s TenantCounters>,
    /// The tenant of a protected route, in lower case.
    pub tenant: Option<String>,
    /// The tenant's token the request presented (current or expired).
    pub token: Option<&'s TokenRecord>,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not a protected route: forward untouched.
    Unprotected,
    /// Protected, but the tenant does not require authentication: forward untouched.
    NotRequired,
    /// The tenant's current token: forward without the `Authorization` header.
    Allowed,
    /// Answer the client; never forward.
    Rejected(Rejection),
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The path cannot be normalised safely (NUL, bad escapes, …).
    BadPath(path::PathError),
    /// A lenient backend could read the path as a protected route.
    AmbiguousPath,
    /// The tenant is missing, repeated, not a valid tenant name, or contradicted by the
    /// query, on a protected route.
    BadTenant,
    /// A method-override header on a method the route does not cover: the backend may
    /// run it as one it does.
    MethodOverride,
    /// `CONNECT`: never tunnelled.
    Connect,
    /// No Bearer credentials.
    Missing,
    /// `Authorization` not of the RFC 6750 form, or several of them.
    Malformed,
    /// Not the tenant's current token (wrong, revoked, or replaced).
    Invalid,
    /// The tenant's current token, past its expiry.
    Expired,
}

/// Index into [`crate::metrics::AUTH_REASONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing = 0,
    Malformed = 1,
    Invalid = 2,
    Expired = 3,
    Ok = 4,
    NotRequired = 5,
}

impl Outcome {
    /// The access log's `decision`: `None` for unprotected routes.
    pub fn label(&self) -> Option<&'static str> {
        Some(match self {
            Outcome::Unprotected => return None,
            Outcome::NotRequired => "not_required",
            Outcome::Allowed => "ok",
            Outcome::Rejected(Rejection::Missing) => "missing",
            Outcome::Rejected(Rejection::Malformed) => "malformed",
            Outcome::Rejected(Rejection::Invalid) => "invalid",
            Outcome::Rejected(Rejection::Expired) => "expired",
            Outcome::Rejected(Rejection::BadPath(_)) => "bad_path",
            Outcome::Rejected(Rejection::AmbiguousPath) => "ambiguous_path",
            Outcome::Rejected(Rejection::BadTenant) => "bad_tenant",
            Outcome::Rejected(Rejection::MethodOverride) => "method_override",
            Outcome::Rejected(Rejection::Connect) => "connect",
        })
    }

    /// The metric reason, for outcomes that were decided on a tenant's settings.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Outcome::Unprotected => None,
            Outcome::NotRequired => Some(Reason::NotRequired),
            Outcome::Allowed => Some(Reason::Ok),
            Outcome::Rejected(Rejection::Missing) => Some(Reason::Missing),
            Outcome::Rejected(Rejection::Malformed) => Some(Reason::Malformed),
            Outcome::Rejected(Rejection::Invalid) => Some(Reason::Invalid),
            Outcome::Rejected(Rejection::Expired) => Some(Reason::Expired),
            Outcome::Rejected(
                Rejection::BadPath(_)
                | Rejection::AmbiguousPath
                | Rejection::BadTenant
                | Rejection::MethodOverride
                | Rejection::Connect,
            ) => None,
        }
    }
}

/// Headers with which some frameworks run a request as another method.
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Decides what to do with a request head. `now_ms` is Unix time in milliseconds.
pub fn decide<'a, 's>(
    routes: &RouteTable,
    snapshot: &'s Snapshot,
    head: &'a Parts,
    now_ms: u64,
) -> Decision<'a, 's> {
    let reject = |path: Cow<'a, str>, class, rejection| Decision {
        path,
        class,
        outcome: Outcome::Rejected(rejection),
        counters: None,
        tenant: None,
        token: None,
    };
    if head.method.as_str().eq_ignore_ascii_case("CONNECT") {
        return reject(Cow::Borrowed("/"), RouteClass::Other, Rejection::Connect);
    }
    let normalized = match path::normalize(head.uri.path()) {
        Ok(n) => n,
        Err(e) => return reject(Cow::Borrowed("/"), RouteClass::Other, Rejection::BadPath(e)),
    };
    let path = normalized.path;
    if let Some(lenient) = &normalized.lenient {
        if routes.matches_any_method(lenient) || routes.loosely_matches(lenient) {
            return reject(path, RouteClass::Protected, Rejection::AmbiguousPath);
        }
    }
    let unprotected = |path| Decision {
        path,
        class: RouteClass::Other,
        outcome: Outcome::Unprotected,
        counters: None,
        tenant: None,
        token: None,
    };
    let Some(route) = routes.at(&path) else {
        if routes.loosely_matches(&path) {
            return reject(path, RouteClass::Protected, Rejection::AmbiguousPath);
        }
        return unprotected(path);
    };
    if !route.covers(&head.method) {
        if METHOD_OVERRIDES
            .iter()
            .any(|h| head.headers.contains_key(*h))
        {
            return reject(path, RouteClass::Protected, Rejection::MethodOverride);
        }
        return unprotected(path);
    }
    let Some(tenant) = tenant(route.tenant, routes.tenant_param(), head.uri.query()) else {
        return reject(path, RouteClass::Protected, Rejection::BadTenant);
    };
    let entry = snapshot.tenants.get(tenant.as_ref());
    let counters = entry.map(|e| &e.counters);
    let (outcome, token) = match entry.map(|e| &e.state) {
        Some(t) if t.require_authentication => {
            let outcome = check_token(t, &head.headers, now_ms);
            let presented = matches!(
                outcome,
                Outcome::Allowed | Outcome::Rejected(Rejection::Expired)
            );
            (outcome, t.token.as_ref().filter(|_| presented))
        }
        _ => (Outcome::NotRequired, None),
    };
    let tenant = Some(tenant.into_owned());
    Decision {
        path,
        class: RouteClass::Protected,
        outcome,
        counters,
        tenant,
        token,
    }
}

/// The tenant's current token against the request's credentials.
fn check_token(tenant: &TenantState, headers: &http::HeaderMap, now_ms: u64) -> Outcome {
    match bearer::parse(headers) {
        Credentials::Missing => Outcome::Rejected(Rejection::Missing),
        Credentials::Malformed => Outcome::Rejected(Rejection::Malformed),
        Credentials::Bearer(token) => match &tenant.token {
            None => Outcome::Rejected(Rejection::Invalid),
            Some(current) if !current.digest.matches(&Digest::of(token)) => {
                Outcome::Rejected(Rejection::Invalid)
            }
            Some(current) if now_ms >= current.expires_at_ms => {
                Outcome::Rejected(Rejection::Expired)
            }
            Some(_) => Outcome::Allowed,
        },
    }
}

/// The tenant of a protected request, in lower case; `None` when it is missing, not a
/// valid tenant name, repeated, or contradicted by the query.
///
/// From the path when the template captures `tenant_param`, and then any query
/// parameter of that name (compared as a lenient backend compares names) must name the
/// same tenant: backends that merge path and query parameters may read the query's.
/// Otherwise from the one query parameter of that name; with no `tenant_param`, the
/// tenant is [`DEFAULT_TENANT`].
fn tenant<'a>(
    from_path: Option<Cow<'a, str>>,
    param: Option<&str>,
    query: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    let Some(param) = param else {
        return Some(Cow::Borrowed(DEFAULT_TENANT));
    };
    // `client[]`, `client[0]` (PHP, qs, Rack) and `Client` name it too, and `;`
    // separates parameters for some (Rack 2, older Python).
    let named = |key: &str| {
        let key = key.split('[').next().unwrap_or_default();
        key.eq_ignore_ascii_case(param) || fold_to_ascii(key).trim().eq_ignore_ascii_case(param)
    };
    let mut in_query = query
        .into_iter()
        .flat_map(|q| q.split(';'))
        .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
        .filter(|(key, _)| named(key))
        .map(|(_, value)| value);
    match from_path {
        Some(tenant) => {
            let tenant = tenant_name(tenant)?;
            in_query
                .all(|v| v.eq_ignore_ascii_case(&tenant))
                .then_some(tenant)
        }
        None => {
            let found = in_query.next()?;
            if in_query.next().is_some() {
                return None;
            }
            tenant_name(Cow::Owned(found.into_owned()))
        }
    }
}

/// `raw` in lower case if it is a valid tenant name: 1–128 of `A–Z a–z 0–9 - . _ ~`,
/// and not a dot segment.
pub fn tenant_name(raw: Cow<'_, str>) -> Option<Cow<'_, str>> {
    let valid = (1..=128).contains(&raw.len())
        && raw != "."
        && raw != ".."
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !valid {
        return None;
    }
    if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(Cow::Owned(raw.to_ascii_lowercase()));
    }
    Some(raw)
}

#[cfg(test)]
mod tests;
