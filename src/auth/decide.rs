//! The auth decision: a pure function of the route table, the state snapshot, the
//! request head and the time. No I/O, no locks, nothing mutated; the proxy acts on the
//! result (forwards with the normalised path, or answers the rejection).

use std::borrow::Cow;

use http::request::Parts;

use super::bearer::{self, Credentials};
use super::path;
use super::token::Digest;
use crate::metrics::{RouteClass, TenantCounters};
use crate::routes::RouteTable;
use crate::state::Snapshot;

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
    /// The tenant query parameter is missing or repeated on a protected route.
    BadTenant,
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
                Rejection::BadPath(_) | Rejection::AmbiguousPath | Rejection::BadTenant,
            ) => None,
        }
    }
}

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
    };
    let normalized = match path::normalize(head.uri.path()) {
        Ok(n) => n,
        Err(e) => return reject(Cow::Borrowed("/"), RouteClass::Other, Rejection::BadPath(e)),
    };
    let path = normalized.path;
    if let Some(lenient) = &normalized.lenient {
        if routes.matches_any_method(lenient) {
            return reject(path, RouteClass::Protected, Rejection::AmbiguousPath);
        }
    }
    let Some(route) = routes.find(&head.method, &path) else {
        return Decision {
            path,
            class: RouteClass::Other,
            outcome: Outcome::Unprotected,
            counters: None,
        };
    };
    let tenant: Cow<'_, str> = match (route.tenant, routes.tenant_param()) {
        (Some(tenant), _) => tenant,
        (None, None) => Cow::Borrowed(DEFAULT_TENANT),
        (None, Some(param)) => match query_tenant(head.uri.query(), param) {
            Some(tenant) if routes.is_case_insensitive() => Cow::Owned(tenant.to_ascii_lowercase()),
            Some(tenant) => tenant,
            None => return reject(path, RouteClass::Protected, Rejection::BadTenant),
        },
    };
    let entry = snapshot.tenants.get(tenant.as_ref());
    let counters = entry.map(|e| &e.counters);
    let outcome = match entry.map(|e| &e.state) {
        Some(t) if t.require_authentication => match bearer::parse(&head.headers) {
            Credentials::Missing => Outcome::Rejected(Rejection::Missing),
            Credentials::Malformed => Outcome::Rejected(Rejection::Malformed),
            Credentials::Bearer(token) => match &t.token {
                None => Outcome::Rejected(Rejection::Invalid),
                Some(current) if !current.digest.matches(&Digest::of(token)) => {
                    Outcome::Rejected(Rejection::Invalid)
                }
                Some(current) if now_ms >= current.expires_at_ms => {
                    Outcome::Rejected(Rejection::Expired)
                }
                Some(_) => Outcome::Allowed,
            },
        },
        _ => Outcome::NotRequired,
    };
    Decision {
        path,
        class: RouteClass::Protected,
        outcome,
        counters,
    }
}

/// The value of the one `param` query parameter; `None` when absent or repeated.
fn query_tenant<'q>(query: Option<&'q str>, param: &str) -> Option<Cow<'q, str>> {
    let mut found = None;
    for (key, value) in form_urlencoded::parse(query?.as_bytes()) {
        if key == param {
            if found.is_some() {
                return None;
            }
            found = Some(value);
        }
    }
    found.filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests;
