//! The sample profile backend over real HTTP: `authgate::sample_backend::serve` on
//! `127.0.0.1:0`, driven by hyper's pooled client (HTTP/1.1, and h2c in one test).

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const FORM: &str = "application/x-www-form-urlencoded";

struct Backend {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

struct Reply {
    status: StatusCode,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn start() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(authgate::sample_backend::serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = Client::builder(TokioExecutor::new()).build_http();
    Backend {
        addr,
        stop,
        task,
        client,
    }
}

impl Backend {
    fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: String,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(url);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        send_with(&self.client, request).await
    }

    async fn get(&self, path_and_query: &str) -> Reply {
        self.send(Method::GET, &self.url(path_and_query), None, String::new())
            .await
    }

    async fn post_batch(&self, path: &str, csv: &str) -> Reply {
        self.send(Method::POST, &self.url(path), Some(FORM), batch_form(csv))
            .await
    }

    /// Submits a batch that must be accepted and returns its status URL.
    async fn submit(&self, path: &str, csv: &str) -> String {
        let reply = self.post_batch(path, csv).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.content_type, "application/xml");
        between(&reply.body, "<batchStatus>", "</batchStatus>").to_owned()
    }
}

async fn send_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Reply {
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn batch_form(csv: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("batch", csv)
        .finish()
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in {text}"))
        + open.len();
    let end = text[start..]
        .find(close)
        .unwrap_or_else(|| panic!("no {close} in {text}"))
        + start;
    &text[start..end]
}

fn status_xml(batch_id: &str, size: usize, successful: usize, not_found: usize) -> String {
    format!(
        "<response><batchId>{batch_id}</batchId><status>complete</status><batchSize>{size}</batchSize>\
         <successfulUpdates>{successful}</successfulUpdates><profilesNotFound>{not_found}</profilesNotFound></response>"
    )
}

#[tokio::test]
async fn v2_batch_is_accepted_completes_and_creates_profiles() {
    let backend = start().await;
    let csv = "thirdPartyId,color,note\nu1,red,plain\nu2,blue,\"a, b & <c>\"\nu3,vert,été\n";
    let reply = backend
        .post_batch("/m2/acme/v2/profile/batchUpdate", csv)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.content_type, "application/xml");
    let url = between(&reply.body, "<batchStatus>", "</batchStatus>").to_owned();
    let prefix = format!(
        "http://{}/m2/acme/profile/batchStatus?batchId=",
        backend.addr
    );
    assert!(url.starts_with(&prefix), "{url}");
    let batch_id = &url[prefix.len()..];
    assert_eq!(
        reply.body,
        format!(
            "<response><success>true</success><batchStatus>{url}</batchStatus>\
             <message>Batch submitted for processing</message></response>"
        )
    );

    let status = backend.send(Method::GET, &url, None, String::new()).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.content_type, "application/xml");
    assert_eq!(status.body, status_xml(batch_id, 3, 3, 0));

    let expected = [
        ("u1", json!({"color": "red", "note": "plain"})),
        ("u2", json!({"color": "blue", "note": "a, b & <c>"})),
        ("u3", json!({"color": "vert", "note": "été"})),
    ];
    for (id, profile) in expected {
        let reply = backend
            .get(&format!("/rest/v1/profiles/thirdPartyId/{id}?client=acme"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{id}: {}", reply.body);
        assert_eq!(reply.content_type, "application/json");
        assert_eq!(
            reply.json(),
            json!({"client": "acme", "pcId": null, "thirdPartyId": id, "profile": profile})
        );
    }
}

#[tokio::test]
async fn pc_id_batch_profiles_are_fetchable_by_pc_id() {
    let backend = start().await;
    let url = backend
        .submit(
            "/m2/acme/v2/profile/batchUpdate",
            "mboxPC,tier\npc-1,gold\npc-2,silver\n",
        )
        .await;
    let batch_id = between(&format!("{url}\n"), "batchId=", "\n").to_owned();

    let status = backend
        .get(&format!(
            "/m2/acme/v2/profile/batchStatus?batchId={batch_id}"
        ))
        .await;
    assert_eq!(status.body, status_xml(&batch_id, 2, 2, 0));

    let reply = backend.get("/rest/v1/profiles/pc-2?client=acme").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({"client": "acme", "pcId": "pc-2", "thirdPartyId": null, "profile": {"tier": "silver"}})
    );
    let other_kind = backend
        .get("/rest/v1/profiles/thirdPartyId/pc-2?client=acme")
        .await;
    assert_eq!(other_kind.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn v1_batch_updates_existing_profiles_and_creates_none() {
    let backend = start().await;
    let created = backend
        .get("/m2/acme/profile/update?mbox3rdPartyId=known&profile.color=red&profile.size=M")
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);

    let url = backend
        .submit(
            "/m2/acme/profile/batchUpdate",
            "mbox3rdPartyId,color,size\nknown,blue,\nghost,green,L\n",
        )
        .await;
    let status = backend.send(Method::GET, &url, None, String::new()).await;
    assert!(
        status.body.contains("<batchSize>2</batchSize>"),
        "{}",
        status.body
    );
    assert!(status
        .body
        .contains("<successfulUpdates>1</successfulUpdates>"));
    assert!(status
        .body
        .contains("<profilesNotFound>1</profilesNotFound>"));

    let known = backend
        .get("/rest/v1/profiles/thirdPartyId/known?client=acme")
        .await;
    assert_eq!(
        known.json()["profile"],
        json!({"color": "blue", "size": "M"})
    );
    let ghost = backend
        .get("/rest/v1/profiles/thirdPartyId/ghost?client=acme")
        .await;
    assert_eq!(ghost.status, StatusCode::NOT_FOUND);
    assert_eq!(ghost.content_type, "application/json");
    assert_eq!(ghost.json()["error"], "not_found");
}

#[tokio::test]
async fn malformed_batches_are_refused_and_store_nothing() {
    let backend = start().await;
    let path = "/m2/acme/v2/profile/batchUpdate";
    let cases: Vec<(&str, String)> = vec![
        ("no batch field", "other=thirdPartyId%2Ca%0Aok-0%2Cx".into()),
        ("empty csv", batch_form("")),
        ("unknown id column", batch_form("email,a\nok-2,x\n")),
        (
            "wrong column count",
            batch_form("thirdPartyId,a\nok-3,x\nbad,x,y\n"),
        ),
        ("empty id", batch_form("thirdPartyId,a\nok-4,x\n,y\n")),
        (
            "bad percent-encoding",
            "batch=thirdPartyId%2Ca%0Aok-5%2Cx%0Abad%2C%zz".into(),
        ),
        (
            "unterminated quote",
            batch_form("thirdPartyId,a\nok-6,x\nbad,\"open\n"),
        ),
    ];
    for (what, body) in cases {
        let reply = backend
            .send(Method::POST, &backend.url(path), Some(FORM), body)
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            reply.body
        );
        assert_eq!(reply.content_type, "application/xml", "{what}");
        assert!(
            reply
                .body
                .starts_with("<response><success>false</success><message>")
                && reply.body.ends_with("</message></response>"),
            "{what}: {}",
            reply.body
        );
    }
    // Latin-1 bytes: not UTF-8, sent raw.
    let request = Request::post(backend.url(path))
        .header(CONTENT_TYPE, FORM)
        .body(Full::new(Bytes::from_static(
            b"batch=thirdPartyId,a\nok-7,caf\xe9",
        )))
        .unwrap();
    let reply = send_with(&backend.client, request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("not valid UTF-8"), "{}", reply.body);

    for i in 0..=7 {
        let reply = backend
            .get(&format!(
                "/rest/v1/profiles/thirdPartyId/ok-{i}?client=acme"
            ))
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "ok-{i} was stored");
    }
}

#[tokio::test]
async fn single_update_then_fetch() {
    let backend = start().await;
    let reply = backend
        .get("/m2/acme/profile/update?mboxPC=visitor-9&profile.color=red&profile.city=S%C3%A3o+Paulo&mbox=ignored")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.content_type, "application/json");
    assert_eq!(reply.json(), json!({"success": true, "created": true}));

    let reply = backend
        .send(
            Method::POST,
            &backend.url("/m2/acme/profile/update?mboxPC=visitor-9"),
            Some(FORM),
            "profile.color=blue".into(),
        )
        .await;
    assert_eq!(reply.json(), json!({"success": true, "created": false}));

    let reply = backend.get("/rest/v1/profiles/visitor-9?client=acme").await;
    assert_eq!(
        reply.json(),
        json!({"client": "acme", "pcId": "visitor-9", "thirdPartyId": null,
               "profile": {"color": "blue", "city": "São Paulo"}})
    );

    let missing_id = backend
        .get("/m2/acme/profile/update?profile.color=red")
        .await;
    assert_eq!(missing_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing_id.json()["error"], "invalid_request");
}

#[tokio::test]
async fn clients_are_isolated() {
    let backend = start().await;
    let url = backend
        .submit(
            "/m2/acme/v2/profile/batchUpdate",
            "thirdPartyId,a\nshared,x\n",
        )
        .await;
    let batch_id = between(&format!("{url}\n"), "batchId=", "\n").to_owned();

    let other = backend
        .get("/rest/v1/profiles/thirdPartyId/shared?client=globex")
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let other = backend
        .get(&format!(
            "/m2/globex/profile/batchStatus?batchId={batch_id}"
        ))
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn batch_status_failures() {
    let backend = start().await;
    let unknown = backend
        .get("/m2/acme/profile/batchStatus?batchId=nope")
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.content_type, "application/xml");
    assert_eq!(
        unknown.body,
        "<response><success>false</success><message>no such batch</message></response>"
    );
    let missing = backend.get("/m2/acme/profile/batchStatus").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(missing.body.contains("<success>false</success>"));
}

#[tokio::test]
async fn fetch_requires_client() {
    let backend = start().await;
    let reply = backend.get("/rest/v1/profiles/thirdPartyId/u1").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json(),
        json!({"error": "invalid_request", "message": "missing client query parameter"})
    );
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_405() {
    let backend = start().await;
    for path in [
        "/",
        "/nope",
        "/m2/acme/profile",
        "/rest/v1/profiles/thirdPartyId/",
    ] {
        let reply = backend.get(path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.json()["error"], "not_found", "{path}");
    }
    let reply = backend.get("/m2/acme/v2/profile/batchUpdate").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn status_url_uses_the_forwarded_host_header() {
    let backend = start().await;
    let request = Request::post(backend.url("/m2/acme/v2/profile/batchUpdate"))
        .header(HOST, "gateway.example:8080")
        .header(CONTENT_TYPE, FORM)
        .body(Full::new(Bytes::from(batch_form("pcId,a\n1,x\n"))))
        .unwrap();
    let reply = send_with(&backend.client, request).await;
    assert!(
        reply.body.contains(
            "<batchStatus>http://gateway.example:8080/m2/acme/profile/batchStatus?batchId="
        ),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn serves_h2c_prior_knowledge() {
    let backend = start().await;
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::post(backend.url("/m2/acme/v2/profile/batchUpdate"))
        .header(CONTENT_TYPE, FORM)
        .body(Full::new(Bytes::from(batch_form(
            "thirdPartyId,a\nh2,yes\n",
        ))))
        .unwrap();
    let reply = send_with(&h2, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // Without a Host header the :authority is used.
    assert!(reply
        .body
        .contains(&format!("<batchStatus>http://{}/", backend.addr)));

    let request = Request::get(backend.url("/rest/v1/profiles/thirdPartyId/h2?client=acme"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        send_with(&h2, request).await.json()["profile"],
        json!({"a": "yes"})
    );
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_stops_accepting() {
    let backend = start().await;
    // Leaves a pooled keep-alive connection open, which shutdown must not wait on forever.
    let reply = backend.get("/nope").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    let Backend {
        addr, stop, task, ..
    } = backend;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
