//! The response body type of both listeners: either a streamed upstream body or a small
//! body the gateway wrote itself, with an optional guard dropped when the response is
//! finished (hyper drops the body once it is fully written, or when the client goes away).
//! A streamed body holds its upstream connection and returns it to the pool once the
//! body was read to its end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;

use crate::pool::Checkin;
use crate::server::RequestGuard;

/// A response body.
#[derive(Debug)]
pub struct Body {
    kind: Kind,
    _guard: Option<RequestGuard>,
}

#[derive(Debug)]
enum Kind {
    Streamed(Incoming, Checkin),
    Full(Option<Bytes>),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            _guard: None,
        }
    }

    pub fn empty() -> Body {
        Body::full(Bytes::new())
    }

    /// The upstream's response body; `conn` goes back to the pool when it ended.
    pub fn streamed(incoming: Incoming, conn: Checkin) -> Body {
        Body {
            kind: Kind::Streamed(incoming, conn),
            _guard: None,
        }
    }

    /// Keeps `guard` alive until the body is dropped.
    pub fn with_guard(mut self, guard: RequestGuard) -> Body {
        self._guard = Some(guard);
        self
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Streamed(incoming, conn) => {
                let frame = Pin::new(&mut *incoming).poll_frame(cx);
                // hyper stops polling once `is_end_stream` says so, and never polls a
                // body it knows is empty: both end here or in `drop`.
                if matches!(frame, Poll::Ready(None)) || incoming.is_end_stream() {
                    conn.done();
                }
                frame
            }
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Streamed(incoming, _) => incoming.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Streamed(incoming, _) => incoming.size_hint(),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Kind::Streamed(incoming, conn) = &mut self.kind {
            if incoming.is_end_stream() {
                conn.done();
            }
        }
    }
}
