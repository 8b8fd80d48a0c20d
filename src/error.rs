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
    #[error("route not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl GatewayError {
    /// The status and static JSON body for this error.
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
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
            GatewayError::NotFound => (
                StatusCode::NOT_FOUND,
                r#"{"error":"not_found","message":"no such route"}"#,
            ),
            GatewayError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method_not_allowed","message":"method not allowed on this route"}"#,
            ),
        }
    }

    /// The response sent to the client.
    pub fn into_response(self) -> Response<Body> {
        let (status, body) = self.parts();
        json_response(status, Bytes::from_static(body.as_bytes()))
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
        let json: serde_json::Value = serde_json::from_str(body).expect("valid JSON");
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
    fn bad_path_is_400() {
        check(
            GatewayError::BadPath,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
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
        assert!(!body.contains("10.0.0.7"));
    }
}
