//! One function per admin endpoint, called once the route table matched the path and
//! the method. Each one that names a role checks the admin key (401) and the role (403)
//! first, then the tenant name and `If-Match`, and only then reads the body (400).

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};

use super::{api, authorize_key, reload, Admin, RequestBody};
use crate::body::Body;
use crate::config::Role;
use crate::error::{json_response, GatewayError};
use crate::live::Live;
use crate::state::Command;

type Answer = Result<Response<Body>, GatewayError>;

impl Admin {
    /// `GET /healthz`.
    pub(super) fn health(&self) -> Response<Body> {
        status_json(StatusCode::OK, r#"{"status":"ok"}"#)
    }

    /// `GET /readyz`: a fenced replica is not ready, nor is a draining one.
    pub(super) fn ready(&self) -> Response<Body> {
        if self.state.fenced() {
            status_json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"fenced"}"#)
        } else if self.readiness.is_ready() {
            status_json(StatusCode::OK, r#"{"status":"ready"}"#)
        } else {
            status_json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
        }
    }

    /// `GET /metrics`, with the expiry gauges brought up to date first.
    pub(super) fn metrics(&self) -> Response<Body> {
        let snapshot = self.state.snapshot();
        let expiries = snapshot.state.tenants.iter();
        let expiries =
            expiries.map(|(name, t)| (name.as_str(), t.token.as_ref().map(|t| t.expires_at_ms)));
        crate::metrics::token_expiry(expiries, crate::time::now_ms());
        let uses = snapshot.state.tenants.iter().flat_map(|(name, t)| {
            let at = |t: &crate::state::TokenRecord| self.state.last_used(&t.digest).unwrap_or(0);
            let current = t.token.as_ref().map_or(0, at);
            let previous = t.previous.as_ref().map_or(0, |p| at(&p.token));
            [
                (name.as_str(), "current", current),
                (name.as_str(), "previous", previous),
            ]
        });
        crate::metrics::token_last_used(uses);
        self.live
            .acceptors()
            .record_expiry(std::time::SystemTime::now());
        let mut response = Response::new(Body::full(self.metrics.render()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }

    /// `GET /admin/v1/tenants` (viewer).
    pub(super) fn tenants(&self, live: &Live, headers: &HeaderMap) -> Answer {
        self.authorize(live, headers, Role::Viewer)?;
        let last_used = |d: &_| self.state.last_used(d);
        Ok(ok_json(&api::list(
            &self.state.snapshot().state,
            &last_used,
        )))
    }

    /// `GET /admin/v1/tenants/{tenant}` (viewer).
    pub(super) fn tenant(&self, live: &Live, headers: &HeaderMap, tenant: &str) -> Answer {
        self.authorize(live, headers, Role::Viewer)?;
        let tenant = api::tenant_name(tenant)?;
        let state = self.state.snapshot().state.tenant(&tenant);
        let doc = api::document(&tenant, &state, &|d| self.state.last_used(d));
        Ok(ok_json(&doc))
    }

    /// `PUT /admin/v1/tenants/{tenant}/settings` (approver).
    pub(super) async fn settings<B: RequestBody>(
        &self,
        live: &Live,
        req: Request<B>,
        tenant: &str,
    ) -> Answer {
        let actor = self.authorize(live, req.headers(), Role::Approver)?;
        let tenant = api::tenant_name(tenant)?;
        let if_match = api::if_match(req.headers())?;
        let mode = api::parse_settings(req.into_body()).await?;
        let cmd = Command::SetMode {
            tenant: tenant.clone(),
            mode,
        };
        let (after, acks) = api::apply(&self.state, &actor, cmd, if_match).await?;
        let mut doc = api::document(&tenant, &after, &|d| self.state.last_used(d));
        if let Some(acks) = acks {
            doc["replicas"] = api::replicas(&acks);
        }
        Ok(ok_json(&doc))
    }

    /// `POST /admin/v1/tenants/{tenant}/token` (approver): 201 with the new token.
    pub(super) async fn generate_token<B: RequestBody>(
        &self,
        live: &Live,
        req: Request<B>,
        tenant: &str,
    ) -> Answer {
        let actor = self.authorize(live, req.headers(), Role::Approver)?;
        let tenant = api::tenant_name(tenant)?;
        let if_match = api::if_match(req.headers())?;
        let request = api::parse_token_request(req.into_body(), &live.config.tokens).await?;
        api::generate(&self.state, &actor, tenant, request, if_match).await
    }

    /// `DELETE /admin/v1/tenants/{tenant}/token` (approver): 204.
    pub(super) async fn revoke_token(
        &self,
        live: &Live,
        headers: &HeaderMap,
        tenant: &str,
    ) -> Answer {
        let actor = self.authorize(live, headers, Role::Approver)?;
        let tenant = api::tenant_name(tenant)?;
        let if_match = api::if_match(headers)?;
        let cmd = Command::RevokeToken { tenant };
        api::apply(&self.state, &actor, cmd, if_match).await?;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    /// `GET /admin/v1/whoami` (viewer), with the config this process serves.
    pub(super) fn whoami(&self, live: &Live, headers: &HeaderMap) -> Answer {
        let key = authorize_key(live, headers, Role::Viewer)?;
        let mut doc = api::whoami(key, &live.config.tokens);
        doc["config"] = serde_json::json!({
            "revision": live.revision,
            "sha256": live.config.sha256,
        });
        Ok(ok_json(&doc))
    }

    /// `GET /admin/v1/cluster` (viewer).
    pub(super) async fn cluster(&self, live: &Live, headers: &HeaderMap) -> Answer {
        self.authorize(live, headers, Role::Viewer)?;
        let status = self.state.cluster().await.map_err(|e| {
            tracing::warn!(error = %e, "cluster status unavailable");
            GatewayError::StateUnavailable
        })?;
        Ok(ok_json(&api::cluster(&status)))
    }

    /// `GET /admin/v1/openapi.json` (viewer): the document built into the binary.
    pub(super) fn openapi(&self, live: &Live, headers: &HeaderMap) -> Answer {
        self.authorize(live, headers, Role::Viewer)?;
        let body = Bytes::from_static(super::openapi::DOCUMENT.as_bytes());
        Ok(json_response(StatusCode::OK, body))
    }

    /// `POST /admin/v1/reload-tls` (approver).
    pub(super) fn reload_tls(&self, live: &Live, headers: &HeaderMap) -> Answer {
        let actor = self.authorize(live, headers, Role::Approver)?;
        reload::reload_tls(self.live.acceptors(), &actor)
    }

    /// `POST /admin/v1/reload` (approver): the whole config file, as SIGHUP.
    pub(super) async fn reload(&self, live: &Live, headers: &HeaderMap) -> Answer {
        let actor = self.authorize(live, headers, Role::Approver)?;
        reload::reload(self.live.clone(), actor).await
    }
}

fn status_json(status: StatusCode, body: &'static str) -> Response<Body> {
    json_response(status, Bytes::from_static(body.as_bytes()))
}

fn ok_json(value: &serde_json::Value) -> Response<Body> {
    json_response(StatusCode::OK, Bytes::from(value.to_string()))
}
