//! The admin listener's router.
//!
//! Endpoints (JSON; admin key as `Authorization: Bearer <key>` where a role is named):
//! - `GET /healthz`: 200 while the process serves requests (liveness);
//! - `GET /readyz`: 200 when the state is loaded and not draining, else 503;
//! - `GET /metrics`: Prometheus text exposition;
//! - `GET /admin/v1/tenants` (viewer): every tenant with stored state;
//! - `GET /admin/v1/tenants/{tenant}` (viewer): one tenant document;
//! - `PUT /admin/v1/tenants/{tenant}/settings` (approver): `{"require_authentication": bool}`;
//! - `POST /admin/v1/tenants/{tenant}/token` (approver): generate, optional `{"expires_in": s}`;
//! - `DELETE /admin/v1/tenants/{tenant}/token` (approver): revoke;
//! - `GET /admin/v1/whoami` (viewer): the key's name and role, and the token lifetimes;
//! - `GET /admin/v1/cluster` (viewer): the Redis epoch, revision and replicas' leases;
//! - `POST /admin/v1/reload-tls` (approver): re-read the TLS certificates ([`reload`]);
//! - `GET /admin/ui/…` (no key): the admin web page ([`ui`]); `/admin/` redirects there.
//!
//! Every response carries the browser security headers of [`ui::secure`].
//!
//! Order of checks: route (404), method (405), admin key (401), role (403), then the
//! body (400) — the key is checked before the body is read.

pub mod api;
mod reload;
pub mod ui;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::bearer::{self, Credentials};
use crate::auth::token::Digest;
use crate::body::Body;
use crate::config::{AdminKey, Config, Role, Tokens};
use crate::error::{json_response, GatewayError};
use crate::server::{Handler, Peer};
use crate::state::{Command, StateHandle};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Ready,
    Metrics,
    Tenants,
    Tenant,
    Settings,
    Token,
    WhoAmI,
    Ui,
    UiRedirect,
    ReloadTls,
    Cluster,
}

impl Route {
    fn allowed(self) -> &'static [Method] {
        match self {
            Route::Health
            | Route::Ready
            | Route::Metrics
            | Route::Tenants
            | Route::Tenant
            | Route::WhoAmI
            | Route::Cluster
            | Route::Ui
            | Route::UiRedirect => &[Method::GET, Method::HEAD],
            Route::Settings => &[Method::PUT],
            Route::Token => &[Method::POST, Method::DELETE],
            Route::ReloadTls => &[Method::POST],
        }
    }

    fn allow_header(self) -> &'static str {
        match self {
            Route::Settings => "PUT",
            Route::Token => "POST, DELETE",
            Route::ReloadTls => "POST",
            _ => "GET, HEAD",
        }
    }
}

/// The admin listener's handler.
#[derive(Debug)]
pub struct Admin {
    router: matchit::Router<Route>,
    readiness: Arc<Readiness>,
    metrics: PrometheusHandle,
    state: Arc<StateHandle>,
    keys: Vec<AdminKey>,
    tokens: Tokens,
    case_insensitive: bool,
    tls: Arc<crate::tls::Acceptors>,
}

impl Admin {
    pub fn new(
        config: &Config,
        state: Arc<StateHandle>,
        readiness: Arc<Readiness>,
        metrics: PrometheusHandle,
    ) -> Admin {
        let mut router = matchit::Router::new();
        for (path, route) in [
            ("/healthz", Route::Health),
            ("/readyz", Route::Ready),
            ("/metrics", Route::Metrics),
            ("/admin/v1/tenants", Route::Tenants),
            ("/admin/v1/tenants/{tenant}", Route::Tenant),
            ("/admin/v1/tenants/{tenant}/settings", Route::Settings),
            ("/admin/v1/tenants/{tenant}/token", Route::Token),
            ("/admin/v1/whoami", Route::WhoAmI),
            ("/admin/v1/cluster", Route::Cluster),
            ("/admin/v1/reload-tls", Route::ReloadTls),
            ("/admin", Route::UiRedirect),
            ("/admin/", Route::UiRedirect),
            ("/admin/ui", Route::UiRedirect),
            ("/admin/ui/", Route::Ui),
            ("/admin/ui/{*asset}", Route::Ui),
        ] {
            router
                .insert(path, route)
                .expect("admin routes are distinct");
        }
        Admin {
            router,
            readiness,
            metrics,
            state,
            keys: config.admin.keys.clone(),
            tokens: config.tokens.clone(),
            case_insensitive: config.case_insensitive_paths,
            tls: Arc::default(),
        }
    }

    /// The TLS listeners `POST /admin/v1/reload-tls` reloads and `/metrics` reports on.
    pub fn with_tls(mut self, tls: Arc<crate::tls::Acceptors>) -> Admin {
        self.tls = tls;
        self
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
        let path = req.uri().path().to_string();
        let matched = self.router.at(&path).map_err(|_| GatewayError::NotFound)?;
        let route = *matched.value;
        if !route.allowed().contains(req.method()) {
            return Err(GatewayError::MethodNotAllowed);
        }
        let tenant = matched.params.get("tenant").map(str::to_string);
        let asset = matched.params.get("asset").unwrap_or_default().to_string();
        match route {
            Route::Health => Ok(status_json(StatusCode::OK, r#"{"status":"ok"}"#)),
            Route::Ready if self.state.fenced() => Ok(status_json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"fenced"}"#,
            )),
            Route::Ready if self.readiness.is_ready() => {
                Ok(status_json(StatusCode::OK, r#"{"status":"ready"}"#))
            }
            Route::Ready => Ok(status_json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"draining"}"#,
            )),
            Route::Metrics => {
                crate::metrics::token_expiry(&self.state.snapshot().state, crate::time::now_ms());
                self.tls.record_expiry(std::time::SystemTime::now());
                let mut response = Response::new(Body::full(self.metrics.render()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(response)
            }
            Route::ReloadTls => {
                let actor = self.authorize(&req, Role::Approver)?;
                reload::reload_tls(&self.tls, &actor)
            }
            Route::WhoAmI => {
                let key = self.authorize_key(&req, Role::Viewer)?;
                Ok(ok_json(&api::whoami(key, &self.tokens)))
            }
            Route::Ui => ui::asset(&asset).ok_or(GatewayError::NotFound),
            Route::UiRedirect => Ok(ui::redirect()),
            Route::Cluster => {
                self.authorize(&req, Role::Viewer)?;
                let status = self.state.cluster().await.map_err(|e| {
                    tracing::warn!(error = %e, "cluster status unavailable");
                    GatewayError::StateUnavailable
                })?;
                Ok(ok_json(&api::cluster(&status)))
            }
            Route::Tenants => {
                self.authorize(&req, Role::Viewer)?;
                Ok(ok_json(&api::list(&self.state.snapshot().state)))
            }
            Route::Tenant => {
                self.authorize(&req, Role::Viewer)?;
                let tenant = api::tenant_name(&tenant.unwrap_or_default(), self.case_insensitive)?;
                let doc = api::document(&tenant, &self.state.snapshot().state.tenant(&tenant));
                Ok(ok_json(&doc))
            }
            Route::Settings => {
                let actor = self.authorize(&req, Role::Approver)?;
                let tenant = api::tenant_name(&tenant.unwrap_or_default(), self.case_insensitive)?;
                let if_match = api::if_match(req.headers())?;
                let require = api::parse_settings(req.into_body()).await?;
                let cmd = Command::SetRequireAuthentication {
                    tenant: tenant.clone(),
                    require,
                };
                let (after, acks) = api::apply(&self.state, &actor, cmd, if_match).await?;
                let mut doc = api::document(&tenant, &after);
                if let Some(acks) = acks {
                    doc["replicas"] = api::replicas(&acks);
                }
                Ok(ok_json(&doc))
            }
            Route::Token => {
                let actor = self.authorize(&req, Role::Approver)?;
                let tenant = api::tenant_name(&tenant.unwrap_or_default(), self.case_insensitive)?;
                let if_match = api::if_match(req.headers())?;
                if req.method() == Method::DELETE {
                    let cmd = Command::RevokeToken { tenant };
                    api::apply(&self.state, &actor, cmd, if_match).await?;
                    let mut response = Response::new(Body::empty());
                    *response.status_mut() = StatusCode::NO_CONTENT;
                    return Ok(response);
                }
                let expires_in = api::parse_expires_in(req.into_body(), &self.tokens).await?;
                api::generate(&self.state, &actor, tenant, expires_in, if_match).await
            }
        }
    }

    /// The name of the admin key presented, if it holds `role` (approvers hold viewer).
    /// Every configured key is compared, in constant time, whatever matches.
    fn authorize(&self, req: &Request<Incoming>, role: Role) -> Result<String, GatewayError> {
        self.authorize_key(req, role).map(|key| key.name.clone())
    }

    /// The admin key presented, if it holds `role`.
    fn authorize_key(
        &self,
        req: &Request<Incoming>,
        role: Role,
    ) -> Result<&AdminKey, GatewayError> {
        let Credentials::Bearer(key) = bearer::parse(req.headers()) else {
            return Err(GatewayError::AdminUnauthenticated);
        };
        let digest = Digest::of(key);
        let mut found: Option<&AdminKey> = None;
        for candidate in &self.keys {
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
}

fn status_json(status: StatusCode, body: &'static str) -> Response<Body> {
    json_response(status, Bytes::from_static(body.as_bytes()))
}

fn ok_json(value: &serde_json::Value) -> Response<Body> {
    json_response(StatusCode::OK, Bytes::from(value.to_string()))
}

impl Handler for Admin {
    async fn handle(&self, req: Request<Incoming>, _peer: &Peer) -> Response<Body> {
        let allow = self
            .router
            .at(req.uri().path())
            .ok()
            .map(|m| m.value.allow_header());
        let mut response = match self.route(req).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        };
        if let (StatusCode::METHOD_NOT_ALLOWED, Some(allow)) = (response.status(), allow) {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        ui::secure(response.headers_mut());
        response
    }
}
