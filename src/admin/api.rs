//! The tenant admin API (`/admin/v1/…`) behind the endpoints: the tenant and cluster
//! documents, request bodies (read only after the key was checked, whatever the body
//! type), settings, token generation and revocation. Each change is one [`Command`] applied through the [`StateHandle`], which
//! makes it durable and swaps the snapshot in *before* the response is written, then is
//! written to the `audit` log target (never a token or key).

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use serde_json::{json, Map, Value};

use super::RequestBody;
use crate::auth::token::{self, TOKEN_PREFIX};
use crate::config::{AdminKey, Role, Tokens};
use crate::error::{json_response, GatewayError};
use crate::state::{
    ClusterStatus, Command, Mode, ReplicaAck, State, StateHandle, StoreError, TenantState,
    TokenRecord,
};
use crate::time::{from_unix_ms, now_ms, rfc3339, rfc3339_ms};

/// Largest admin request body read.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// A tenant name from an admin path: 1–128 characters of the URL-unreserved set, so it
/// is written the same way in a normalised request path; stored in lower case, as the
/// proxy compares it.
pub fn tenant_name(raw: &str) -> Result<String, GatewayError> {
    crate::auth::decide::tenant_name(std::borrow::Cow::Borrowed(raw))
        .map(std::borrow::Cow::into_owned)
        .ok_or_else(|| GatewayError::InvalidField {
            field: "tenant",
            message: "use 1 to 128 letters, digits, `-`, `.`, `_` or `~`".into(),
        })
}

/// The tenant document of the contract. `last_used` gives a token's last accepted use
/// on this replica, in Unix seconds.
pub fn document(name: &str, tenant: &TenantState, last_used: &LastUsed<'_>) -> Value {
    let used = |t: &TokenRecord| last_used(&t.digest).map(|s| rfc3339(from_unix_ms(s * 1000)));
    let token = tenant.token.as_ref().map(|t| {
        json!({
            "id": t.digest.id(),
            "fingerprint": t.digest.fingerprint(),
            "created_at": rfc3339(from_unix_ms(t.created_at_ms)),
            "expires_at": rfc3339(from_unix_ms(t.expires_at_ms)),
            "last_used_at": used(t),
        })
    });
    let previous = tenant.previous.as_ref().map(|p| {
        json!({
            "id": p.token.digest.id(),
            "fingerprint": p.token.digest.fingerprint(),
            "created_at": rfc3339(from_unix_ms(p.token.created_at_ms)),
            // A deadline seconds away: its milliseconds matter.
            "valid_until": rfc3339_ms(from_unix_ms(p.valid_until_ms)),
            "last_used_at": used(&p.token),
        })
    });
    json!({
        "tenant": name,
        "mode": tenant.mode.as_str(),
        "require_authentication": tenant.require_authentication(),
        "token": token,
        "previous_token": previous,
        "revision": tenant.revision,
    })
}

/// A token's last accepted use on this replica (Unix seconds), by digest.
pub type LastUsed<'a> = dyn Fn(&crate::auth::token::Digest) -> Option<u64> + 'a;

pub fn list(state: &State, last_used: &LastUsed<'_>) -> Value {
    let tenants: Vec<Value> = state
        .tenants
        .iter()
        .map(|(name, t)| document(name, t, last_used))
        .collect();
    json!({ "tenants": tenants })
}

/// `GET /admin/v1/cluster`: where the state lives and, with Redis, every replica's lease.
pub fn cluster(status: &ClusterStatus) -> Value {
    let redis = match status {
        ClusterStatus::File => return json!({ "backend": "file" }),
        ClusterStatus::Redis(redis) => redis,
    };
    let replicas: Vec<Value> = redis
        .replicas
        .iter()
        .map(|r| {
            json!({
                "applied_revision": r.applied_revision,
                "lease_deadline": rfc3339_ms(from_unix_ms(r.deadline_ms)),
                "live": r.live,
                "replica": r.replica,
            })
        })
        .collect();
    json!({
        "backend": "redis",
        "epoch": redis.epoch,
        "revision": redis.revision,
        "replica": redis.replica,
        "fenced": redis.fenced,
        "replicas": replicas,
    })
}

/// `GET /admin/v1/whoami`: who the key is and the token lifetimes it may choose from,
/// so a client (the admin page) can bound "expires in" and disable what it may not do.
pub fn whoami(key: &AdminKey, tokens: &Tokens) -> Value {
    let role = match key.role {
        Role::Viewer => "viewer",
        Role::Approver => "approver",
    };
    json!({
        "name": key.name,
        "role": role,
        "max_ttl_seconds": tokens.max_ttl.as_secs(),
        "default_ttl_seconds": tokens.default_ttl.as_secs(),
        "max_overlap_seconds": tokens.max_overlap.as_secs(),
    })
}

/// `PUT …/settings` body: exactly one of `{"require_authentication": bool}` (true is
/// `on`, false `off`) and `{"mode": "off"|"report"|"on"}`.
pub async fn parse_settings<B: RequestBody>(body: B) -> Result<Mode, GatewayError> {
    let mut object = read_object(body, false).await?;
    let require = object.remove("require_authentication");
    let mode = object.remove("mode");
    reject_unknown(object)?;
    match (require, mode) {
        (Some(_), Some(_)) => Err(invalid(
            "mode",
            "give either `mode` or `require_authentication`, not both",
        )),
        // The seed's answer to an empty body, kept for its clients.
        (None, None) => Err(invalid(
            "require_authentication",
            "is required (or `mode`: \"off\", \"report\" or \"on\")",
        )),
        (Some(Value::Bool(true)), None) => Ok(Mode::On),
        (Some(Value::Bool(false)), None) => Ok(Mode::Off),
        (Some(_), None) => Err(invalid("require_authentication", "must be true or false")),
        (None, Some(mode)) => mode
            .as_str()
            .and_then(Mode::parse)
            .ok_or_else(|| invalid("mode", "must be \"off\", \"report\" or \"on\"")),
    }
}

/// `POST …/token` body, checked: the new token's lifetime and how long the token it
/// replaces stays valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRequest {
    pub expires_in: u64,
    /// Seconds; 0: the replaced token dies with the rotation.
    pub previous_valid_for: u64,
}

/// `POST …/token` body: optional `{"expires_in": seconds, "previous_valid_for": seconds}`;
/// never clamped.
pub async fn parse_token_request<B: RequestBody>(
    body: B,
    tokens: &Tokens,
) -> Result<TokenRequest, GatewayError> {
    let mut object = read_object(body, true).await?;
    let max = tokens.max_ttl.as_secs();
    let expires_in = match object.remove("expires_in") {
        None => tokens.default_ttl.as_secs(),
        Some(Value::Number(n)) => match whole_number(&n) {
            Some(0) | None => {
                return Err(invalid(
                    "expires_in",
                    "must be a positive whole number of seconds",
                ))
            }
            Some(secs) if secs > max => {
                return Err(invalid(
                    "expires_in",
                    &format!("must be at most {max} (tokens.max_ttl)"),
                ))
            }
            Some(secs) => secs,
        },
        Some(_) => {
            return Err(invalid(
                "expires_in",
                "must be a positive whole number of seconds",
            ))
        }
    };
    let max_overlap = tokens.max_overlap.as_secs();
    let whole = "must be a whole number of seconds, 0 or more";
    let previous_valid_for = match object.remove("previous_valid_for") {
        None => 0,
        Some(Value::Number(n)) => match whole_number(&n) {
            None => return Err(invalid("previous_valid_for", whole)),
            Some(secs) if secs > max_overlap => {
                return Err(invalid(
                    "previous_valid_for",
                    &format!("must be at most {max_overlap} (tokens.max_overlap)"),
                ))
            }
            Some(secs) => secs,
        },
        Some(_) => return Err(invalid("previous_valid_for", whole)),
    };
    reject_unknown(object)?;
    Ok(TokenRequest {
        expires_in,
        previous_valid_for,
    })
}

/// Generates a token for `tenant`, makes it the only valid one, and answers 201.
pub async fn generate(
    state: &StateHandle,
    actor: &str,
    tenant: String,
    request: TokenRequest,
    if_match: Option<u64>,
) -> Result<http::Response<crate::body::Body>, GatewayError> {
    let TokenRequest {
        expires_in,
        previous_valid_for,
    } = request;
    let secret = token::generate(TOKEN_PREFIX).map_err(|e| {
        tracing::error!(error = %e, "the OS random source failed");
        GatewayError::StateUnavailable
    })?;
    let now = now_ms();
    let record = TokenRecord {
        digest: secret.digest,
        created_at_ms: now,
        expires_at_ms: now + expires_in * 1000,
    };
    let cmd = Command::SetToken {
        tenant: tenant.clone(),
        token: record.clone(),
        previous_valid_until_ms: (previous_valid_for > 0).then(|| now + previous_valid_for * 1000),
    };
    let (after, acks) = apply(state, actor, cmd, if_match).await?;
    let previous_valid_until = after
        .previous
        .as_ref()
        .map(|p| rfc3339_ms(from_unix_ms(p.valid_until_ms)));
    crate::metrics::rotation(&tenant);
    let mut body = json!({
        "token": secret.value,
        "token_type": "Bearer",
        "id": record.digest.id(),
        "expires_in": expires_in,
        "expires_at": rfc3339(from_unix_ms(record.expires_at_ms)),
        "previous_valid_until": previous_valid_until,
        "revision": after.revision,
    });
    if let Some(acks) = acks {
        body["replicas"] = replicas(&acks);
    }
    Ok(json_response(
        StatusCode::CREATED,
        Bytes::from(body.to_string()),
    ))
}

/// Applies `cmd` durably (only if the tenant is at revision `if_match`, when given),
/// writes the audit line, and returns the tenant's new state and, with the Redis store,
/// each replica's acknowledgement.
pub async fn apply(
    state: &StateHandle,
    actor: &str,
    cmd: Command,
    if_match: Option<u64>,
) -> Result<(TenantState, Option<Vec<ReplicaAck>>), GatewayError> {
    let tenant = cmd.tenant().to_string();
    let action = cmd.action();
    let (old, new) = state
        .apply(cmd, if_match)
        .await
        .map_err(|e| refused(e, actor, &tenant, action))?;
    let fingerprint = |t: &TenantState| t.token.as_ref().map(|t| t.digest.fingerprint());
    let after = new.tenant;
    if let Some(replicas) = &new.replicas {
        for r in replicas.iter().filter(|r| !r.acknowledged) {
            tracing::warn!(replica = %r.replica, applied = r.applied_revision, revision = new.revision,
                "replica did not acknowledge; its lease ran out, so it refuses protected routes until it resyncs");
        }
    }
    tracing::info!(
        target: "audit",
        actor,
        tenant = %tenant,
        action,
        old_token = fingerprint(&old).as_deref().unwrap_or("none"),
        new_token = fingerprint(&after).as_deref().unwrap_or("none"),
        mode = after.mode.as_str(),
        previous_token = after.previous.as_ref().map(|p| p.token.digest.fingerprint()).as_deref().unwrap_or("none"),
        revision = new.revision,
        "admin change"
    );
    Ok((after, new.replicas))
}

/// Logs a change the store refused or could not confirm, and what the caller is told.
fn refused(e: StoreError, actor: &str, tenant: &str, action: &str) -> GatewayError {
    match &e {
        StoreError::Conflict { .. } | StoreError::HandingOver => {
            tracing::info!(error = %e, %tenant, action, "state change refused")
        }
        // It did change: the audit log must say so, though the caller gets a 503.
        StoreError::NotReplicated {
            revision,
            wanted,
            confirmed,
        } => tracing::warn!(
            target: "audit",
            actor,
            tenant = %tenant,
            action,
            revision,
            redis_replicas_wanted = wanted,
            redis_replicas_confirmed = confirmed,
            "admin change applied on the Redis primary, not confirmed by its replicas"
        ),
        _ => tracing::error!(error = %e, %tenant, action, "state change failed"),
    }
    e.into()
}

/// The `replicas` field of a change's answer (Redis store only).
pub fn replicas(acks: &[ReplicaAck]) -> Value {
    acks.iter()
        .map(|r| {
            json!({
                "replica": r.replica,
                "applied_revision": r.applied_revision,
                "acknowledged": r.acknowledged,
            })
        })
        .collect()
}

/// `If-Match: <revision>` (quotes allowed, as for an ETag): change only a tenant still at
/// that revision. `*` or no header: no condition.
pub fn if_match(headers: &http::HeaderMap) -> Result<Option<u64>, GatewayError> {
    let mut values = headers.get_all(http::header::IF_MATCH).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = || invalid("If-Match", "must be one tenant revision, e.g. If-Match: 7");
    if values.next().is_some() {
        return Err(bad());
    }
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse().map(Some).map_err(|_| bad())
}

async fn read_object<B: RequestBody>(
    body: B,
    empty_ok: bool,
) -> Result<Map<String, Value>, GatewayError> {
    let bytes = Limited::new(body, MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|_| {
            invalid(
                "body",
                &format!("must be JSON of at most {MAX_ADMIN_BODY} bytes"),
            )
        })?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) && empty_ok {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("body", "must be a JSON object")),
        Err(e) => Err(invalid("body", &format!("is not valid JSON ({e})"))),
    }
}

/// `n` if it is a whole number that fits a `u64`, however it is written: JSON (and its
/// schema's `integer`) does not tell `3600` from `3600.0` or `3.6e3`.
fn whole_number(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        let f = n.as_f64()?;
        let whole = f.fract() == 0.0 && (0.0..u64::MAX as f64).contains(&f);
        whole.then_some(f as u64)
    })
}

fn reject_unknown(object: Map<String, Value>) -> Result<(), GatewayError> {
    match object.keys().next() {
        None => Ok(()),
        Some(key) => Err(GatewayError::InvalidField {
            field: "body",
            message: format!("unknown field `{}`", key.escape_debug()),
        }),
    }
}

fn invalid(field: &'static str, message: &str) -> GatewayError {
    GatewayError::InvalidField {
        field,
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests;
