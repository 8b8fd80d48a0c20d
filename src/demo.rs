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
    };
    let config = Config::demo(backend_addr, state_dir.path());
    let proxy = listeners.proxy_addr()?;
    let admin = listeners.admin_addr()?;

    let stop_backend = CancellationToken::new();
    let backend_task = tokio::spawn(sample_backend::serve(
        backend,
        stop_backend.clone().cancelled_owned(),
    ));
    writeln!(out, "{}", walkthrough(proxy, admin, backend_addr))?;
    out.flush()?;
    let result = crate::run(config, listeners, shutdown).await;
    stop_backend.cancel();
    let _ = backend_task.await;
    result
}

fn walkthrough(proxy: SocketAddr, admin: SocketAddr, backend: SocketAddr) -> String {
    format!(
        "\
authgate demo is running (Ctrl-C to stop)
  gateway (clients):   http://{proxy}
  admin and metrics:   http://{admin}
  sample backend:      http://{backend}

Try it:
  # a bulk update through the gateway (tenant `acme`, v2 creates the profiles)
  curl -sS -X POST http://{proxy}/m2/acme/v2/profile/batchUpdate --data-urlencode $'batch=thirdPartyId,color,size\\nvisitor-1,red,M\\nvisitor-2,blue,L'
  # its status (the URL is in the answer above)
  curl -sS 'http://{proxy}/m2/acme/profile/batchStatus?batchId=acme-1'
  # the stored profile
  curl -sS 'http://{proxy}/rest/v1/profiles/thirdPartyId/visitor-1?client=acme'
  # health, readiness and metrics
  curl -sS http://{admin}/readyz
  curl -sS http://{admin}/metrics
"
    )
}
