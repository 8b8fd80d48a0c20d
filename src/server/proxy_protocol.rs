//! The PROXY protocol (v1 text, v2 binary) on the proxy listener: a load balancer in TCP
//! mode says, before anything else on the connection, which client it carries.
//!
//! `open` runs first on each accepted socket, before TLS and hyper, on the head clock
//! (the PROXY header, the TLS handshake and the first request head share one deadline,
//! `header_read_timeout` from accept, so half a header is cut off like a slowloris).
//! Per `listen.proxy_protocol`:
//! - `off`: nothing is read; the socket goes on as it is.
//! - `accept`: the first bytes are read until they tell whether a header begins (its
//!   signature, [`start`]). None: the connection goes on, every byte read replayed
//!   ([`Rewound`]). A header from a peer outside `trusted_proxies` closes the connection
//!   as soon as its signature is seen; from a trusted peer it is read whole and parsed,
//!   and its source address becomes the client ([`Peer::proxied`]).
//! - `require`: the same, but a connection from an untrusted peer is closed at once and
//!   one without a header from a trusted peer is closed too.
//!
//! A v2 `LOCAL` header (a load balancer's own health check), a v2 header without an IP
//! address family and a v1 `UNKNOWN` keep the TCP peer as the client. The header is
//! parsed by the `ppp` crate; this module only recognises the two signatures, finds the
//! end of a v1 line (ppp would misread one cut at a space), buffers, enforces trust and
//! replays what followed the header (the HTTP request, or the TLS ClientHello). Each refusal is counted in [`crate::metrics::PROXY_PROTOCOL_REJECTED`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use metrics::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Peer, ServeOptions};
use crate::config::{ProxyProtocol, TrustedProxies};

/// The v1 header's first bytes (`PROXY TCP4 …\r\n`).
pub const V1_SIGNATURE: &[u8] = b"PROXY ";
/// The v2 header's first 12 bytes.
pub const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Room for a v1 header (at most 107 bytes) or a usual v2 one, with what follows in the
/// same segment; a longer v2 header grows the buffer.
const READ_CHUNK: usize = 1024;

/// The longest v1 header, CRLF included.
const V1_MAX_LEN: usize = 107;

/// PROXY protocol on one listener: the mode, whose headers count, the refusal counters.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub mode: ProxyProtocol,
    pub trusted: Arc<TrustedProxies>,
    rejected: Option<Rejections>,
}

impl Settings {
    /// `mode` with headers believed from `trusted`, refusals counted (resolve after the
    /// metrics recorder is installed).
    pub fn new(mode: ProxyProtocol, trusted: Arc<TrustedProxies>) -> Settings {
        Settings {
            mode,
            trusted,
            rejected: Some(Rejections::new()),
        }
    }

    fn count(&self, refusal: Refusal) {
        if let Some(r) = &self.rejected {
            r.by_reason[refusal as usize].increment(1);
        }
    }
}

/// Why a connection was closed over its PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A header from a peer outside `trusted_proxies` (or, with `require`, any
    /// connection from one).
    Untrusted = 0,
    /// `require`, and a trusted peer sent no header.
    Missing = 1,
    /// The header broke the grammar.
    Malformed = 2,
    /// The peer closed its side before the header was complete.
    Truncated = 3,
}

impl Refusal {
    /// The `reason` label values, indexed by [`Refusal`].
    pub const REASONS: [&'static str; 4] = ["untrusted", "missing", "malformed", "truncated"];

    pub fn as_str(self) -> &'static str {
        Refusal::REASONS[self as usize]
    }
}

/// [`crate::metrics::PROXY_PROTOCOL_REJECTED`] handles, by [`Refusal`].
#[derive(Debug, Clone)]
struct Rejections {
    by_reason: [Counter; Refusal::REASONS.len()],
}

impl Rejections {
    fn new() -> Rejections {
        Rejections {
            by_reason: Refusal::REASONS.map(
                |reason| ::metrics::counter!(crate::metrics::PROXY_PROTOCOL_REJECTED, "reason" => reason),
            ),
        }
    }
}

/// Which header version a signature announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Too few bytes to tell: what came is the beginning of a signature.
    NeedMore,
    /// No PROXY header: the bytes are the connection's own (HTTP, TLS).
    Plain,
    /// A header of this version begins.
    Header(Version),
}

/// Tells from the first bytes whether a PROXY header begins.
pub fn start(buf: &[u8]) -> Start {
    let matches = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    if buf.len() >= V2_SIGNATURE.len() && buf.starts_with(V2_SIGNATURE) {
        Start::Header(Version::V2)
    } else if buf.len() >= V1_SIGNATURE.len() && buf.starts_with(V1_SIGNATURE) {
        Start::Header(Version::V1)
    } else if matches(V1_SIGNATURE) || matches(V2_SIGNATURE) {
        // (An empty buffer begins both.)
        Start::NeedMore
    } else {
        Start::Plain
    }
}

/// A header read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes may complete it.
    Incomplete,
    /// No number of further bytes makes it valid.
    Invalid,
    /// A whole header of `len` bytes. `source` is the client it names; `None` for v2
    /// `LOCAL`, a v2 header of no IP family, or v1 `UNKNOWN`: the TCP peer is the client.
    Complete {
        len: usize,
        source: Option<SocketAddr>,
    },
}

/// Parses the header of `version` at the start of `buf` (which may hold more after it).
pub fn parse(version: Version, buf: &[u8]) -> Parsed {
    use ppp::PartialResult;
    match version {
        // ppp takes a v1 header cut at a space (`… 51234 `) for a bad one, so it only
        // ever sees a whole line: up to the first CRLF, which must end within 107 bytes.
        Version::V1 => match buf.iter().take(V1_MAX_LEN - 1).position(|&b| b == b'\r') {
            None if buf.len() < V1_MAX_LEN => Parsed::Incomplete,
            None => Parsed::Invalid,
            Some(cr) => match buf.get(cr + 1) {
                None => Parsed::Incomplete,
                Some(b'\n') => parse_v1_line(&buf[..cr + 2]),
                Some(_) => Parsed::Invalid,
            },
        },
        Version::V2 => match ppp::v2::Header::try_from(buf) {
            Ok(header) => {
                let source = match (header.command, header.addresses) {
                    (ppp::v2::Command::Local, _) => None,
                    (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    (
                        ppp::v2::Command::Proxy,
                        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_),
                    ) => None,
                };
                Parsed::Complete {
                    len: header.len(),
                    source,
                }
            }
            Err(e) if e.is_incomplete() => Parsed::Incomplete,
            Err(_) => Parsed::Invalid,
        },
    }
}

/// A v1 header line, CRLF included.
fn parse_v1_line(line: &[u8]) -> Parsed {
    match ppp::v1::Header::try_from(line) {
        Ok(header) if header.header.len() == line.len() => {
            let source = match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => None,
            };
            Parsed::Complete {
                len: line.len(),
                source,
            }
        }
        // A whole line that is no header (or a header ending before the LF) stays bad.
        _ => Parsed::Invalid,
    }
}

/// Why [`read`] gave up on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    Refused(Refusal),
    /// The peer closed before sending a byte (a TCP health check): nothing to count.
    Silently,
}

/// Reads the PROXY header, if any, from `io` (mode `accept` or `require`): the bytes
/// read past it, and the client it names (`tcp` when none).
async fn read<IO: AsyncRead + Unpin>(
    io: &mut IO,
    tcp: SocketAddr,
    settings: &Settings,
) -> Result<(Bytes, SocketAddr), Closed> {
    let require = settings.mode == ProxyProtocol::Require;
    let trusted = settings.trusted.contains(tcp.ip());
    if require && !trusted {
        return Err(Closed::Refused(Refusal::Untrusted));
    }
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let version = loop {
        match start(&buf) {
            Start::NeedMore => {}
            Start::Plain if require => return Err(Closed::Refused(Refusal::Missing)),
            Start::Plain => return Ok((buf.freeze(), tcp)),
            Start::Header(_) if !trusted => return Err(Closed::Refused(Refusal::Untrusted)),
            Start::Header(version) => break version,
        }
        fill(io, &mut buf).await?;
    };
    loop {
        match parse(version, &buf) {
            Parsed::Complete { len, source } => {
                let rest = buf.split_off(len).freeze();
                return Ok((rest, source.unwrap_or(tcp)));
            }
            Parsed::Invalid => return Err(Closed::Refused(Refusal::Malformed)),
            Parsed::Incomplete => fill(io, &mut buf).await?,
        }
    }
}

/// Reads more of the header; the end of the stream ends it.
async fn fill<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut BytesMut) -> Result<(), Closed> {
    buf.reserve(READ_CHUNK);
    match io.read_buf(buf).await {
        Ok(0) if buf.is_empty() => Err(Closed::Silently),
        Ok(0) => Err(Closed::Refused(Refusal::Truncated)),
        Ok(_) => Ok(()),
        Err(_) => Err(Closed::Silently),
    }
}

/// Reads the PROXY header the listener's mode asks for, under the head clock (which
/// started at accept, so this deadline is the watchdog's), and builds the connection's
/// [`Peer`]. `None`: the connection is to be closed (counted as a refusal, or as a
/// head-read timeout).
pub(super) async fn open<IO: AsyncRead + Unpin>(
    mut io: IO,
    tcp: SocketAddr,
    opts: &ServeOptions,
    force: &CancellationToken,
) -> Option<(Rewound<IO>, Peer)> {
    let settings = &opts.proxy_protocol;
    if settings.mode == ProxyProtocol::Off {
        return Some((Rewound::new(Bytes::new(), io), Peer::new(tcp)));
    }
    let deadline = Instant::now() + opts.header_read_timeout;
    let outcome = tokio::select! {
        outcome = read(&mut io, tcp, settings) => outcome,
        () = tokio::time::sleep_until(deadline) => {
            tracing::debug!(peer = %tcp, "PROXY header not received in time; closing");
            if let Some(c) = &opts.closed_header_timeout {
                c.increment(1);
            }
            return None;
        }
        () = force.cancelled() => return None,
    };
    match outcome {
        Ok((rest, client)) => Some((Rewound::new(rest, io), Peer::proxied(tcp, client))),
        Err(Closed::Silently) => None,
        Err(Closed::Refused(refusal)) => {
            tracing::debug!(peer = %tcp, reason = refusal.as_str(), "PROXY header refused; closing");
            settings.count(refusal);
            None
        }
    }
}

/// A stream that first yields bytes already read from it.
#[derive(Debug)]
pub struct Rewound<IO> {
    prefix: Bytes,
    inner: IO,
}

impl<IO> Rewound<IO> {
    pub fn new(prefix: Bytes, inner: IO) -> Rewound<IO> {
        Rewound { prefix, inner }
    }

    /// The bytes not yet read again, and the stream.
    pub fn into_inner(self) -> (Bytes, IO) {
        (self.prefix, self.inner)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewound<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        if self.prefix.is_empty() {
            // Frees the read buffer the prefix shares.
            self.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewound<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests;
