//! One function per admin endpoint, called once the route table matched the path and
//! the method. Each one that names a role checks the admin key (401) and the role (403)
//! first, then the tenant name and `If-Match`, and only then reads the body (400).

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};

use super::{api, reload, Admin, RequestBody};
use crate::body::Body;
use crate::config::Role;
use crate::error::{json_response, GatewayError};
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
        self.tls.record_expiry(std::time::SystemTime::now());
        let mut response = Response::new(Body::full(self.metrics.render()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }

    /// `GET /admin/v1/tenants` (viewer).
    pub(super) fn tenants(&self, headers: &HeaderMap) -> Answer {
        self.authorize(headers, Role::Viewer)?;
        let last_used = |d: &_| self.state.last_used(d);
        Ok(ok_json(&api::list(
            &self.state.snapshot().state,
            &last_used,
        )))
    }

    /// `GET /admin/v1/tenants/{tenant}` (viewer).
    pub(super) fn tenant(&self, headers: &HeaderMap, tenant: &str) -> Answer {
        self.authorize(headers, Role::Viewer)?;
        let tenant = api::tenant_name(tenant)?;
        let state = self.state.snapshot().state.tenant(&tenant);
        let doc = api::document(&tenant, &state, &|d| self.state.last_used(d));
        Ok(ok_json(&doc))
    }

    /// `PUT /admin/v1/tenants/{tenant}/settings` (approver).
    pub(super) async fn settings<B: RequestBody>(&self, req: Request<B>, tenant: &str) -> Answer {
        let actor = self.authorize(req.headers(), Role::Approver)?;
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
        req: Request<B>,
        tenant: &str,
    ) -> Answer {
        let actor = self.authorize(req.headers(), Role::Approver)?;
        let tenant = api::tenant_name(tenant)?;
        let if_match = api::if_match(req.headers())?;
        let request = api::parse_token_request(req.into_body(), &self.tokens).await?;
        api::generate(&self.state, &actor, tenant, request, if_match).await
    }

    /// `DELETE /admin/v1/tenants/{tenant}/token` (approver): 204.
    pub(super) async fn revoke_token(&self, headers: &HeaderMap, tenant: &str) -> Answer {
        let actor = self.authorize(headers, Role::Approver)?;
        let tenant = api::tenant_name(tenant)?;
        let if_match = api::if_match(headers)?;
        let cmd = Command::RevokeToken { tenant };
        api::apply(&self.state, &actor, cmd, if_match).await?;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    /// `GET /admin/v1/whoami` (viewer).
    pub(super) fn whoami(&self, headers: &HeaderMap) -> Answer {
        let key = self.authorize_key(headers, Role::Viewer)?;
        Ok(ok_json(&api::whoami(key, &self.tokens)))
    }

    /// `GET /admin/v1/cluster` (viewer).
    pub(super) async fn cluster(&self, headers: &HeaderMap) -> Answer {
        self.authorize(headers, Role::Viewer)?;
        let status = self.state.cluster().await.map_err(|e| {
            tracing::warn!(error = %e, "cluster status unavailable");
            GatewayError::StateUnavailable
        })?;
        Ok(ok_json(&api::cluster(&status)))
    }

    /// `GET /admin/v1/openapi.json` (viewer): the document built into the binary.
    pub(super) fn openapi(&self, headers: &HeaderMap) -> Answer {
        self.authorize(headers, Role::Viewer)?;
        let body = Bytes::from_static(super::openapi::DOCUMENT.as_bytes());
        Ok(json_response(StatusCode::OK, body))
    }

    /// `POST /admin/v1/reload-tls` (approver).
    pub(super) fn reload_tls(&self, headers: &HeaderMap) -> Answer {
        let actor = self.authorize(headers, Role::Approver)?;
        reload::reload_tls(&self.tls, &actor)
    }
}

fn status_json(status: StatusCode, body: &'static str) -> Response<Body> {
    json_response(status, Bytes::from_static(body.as_bytes()))
}

fn ok_json(value: &serde_json::Value) -> Response<Body> {
    json_response(StatusCode::OK, Bytes::from(value.to_string()))
}
