//! Errors the gateway answers itself, and the one function that turns each into a response.
//!
//! Every such response has the JSON body `{"error": "<code>", "message": "<text>"}`;
//! no internal detail (addresses, error chains) ever reaches the client — those go to
//! the log instead.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::Body;

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
    #[error("tenant query parameter missing or repeated")]
    BadTenant,
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
    /// A TLS reload refused a listener's new certificate files; `message` says which and
    /// why (for the operator who named those files, so no secret is in it).
    #[error("TLS reload refused: {message}")]
    TlsReloadRefused { message: String },
    #[error("route not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl GatewayError {
    /// The status and JSON body for this error.
    fn parts(&self) -> (StatusCode, Bytes) {
        let (status, body) = match self {
            GatewayError::UpstreamConnect(_) => (
                StatusCode::BAD_GATEWAY,
                r#"{"error":"bad_gateway","message":"the upstream service is unreachable"}"#,
            ),
            GatewayError::UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                r#"{"error":"gateway_timeout","message":"the upstream service did not answer in time"}"#,
            ),
            GatewayError::UpstreamFailed(_) => (
                StatusCode::BAD_GATEWAY,
                r#"{"error":"bad_gateway","message":"the upstream service failed to answer"}"#,
            ),
            GatewayError::ClientBody(_) => (
                StatusCode::BAD_REQUEST,
                r#"{"error":"bad_request","message":"the request body could not be read"}"#,
            ),
            GatewayError::BadPath => (
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_request","message":"the request path is not acceptable"}"#,
            ),
            GatewayError::BadTenant => (
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_request","message":"the tenant query parameter must appear exactly once"}"#,
            ),
            GatewayError::MissingToken => (
                StatusCode::UNAUTHORIZED,
                r#"{"error":"missing_token","message":"this route requires a Bearer token"}"#,
            ),
            GatewayError::MalformedCredentials => (
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_request","message":"the Authorization header is not a single valid Bearer token"}"#,
            ),
            GatewayError::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                r#"{"error":"invalid_token","message":"invalid token"}"#,
            ),
            GatewayError::ExpiredToken => (
                StatusCode::UNAUTHORIZED,
                r#"{"error":"invalid_token","message":"token expired"}"#,
            ),
            GatewayError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"error":"payload_too_large","message":"the request body is over the limit for this route"}"#,
            ),
            GatewayError::AdminUnauthenticated => (
                StatusCode::UNAUTHORIZED,
                r#"{"error":"unauthorized","message":"a valid admin key is required as Authorization: Bearer"}"#,
            ),
            GatewayError::AdminForbidden => (
                StatusCode::FORBIDDEN,
                r#"{"error":"forbidden","message":"this admin key's role may not do this"}"#,
            ),
            GatewayError::InvalidField { field, message } => {
                let body = serde_json::json!({
                    "error": "invalid_request",
                    "field": field,
                    "message": format!("{field}: {message}"),
                });
                return (StatusCode::BAD_REQUEST, Bytes::from(body.to_string()));
            }
            GatewayError::TlsReloadRefused { message } => {
                let body = serde_json::json!({
                    "error": "tls_reload_refused",
                    "message": message,
                });
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Bytes::from(body.to_string()),
                );
            }
            GatewayError::StateUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"state_unavailable","message":"the change could not be saved; nothing changed"}"#,
            ),
            GatewayError::Conflict { current } => {
                let body = serde_json::json!({
                    "error": "conflict",
                    "message": format!("the tenant is at revision {current}, not the one in If-Match; nothing changed"),
                    "revision": current,
                });
                return (StatusCode::CONFLICT, Bytes::from(body.to_string()));
            }
            GatewayError::StateNotInitialised => (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"state_unavailable","message":"the Redis state holds no epoch (it lost its data or was never initialised); nothing changed. Run `authgate cluster init -c <config>` after restoring it"}"#,
            ),
            GatewayError::StateUncertain => (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"state_unavailable","message":"the state store did not answer in time; the change may still take effect: read the tenant before retrying"}"#,
            ),
            GatewayError::StateNotReplicated {
                revision,
                wanted,
                confirmed,
            } => {
                let body = serde_json::json!({
                    "error": "state_unavailable",
                    "message": format!("the change was applied on the Redis primary (revision {revision}) but not confirmed on {wanted} Redis replica(s) ({confirmed} confirmed in time): it is in force, but a Redis failover could lose it. Read the tenant before retrying"),
                    "revision": revision,
                });
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Bytes::from(body.to_string()),
                );
            }
            GatewayError::Fenced => (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"state_unavailable","message":"this gateway cannot confirm the current tokens (shared state unreachable); retry shortly"}"#,
            ),
            GatewayError::ClientTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                r#"{"error":"request_timeout","message":"the request body stopped arriving"}"#,
            ),
            GatewayError::UnsupportedTransferCoding => (
                StatusCode::NOT_IMPLEMENTED,
                r#"{"error":"not_implemented","message":"only the chunked transfer coding is supported"}"#,
            ),
            GatewayError::NotFound => (
                StatusCode::NOT_FOUND,
                r#"{"error":"not_found","message":"no such route"}"#,
            ),
            GatewayError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method_not_allowed","message":"method not allowed on this route"}"#,
            ),
        };
        (status, Bytes::from_static(body.as_bytes()))
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3) for auth failures.
    fn challenge(&self) -> Option<&'static str> {
        match self {
            GatewayError::MissingToken => Some(r#"Bearer realm="authgate""#),
            GatewayError::AdminUnauthenticated => Some(r#"Bearer realm="authgate-admin""#),
            GatewayError::MalformedCredentials => {
                Some(r#"Bearer realm="authgate", error="invalid_request""#)
            }
            GatewayError::InvalidToken => Some(
                r#"Bearer realm="authgate", error="invalid_token", error_description="invalid token""#,
            ),
            GatewayError::ExpiredToken => Some(
                r#"Bearer realm="authgate", error="invalid_token", error_description="token expired""#,
            ),
            _ => None,
        }
    }

    /// Whether the connection must close after the response: its framing is in doubt,
    /// or the body was abandoned half-read.
    fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::UnsupportedTransferCoding
                | GatewayError::ClientTimeout
                | GatewayError::ClientBody(_)
        )
    }

    /// The response sent to the client.
    pub fn into_response(self) -> Response<Body> {
        let (status, body) = self.parts();
        let mut response = json_response(status, body);
        if self.closes_connection() {
            // hyper closes an HTTP/1 connection after a response saying so (and strips
            // the header on HTTP/2).
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(challenge) = self.challenge() {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if matches!(
            self,
            GatewayError::Fenced
                | GatewayError::StateUncertain
                | GatewayError::StateNotReplicated { .. }
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
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
mod tests {
    use super::*;

    fn check(err: GatewayError, status: StatusCode, code: &str) {
        let (got, body) = err.parts();
        assert_eq!(got, status);
        let json: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(json["error"], code);
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    fn boxed(msg: &str) -> BoxError {
        msg.to_string().into()
    }

    #[test]
    fn upstream_connect_is_502() {
        check(
            GatewayError::UpstreamConnect(boxed("refused")),
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
        );
    }

    #[test]
    fn upstream_timeout_is_504() {
        check(
            GatewayError::UpstreamTimeout,
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
        );
    }

    #[test]
    fn upstream_failure_is_502() {
        check(
            GatewayError::UpstreamFailed(boxed("reset")),
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
        );
    }

    #[test]
    fn client_body_failure_is_400_not_502() {
        check(
            GatewayError::ClientBody(boxed("eof")),
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
    }

    #[test]
    fn fenced_is_503_with_retry_after() {
        check(
            GatewayError::Fenced,
            StatusCode::SERVICE_UNAVAILABLE,
            "state_unavailable",
        );
        let response = GatewayError::Fenced.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn a_lost_if_match_race_is_409_naming_the_revision() {
        check(
            GatewayError::Conflict { current: 7 },
            StatusCode::CONFLICT,
            "conflict",
        );
        let (_, body) = GatewayError::Conflict { current: 7 }.parts();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["revision"], 7);
    }

    #[test]
    fn a_redis_without_epoch_is_503_naming_cluster_init() {
        check(
            GatewayError::StateNotInitialised,
            StatusCode::SERVICE_UNAVAILABLE,
            "state_unavailable",
        );
        let (_, body) = GatewayError::StateNotInitialised.parts();
        assert!(String::from_utf8_lossy(&body).contains("authgate cluster init"));
        check(
            GatewayError::StateUncertain,
            StatusCode::SERVICE_UNAVAILABLE,
            "state_unavailable",
        );
    }

    #[test]
    fn a_change_redis_replicas_did_not_confirm_is_503_saying_it_is_on_the_primary() {
        let err = || GatewayError::StateNotReplicated {
            revision: 9,
            wanted: 1,
            confirmed: 0,
        };
        check(err(), StatusCode::SERVICE_UNAVAILABLE, "state_unavailable");
        let (_, body) = err().parts();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["revision"], 9);
        let message = json["message"].as_str().unwrap();
        assert!(
            message.contains("applied on the Redis primary"),
            "{message}"
        );
        assert!(
            message.contains("not confirmed on 1 Redis replica"),
            "{message}"
        );
        assert_eq!(err().into_response().headers()[header::RETRY_AFTER], "1");
    }

    fn challenge_of(err: GatewayError) -> String {
        let response = err.into_response();
        response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn missing_token_is_401_with_a_bare_challenge() {
        check(
            GatewayError::MissingToken,
            StatusCode::UNAUTHORIZED,
            "missing_token",
        );
        assert_eq!(
            challenge_of(GatewayError::MissingToken),
            r#"Bearer realm="authgate""#
        );
    }

    #[test]
    fn malformed_credentials_are_400_invalid_request() {
        check(
            GatewayError::MalformedCredentials,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
        assert!(
            challenge_of(GatewayError::MalformedCredentials).contains(r#"error="invalid_request""#)
        );
    }

    #[test]
    fn invalid_and_expired_tokens_are_401_invalid_token() {
        check(
            GatewayError::InvalidToken,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        );
        check(
            GatewayError::ExpiredToken,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        );
        assert!(challenge_of(GatewayError::InvalidToken)
            .ends_with(r#"error_description="invalid token""#));
        assert!(challenge_of(GatewayError::ExpiredToken)
            .ends_with(r#"error_description="token expired""#));
    }

    #[test]
    fn bad_tenant_is_400_and_oversized_body_413() {
        check(
            GatewayError::BadTenant,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
        check(
            GatewayError::PayloadTooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        );
    }

    #[test]
    fn admin_errors_are_401_403_400_503() {
        check(
            GatewayError::AdminUnauthenticated,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
        check(
            GatewayError::AdminForbidden,
            StatusCode::FORBIDDEN,
            "forbidden",
        );
        check(
            GatewayError::StateUnavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            "state_unavailable",
        );
        let field = GatewayError::InvalidField {
            field: "expires_in",
            message: "must be a positive integer".into(),
        };
        let (status, body) = field.parts();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["field"], "expires_in");
        assert!(json["message"]
            .as_str()
            .unwrap()
            .starts_with("expires_in: "));
    }

    #[test]
    fn framing_errors_are_501_and_close() {
        check(
            GatewayError::UnsupportedTransferCoding,
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
        );
        check(
            GatewayError::ClientTimeout,
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
        );
        for e in [
            GatewayError::UnsupportedTransferCoding,
            GatewayError::ClientTimeout,
        ] {
            assert_eq!(e.into_response().headers()[header::CONNECTION], "close");
        }
        assert!(GatewayError::MissingToken
            .into_response()
            .headers()
            .get(header::CONNECTION)
            .is_none());
    }

    #[test]
    fn bad_path_is_400() {
        check(
            GatewayError::BadPath,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
    }

    #[test]
    fn a_refused_tls_reload_is_422_naming_the_listener() {
        let refused = GatewayError::TlsReloadRefused {
            message: "admin: cannot read certs/admin.pem".into(),
        };
        let (status, body) = refused.parts();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "tls_reload_refused");
        assert_eq!(json["message"], "admin: cannot read certs/admin.pem");
    }

    #[test]
    fn not_found_is_404_and_wrong_method_405() {
        check(GatewayError::NotFound, StatusCode::NOT_FOUND, "not_found");
        check(
            GatewayError::MethodNotAllowed,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        );
    }

    #[test]
    fn internal_detail_never_reaches_the_body() {
        let response =
            GatewayError::UpstreamConnect(boxed("10.0.0.7:8081 refused")).into_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let (_, body) = GatewayError::UpstreamConnect(boxed("10.0.0.7:8081")).parts();
        assert!(!String::from_utf8_lossy(&body).contains("10.0.0.7"));
    }
}
