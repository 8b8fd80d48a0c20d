//! Accept loop and per-connection lifecycle shared by the proxy and admin listeners.
//!
//! Each accepted socket is served in its own task: on plain TCP by [`park`] (HTTP/1.1,
//! parked while idle, or HTTP/2 with prior knowledge); over TLS by hyper-util's auto
//! server (HTTP/1.1 or HTTP/2, detected from the first bytes). Next to it runs a watchdog that
//! enforces two clocks hyper does not separate:
//! - **header read timeout**: once a request's first byte has arrived (or the connection
//!   was just accepted), its head must be complete within `header_read_timeout`, else the
//!   connection is dropped (slowloris);
//! - **idle timeout**: a keep-alive connection with no request in flight and no bytes
//!   arriving is closed gracefully after `idle_timeout`;
//! - **send timeout**: a write to the client that stays blocked for `send_timeout`
//!   (a client that stopped reading) drops the connection.
//!
//! On a listener with `listen.proxy_protocol` on, [`proxy_protocol`] first reads the
//! PROXY header (before TLS and hyper, on the same head clock from accept) and names the
//! connection's client.
//!
//! hyper's own `header_read_timeout` starts as soon as a keep-alive connection waits for
//! its next request, which would close idle load-balancer connections after a few
//! seconds; keeping the clocks apart lets `idle_timeout` exceed the load balancer's.
//!
//! The watchdog is never woken by the connection: requests and bytes only update
//! atomics. It sleeps until the current deadline, but never longer than the shortest
//! of the three timeouts ([`ServeOptions::shortest_clock`]). A clock that starts at `t`
//! ends at `t` + its timeout or later, and the watchdog looks again by then, so every
//! deadline is still enforced on time, with no wake-up (no notify, no timer) per request.
//!
//! On shutdown the accept loop stops (the listening socket closes, new connections are
//! refused) and every connection is asked to finish gracefully; the caller bounds the
//! drain and cancels `force` when it runs out.
//!
//! A request head over `max_header_bytes` gets the gateway's JSON 431 on HTTP/1.1 and
//! HTTP/2 alike (`head_limit`), not the bare one hyper and h2 write themselves.

mod head_limit;
mod park;
pub mod proxy_protocol;
mod watchdog;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::{service_fn, Service};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulConnection;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
use metrics::{Counter, Gauge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::Body;
use crate::error::GatewayError;
pub use park::Parking;
pub use watchdog::Guarded;
use watchdog::{ConnState, Expiry, RequestGuard, Watched};

/// Serves one request; implemented by the proxy and the admin router.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// The client end of a connection, worked out once per connection rather than per
/// request.
#[derive(Debug)]
pub struct Peer {
    /// The TCP peer (a load balancer, or the client itself).
    pub addr: SocketAddr,
    /// The client as far as the connection tells: the source a trusted peer's PROXY
    /// protocol header named, else `addr`. Forwarding headers are believed only when
    /// this address is trusted.
    pub client: SocketAddr,
    /// `client`'s IP as an `X-Forwarded-For` element.
    pub forwarded_for: http::HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        Peer::proxied(addr, addr)
    }

    /// A connection from `addr` on behalf of `client` (PROXY protocol).
    pub fn proxied(addr: SocketAddr, client: SocketAddr) -> Peer {
        let ip = client.ip().to_canonical().to_string();
        Peer {
            addr,
            client,
            forwarded_for: http::HeaderValue::from_str(&ip).expect("an IP is a valid header value"),
        }
    }
}

/// Connection limits and the metrics a listener reports.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub open_connections: Option<Gauge>,
    pub in_flight: Option<Gauge>,
    pub closed_header_timeout: Option<Counter>,
    pub closed_idle: Option<Counter>,
    pub closed_send_timeout: Option<Counter>,
    /// TLS on this listener; plain TCP when `None`.
    pub tls: Option<Arc<crate::tls::Acceptor>>,
    /// PROXY protocol on this listener (off by default).
    pub proxy_protocol: proxy_protocol::Settings,
    /// When idle HTTP/1.1 connections on plain TCP give their buffers back.
    pub park: Parking,
}

impl ServeOptions {
    /// The longest the watchdog may sleep without missing a clock started meanwhile.
    fn shortest_clock(&self) -> Duration {
        self.header_read_timeout
            .min(self.idle_timeout)
            .min(self.send_timeout)
    }
}

/// Lifecycle signals of one listener.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// Stop accepting and drain gracefully.
    pub shutdown: CancellationToken,
    /// Drop whatever is still open.
    pub force: CancellationToken,
    /// Tracks the accept loop and every connection task.
    pub tracker: TaskTracker,
    /// The runtimes accepted connections are spread over; `None`: this one.
    pub workers: Option<Arc<crate::runtime::Workers>>,
}

/// Accepts connections until `life.shutdown` fires. Connection tasks are spawned on
/// `life.tracker`, so waiting on the tracker waits for the drain.
///
/// `options` is asked before each accept: a config reload changes the clocks, limits
/// and PROXY protocol trust of the connections accepted afterwards (open ones keep
/// theirs). A new `max_connections` resizes the limit: raised at once, lowered as
/// connections close.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    options: impl Fn() -> Arc<ServeOptions> + Send + 'static,
    life: Lifecycle,
) {
    let mut opts = options();
    let mut limit = opts.max_connections;
    // Permits still to take out of circulation after the limit was lowered.
    let mut owed = 0;
    let permits = Arc::new(Semaphore::new(limit));
    let mut builder = Arc::new(park::Protocols::new(&opts, permits.clone()));
    loop {
        let next = options();
        if next.max_header_bytes != opts.max_header_bytes
            || next.max_connections != opts.max_connections
        {
            builder = Arc::new(park::Protocols::new(&next, permits.clone()));
        }
        if next.max_connections > limit {
            let raise = next.max_connections - limit;
            let cancelled = raise.min(owed);
            owed -= cancelled;
            permits.add_permits(raise - cancelled);
        } else {
            owed += limit - next.max_connections;
        }
        limit = next.max_connections;
        owed -= permits.forget_permits(owed);
        opts = next;
        // Waiting for a permit before accepting leaves extra connections in the
        // kernel's backlog instead of accepting and dropping them.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = life.shutdown.cancelled() => break,
        };
        if owed > 0 {
            // A permit handed back by a closed connection, over the lowered limit.
            permit.forget();
            owed -= 1;
            continue;
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = life.shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let conn_opts = opts.clone();
        let builder = builder.clone();
        let life_conn = life.clone();
        let task = move |stream, seat: Option<crate::runtime::Seat>| async move {
            serve_connection(stream, peer, handler, &builder, &conn_opts, &life_conn).await;
            drop((permit, seat));
        };
        let (runtime, seat) = match &life.workers {
            Some(workers) => {
                let (runtime, seat) = workers.pick();
                (runtime, Some(seat))
            }
            None => (None, None),
        };
        let Some(runtime) = runtime else {
            life.tracker.spawn(task(stream, seat));
            continue;
        };
        // Registered with the other runtime's I/O driver, so that its events wake that
        // runtime's thread, not this one.
        match stream.into_std() {
            Ok(stream) => runtime.spawn(life.tracker.track_future(async move {
                match TcpStream::from_std(stream) {
                    Ok(stream) => task(stream, seat).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot register a handed-over connection")
                    }
                }
            })),
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to another runtime");
                continue;
            }
        };
    }
    drop(listener);
}

/// Serves one accepted connection to its end. The task holds, while the connection is
/// parked, only what [`park::Parked`] keeps and the wait for its next byte; everything
/// else (the PROXY header, TLS, hyper's connection) lives in boxed stages, freed when
/// a stage ends.
// Not an `async fn`: an async fn keeps each argument twice in its future (the argument
// and the local it is moved to), and this future is every connection's task, parked or
// not; an `async move` block keeps what it captures once.
#[allow(clippy::manual_async_fn)]
fn serve_connection<'a, H: Handler>(
    stream: TcpStream,
    addr: SocketAddr,
    handler: Arc<H>,
    builder: &'a park::Protocols,
    opts: &'a Arc<ServeOptions>,
    life: &'a Lifecycle,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        let state = Arc::new(ConnState::new());
        if let Some(g) = &opts.open_connections {
            g.increment(1.0);
        }
        let mut parked = Box::pin(open(stream, addr, &handler, &state, builder, opts, life)).await;
        while let Some(p) = parked {
            if !park::wait_parked(&p.watched, &addr, &state, opts, life).await {
                // Closed while parked: nothing was said on it since the last response.
                let mut socket = p.watched.inner;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut socket).await;
                break;
            }
            let service = service(handler.clone(), p.peer.clone(), state.clone(), opts);
            let served = park::serve_http1(
                p.watched,
                bytes::Bytes::new(),
                service,
                addr,
                &state,
                builder,
                opts,
                life,
            );
            parked = Box::pin(served).await.map(|watched| park::Parked {
                watched,
                peer: p.peer,
            });
        }
        if let Some(g) = &opts.open_connections {
            g.decrement(1.0);
        }
    }
}

/// A connection's first stage, up to its first park: the PROXY header (on the head
/// clock), then TLS or plain TCP. `Some`: parked.
async fn open<H: Handler>(
    stream: TcpStream,
    addr: SocketAddr,
    handler: &Arc<H>,
    state: &Arc<ConnState>,
    builder: &park::Protocols,
    opts: &ServeOptions,
    life: &Lifecycle,
) -> Option<park::Parked> {
    let watched = Watched {
        inner: stream,
        state: state.clone(),
    };
    let (watched, peer) = proxy_protocol::open(watched, addr, opts, &life.force).await?;
    let peer = Arc::new(peer);
    let service = service(handler.clone(), peer.clone(), state.clone(), opts);
    if opts.tls.is_none() {
        let watched = park::serve_plain(watched, service, addr, state, builder, opts, life).await?;
        return Some(park::Parked { watched, peer });
    }
    // The TLS handshake runs on the first read below, under the head clock.
    let io = TokioIo::new(head_limit::Answering::new(
        crate::tls::ServerStream::new(watched, opts.tls.as_deref(), addr),
        state.clone(),
    ));
    let mut conn = std::pin::pin!(builder.auto.serve_connection(io, service));
    watch(conn.as_mut(), addr, state, opts, life).await;
    None
}

/// Drives the connection until it ends, enforcing the head, send and idle clocks and
/// the listener's shutdown.
async fn watch<C: GracefulConnection>(
    mut conn: std::pin::Pin<&mut C>,
    peer: SocketAddr,
    state: &ConnState,
    opts: &ServeOptions,
    life: &Lifecycle,
) where
    C::Error: std::fmt::Display,
{
    let mut closing = false;
    let mut draining = false;
    loop {
        if draining && !closing && !state.head_arriving() {
            closing = true;
            conn.as_mut().graceful_shutdown();
        }
        let deadline = if closing { None } else { state.deadline(opts) };
        let look_again = Instant::now() + drain_aware(opts.shortest_clock(), draining);
        let wake_at = deadline.map_or(look_again, |(at, _)| at.min(look_again));
        tokio::select! {
            // The connection first: a drain's `graceful_shutdown` before hyper has read
            // the bytes at hand (the sniffed preface) would close it unanswered.
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            // The state may have moved on while this sleep ran (a request started, a
            // write unblocked): act only on a deadline that is still the current one.
            () = tokio::time::sleep_until(wake_at), if !closing => match state.deadline(opts).filter(|(at, _)| *at <= Instant::now()) {
                Some((_, Expiry::HeaderRead)) => {
                    tracing::debug!(%peer, "request head not received in time; closing");
                    if let Some(c) = &opts.closed_header_timeout { c.increment(1) }
                    break;
                }
                Some((_, Expiry::Send)) => {
                    tracing::debug!(%peer, "client stopped reading; closing");
                    if let Some(c) = &opts.closed_send_timeout { c.increment(1) }
                    break;
                }
                Some((_, Expiry::Idle)) => {
                    if let Some(c) = &opts.closed_idle { c.increment(1) }
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                None => {}
            },
            // Acted on at the top of the loop, once no request head is on its way.
            () = life.shutdown.cancelled(), if !draining => draining = true,
            () = life.force.cancelled() => break,
        }
    }
}

/// How often a draining connection waiting for a request head to arrive looks again.
const DRAIN_LOOK: Duration = Duration::from_millis(20);

/// The watch loop's longest sleep: `clock`, or [`DRAIN_LOOK`] while draining.
fn drain_aware(clock: Duration, draining: bool) -> Duration {
    if draining {
        clock.min(DRAIN_LOOK)
    } else {
        clock
    }
}

/// The connection's hyper service: each request holds a [`RequestGuard`] from its head
/// until its response body is done, and its response body is [`Guarded`] for that.
fn service<H: Handler>(
    handler: Arc<H>,
    peer: Arc<Peer>,
    state: Arc<ConnState>,
    opts: &ServeOptions,
) -> impl Service<
    Request<Incoming>,
    Response = Response<Guarded<Body>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Guarded<Body>>, Infallible>> + Send + Unpin,
> + Clone
       + Unpin {
    let in_flight = opts.in_flight.clone();
    let max_header_bytes = opts.max_header_bytes;
    service_fn(move |req: Request<Incoming>| {
        let h2 = req.version() == http::Version::HTTP_2;
        if h2 {
            state.is_h2.store(true, Ordering::Relaxed);
        }
        // An HTTP/1.1 head over the limit never gets here: hyper refuses it.
        let too_large = h2 && head_limit::h2_field_list_size(&req) > max_header_bytes;
        let guard = RequestGuard::start(state.clone(), in_flight.clone());
        let handler = handler.clone();
        let peer = peer.clone();
        // Boxed per request: hyper keeps one allocation of the service future's size
        // for each connection, idle or not, and the handler's future is kilobytes; a
        // short-lived box costs one malloc per request instead (and is `Unpin`, which a
        // connection taken apart when it parks needs).
        Box::pin(async move {
            let response = if too_large {
                GatewayError::HeadTooLarge.into_response()
            } else {
                handler.handle(req, &peer).await
            };
            Ok::<_, Infallible>(response.map(|body| Guarded::new(body, guard)))
        })
    })
}
