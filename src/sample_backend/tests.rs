//! Unit tests of `SampleBackend::handle` that need no network: routing, limits, host
//! fallback and the less common failures. The happy paths over real HTTP live in
//! `tests/sample_backend.rs`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HOST};
use http::{Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};

use super::handlers::read_body;
use super::*;

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

async fn call<B>(backend: &SampleBackend, request: Request<B>) -> Reply
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let response = backend.handle(request).await;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn request(method: &str, uri: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// A body of chunks with no size hint, optionally failing at the end.
struct Chunks {
    chunks: VecDeque<Bytes>,
    fail: bool,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.chunks.pop_front() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None if self.fail => Poll::Ready(Some(Err(std::io::Error::other("client went away")))),
            None => Poll::Ready(None),
        }
    }
}

#[test]
fn every_route_template_is_accepted_and_resolves() {
    let backend = SampleBackend::default();
    for (template, route) in ROUTES {
        let path = template.replace("{client}", "acme").replace("{id}", "42");
        let (found, params) = backend.route(&path).unwrap();
        assert_eq!(found, route, "{template}");
        assert!(params.client.is_some() || params.id.is_some(), "{template}");
    }
    assert!(backend.route("/rest/v1/profiles/thirdPartyId/").is_none());
    assert!(backend.route("/m2/acme/profile/batchUpdate/").is_none());
}

#[tokio::test]
async fn announced_oversized_body_is_413_without_reading() {
    let backend = SampleBackend::default();
    let big = Full::new(Bytes::from(vec![b'a'; MAX_BODY_BYTES + 1]));
    let request = Request::post("/m2/acme/v2/profile/batchUpdate")
        .body(big)
        .unwrap();
    let reply = call(&backend, request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.headers[CONTENT_TYPE], "application/xml");
    assert!(reply.body.starts_with("<response><success>false</success>"));
}

#[tokio::test]
async fn streamed_body_over_the_limit_is_refused() {
    let body = Chunks {
        chunks: VecDeque::from([Bytes::from_static(b"12345"), Bytes::from_static(b"678")]),
        fail: false,
    };
    assert_eq!(read_body(body, 7).await, Err(Failure::BodyTooLarge));
    let body = Chunks {
        chunks: VecDeque::from([Bytes::from_static(b"1234567")]),
        fail: false,
    };
    assert_eq!(read_body(body, 7).await.unwrap(), "1234567");
}

#[tokio::test]
async fn failing_body_is_a_400_not_a_panic() {
    let backend = SampleBackend::default();
    let body = Chunks {
        chunks: VecDeque::from([Bytes::from_static(b"batch=pcId")]),
        fail: true,
    };
    let request = Request::post("/m2/acme/v2/profile/batchUpdate")
        .body(body)
        .unwrap();
    let reply = call(&backend, request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("could not read the request body"));
}

#[tokio::test]
async fn wrong_method_is_405_in_the_route_format() {
    let backend = SampleBackend::default();
    let reply = call(&backend, request("GET", "/m2/acme/profile/batchUpdate", "")).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers[ALLOW], "POST");
    assert_eq!(reply.headers[CONTENT_TYPE], "application/xml");

    let reply = call(
        &backend,
        request("DELETE", "/rest/v1/profiles/1?client=a", ""),
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers[ALLOW], "GET");
    assert_eq!(reply.headers[CONTENT_TYPE], "application/json");

    let reply = call(
        &backend,
        request("PUT", "/m2/acme/profile/update?mboxPC=1", ""),
    )
    .await;
    assert_eq!(reply.headers[ALLOW], "GET, POST");
}

#[tokio::test]
async fn bad_path_encoding_is_400() {
    let backend = SampleBackend::default();
    let reply = call(
        &backend,
        request(
            "POST",
            "/m2/ac%zzme/v2/profile/batchUpdate",
            "batch=pcId%0A1",
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("percent-encoding"), "{}", reply.body);

    let reply = call(
        &backend,
        request("GET", "/rest/v1/profiles/%FF?client=a", ""),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn status_url_host_falls_back_to_the_uri_then_localhost() {
    let backend = SampleBackend::default();
    let body = "batch=pcId%2Ca%0A1%2Cx";
    let submit = |uri: &str, host: Option<&str>| {
        let mut builder = Request::post(uri);
        if let Some(host) = host {
            builder = builder.header(HOST, host);
        }
        builder
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    let cases = [
        (
            "/m2/acme/v2/profile/batchUpdate",
            Some("profiles.test:8081"),
            "http://profiles.test:8081/",
        ),
        (
            "http://uri.test/m2/acme/v2/profile/batchUpdate",
            None,
            "http://uri.test/",
        ),
        (
            "http://uri.test/m2/acme/v2/profile/batchUpdate",
            Some("user@evil"),
            "http://uri.test/",
        ),
        (
            "/m2/acme/v2/profile/batchUpdate",
            Some("bad host<>"),
            "http://localhost/",
        ),
        ("/m2/acme/v2/profile/batchUpdate", None, "http://localhost/"),
    ];
    for (uri, host, prefix) in cases {
        let reply = call(&backend, submit(uri, host)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.body.contains(&format!(
                "<batchStatus>{prefix}m2/acme/profile/batchStatus?batchId="
            )),
            "{uri} {host:?}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn client_code_is_encoded_in_the_status_url_and_escaped_in_xml() {
    let backend = SampleBackend::default();
    let request = Request::post("/m2/a%26b%20c/v2/profile/batchUpdate")
        .header(HOST, "h")
        .body(Full::new(Bytes::from_static(b"batch=pcId%0A1")))
        .unwrap();
    let reply = call(&backend, request).await;
    assert!(
        reply
            .body
            .contains("<batchStatus>http://h/m2/a%26b%20c/profile/batchStatus?batchId=a%26b+c-"),
        "{}",
        reply.body
    );
    let request = Request::get("/m2/a%26b%20c/profile/batchStatus?batchId=a%26b+c-1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = call(&backend, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("<batchId>a&amp;b c-1</batchId>"));
}

#[tokio::test]
async fn single_update_refusals() {
    let backend = SampleBackend::default();
    for (uri, message) in [
        (
            "/m2/acme/profile/update?profile.a=1",
            "missing mbox3rdPartyId or mboxPC",
        ),
        (
            "/m2/acme/profile/update?mboxPC=1&mbox3rdPartyId=2",
            "exactly one profile id",
        ),
        (
            "/m2/acme/profile/update?mboxPC=1&mboxPC=2",
            "exactly one profile id",
        ),
        ("/m2/acme/profile/update?mboxPC=", "empty profile id"),
        (
            "/m2/acme/profile/update?mboxPC=1&profile.=x",
            "empty attribute name",
        ),
        ("/m2/acme/profile/update?mboxPC=%zz", "bad percent-encoding"),
    ] {
        let reply = call(&backend, request("GET", uri, "")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(reply.headers[CONTENT_TYPE], "application/json");
        assert!(reply.body.contains(message), "{uri}: {}", reply.body);
    }
}

#[tokio::test]
async fn batch_status_and_fetch_refuse_repeated_parameters() {
    let backend = SampleBackend::default();
    let reply = call(
        &backend,
        request("GET", "/m2/a/profile/batchStatus?batchId=1&batchId=2", ""),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = call(
        &backend,
        request("GET", "/m2/a/profile/batchStatus?batchId=", ""),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = call(
        &backend,
        request("GET", "/rest/v1/profiles/1?client=a&client=b", ""),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}
