//! A real HAProxy in front of the gateway, as `deploy/haproxy.cfg` runs it: TCP mode with
//! the PROXY protocol (`send-proxy-v2`, and v1 `send-proxy`), and HTTP mode with
//! `option forwardfor`. The client binds 127.0.0.2, so the address it connects from
//! differs from HAProxy's own (127.0.0.1); the upstream answers with the
//! `X-Forwarded-For` it received. Skipped without haproxy unless AUTHGATE_REQUIRE_TOOLS.

mod support;

use std::net::SocketAddr;

use http::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::haproxy::{have_haproxy, HaProxy};
use support::*;
use tokio::sync::mpsc;

/// An upstream answering with the `X-Forwarded-For` it received, and reporting
/// `(path, X-Forwarded-For)` of every request.
async fn upstream() -> (Upstream, mpsc::UnboundedReceiver<(String, String)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let up = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let xff = req
            .headers()
            .get("x-forwarded-for")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let _ = tx.send((req.uri().path().to_string(), xff.clone()));
        async move { Response::new(full(format!("xff={xff}"))) }
    })
    .await;
    (up, rx)
}

/// A gateway trusting `trusted` with `listen.proxy_protocol: mode`, logging to
/// `access.log` in its folder.
async fn gateway(up: &Upstream, mode: &str, trusted: &str) -> Gateway {
    let extra = format!(
        "trusted_proxies: [\"{trusted}\"]\nlisten: {{ proxy_protocol: {mode} }}\n\
         access_log: {{ target: access.log, format: json }}"
    );
    Gateway::start(up.addr, &extra).await
}

/// The `client` of the gateway's access-log line for `path` (the writer is asynchronous).
async fn logged_client(gw: &Gateway, path: &str) -> String {
    let log = gw.dir.path().join("access.log");
    within("the access-log line", async {
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let line = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|l| l["path"] == path);
            if let Some(line) = line {
                return line["client"].as_str().unwrap().to_string();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
}

/// GET `path` through `haproxy` from 127.0.0.2: the response body, or the error.
async fn get_from_127_0_0_2(haproxy: SocketAddr, path: &str) -> Result<String, String> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some([127, 0, 0, 2].into()));
    let client: Client<_, TestBody> = Client::builder(TokioExecutor::new()).build(connector);
    let uri = format!("http://{haproxy}{path}").parse().unwrap();
    let response = within("a response through HAProxy", client.get(uri))
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = String::from_utf8_lossy(&body_bytes(response).await).into_owned();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status}: {body}"))
    }
}

#[tokio::test]
async fn tcp_mode_with_proxy_v2_passes_the_client_address() {
    if !have_haproxy() {
        return;
    }
    let (up, _) = upstream().await;
    let gw = gateway(&up, "require", "127.0.0.1/32").await;
    let haproxy = HaProxy::start("tcp", &format!("  server gw {} send-proxy-v2", gw.proxy));
    for _ in 0..2 {
        let body = get_from_127_0_0_2(haproxy.addr, "/p").await;
        assert_eq!(body.as_deref(), Ok("xff=127.0.0.2"), "{}", haproxy.log());
    }
    assert_eq!(logged_client(&gw, "/p").await, "127.0.0.2");
}

#[tokio::test]
async fn tcp_mode_with_proxy_v1_passes_the_client_address() {
    if !have_haproxy() {
        return;
    }
    let (up, _) = upstream().await;
    let gw = gateway(&up, "require", "127.0.0.1/32").await;
    let haproxy = HaProxy::start("tcp", &format!("  server gw {} send-proxy", gw.proxy));
    let body = get_from_127_0_0_2(haproxy.addr, "/p").await;
    assert_eq!(body.as_deref(), Ok("xff=127.0.0.2"), "{}", haproxy.log());
    assert_eq!(logged_client(&gw, "/p").await, "127.0.0.2");
}

#[tokio::test]
async fn haproxy_health_checks_send_local_and_keep_haproxy_as_the_client() {
    if !have_haproxy() {
        return;
    }
    let (up, mut seen) = upstream().await;
    let gw = gateway(&up, "require", "127.0.0.1/32").await;
    // With send-proxy-v2 and no check port, HAProxy 2.6 sends each check behind a v2
    // LOCAL header (`…QUIT\n \x00\x00\x00`: command LOCAL, no addresses), which
    // `require` lets through with HAProxy itself as the client.
    let _haproxy = HaProxy::start(
        "tcp",
        &format!(
            "  option httpchk GET /probe\n  server gw {} send-proxy-v2 check inter 100ms",
            gw.proxy
        ),
    );
    let (path, xff) = within("a health check through the gateway", seen.recv())
        .await
        .unwrap();
    assert_eq!((path.as_str(), xff.as_str()), ("/probe", "127.0.0.1"));
}

#[tokio::test]
async fn a_gateway_not_trusting_haproxy_refuses_its_header() {
    if !have_haproxy() {
        return;
    }
    let (up, _) = upstream().await;
    let gw = gateway(&up, "accept", "127.0.0.9/32").await;
    let series = "authgate_proxy_protocol_rejected_total{reason=\"untrusted\"}";
    let before = sample(&metrics_text(&gw).await, series).unwrap_or(0.0);
    let haproxy = HaProxy::start("tcp", &format!("  server gw {} send-proxy-v2", gw.proxy));
    let answer = get_from_127_0_0_2(haproxy.addr, "/p").await;
    assert!(answer.is_err(), "{answer:?}");
    let after = sample(&metrics_text(&gw).await, series).unwrap_or(0.0);
    assert!(after > before, "{before} → {after}");
}

#[tokio::test]
async fn http_mode_with_forwardfor_passes_the_client_address() {
    if !have_haproxy() {
        return;
    }
    let (up, _) = upstream().await;
    let gw = gateway(&up, "off", "127.0.0.1/32").await;
    let haproxy = HaProxy::start(
        "http",
        &format!("  option forwardfor\n  server gw {}", gw.proxy),
    );
    let body = get_from_127_0_0_2(haproxy.addr, "/p").await.unwrap();
    // HAProxy's X-Forwarded-For names the client; the gateway keeps it and appends its
    // own peer (HAProxy). Trusting HAProxy's list is the proxy headers' rule, not this.
    let xff = body.strip_prefix("xff=").unwrap();
    assert!(xff.split(',').any(|a| a.trim() == "127.0.0.2"), "{body}");
    // HAProxy (127.0.0.1) is trusted, so the client is the address it forwarded for.
    assert_eq!(logged_client(&gw, "/p").await, "127.0.0.2");
}
