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
//! 6. the tenant's mode and tokens decide: in mode `off` nothing is parsed; in `on` and
//!    `report` the credentials are checked against the current token and, while its
//!    overlap lasts, the previous one; in `report` a refusal is only reported
//!    ([`Outcome::Reported`]) and the request forwarded.

use std::borrow::Cow;

use http::request::Parts;

use super::bearer::{self, Credentials};
use super::path;
use super::token::Digest;
use crate::metrics::{RouteClass, TenantCounters};
use crate::routes::{fold_to_ascii, RouteTable};
use crate::state::{LastUse, Mode, Snapshot, TenantState, TokenRecord};

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
    /// The tenant's mode (`Off` for unprotected routes and refusals before the tenant).
    pub mode: Mode,
    /// The tenant's token the request presented (current or previous, accepted or expired).
    pub token: Option<&'s TokenRecord>,
    /// Where to record the use of the token, when it was accepted.
    pub used: Option<&'s LastUse>,
    /// Accepted with the previous token, during its overlap.
    pub previous: bool,
}

impl Decision<'_, '_> {
    /// Counts the decision on its tenant's counters, or on `other` (those shared by
    /// tenants without stored state); nothing for refusals before the tenant.
    pub fn count(&self, other: &TenantCounters) {
        let Some(reason) = self.outcome.reason() else {
            return;
        };
        let counters = self.counters.unwrap_or(other);
        let counter = match (self.mode, reason) {
            (_, Reason::NotRequired) | (Mode::Off, _) => &counters.not_required,
            (Mode::On, reason) => &counters.on[reason as usize],
            (Mode::Report, reason) => &counters.report[reason as usize],
        };
        counter.increment(1);
        if self.previous {
            counters.previous_accepted.increment(1);
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not a protected route: forward untouched.
    Unprotected,
    /// Protected, but the tenant does not require authentication: forward untouched.
    NotRequired,
    /// One of the tenant's valid tokens: forward without the `Authorization` header.
    Allowed,
    /// Answer the client; never forward.
    Rejected(Rejection),
    /// Mode `report`: would have been refused for this reason (one of the token's:
    /// missing, malformed, invalid, expired); forwarded.
    Reported(Rejection),
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
    /// None of the tenant's valid tokens (wrong, revoked, or replaced and past its
    /// overlap).
    Invalid,
    /// The tenant's current (or previous) token, past its expiry.
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
            Outcome::Reported(Rejection::Missing) => "would_refuse:missing",
            Outcome::Reported(Rejection::Malformed) => "would_refuse:malformed",
            Outcome::Reported(Rejection::Invalid) => "would_refuse:invalid",
            Outcome::Reported(Rejection::Expired) => "would_refuse:expired",
            // Refused before the tenant's mode is read: never reported.
            Outcome::Reported(
                Rejection::BadPath(_)
                | Rejection::AmbiguousPath
                | Rejection::BadTenant
                | Rejection::MethodOverride
                | Rejection::Connect,
            ) => "would_refuse",
        })
    }

    /// The metric reason, for outcomes that were decided on a tenant's settings.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Outcome::Unprotected => None,
            Outcome::NotRequired => Some(Reason::NotRequired),
            Outcome::Allowed => Some(Reason::Ok),
            Outcome::Rejected(r) | Outcome::Reported(r) => r.reason(),
        }
    }
}

impl Rejection {
    /// The metric reason of a refusal decided on the tenant's token.
    fn reason(self) -> Option<Reason> {
        match self {
            Rejection::Missing => Some(Reason::Missing),
            Rejection::Malformed => Some(Reason::Malformed),
            Rejection::Invalid => Some(Reason::Invalid),
            Rejection::Expired => Some(Reason::Expired),
            Rejection::BadPath(_)
            | Rejection::AmbiguousPath
            | Rejection::BadTenant
            | Rejection::MethodOverride
            | Rejection::Connect => None,
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
        mode: Mode::Off,
        token: None,
        used: None,
        previous: false,
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
        mode: Mode::Off,
        token: None,
        used: None,
        previous: false,
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
    let tenant = tenant.into_owned();
    let entry = snapshot.tenants.get(&tenant);
    let counters = entry.map(|e| &e.counters);
    let mode = entry.map_or(Mode::Off, |e| e.state.mode);
    let mut decision = Decision {
        path,
        class: RouteClass::Protected,
        outcome: Outcome::NotRequired,
        counters,
        tenant: Some(tenant),
        mode,
        token: None,
        used: None,
        previous: false,
    };
    if let Some(entry) = entry.filter(|_| mode != Mode::Off) {
        let (outcome, presented) = check_token(&entry.state, &head.headers, now_ms);
        decision.outcome = match outcome {
            Outcome::Rejected(r) if mode == Mode::Report => Outcome::Reported(r),
            outcome => outcome,
        };
        let accepted = outcome == Outcome::Allowed;
        match presented {
            Presented::Current(t) => {
                decision.token = Some(t);
                decision.used = entry.current_use.as_deref().filter(|_| accepted);
            }
            Presented::Previous(t) => {
                decision.token = Some(t);
                decision.used = entry.previous_use.as_deref().filter(|_| accepted);
                decision.previous = accepted;
            }
            Presented::Other => {}
        }
    }
    decision
}

/// Which of the tenant's tokens a request presented.
enum Presented<'s> {
    Current(&'s TokenRecord),
    Previous(&'s TokenRecord),
    /// None of them (or no credentials).
    Other,
}

/// The tenant's tokens against the request's credentials: the current one, then the
/// previous one, valid until its overlap's deadline.
fn check_token<'s>(
    tenant: &'s TenantState,
    headers: &http::HeaderMap,
    now_ms: u64,
) -> (Outcome, Presented<'s>) {
    let token = match bearer::parse(headers) {
        Credentials::Missing => return (Outcome::Rejected(Rejection::Missing), Presented::Other),
        Credentials::Malformed => {
            return (Outcome::Rejected(Rejection::Malformed), Presented::Other)
        }
        Credentials::Bearer(token) => Digest::of(token),
    };
    if let Some(current) = tenant.token.as_ref().filter(|t| t.digest.matches(&token)) {
        let outcome = if now_ms >= current.expires_at_ms {
            Outcome::Rejected(Rejection::Expired)
        } else {
            Outcome::Allowed
        };
        return (outcome, Presented::Current(current));
    }
    if let Some(previous) = tenant
        .previous
        .as_ref()
        .filter(|p| p.token.digest.matches(&token))
    {
        let outcome = if now_ms >= previous.token.expires_at_ms {
            Outcome::Rejected(Rejection::Expired)
        } else if now_ms >= previous.valid_until_ms {
            Outcome::Rejected(Rejection::Invalid)
        } else {
            Outcome::Allowed
        };
        return (outcome, Presented::Previous(&previous.token));
    }
    (Outcome::Rejected(Rejection::Invalid), Presented::Other)
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
