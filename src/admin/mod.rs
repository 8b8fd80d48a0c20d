//! The admin listener's router.
//!
//! Endpoints (JSON; admin key as `Authorization: Bearer <key>` where a role is named):
//! - `GET /healthz`: 200 while the process serves requests (liveness);
//! - `GET /readyz`: 200 when the state is loaded and not draining, else 503;
//! - `GET /metrics`: Prometheus text exposition;
//! - `GET /admin/v1/tenants` (viewer): every tenant with stored state;
//! - `GET /admin/v1/tenants/{tenant}` (viewer): one tenant document;
//! - `PUT /admin/v1/tenants/{tenant}/settings` (approver): `{"mode": "off"|"report"|"on"}`
//!   or `{"require_authentication": bool}`;
//! - `POST /admin/v1/tenants/{tenant}/token` (approver): generate, optional
//!   `{"expires_in": s, "previous_valid_for": s}`;
//! - `DELETE /admin/v1/tenants/{tenant}/token` (approver): revoke every token;
//! - `GET /admin/v1/whoami` (viewer): the key's name and role, and the token lifetimes;
//! - `GET /admin/v1/cluster` (viewer): the Redis epoch, revision and replicas' leases;
//! - `GET /admin/v1/openapi.json` (viewer): the OpenAPI 3.1 document of all this ([`openapi`]);
//! - `POST /admin/v1/reload` (approver): re-read and apply the config file, as SIGHUP
//!   does ([`reload`], [`crate::live`]);
//! - `POST /admin/v1/reload-tls` (approver): re-read only the TLS certificates ([`reload`]);
//! - `GET /admin/ui/…` (no key): the admin web page ([`ui`]); `/admin/` redirects there.
//!
//! Every response carries the browser security headers of [`ui::secure`].
//!
//! A request flows: [`Admin::serve`] → its path, normalised as the proxy does (400 if it
//! cannot be: [`crate::auth::path`]) → the route table ([`routes`]: 404 for an unknown
//! path, 405 with `Allow` for a method the path does not answer) → one function per
//! endpoint ([`endpoints`]), which checks the admin key (401) and its role (403) before
//! it reads the body (400); [`api`] holds the documents, body parsing and state changes
//! they share. The router is generic over the request body, so the order of checks is
//! tested in process (`tests.rs`).

pub mod api;
mod endpoints;
mod openapi;
mod reload;
mod routes;
pub mod ui;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{header, HeaderMap, Request, Response};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::bearer::{self, Credentials};
use crate::auth::token::Digest;
use crate::body::Body;
use crate::config::{AdminKey, Role};
use crate::error::GatewayError;
use crate::live::{Live, Reloader};
use crate::server::{Handler, Peer};
use crate::state::StateHandle;
use routes::{Endpoint, Entry};

/// What a request body must be for the admin API to read it: any `http_body::Body`
/// (hyper's `Incoming` on the listener, `http_body_util::Full` in tests).
pub trait RequestBody: http_body::Body<Error: Into<BoxError>> {}

impl<B: http_body::Body<Error: Into<BoxError>>> RequestBody for B {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Readiness, shared between the listeners and the shutdown sequence.
#[derive(Debug, Default)]
pub struct Readiness {
    draining: AtomicBool,
}

impl Readiness {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire)
    }
}

/// The admin listener's handler.
#[derive(Debug)]
pub struct Admin {
    router: matchit::Router<Entry>,
    readiness: Arc<Readiness>,
    metrics: PrometheusHandle,
    state: Arc<StateHandle>,
    /// The live config (admin keys, token lifetimes), loaded once per call; its
    /// reloader answers `POST /admin/v1/reload`, and its TLS listeners
    /// `POST /admin/v1/reload-tls` and the expiry gauges.
    live: Arc<Reloader>,
    /// Whether this listener answers `/healthz`, `/readyz`, `/metrics` (`listen.admin_probes`).
    probes: bool,
}

/// Which listener a request came in on: the admin listener answers every route (the
/// probes unless `listen.admin_probes` is false), the status listener only the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surface {
    Admin,
    Status,
}

/// The status listener's handler (`listen.status`): `/healthz`, `/readyz` and
/// `/metrics` of the admin router, in plain HTTP and without a key; 404 for the rest.
#[derive(Debug)]
pub struct Probes(pub Arc<Admin>);

impl Handler for Probes {
    async fn handle(&self, req: Request<Incoming>, _peer: &Peer) -> Response<Body> {
        self.0.serve_on(req, Surface::Status).await
    }
}

/// The route parameters a matched path carries (empty where the route has none).
#[derive(Debug, Default)]
struct Params {
    tenant: String,
    asset: String,
}

impl Admin {
    pub fn new(
        live: Arc<Reloader>,
        state: Arc<StateHandle>,
        readiness: Arc<Readiness>,
        metrics: PrometheusHandle,
    ) -> Admin {
        Admin {
            router: routes::router(),
            readiness,
            metrics,
            state,
            probes: live.current().config.listen.admin_probes,
            live,
        }
    }

    /// Answers one admin request, whatever its body type.
    pub async fn serve<B: RequestBody>(&self, req: Request<B>) -> Response<Body> {
        self.serve_on(req, Surface::Admin).await
    }

    async fn serve_on<B: RequestBody>(&self, req: Request<B>, surface: Surface) -> Response<Body> {
        let mut response = match self.route(req, surface).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        };
        ui::secure(response.headers_mut());
        response
    }

    /// 400 for a path that cannot be normalised, 404 for an unknown path (or one this
    /// listener does not offer), 405 (with `Allow`) for a method it does not answer, else
    /// the endpoint's answer. The path is read in the proxy's canonical form, so `%7E` is
    /// `~` here as there.
    async fn route<B: RequestBody>(
        &self,
        req: Request<B>,
        surface: Surface,
    ) -> Result<Response<Body>, GatewayError> {
        let path = crate::auth::path::normalize(req.uri().path())
            .map_err(|_| GatewayError::BadPath)?
            .path;
        let matched = self.router.at(&path).map_err(|_| GatewayError::NotFound)?;
        let probe = matched.value.is_probe();
        let offered = match surface {
            Surface::Admin => !probe || self.probes,
            Surface::Status => probe,
        };
        if !offered {
            return Err(GatewayError::NotFound);
        }
        let Some(endpoint) = matched.value.endpoint(req.method()) else {
            let mut response = GatewayError::MethodNotAllowed.into_response();
            let allow = matched.value.allow().clone();
            response.headers_mut().insert(header::ALLOW, allow);
            return Ok(response);
        };
        let param = |name| matched.params.get(name).unwrap_or_default().to_string();
        let params = Params {
            tenant: param("tenant"),
            asset: param("asset"),
        };
        self.dispatch(endpoint, params, req).await
    }

    async fn dispatch<B: RequestBody>(
        &self,
        endpoint: Endpoint,
        params: Params,
        req: Request<B>,
    ) -> Result<Response<Body>, GatewayError> {
        // One config for the whole call: a reload during it does not mix keys.
        let live = self.live.current();
        let live = &*live;
        let headers = req.headers();
        match endpoint {
            Endpoint::Health => Ok(self.health()),
            Endpoint::Ready => Ok(self.ready()),
            Endpoint::Metrics => Ok(self.metrics()),
            Endpoint::Tenants => self.tenants(live, headers),
            Endpoint::Tenant => self.tenant(live, headers, &params.tenant),
            Endpoint::Settings => self.settings(live, req, &params.tenant).await,
            Endpoint::GenerateToken => self.generate_token(live, req, &params.tenant).await,
            Endpoint::RevokeToken => self.revoke_token(live, headers, &params.tenant).await,
            Endpoint::WhoAmI => self.whoami(live, headers),
            Endpoint::Cluster => self.cluster(live, headers).await,
            Endpoint::OpenApi => self.openapi(live, headers),
            Endpoint::ReloadTls => self.reload_tls(live, headers),
            Endpoint::Reload => self.reload(live, headers).await,
            Endpoint::UiAsset => ui::asset(&params.asset).ok_or(GatewayError::NotFound),
            Endpoint::UiRedirect => Ok(ui::redirect()),
        }
    }

    /// The name of the admin key presented, if it holds `role` (approvers hold viewer).
    fn authorize(
        &self,
        live: &Live,
        headers: &HeaderMap,
        role: Role,
    ) -> Result<String, GatewayError> {
        authorize_key(live, headers, role).map(|key| key.name.clone())
    }
}

/// The admin key presented, if it holds `role`. Every configured key is compared,
/// in constant time, whatever matches.
fn authorize_key<'a>(
    live: &'a Live,
    headers: &HeaderMap,
    role: Role,
) -> Result<&'a AdminKey, GatewayError> {
    let Credentials::Bearer(key) = bearer::parse(headers) else {
        return Err(GatewayError::AdminUnauthenticated);
    };
    let digest = Digest::of(key);
    let mut found: Option<&AdminKey> = None;
    for candidate in &live.config.admin.keys {
        if Digest(candidate.sha256).matches(&digest) {
            found = Some(candidate);
        }
    }
    match found {
        None => Err(GatewayError::AdminUnauthenticated),
        Some(key) if key.role < role => {
            tracing::warn!(target: "audit", actor = %key.name, "admin key lacks the role");
            Err(GatewayError::AdminForbidden)
        }
        Some(key) => Ok(key),
    }
}

impl Handler for Admin {
    async fn handle(&self, req: Request<Incoming>, _peer: &Peer) -> Response<Body> {
        self.serve(req).await
    }
}

#[cfg(test)]
mod tests;
