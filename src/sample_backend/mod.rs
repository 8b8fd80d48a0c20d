//! The sample profile backend: an in-memory stand-in for the legacy SaaS profile service
//! that authgate fronts (modelled on Adobe Target's profile APIs). `authgate demo`,
//! `authgate sample-backend`, docker-compose and the integration tests run it as the
//! upstream; it knows nothing about tokens.
//!
//! Endpoints (`{client}` is the tenant's client code):
//!
//! | method | path | answer |
//! |---|---|---|
//! | POST | `/m2/{client}/profile/batchUpdate` | v1 bulk update of existing profiles (XML) |
//! | POST | `/m2/{client}/v2/profile/batchUpdate` | v2 bulk update, creating missing profiles (XML) |
//! | GET | `/m2/{client}/profile/batchStatus?batchId=` (also under `/v2/`) | batch counts (XML) |
//! | GET, POST | `/m2/{client}/profile/update?mbox3rdPartyId=…&profile.attr=v` (or `mboxPC=`) | single upsert (JSON) |
//! | GET | `/rest/v1/profiles/{pcId}?client=`, `/rest/v1/profiles/thirdPartyId/{id}?client=` | profile (JSON) |
//!
//! Data flow: [`serve`] accepts connections (HTTP/1.1 or h2c, via hyper-util's auto
//! builder) and hands every request to [`SampleBackend::handle`], which matches the path
//! with `matchit`, checks the method, then calls one handler (`handlers.rs`). A bulk body
//! is read whole (at most [`MAX_BODY_BYTES`]), decoded strictly (`form.rs`), split into
//! CSV records (`csv.rs`) and validated as a whole (`batch.rs`) before anything is written
//! to the store (`store.rs`) — a bad batch stores nothing. Batches are processed
//! synchronously: a batch is already `complete` when its `200` is sent. Failures become
//! responses in one place (`respond.rs`): XML on the `/m2/` batch routes, JSON elsewhere.

mod batch;
mod csv;
mod form;
mod handlers;
mod respond;
mod store;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use matchit::Router;
use tokio::net::TcpListener;

pub use batch::MAX_ROWS;
pub use respond::BackendResponse;

use respond::{failure, Failure, Format};
use store::{IdKind, Mode, Store};

/// The largest request body the backend reads (the real service's 50 MB bulk file limit);
/// beyond it the answer is `413`.
pub const MAX_BODY_BYTES: usize = 50 * 1024 * 1024;

/// Serve the sample backend on an already-bound listener until `shutdown` resolves.
///
/// On shutdown it stops accepting, lets in-flight requests finish and closes idle
/// connections, then returns; wrap it in a timeout to bound a slow client.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    SampleBackend::default().serve(listener, shutdown).await
}

/// One in-memory profile service; clones share the same state.
#[derive(Debug, Clone)]
pub struct SampleBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    router: Router<Route>,
}

/// What a matched path is; `{client}` and `{id}` are captured by `matchit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    BatchUpdate(Mode),
    BatchStatus,
    Update,
    Fetch(IdKind),
}

const ROUTES: [(&str, Route); 7] = [
    (
        "/m2/{client}/profile/batchUpdate",
        Route::BatchUpdate(Mode::UpdateExisting),
    ),
    (
        "/m2/{client}/v2/profile/batchUpdate",
        Route::BatchUpdate(Mode::Upsert),
    ),
    ("/m2/{client}/profile/batchStatus", Route::BatchStatus),
    ("/m2/{client}/v2/profile/batchStatus", Route::BatchStatus),
    ("/m2/{client}/profile/update", Route::Update),
    ("/rest/v1/profiles/{id}", Route::Fetch(IdKind::PcId)),
    (
        "/rest/v1/profiles/thirdPartyId/{id}",
        Route::Fetch(IdKind::ThirdPartyId),
    ),
];

impl Route {
    fn format(self) -> Format {
        match self {
            Route::BatchUpdate(_) | Route::BatchStatus => Format::Xml,
            Route::Update | Route::Fetch(_) => Format::Json,
        }
    }

    fn check_method(self, method: &Method) -> Result<(), Failure> {
        let (allowed, allow): (&[Method], &'static str) = match self {
            Route::BatchUpdate(_) => (&[Method::POST], "POST"),
            Route::BatchStatus | Route::Fetch(_) => (&[Method::GET], "GET"),
            Route::Update => (&[Method::GET, Method::POST], "GET, POST"),
        };
        if allowed.contains(method) {
            Ok(())
        } else {
            Err(Failure::MethodNotAllowed { allow })
        }
    }
}

/// The path parameters of a match, still percent-encoded.
#[derive(Debug, Default)]
struct RawParams {
    client: Option<String>,
    id: Option<String>,
}

impl RawParams {
    fn decoded(value: Option<&String>) -> Result<String, Failure> {
        let raw = value.map(String::as_str).unwrap_or_default();
        form::decode_path_segment(raw).map_err(|error| Failure::BadRequest(error.to_string()))
    }

    fn client(&self) -> Result<String, Failure> {
        Self::decoded(self.client.as_ref())
    }

    fn id(&self) -> Result<String, Failure> {
        Self::decoded(self.id.as_ref())
    }
}

impl Default for SampleBackend {
    fn default() -> Self {
        let mut router = Router::new();
        for (template, route) in ROUTES {
            if let Err(error) = router.insert(template, route) {
                // The table is constant and a unit test inserts all of it: unreachable.
                tracing::error!(%error, template, "sample backend route rejected");
            }
        }
        SampleBackend {
            inner: Arc::new(Inner {
                store: Store::default(),
                router,
            }),
        }
    }
}

impl SampleBackend {
    /// Answers one request. Never panics and never fails: every problem is a response.
    pub async fn handle<B>(&self, request: Request<B>) -> BackendResponse
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let Some((route, params)) = self.route(parts.uri.path()) else {
            tracing::debug!(method = %parts.method, path = parts.uri.path(), "no such route");
            return failure(Format::Json, &Failure::NotFound("no such route"));
        };
        let result = match route.check_method(&parts.method) {
            Err(method_failure) => Err(method_failure),
            Ok(()) => self.dispatch(route, &params, &parts, body).await,
        };
        let response = result.unwrap_or_else(|f| failure(route.format(), &f));
        tracing::debug!(
            method = %parts.method,
            path = parts.uri.path(),
            status = response.status().as_u16(),
            "sample backend request"
        );
        response
    }

    fn route(&self, path: &str) -> Option<(Route, RawParams)> {
        let matched = self.inner.router.at(path).ok()?;
        let params = RawParams {
            client: matched.params.get("client").map(str::to_owned),
            id: matched.params.get("id").map(str::to_owned),
        };
        Some((*matched.value, params))
    }

    async fn dispatch<B>(
        &self,
        route: Route,
        params: &RawParams,
        parts: &http::request::Parts,
        body: B,
    ) -> Result<BackendResponse, Failure>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let store = &self.inner.store;
        match route {
            Route::BatchUpdate(mode) => {
                handlers::batch_update(store, mode, &params.client()?, parts, body).await
            }
            Route::BatchStatus => handlers::batch_status(store, &params.client()?, parts),
            Route::Update => handlers::update(store, &params.client()?, parts, body).await,
            Route::Fetch(kind) => handlers::fetch(store, kind, &params.id()?, parts),
        }
    }

    /// Serves this backend on `listener` until `shutdown` resolves; see [`serve`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let builder = auto::Builder::new(TokioExecutor::new());
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually transient (aborted handshake, out of file descriptors):
                        // back off briefly instead of spinning.
                        tracing::warn!(%error, "sample backend accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let backend = self.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let backend = backend.clone();
                async move { Ok::<_, Infallible>(backend.handle(request).await) }
            });
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, %error, "sample backend connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}
