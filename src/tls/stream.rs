//! A server connection's IO: plain, or TLS with the handshake done lazily.
//!
//! The handshake is not awaited in the accept loop (one slow client would stall every
//! other) nor before the connection is handed to hyper: [`ServerStream`] starts it on
//! the connection's first read or write, inside the connection task. The server's
//! watchdog therefore bounds it with the same header-read clock as the first request
//! head, and a drain or forced shutdown cancels it like any other connection. The IO
//! below it sees raw (encrypted) bytes, which is what the server's clocks count.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{Accept, TlsAcceptor};

use super::Acceptor;

/// A server connection's IO.
pub struct ServerStream<IO> {
    state: State<IO>,
    peer: SocketAddr,
}

impl<IO> std::fmt::Debug for ServerStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Plain(_) => "plain",
            State::Handshaking(_) => "handshaking",
            State::Tls(_) => "tls",
            State::Failed => "failed",
        };
        f.debug_struct("ServerStream")
            .field("state", &state)
            .field("peer", &self.peer)
            .finish()
    }
}

enum State<IO> {
    Plain(IO),
    Handshaking(Box<Accept<IO>>),
    Tls(Box<TlsStream<IO>>),
    Failed,
}

/// The stream, once any handshake is done.
enum Ready<'a, IO> {
    Plain(&'a mut IO),
    Tls(&'a mut TlsStream<IO>),
}

impl<IO: AsyncRead + AsyncWrite + Unpin> ServerStream<IO> {
    /// `io` as is when `tls` is `None`; else TLS with the acceptor's current config, the
    /// handshake starting on first use. `peer` is for the handshake failure log.
    pub fn new(io: IO, tls: Option<&Acceptor>, peer: SocketAddr) -> Self {
        let state = match tls {
            None => State::Plain(io),
            Some(acceptor) => {
                State::Handshaking(Box::new(TlsAcceptor::from(acceptor.config()).accept(io)))
            }
        };
        ServerStream { state, peer }
    }

    /// The ALPN protocol negotiated, once the handshake is done.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.state {
            State::Tls(tls) => tls.get_ref().1.alpn_protocol(),
            _ => None,
        }
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Ready<'_, IO>>> {
        if let State::Handshaking(accept) = &mut self.state {
            match ready!(Pin::new(accept.as_mut()).poll(cx)) {
                Ok(tls) => self.state = State::Tls(Box::new(tls)),
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                    self.state = State::Failed;
                    return Poll::Ready(Err(e));
                }
            }
        }
        Poll::Ready(match &mut self.state {
            State::Plain(io) => Ok(Ready::Plain(io)),
            State::Tls(tls) => Ok(Ready::Tls(tls.as_mut())),
            State::Handshaking(_) | State::Failed => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            )),
        })
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match ready!(self.get_mut().poll_ready(cx))? {
            Ready::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Ready::Tls(tls) => Pin::new(tls).poll_read(cx, buf),
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match ready!(self.get_mut().poll_ready(cx))? {
            Ready::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Ready::Tls(tls) => Pin::new(tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match ready!(self.get_mut().poll_ready(cx))? {
            Ready::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Ready::Tls(tls) => Pin::new(tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.state {
            State::Plain(io) => io.is_write_vectored(),
            State::Tls(tls) => tls.is_write_vectored(),
            State::Handshaking(_) | State::Failed => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Plain(io) => Pin::new(io).poll_flush(cx),
            State::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
            State::Handshaking(_) | State::Failed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Plain(io) => Pin::new(io).poll_shutdown(cx),
            State::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
            // Nothing was said yet; dropping the socket is the whole goodbye.
            State::Handshaking(_) | State::Failed => Poll::Ready(Ok(())),
        }
    }
}
