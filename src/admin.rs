//! The admin listener's router.
//!
//! Endpoints:
//! - `GET /healthz`: 200 while the process serves requests (liveness);
//! - `GET /readyz`: 200 when ready for traffic, 503 once draining (readiness);
//! - `GET /metrics`: Prometheus text exposition.
//!
//! Routing is an exhaustive match on (method, path); the admin API's `/admin/v1/…`
//! routes join it here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::body::Body;
use crate::error::{json_response, GatewayError};
use crate::server::Handler;

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
    readiness: Arc<Readiness>,
    metrics: PrometheusHandle,
}

impl Admin {
    pub fn new(readiness: Arc<Readiness>, metrics: PrometheusHandle) -> Admin {
        Admin { readiness, metrics }
    }

    fn route(&self, req: &Request<Incoming>) -> Result<Response<Body>, GatewayError> {
        let get = |respond: fn(&Admin) -> Response<Body>| {
            if req.method() == Method::GET || req.method() == Method::HEAD {
                Ok(respond(self))
            } else {
                Err(GatewayError::MethodNotAllowed)
            }
        };
        match req.uri().path() {
            "/healthz" => get(|_| status_json(StatusCode::OK, r#"{"status":"ok"}"#)),
            "/readyz" => get(|admin| {
                if admin.readiness.is_ready() {
                    status_json(StatusCode::OK, r#"{"status":"ready"}"#)
                } else {
                    status_json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#)
                }
            }),
            "/metrics" => get(|admin| {
                let mut response = Response::new(Body::full(admin.metrics.render()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }),
            _ => Err(GatewayError::NotFound),
        }
    }
}

fn status_json(status: StatusCode, body: &'static str) -> Response<Body> {
    json_response(status, Bytes::from_static(body.as_bytes()))
}

impl Handler for Admin {
    async fn handle(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let mut response = match self.route(&req) {
            Ok(response) => response,
            Err(e) => e.into_response(),
        };
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
