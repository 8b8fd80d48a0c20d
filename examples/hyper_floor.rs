//! The floor for a hyper connection: the smallest HTTP/1.1 keep-alive server hyper 1.x
//! makes (one current-thread runtime, `hyper::server::conn::http1`, a service answering
//! `ok` without reading anything), so `bench/compare.sh` can put the bytes a held idle
//! connection costs authgate next to what it costs hyper itself.
//!
//!     cargo run --release --example hyper_floor -- 127.0.0.1:8080

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                tokio::spawn(async move {
                    let service = service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
}
