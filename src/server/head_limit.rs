//! The request-head limit (`limits.max_header_bytes`) answered like every other error:
//! the gateway's JSON 431 ([`GatewayError::HeadTooLarge`]), on both protocols.
//!
//! - **HTTP/1.1**: hyper enforces the limit while it parses (its read buffer may not
//!   outgrow `max_buf_size`; more than 100 fields is also too large) and answers by
//!   itself, with no hook: it queues a bare head,
//!   `HTTP/1.1 431 Request Header Fields Too Large`, `content-length: 0`, `date`
//!   (and `connection: close`), flushes it, shuts the connection down and ends it with
//!   the parse error. [`Answering`] sits between hyper and the client stream (above
//!   TLS, so it sees plain bytes) and writes the gateway's response instead when hyper
//!   writes exactly that head while no request is in flight. No other response looks
//!   like it: the gateway's own carry a `Content-Type`, relayed ones a `Via`, and both
//!   are mostly written while their request is in flight. hyper is told its head was
//!   written; the gateway's answer goes out in full, over as many writes as the socket
//!   needs, before any flush or shutdown completes.
//! - **HTTP/2**: h2 checks the decoded field list against its
//!   `SETTINGS_MAX_HEADER_LIST_SIZE` and answers an oversized one with a bare 431 and
//!   `RST_STREAM(PROTOCOL_ERROR)` (a client may report the reset instead of the 431), or
//!   with `GOAWAY` past four times the setting. So the setting is
//!   [`h2_max_header_list_size`], twice the limit, and the service answers a request
//!   whose field list ([`h2_field_list_size`], counted as h2 counts it) is over the
//!   limit itself, with the JSON 431 and a clean end of stream. Only a list over twice
//!   the limit still meets h2's own answer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::Request;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::watchdog::ConnState;
use crate::error::GatewayError;

/// The status line hyper writes for a head over its limits.
const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n";

/// What HTTP/2 advertises and enforces itself: room above the limit, so that the
/// service sees (and answers) most oversized field lists.
pub(super) fn h2_max_header_list_size(max_header_bytes: usize) -> u32 {
    u32::try_from(max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX)
}

/// The size of an HTTP/2 request's field list as RFC 9113 §6.5.2 (and h2) count it:
/// name and value octets plus 32 for each field, pseudo-header fields included.
pub(super) fn h2_field_list_size<B>(req: &Request<B>) -> usize {
    const PER_FIELD: usize = 32;
    let uri = req.uri();
    let pseudo = [
        Some((":method", req.method().as_str())),
        uri.scheme_str().map(|s| (":scheme", s)),
        uri.authority().map(|a| (":authority", a.as_str())),
        uri.path_and_query().map(|p| (":path", p.as_str())),
    ];
    let pseudo: usize = pseudo
        .iter()
        .flatten()
        .map(|(name, value)| name.len() + value.len() + PER_FIELD)
        .sum();
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + PER_FIELD)
        .sum();
    pseudo + fields
}

/// If `buf` starts with hyper's own 431 head, its length and its `date` value.
fn hypers_431(buf: &[u8]) -> Option<(usize, Option<&[u8]>)> {
    let rest = buf.strip_prefix(HYPER_431)?;
    let mut date = None;
    let mut at = HYPER_431.len();
    for line in rest.split_inclusive(|&b| b == b'\n') {
        at += line.len();
        let line = line.strip_suffix(b"\r\n")?;
        if line.is_empty() {
            return Some((at, date));
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        match name.to_ascii_lowercase().as_slice() {
            b"date" => date = Some(value),
            b"content-length" if value == b"0" => {}
            b"connection" if value.eq_ignore_ascii_case(b"close") => {}
            _ => return None,
        }
    }
    None // the head does not end in this write
}

/// The gateway's 431, serialised for HTTP/1.1, with hyper's `date`.
fn answer(date: Option<&[u8]>) -> Bytes {
    let error = GatewayError::HeadTooLarge;
    let body = error.reply().body();
    let response = error.into_response();
    let status = response.status();
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut line = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in response.headers() {
        line(name.as_str().as_bytes(), value.as_bytes());
    }
    if !response.headers().contains_key(http::header::CONNECTION) {
        // hyper closes the connection after its 431 whatever the reply says.
        line(b"connection", b"close");
    }
    line(b"content-length", body.len().to_string().as_bytes());
    if let Some(date) = date {
        line(b"date", date);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// The client stream as hyper sees it, answering an oversized HTTP/1.1 head with the
/// gateway's 431 in place of hyper's.
pub(super) struct Answering<IO> {
    inner: IO,
    conn: Arc<ConnState>,
    /// What is left to write of the gateway's answer.
    answer: Bytes,
    /// The answer was made; hyper closes the connection after it.
    answered: bool,
}

impl<IO: AsyncWrite + Unpin> Answering<IO> {
    pub(super) fn new(inner: IO, conn: Arc<ConnState>) -> Self {
        Answering {
            inner,
            conn,
            answer: Bytes::new(),
            answered: false,
        }
    }

    /// The stream, once hyper is done with it (with no answer left to write: only an
    /// idle connection is taken apart).
    pub(super) fn into_inner(self) -> IO {
        self.inner
    }

    /// When `buf` is hyper's 431 head written between requests, takes the gateway's
    /// answer in its place and returns how many of hyper's bytes it stands for.
    fn replaces(&mut self, buf: &[u8]) -> Option<usize> {
        if self.answered || !buf.starts_with(HYPER_431) || !self.conn.between_http1_requests() {
            return None;
        }
        let (len, date) = hypers_431(buf)?;
        self.answer = answer(date);
        self.answered = true;
        Some(len)
    }

    /// Writes the rest of the gateway's answer, if any.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.answer.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.answer))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.answer.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// hyper's head counts as written once the answer has been taken; what the socket
    /// does not take now goes out on the flush hyper makes next.
    fn swallow(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Err(e)) = self.poll_answer(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(len))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Answering<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Answering<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(len) = this.replaces(buf) {
            return this.swallow(cx, len);
        }
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // hyper queues a head in one slice of its own.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if let Some(len) = this.replaces(first) {
                return this.swallow(cx, len);
            }
        }
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_answer(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
