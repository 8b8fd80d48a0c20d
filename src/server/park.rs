//! Parked idle connections: a plain-TCP HTTP/1.1 keep-alive connection between two
//! requests holds no hyper state and no buffer until its next byte arrives.
//!
//! hyper keeps an 8 KiB read buffer reserved while it waits for the next request and
//! its write buffer for the connection's life. Parking gives both back, as nginx does
//! at every keep-alive cycle (`ngx_http_set_keepalive`):
//!
//! 1. **When**: the connection is idle — no request in flight, no byte of a new head
//!    read, no write waiting for the socket, HTTP/1 — for `limits.park_after`
//!    (checked by the connection's watchdog, which then looks again at least every
//!    `park_after`), or at once, right after the poll that left it idle, when
//!    `park_after` is 0 or the listener holds more than `limits.park_at_once_above`
//!    connections (there memory counts more than the cost of a new hyper connection
//!    per request).
//! 2. **How**: `graceful_shutdown` on an idle hyper connection closes it without
//!    writing anything (`Conn::disable_keep_alive` with `KA::Idle`), so the next poll of
//!    `poll_without_shutdown` ends it at once, with no I/O, and `into_parts` hands back
//!    the socket and the bytes hyper read but had not parsed. If that poll moved any
//!    byte, or did not end the connection, hyper was not idle after all (the end of a
//!    response still going out): the connection is not parked, it closes after its
//!    exchange, as it would at a graceful shutdown.
//! 3. **Parked**: the task holds the socket, its watchdog state and the client's
//!    address (every stage before is boxed and freed: hyper's connection, the PROXY
//!    header read, the sniff), and waits for the socket to become readable, for the
//!    idle clock (`limits.idle_timeout`, still counted from the last response), for the
//!    drain (which closes a parked connection at once) or the forced stop.
//! 4. **Unparked**: a new hyper connection is built on the socket, replaying the
//!    unread bytes first. Bytes already read (pipelined requests, part of a head) mean
//!    the connection was never idle for the head clock: it is rebuilt at once, and the
//!    head clock, started when those bytes arrived, keeps running.
//!
//! Not parked: TLS connections (rustls may hold decrypted bytes the socket's readiness
//! does not announce), HTTP/2 connections (its connection state is the protocol's),
//! and the connection's first request (nothing to give back yet).
//!
//! hyper-util's auto builder (HTTP/1.1 or HTTP/2, sniffed) has no `into_parts`, so on
//! plain TCP the protocol is chosen here: a connection whose first four bytes are
//! `PRI ` (the HTTP/2 preface) is HTTP/2 with prior knowledge, any other HTTP/1.1.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::head_limit::{self, Answering};
use super::proxy_protocol::Rewound;
use super::watchdog::{ConnState, Expiry, Watched};
use super::{Lifecycle, ServeOptions};

/// The first bytes of the HTTP/2 connection preface that tell it from any HTTP/1 method.
const H2_PREFACE_START: &[u8] = b"PRI ";

/// When idle HTTP/1.1 connections are parked (`limits.park_after`,
/// `limits.park_at_once_above`).
#[derive(Debug, Clone)]
pub struct Parking {
    /// Idle this long, a connection is parked; 0 parks at once.
    pub after: Duration,
    /// Above this many open connections on the listener, idle ones park at once.
    pub at_once_above: usize,
    /// Connections parked now.
    pub parked: Option<metrics::Gauge>,
}

/// The connection builders of one listener.
#[derive(Debug)]
pub(super) struct Protocols {
    /// TLS connections: HTTP/1.1 or HTTP/2 (ALPN or prior knowledge) read through rustls.
    pub(super) auto: auto::Builder<TokioExecutor>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// The listener's connection permits, whose use tells how many connections are open.
    permits: Arc<Semaphore>,
    max_connections: usize,
}

impl Protocols {
    pub(super) fn new(opts: &ServeOptions, permits: Arc<Semaphore>) -> Protocols {
        let mut auto = auto::Builder::new(TokioExecutor::new());
        configure_http1(&mut auto.http1(), opts);
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(head_limit::h2_max_header_list_size(opts.max_header_bytes));
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(opts.max_header_bytes);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(head_limit::h2_max_header_list_size(opts.max_header_bytes));
        Protocols {
            auto,
            http1,
            http2,
            permits,
            max_connections: opts.max_connections,
        }
    }

    fn open_connections(&self) -> usize {
        self.max_connections
            .saturating_sub(self.permits.available_permits())
    }
}

fn configure_http1(b: &mut auto::Http1Builder<'_, TokioExecutor>, opts: &ServeOptions) {
    b.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(opts.max_header_bytes);
}

type PlainIo = Answering<Rewound<Watched>>;

/// What hyper's HTTP/1.1 and HTTP/2 connections need of the service they serve (the one
/// `super::service` builds for each connection), named once for every stage here.
pub(super) trait ConnService:
    HttpService<
        Incoming,
        Future: Unpin + Send + 'static,
        Error: Into<super::BoxError>,
        ResBody: Send + 'static + http_body::Body<Data: Send, Error: Into<super::BoxError>>,
    > + Clone
    + Unpin
    + Send
    + 'static
{
}

impl<S> ConnService for S where
    S: HttpService<
            Incoming,
            Future: Unpin + Send + 'static,
            Error: Into<super::BoxError>,
            ResBody: Send + 'static + http_body::Body<Data: Send, Error: Into<super::BoxError>>,
        > + Clone
        + Unpin
        + Send
        + 'static
{
}

/// A parked connection: its socket, and who is at the other end (PROXY protocol), to
/// build the next hyper connection's service with. Nothing else is kept.
pub(super) struct Parked {
    pub(super) watched: Watched,
    pub(super) peer: Arc<super::Peer>,
}

/// Serves a plain-TCP connection: sniffs HTTP/2 prior knowledge, else serves HTTP/1.1
/// until it parks. `Some`: parked, the socket to wait on.
pub(super) async fn serve_plain<S>(
    io: Rewound<Watched>,
    service: S,
    peer: SocketAddr,
    state: &Arc<ConnState>,
    protocols: &Protocols,
    opts: &ServeOptions,
    life: &Lifecycle,
) -> Option<Watched>
where
    S: ConnService,
{
    let (start, watched) = sniff(io, peer, state, opts, life).await?;
    if start.starts_with(H2_PREFACE_START) {
        let io = TokioIo::new(Answering::new(Rewound::new(start, watched), state.clone()));
        let mut conn = std::pin::pin!(protocols.http2.serve_connection(io, service));
        super::watch(conn.as_mut(), peer, state, opts, life).await;
        return None;
    }
    serve_http1(watched, start, service, peer, state, protocols, opts, life).await
}

/// Serves HTTP/1.1 on `watched`, `unread` (bytes already read from it) first, until the
/// connection parks with nothing unread (`Some`) or ends (`None`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_http1<S>(
    mut watched: Watched,
    mut unread: Bytes,
    service: S,
    peer: SocketAddr,
    state: &Arc<ConnState>,
    protocols: &Protocols,
    opts: &ServeOptions,
    life: &Lifecycle,
) -> Option<Watched>
where
    S: ConnService,
{
    loop {
        let io = TokioIo::new(Answering::new(Rewound::new(unread, watched), state.clone()));
        let conn = Box::new(protocols.http1.serve_connection(io, service.clone()));
        (watched, unread) = drive(conn, peer, state, protocols, opts, life).await?;
        if unread.is_empty() {
            return Some(watched);
        }
    }
}

/// Reads the connection's first bytes, up to the four that tell HTTP/2's preface from an
/// HTTP/1 request, under the head clock. `None`: closed.
async fn sniff(
    mut io: Rewound<Watched>,
    peer: SocketAddr,
    state: &ConnState,
    opts: &ServeOptions,
    life: &Lifecycle,
) -> Option<(Bytes, Watched)> {
    let mut buf = BytesMut::with_capacity(H2_PREFACE_START.len());
    let read = async {
        while buf.len() < H2_PREFACE_START.len() && H2_PREFACE_START.starts_with(&buf) {
            if io.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
        }
        Some(())
    };
    let deadline = state
        .deadline(opts)
        .map_or_else(|| Instant::now() + opts.header_read_timeout, |(at, _)| at);
    tokio::select! {
        read = read => read?,
        () = tokio::time::sleep_until(deadline) => {
            tracing::debug!(%peer, "request head not received in time; closing");
            if let Some(c) = &opts.closed_header_timeout { c.increment(1) }
            return None;
        }
        // Not on a drain: the client of a connection just accepted is sending its first
        // request, which hyper serves (with `Connection: close`) on a connection that
        // has not asked yet; closing it here would refuse it. The head clock bounds it.
        () = life.force.cancelled() => return None,
    }
    let (rest, watched) = io.into_inner();
    if !rest.is_empty() {
        // Bytes read past a PROXY header, beyond the four looked at.
        buf.extend_from_slice(&rest);
    }
    Some((buf.freeze(), watched))
}

/// How one hyper HTTP/1.1 connection ended.
enum Ended {
    /// hyper closed it, or it failed: the socket is done.
    Closed,
    /// Parked: the socket and the bytes read from it that hyper did not parse.
    Parked,
}

/// Drives one hyper connection like [`super::watch`] (same clocks, same drain), and
/// parks it when it is idle. `Some`: the socket and its unread bytes, to park.
async fn drive<S>(
    mut conn: Box<http1::Connection<TokioIo<PlainIo>, S>>,
    peer: SocketAddr,
    state: &ConnState,
    protocols: &Protocols,
    opts: &ServeOptions,
    life: &Lifecycle,
) -> Option<(Watched, Bytes)>
where
    S: ConnService,
{
    let park = &opts.park;
    let mut closing = false;
    let mut draining = false;
    let ended = loop {
        if draining && !closing && !state.head_arriving() {
            closing = true;
            Pin::new(&mut *conn).graceful_shutdown();
        }
        let deadline = if closing { None } else { state.deadline(opts) };
        let park_at = if closing {
            None
        } else {
            state.park_at(park.after)
        };
        let mut look_again = super::drain_aware(opts.shortest_clock(), draining);
        if !park.after.is_zero() {
            look_again = look_again.min(park.after);
        }
        let look_again = Instant::now() + look_again;
        let wake_at = [deadline.map(|(at, _)| at), park_at]
            .into_iter()
            .flatten()
            .fold(look_again, Instant::min);
        let at_once = park.after.is_zero() || protocols.open_connections() > park.at_once_above;
        tokio::select! {
            // Biased, the connection first: hyper must have read the bytes at hand before
            // a drain's `graceful_shutdown`, which closes a connection on which hyper has
            // seen nothing yet, and the request waiting in `unread` with it.
            biased;
            // The connection, or `None` when a poll left it idle and it parks at once.
            polled = poll_fn(|cx| match conn.poll_without_shutdown(cx) {
                Poll::Ready(result) => Poll::Ready(Some(result)),
                Poll::Pending if !closing && at_once && state.parkable() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }) => match polled {
                Some(Ok(())) => break Ended::Closed,
                Some(Err(e)) => {
                    // hyper shuts a connection down before reporting the error it
                    // answered (a 431); after any other, the shutdown fails at once.
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                    break Ended::Closed;
                }
                None => match try_park(&mut conn, state).await {
                    Some(ended) => break ended,
                    None => closing = true,
                },
            },
            () = tokio::time::sleep_until(wake_at), if !closing => {
                let now = Instant::now();
                match state.deadline(opts).filter(|(at, _)| *at <= now) {
                    Some((_, Expiry::HeaderRead)) => {
                        tracing::debug!(%peer, "request head not received in time; closing");
                        if let Some(c) = &opts.closed_header_timeout { c.increment(1) }
                        return None;
                    }
                    Some((_, Expiry::Send)) => {
                        tracing::debug!(%peer, "client stopped reading; closing");
                        if let Some(c) = &opts.closed_send_timeout { c.increment(1) }
                        return None;
                    }
                    Some((_, Expiry::Idle)) => {
                        if let Some(c) = &opts.closed_idle { c.increment(1) }
                        closing = true;
                        Pin::new(&mut *conn).graceful_shutdown();
                    }
                    None => {
                        if state.park_at(park.after).is_some_and(|at| at <= now) {
                            match try_park(&mut conn, state).await {
                                Some(ended) => break ended,
                                None => closing = true,
                            }
                        }
                    }
                }
            }
            // Acted on at the top of the loop, once no request head is on its way.
            () = life.shutdown.cancelled(), if !draining => draining = true,
            () = life.force.cancelled() => return None,
        }
    };
    let parts = conn.into_parts();
    let mut answering = parts.io.into_inner();
    match ended {
        Ended::Parked => {
            let (prefix, watched) = answering.into_inner().into_inner();
            // hyper's bytes came before the prefix's rest. An empty read buffer still
            // holds hyper's 8 KiB allocation: it is dropped here.
            let unread = match (parts.read_buf.is_empty(), prefix.is_empty()) {
                (true, _) => prefix,
                (false, true) => Bytes::copy_from_slice(&parts.read_buf),
                (false, false) => [&parts.read_buf[..], &prefix[..]].concat().into(),
            };
            Some((watched, unread))
        }
        Ended::Closed => {
            // What hyper's own shutdown would have done (the gateway's 431 included).
            // Bounded like any write: a client that stopped reading is not waited for.
            let _ = tokio::select! {
                r = answering.shutdown() => r,
                () = tokio::time::sleep(opts.send_timeout) => Ok(()),
                () = life.force.cancelled() => Ok(()),
            };
            None
        }
    }
}

/// Asks an idle connection to end and checks that it ended at once, with no I/O.
/// `None`: hyper was not idle; the connection closes after its exchange.
async fn try_park<S>(
    conn: &mut http1::Connection<TokioIo<PlainIo>, S>,
    state: &ConnState,
) -> Option<Ended>
where
    S: ConnService,
{
    let moved = state.io_count();
    Pin::new(&mut *conn).graceful_shutdown();
    match poll_fn(|cx| Poll::Ready(conn.poll_without_shutdown(cx))).await {
        Poll::Ready(Ok(())) if state.io_count() == moved => Some(Ended::Parked),
        Poll::Ready(_) => Some(Ended::Closed),
        Poll::Pending => None,
    }
}

/// Waits, holding no buffer, until the parked socket is readable (`true`), or says to
/// close it: idle timeout, drain, forced stop. Part of every parked connection's task,
/// so kept small: not an `async fn` (see `serve_connection`), no `select!`.
#[allow(clippy::manual_async_fn)]
pub(super) fn wait_parked<'a>(
    watched: &'a Watched,
    peer: &'a SocketAddr,
    state: &'a ConnState,
    opts: &'a ServeOptions,
    life: &'a Lifecycle,
) -> impl Future<Output = bool> + 'a {
    async move {
        let idle_until = match state.deadline(opts) {
            Some((at, Expiry::Idle)) => at,
            // Parked only when idle; anything else is not a connection to keep.
            _ => return false,
        };
        if let Some(g) = &opts.park.parked {
            g.increment(1.0);
        }
        // Polled by hand rather than with `select!` over `readable()`: this future is part
        // of every parked connection's task, and readiness needs no future of its own. The
        // drain's signal alone ends it: the forced stop comes only after the drain's.
        let idle = tokio::time::sleep_until(idle_until);
        let drain = life.shutdown.cancelled();
        let mut idle = std::pin::pin!(idle);
        let mut drain = std::pin::pin!(drain);
        let unparked = poll_fn(|cx| {
            // Readable first: a drain does not close a connection whose request arrived.
            if let Poll::Ready(ready) = watched.inner.poll_read_ready(cx) {
                return Poll::Ready(ready.is_ok());
            }
            if idle.as_mut().poll(cx).is_ready() {
                tracing::trace!(%peer, "parked connection idle too long; closing");
                if let Some(c) = &opts.closed_idle {
                    c.increment(1)
                }
                return Poll::Ready(false);
            }
            match drain.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        if let Some(g) = &opts.park.parked {
            g.decrement(1.0);
        }
        unparked
    }
}
