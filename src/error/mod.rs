//! Errors the gateway answers itself, and the one function that describes each one's
//! response whole ([`GatewayError::reply`]): status, JSON body, challenge, whether the
//! connection closes, `Retry-After`. Conversions into [`GatewayError`] live beside it,
//! in `convert.rs`.
//!
//! Every such response has the JSON body `{"error": "<code>", "message": "<text>"}`
//! (plus a named extra field for some); no internal detail (addresses, error chains)
//! ever reaches the client — those go to the log instead.

mod convert;

use std::borrow::Cow;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::Body;
pub use crate::upstream::BoxError;

/// What went wrong while serving a request, from the client's point of view.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("upstream unreachable: {0}")]
    UpstreamConnect(#[source] BoxError),
    #[error("upstream did not answer within the request timeout")]
    UpstreamTimeout,
    #[error("upstream failed: {0}")]
    UpstreamFailed(#[source] BoxError),
    #[error("client request body failed: {0}")]
    ClientBody(#[source] BoxError),
    #[error("request path cannot be forwarded")]
    BadPath,
    #[error("tenant missing, repeated, contradicted or not a valid name")]
    BadTenant,
    #[error("method-override header on a method the route does not cover")]
    MethodOverride,
    #[error("no Bearer credentials")]
    MissingToken,
    #[error("malformed Authorization header")]
    MalformedCredentials,
    #[error("invalid token")]
    InvalidToken,
    #[error("expired token")]
    ExpiredToken,
    #[error("request body over the limit")]
    PayloadTooLarge,
    #[error("request body stalled")]
    ClientTimeout,
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// The request head is over `limits.max_header_bytes` (or has too many fields).
    #[error("request head over the limit")]
    HeadTooLarge,
    #[error("admin key missing or unknown")]
    AdminUnauthenticated,
    #[error("admin key lacks the role")]
    AdminForbidden,
    #[error("{field}: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
    #[error("state could not be saved")]
    StateUnavailable,
    /// `If-Match` named another revision than the tenant's current one.
    #[error("the tenant is at revision {current}")]
    Conflict { current: u64 },
    /// The Redis state holds no epoch (it lost its data); nothing changed.
    #[error("the shared state is not initialised")]
    StateNotInitialised,
    /// Redis did not answer in time; the change may still be applied.
    #[error("the state store did not answer in time")]
    StateUncertain,
    /// The change is applied on the Redis primary but fewer Redis replicas than
    /// `state.redis.wait_replicas` confirmed it.
    #[error("revision {revision} not confirmed by {wanted} Redis replica(s)")]
    StateNotReplicated {
        revision: u64,
        wanted: u64,
        confirmed: u64,
    },
    /// This replica's lease on the shared state ran out: it cannot vouch for tokens.
    #[error("the shared state is not confirmed")]
    Fenced,
    /// An upgrade's new process is taking the state over; nothing changed.
    #[error("handing over to the upgraded process")]
    HandingOver,
    /// A TLS reload refused a listener's new certificate files; `message` says which and
    /// why (for the operator who named those files, so no secret is in it).
    #[error("TLS reload refused: {message}")]
    TlsReloadRefused { message: String },
    /// A config reload found problems and changed nothing; each problem names its key
    /// and line (the operator's own file, so no secret is in them).
    #[error("config reload refused: {} problem(s)", problems.len())]
    ConfigRefused { problems: Vec<String> },
    #[error("route not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
}

/// Everything the client is told about one error.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// The body's `error` code.
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// A further body field (`field`, `revision`).
    pub extra: Option<(&'static str, serde_json::Value)>,
    /// The `WWW-Authenticate` challenge (RFC 6750 §3).
    pub challenge: Option<&'static str>,
    /// The connection must close after the response: its framing is in doubt, or the
    /// body was abandoned half-read.
    pub close: bool,
    /// `Retry-After: 1`: the state may be back in a moment.
    pub retry_after: bool,
}

impl Reply {
    fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            status,
            code,
            message: message.into(),
            extra: None,
            challenge: None,
            close: false,
            retry_after: false,
        }
    }

    fn challenge(mut self, challenge: &'static str) -> Reply {
        self.challenge = Some(challenge);
        self
    }

    fn closing(mut self) -> Reply {
        self.close = true;
        self
    }

    fn retry_after(mut self) -> Reply {
        self.retry_after = true;
        self
    }

    fn with(mut self, field: &'static str, value: impl Into<serde_json::Value>) -> Reply {
        self.extra = Some((field, value.into()));
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        self.body_for(None)
    }

    /// The JSON body, naming the request it answers (proxy listener).
    pub fn body_for(&self, request_id: Option<&str>) -> Bytes {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.code.into());
        body.insert("message".into(), self.message.as_ref().into());
        if let Some((field, value)) = &self.extra {
            body.insert((*field).into(), value.clone());
        }
        if let Some(id) = request_id {
            body.insert("request_id".into(), id.into());
        }
        Bytes::from(serde_json::Value::Object(body).to_string())
    }
}

const BEARER: &str = r#"Bearer realm="authgate""#;
const BEARER_MALFORMED: &str = r#"Bearer realm="authgate", error="invalid_request""#;
const BEARER_INVALID: &str =
    r#"Bearer realm="authgate", error="invalid_token", error_description="invalid token""#;
const BEARER_EXPIRED: &str =
    r#"Bearer realm="authgate", error="invalid_token", error_description="token expired""#;
const BEARER_ADMIN: &str = r#"Bearer realm="authgate-admin""#;

impl GatewayError {
    /// The whole response for this error: one arm per variant.
    pub fn reply(&self) -> Reply {
        use StatusCode as S;
        match self {
            GatewayError::UpstreamConnect(_) => Reply::new(S::BAD_GATEWAY, "bad_gateway", "the upstream service is unreachable"),
            GatewayError::UpstreamTimeout => Reply::new(S::GATEWAY_TIMEOUT, "gateway_timeout", "the upstream service did not answer in time"),
            GatewayError::UpstreamFailed(_) => Reply::new(S::BAD_GATEWAY, "bad_gateway", "the upstream service failed to answer"),
            GatewayError::ClientBody(_) => Reply::new(S::BAD_REQUEST, "bad_request", "the request body could not be read").closing(),
            GatewayError::BadPath => Reply::new(S::BAD_REQUEST, "invalid_request", "the request path is not acceptable"),
            GatewayError::BadTenant => Reply::new(S::BAD_REQUEST, "invalid_request", "the tenant must be named once, as a valid tenant name (1-128 of A-Z a-z 0-9 - . _ ~), and the query must not name another"),
            GatewayError::MethodOverride => Reply::new(S::BAD_REQUEST, "invalid_request", "method-override headers are not accepted on this route"),
            GatewayError::MissingToken => Reply::new(S::UNAUTHORIZED, "missing_token", "this route requires a Bearer token").challenge(BEARER),
            GatewayError::MalformedCredentials => Reply::new(S::BAD_REQUEST, "invalid_request", "the Authorization header is not a single valid Bearer token").challenge(BEARER_MALFORMED),
            GatewayError::InvalidToken => Reply::new(S::UNAUTHORIZED, "invalid_token", "invalid token").challenge(BEARER_INVALID),
            GatewayError::ExpiredToken => Reply::new(S::UNAUTHORIZED, "invalid_token", "token expired").challenge(BEARER_EXPIRED),
            GatewayError::PayloadTooLarge => Reply::new(S::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is over the limit for this route"),
            GatewayError::ClientTimeout => Reply::new(S::REQUEST_TIMEOUT, "request_timeout", "the request body stopped arriving").closing(),
            GatewayError::UnsupportedTransferCoding => Reply::new(S::NOT_IMPLEMENTED, "not_implemented", "only the chunked transfer coding is supported").closing(),
            GatewayError::HeadTooLarge => Reply::new(S::REQUEST_HEADER_FIELDS_TOO_LARGE, "request_header_fields_too_large", "the request head is too large: too long, or too many header fields").closing(),
            GatewayError::AdminUnauthenticated => Reply::new(S::UNAUTHORIZED, "unauthorized", "a valid admin key is required as Authorization: Bearer").challenge(BEARER_ADMIN),
            GatewayError::AdminForbidden => Reply::new(S::FORBIDDEN, "forbidden", "this admin key's role may not do this"),
            GatewayError::InvalidField { field, message } => Reply::new(S::BAD_REQUEST, "invalid_request", format!("{field}: {message}")).with("field", *field),
            GatewayError::StateUnavailable => Reply::new(S::SERVICE_UNAVAILABLE, "state_unavailable", "the change could not be saved; nothing changed"),
            GatewayError::Conflict { current } => Reply::new(S::CONFLICT, "conflict", format!("the tenant is at revision {current}, not the one in If-Match; nothing changed")).with("revision", *current),
            GatewayError::StateNotInitialised => Reply::new(S::SERVICE_UNAVAILABLE, "state_unavailable", "the Redis state holds no epoch (it lost its data or was never initialised); nothing changed. Run `authgate cluster init -c <config>` after restoring it"),
            GatewayError::StateUncertain => Reply::new(S::SERVICE_UNAVAILABLE, "state_unavailable", "the state store did not answer in time; the change may still take effect: read the tenant before retrying").retry_after(),
            GatewayError::StateNotReplicated { revision, wanted, confirmed } => Reply::new(S::SERVICE_UNAVAILABLE, "state_unavailable", format!("the change was applied on the Redis primary (revision {revision}) but not confirmed on {wanted} Redis replica(s) ({confirmed} confirmed in time): it is in force, but a Redis failover could lose it. Read the tenant before retrying")).with("revision", *revision).retry_after(),
            GatewayError::Fenced => Reply::new(S::SERVICE_UNAVAILABLE, "state_unavailable", "this gateway cannot confirm the current tokens (shared state unreachable); retry shortly").retry_after().closing(),
            // Closing: the retry's new connection reaches the new process.
            GatewayError::HandingOver => Reply::new(S::SERVICE_UNAVAILABLE, "state_unavailable", "this gateway is handing over to its upgraded binary; nothing changed; retry in a moment").retry_after().closing(),
            GatewayError::TlsReloadRefused { message } => Reply::new(S::UNPROCESSABLE_ENTITY, "tls_reload_refused", message.clone()),
            GatewayError::ConfigRefused { problems } => Reply::new(S::UNPROCESSABLE_ENTITY, "config_refused", format!("{} problem(s) in the config file; nothing changed, the running config stays in force", problems.len())).with("problems", problems.clone()),
            GatewayError::NotFound => Reply::new(S::NOT_FOUND, "not_found", "no such route"),
            GatewayError::MethodNotAllowed => Reply::new(S::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route"),
        }
    }

    /// The response sent to the client.
    pub fn into_response(self) -> Response<Body> {
        self.respond(None)
    }

    /// The response sent to a proxy client: its body names the request id.
    pub fn into_response_for(self, request_id: &str) -> Response<Body> {
        self.respond(Some(request_id))
    }

    fn respond(self, request_id: Option<&str>) -> Response<Body> {
        let reply = self.reply();
        let mut response = json_response(reply.status, reply.body_for(request_id));
        let headers = response.headers_mut();
        if reply.close {
            // hyper closes an HTTP/1 connection after a response saying so (and strips
            // the header on HTTP/2).
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(challenge) = reply.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if reply.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A response with a JSON body.
pub fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests;
