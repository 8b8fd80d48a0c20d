//! Response bodies of the sample backend: the legacy XML of the `/m2/` batch routes, the
//! JSON of the other routes, and the one mapping from [`Failure`] to an HTTP response.
//!
//! Every value echoed into XML goes through [`xml_escape`]; nothing the client sent is ever
//! copied into a response header.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::store::BatchStatus;
use super::MAX_BODY_BYTES;

/// The sample backend's response type.
pub type BackendResponse = Response<Full<Bytes>>;

/// Which body shape a route answers with, failures included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

/// Every way a request can fail; the message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("could not read the request body")]
    BodyUnreadable,
    #[error("{0}")]
    NotFound(&'static str),
    #[error("method not allowed (allowed: {allow})")]
    MethodNotAllowed { allow: &'static str },
}

/// The one place a [`Failure`] becomes a response.
pub fn failure(format: Format, failure: &Failure) -> BackendResponse {
    let (status, code) = match failure {
        Failure::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        Failure::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        Failure::BodyUnreadable => (StatusCode::BAD_REQUEST, "invalid_request"),
        Failure::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        Failure::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    };
    let message = failure.to_string();
    let mut response = match format {
        Format::Xml => xml(
            status,
            format!(
                "<response><success>false</success><message>{}</message></response>",
                xml_escape(&message)
            ),
        ),
        Format::Json => json(
            status,
            &serde_json::json!({ "error": code, "message": message }),
        ),
    };
    if let Failure::MethodNotAllowed { allow } = failure {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    response
}

/// `200` for an accepted batch, pointing at its status URL.
pub fn batch_submitted(status_url: &str) -> BackendResponse {
    xml(
        StatusCode::OK,
        format!(
            "<response><success>true</success><batchStatus>{}</batchStatus>\
             <message>Batch submitted for processing</message></response>",
            xml_escape(status_url)
        ),
    )
}

/// `200` with a processed batch's counts.
pub fn batch_status(status: &BatchStatus) -> BackendResponse {
    xml(
        StatusCode::OK,
        format!(
            "<response><batchId>{}</batchId><status>complete</status>\
             <batchSize>{}</batchSize><successfulUpdates>{}</successfulUpdates>\
             <profilesNotFound>{}</profilesNotFound></response>",
            xml_escape(&status.batch_id),
            status.size,
            status.successful,
            status.not_found
        ),
    )
}

pub fn xml(status: StatusCode, body: String) -> BackendResponse {
    with_body(status, "application/xml", body.into())
}

pub fn json(status: StatusCode, body: &serde_json::Value) -> BackendResponse {
    with_body(status, "application/json", body.to_string().into())
}

fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> BackendResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Escapes text for XML content or attributes. Characters XML 1.0 cannot carry at all
/// (most control characters) become U+FFFD, so the document stays well-formed.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body_text(response: BackendResponse) -> String {
        // `Full` yields its one frame at once, so a bare current-thread runtime suffices.
        let collected = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(response.into_body().collect())
            .unwrap_or_else(|never| match never {});
        String::from_utf8(collected.to_bytes().to_vec()).unwrap()
    }

    #[test]
    fn escapes_markup_and_drops_forbidden_characters() {
        assert_eq!(
            xml_escape("a<b>&\"c'\u{0}\t\u{1b}é"),
            "a&lt;b&gt;&amp;&quot;c&apos;\u{fffd}\t\u{fffd}é"
        );
    }

    #[test]
    fn bad_request_xml() {
        let response = failure(Format::Xml, &Failure::BadRequest("row <2>".into()));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/xml");
        assert_eq!(
            body_text(response),
            "<response><success>false</success><message>row &lt;2&gt;</message></response>"
        );
    }

    #[test]
    fn bad_request_json() {
        let response = failure(Format::Json, &Failure::BadRequest("missing client".into()));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_str(&body_text(response)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "invalid_request", "message": "missing client"})
        );
    }

    #[test]
    fn body_too_large() {
        let response = failure(Format::Xml, &Failure::BodyTooLarge);
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body_text(response).contains("<success>false</success>"));
    }

    #[test]
    fn body_unreadable() {
        let response = failure(Format::Json, &Failure::BodyUnreadable);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn not_found() {
        let response = failure(Format::Json, &Failure::NotFound("profile not found"));
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(body_text(response).contains("\"error\":\"not_found\""));
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let response = failure(Format::Xml, &Failure::MethodNotAllowed { allow: "POST" });
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "POST");
    }

    #[test]
    fn success_bodies() {
        assert_eq!(
            body_text(batch_submitted("http://h/m2/c/profile/batchStatus?batchId=c-1")),
            "<response><success>true</success><batchStatus>http://h/m2/c/profile/batchStatus?batchId=c-1</batchStatus><message>Batch submitted for processing</message></response>"
        );
        let status = BatchStatus {
            batch_id: "c-1".into(),
            size: 3,
            successful: 2,
            not_found: 1,
        };
        assert_eq!(
            body_text(batch_status(&status)),
            "<response><batchId>c-1</batchId><status>complete</status><batchSize>3</batchSize><successfulUpdates>2</successfulUpdates><profilesNotFound>1</profilesNotFound></response>"
        );
    }
}
