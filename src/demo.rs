//! `authgate demo`: the sample profile backend and the gateway on loopback, on the
//! built-in defaults, with a throw-away state directory, plus a curl walkthrough.

use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{sample_backend, Config, Listeners};

/// Where the demo listens; a port that is taken falls back to a free one.
#[derive(Debug, Clone, Copy)]
pub struct DemoAddrs {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub backend: SocketAddr,
}

impl Default for DemoAddrs {
    fn default() -> Self {
        DemoAddrs {
            proxy: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            backend: SocketAddr::from(([127, 0, 0, 1], 8081)),
        }
    }
}

async fn bind_or_any(addr: SocketAddr) -> io::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(listener),
        Err(e) if addr.port() != 0 => {
            tracing::info!(%addr, error = %e, "demo port taken; using a free one");
            TcpListener::bind(SocketAddr::new(addr.ip(), 0)).await
        }
        Err(e) => Err(e),
    }
}

/// Runs the demo until `shutdown` resolves, writing the addresses and walkthrough to `out`.
pub async fn run(
    addrs: DemoAddrs,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()>,
) -> Result<(), crate::Error> {
    let state_dir = tempfile::Builder::new()
        .prefix("authgate-demo-")
        .tempdir()?;
    let backend = bind_or_any(addrs.backend).await?;
    let backend_addr = backend.local_addr()?;
    let listeners = Listeners {
        proxy: bind_or_any(addrs.proxy).await?,
        admin: bind_or_any(addrs.admin).await?,
        status: None,
    };
    let admin_key = crate::auth::token::generate(crate::auth::token::ADMIN_KEY_PREFIX)
        .map_err(|e| io::Error::other(format!("the OS random source failed: {e}")))?;
    let config = Config::demo(backend_addr, state_dir.path(), &admin_key.digest.to_hex());
    let proxy = listeners.proxy_addr()?;
    let admin = listeners.admin_addr()?;

    let stop_backend = CancellationToken::new();
    let backend_task = tokio::spawn(sample_backend::serve(
        backend,
        stop_backend.clone().cancelled_owned(),
    ));
    writeln!(
        out,
        "{}",
        walkthrough(proxy, admin, backend_addr, &admin_key.value)
    )?;
    out.flush()?;
    let result = crate::run(config, listeners, shutdown).await;
    stop_backend.cancel();
    let _ = backend_task.await;
    result
}

/// The try-out script: each indented line that is not a comment is a shell command, and
/// together they run in one bash session (later ones use `$ADMIN_KEY` and `$TOKEN`).
fn walkthrough(proxy: SocketAddr, admin: SocketAddr, backend: SocketAddr, key: &str) -> String {
    let batch = format!("http://{proxy}/m2/acme/v2/profile/batchUpdate");
    let auth = "-H \"Authorization: Bearer $ADMIN_KEY\"";
    format!(
        "\
authgate demo is running (Ctrl-C to stop)
  gateway (clients):   http://{proxy}
  admin and metrics:   http://{admin}
  sample backend:      http://{backend}

Try it (paste into bash; the commands build on each other):
  # the demo's approver admin key (a real config holds only its SHA-256)
  ADMIN_KEY={key}
  # 1. authentication is off: a bulk update for tenant acme passes without a token
  curl -sS -X POST {batch} --data-urlencode $'batch=thirdPartyId,color,size\\nvisitor-1,red,M\\nvisitor-2,blue,L'; echo
  # 2. require authentication for acme
  curl -sS -X PUT http://{admin}/admin/v1/tenants/acme/settings {auth} -d '{{\"require_authentication\": true}}'; echo
  # 3. without a token the bulk update is now refused
  curl -sS -i -X POST {batch} --data-urlencode $'batch=thirdPartyId,color\\nvisitor-1,green'; echo
  # 4. generate a token valid for one hour (shown only this once)
  TOKEN=$(curl -sS -X POST http://{admin}/admin/v1/tenants/acme/token {auth} -d '{{\"expires_in\": 3600}}' | sed -E 's/.*\"token\":\"([^\"]+)\".*/\\1/'); echo \"token: $TOKEN\"
  # 5. with the token it passes (the backend never sees the token)
  curl -sS -X POST {batch} -H \"Authorization: Bearer $TOKEN\" --data-urlencode $'batch=thirdPartyId,color\\nvisitor-1,green'; echo
  # 6. batch status and the stored profile (unprotected routes)
  curl -sS 'http://{proxy}/m2/acme/profile/batchStatus?batchId=acme-1'; echo
  curl -sS 'http://{proxy}/rest/v1/profiles/thirdPartyId/visitor-1?client=acme'; echo
  # 7. rotate: the old token dies at once
  curl -sS -X POST http://{admin}/admin/v1/tenants/acme/token {auth} >/dev/null
  curl -sS -o /dev/null -w '%{{http_code}} with the old token\\n' -X POST {batch} -H \"Authorization: Bearer $TOKEN\" --data-urlencode 'batch=thirdPartyId'
  # 8. the tenant document, readiness and metrics
  curl -sS http://{admin}/admin/v1/tenants/acme {auth}; echo
  curl -sS http://{admin}/readyz; echo
  curl -sS http://{admin}/metrics | grep '^authgate_auth_decisions_total'
"
    )
}
