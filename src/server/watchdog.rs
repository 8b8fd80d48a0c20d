//! The per-connection watchdog's view of a connection: what the three clocks (head
//! read, idle, send) are measured from, updated with atomics only by the socket
//! ([`Watched`]) and by each request ([`RequestGuard`], held by the response body
//! through [`Guarded`]), and read by the watch loop in [`super::serve_connection`].

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use metrics::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ServeOptions;

#[derive(Debug, Clone, Copy)]
pub(super) enum Expiry {
    HeaderRead,
    Idle,
    Send,
}

const NONE: u64 = u64::MAX;

/// What the watchdog needs to know about one connection. Times are milliseconds since
/// `born`, so they fit in atomics.
#[derive(Debug)]
pub(super) struct ConnState {
    born: Instant,
    in_flight: AtomicUsize,
    /// When the first byte of a request not yet handed to the service arrived.
    head_since: AtomicU64,
    /// When the last response finished.
    idle_since: AtomicU64,
    /// When a write to the client started waiting for the socket to drain.
    write_blocked_since: AtomicU64,
    pub(super) is_h2: AtomicBool,
    /// Reads and writes that moved bytes, so far; only the socket ([`Watched`]) writes it.
    io_count: AtomicU64,
}

impl ConnState {
    pub(super) fn new() -> Self {
        ConnState {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            // A new connection must send its first request head in time.
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(NONE),
            is_h2: AtomicBool::new(false),
            io_count: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    pub(super) fn deadline(&self, opts: &ServeOptions) -> Option<(Instant, Expiry)> {
        let at = |ms: u64, d: Duration| self.born + Duration::from_millis(ms) + d;
        let blocked = self.write_blocked_since.load(Ordering::Acquire);
        if blocked != NONE {
            return Some((at(blocked, opts.send_timeout), Expiry::Send));
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_since.load(Ordering::Acquire) {
            NONE => Some((
                at(self.idle_since.load(Ordering::Acquire), opts.idle_timeout),
                Expiry::Idle,
            )),
            since => Some((at(since, opts.header_read_timeout), Expiry::HeaderRead)),
        }
    }

    /// Between two HTTP/1 requests with nothing moving: no request in flight, no byte
    /// of a new head read, no write waiting for the socket.
    pub(super) fn parkable(&self) -> bool {
        self.write_blocked_since.load(Ordering::Acquire) == NONE
            && self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Acquire) == NONE
            && !self.is_h2.load(Ordering::Relaxed)
    }

    /// When an idle connection is to be parked (`after` its last response), if it is.
    pub(super) fn park_at(&self, after: Duration) -> Option<Instant> {
        let idle_since = self.idle_since.load(Ordering::Acquire);
        self.parkable()
            .then(|| self.born + Duration::from_millis(idle_since) + after)
    }

    pub(super) fn io_count(&self) -> u64 {
        self.io_count.load(Ordering::Acquire)
    }

    /// A read or write moved bytes. One writer: a load and a store, no locked RMW.
    fn moved(&self) {
        let n = self.io_count.load(Ordering::Relaxed);
        self.io_count.store(n.wrapping_add(1), Ordering::Release);
    }

    /// A request head is on its way (the connection is new, or a byte of the next HTTP/1
    /// request arrived) and not yet handed to the service: a drain waits for it rather
    /// than close the connection under it (hyper's `graceful_shutdown` closes a
    /// connection on which it has not seen a whole head).
    pub(super) fn head_arriving(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Acquire) != NONE
    }

    /// No request is in flight and the connection is not HTTP/2: whatever hyper writes
    /// now is hyper's own, not a handler's response.
    pub(super) fn between_http1_requests(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.is_h2.load(Ordering::Relaxed)
    }

    /// Bytes arrived. On an idle HTTP/1 connection they start a request head. HTTP/2
    /// connections also carry control frames (window updates, pings) between requests,
    /// so only their first request is held to the head clock.
    fn on_bytes(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && !self.is_h2.load(Ordering::Relaxed)
            && self.head_since.load(Ordering::Acquire) == NONE
        {
            self.head_since.store(self.now(), Ordering::Release);
        }
    }
}

/// Lives as long as one request: from the head being parsed until its response body is
/// finished or abandoned.
#[derive(Debug)]
pub struct RequestGuard {
    conn: Arc<ConnState>,
    in_flight: Option<Gauge>,
}

impl RequestGuard {
    pub(super) fn start(conn: Arc<ConnState>, in_flight: Option<Gauge>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.head_since.store(NONE, Ordering::Release);
        if let Some(g) = &in_flight {
            g.increment(1.0);
        }
        RequestGuard { conn, in_flight }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if let Some(g) = &self.in_flight {
            g.decrement(1.0);
        }
        if self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn
                .idle_since
                .store(self.conn.now(), Ordering::Release);
        }
    }
}

/// The client socket, reporting arriving bytes to the watchdog.
pub(super) struct Watched {
    pub(super) inner: TcpStream,
    pub(super) state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_bytes();
            self.state.moved();
        }
        poll
    }
}

impl Watched {
    /// Starts or stops the send clock from the outcome of a write.
    fn on_write(&self, poll: &Poll<io::Result<usize>>) {
        let blocked = &self.state.write_blocked_since;
        if matches!(poll, Poll::Ready(Ok(n)) if *n > 0) {
            self.state.moved();
        }
        match poll {
            Poll::Pending => {
                if blocked.load(Ordering::Relaxed) == NONE {
                    blocked.store(self.state.now(), Ordering::Release);
                }
            }
            Poll::Ready(_) => {
                if blocked.load(Ordering::Relaxed) != NONE {
                    blocked.store(NONE, Ordering::Release);
                }
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request's [`RequestGuard`] until hyper is done with
/// it (written to its end, or dropped when the client went away).
#[derive(Debug)]
pub struct Guarded<B> {
    body: B,
    _guard: RequestGuard,
}

impl<B> Guarded<B> {
    pub(super) fn new(body: B, guard: RequestGuard) -> Guarded<B> {
        Guarded {
            body,
            _guard: guard,
        }
    }
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for Guarded<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
