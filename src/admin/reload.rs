//! The reload endpoints.
//!
//! `POST /admin/v1/reload` (approver): re-reads the whole config file, as SIGHUP does
//! ([`crate::live::Reloader::reload`]): 200 `{"revision", "sha256"}` when it was applied;
//! 422 `{"error": "config_refused", "problems": […]}` listing every problem otherwise,
//! and nothing changed.
//!
//! `POST /admin/v1/reload-tls` (approver): re-reads only the TLS listeners' certificate
//! files, the same paths as now (kept for certificate renewal hooks). 200 with each
//! listener's new expiry when all were replaced; 422 naming the refused ones otherwise
//! (each refused listener keeps serving its previous certificate, the others take their
//! new one).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::json;

use crate::body::Body;
use crate::error::{json_response, GatewayError};
use crate::live::Reloader;
use crate::time::rfc3339;
use crate::tls::Acceptors;

pub(super) fn reload_tls(tls: &Acceptors, actor: &str) -> Result<Response<Body>, GatewayError> {
    let outcomes = tls.reload(&format!("admin API ({actor})"));
    let now = SystemTime::now();
    let mut reloaded = Vec::new();
    let mut refused = Vec::new();
    for r in &outcomes {
        match &r.outcome {
            Ok(validity) => reloaded.push(json!({
                "listener": r.listener,
                "not_after": rfc3339(validity.not_after),
                "expires_in": validity.seconds_left(now).floor() as i64,
            })),
            Err(e) => refused.push(format!("{}: {e}", r.listener)),
        }
    }
    let names = |ok: bool| -> Vec<&str> {
        outcomes
            .iter()
            .filter(|r| r.outcome.is_ok() == ok)
            .map(|r| r.listener)
            .collect()
    };
    tracing::info!(
        target: "audit",
        %actor,
        action = "tls_reloaded",
        reloaded = ?names(true),
        refused = ?names(false),
    );
    if !refused.is_empty() {
        return Err(GatewayError::TlsReloadRefused {
            message: format!(
                "{}; the previous certificate stays in service",
                refused.join("; ")
            ),
        });
    }
    let body = json!({ "listeners": reloaded });
    Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
}

pub(super) async fn reload(
    live: Arc<Reloader>,
    actor: String,
) -> Result<Response<Body>, GatewayError> {
    let cause = format!("admin API ({actor})");
    let outcome = tokio::task::spawn_blocking(move || live.reload(&cause))
        .await
        .map_err(|e| GatewayError::ConfigRefused {
            problems: vec![format!("the reload stopped: {e}")],
        })?;
    match outcome {
        Ok(applied) => {
            let body = json!({ "revision": applied.revision, "sha256": applied.sha256 });
            Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
        }
        Err(refused) => Err(GatewayError::ConfigRefused {
            problems: refused.problems.iter().map(ToString::to_string).collect(),
        }),
    }
}
