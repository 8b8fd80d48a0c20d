//! The response body type of both listeners: either a streamed upstream body or a small
//! body the gateway wrote itself, with an optional guard dropped when the response is
//! finished (hyper drops the body once it is fully written, or when the client goes away).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use crate::server::RequestGuard;

/// A response body.
#[derive(Debug)]
pub struct Body {
    kind: Kind,
    _guard: Option<RequestGuard>,
}

#[derive(Debug)]
enum Kind {
    Streamed(Incoming),
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

    pub fn streamed(incoming: Incoming) -> Body {
        Body {
            kind: Kind::Streamed(incoming),
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
            Kind::Streamed(incoming) => Pin::new(incoming).poll_frame(cx),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Streamed(incoming) => incoming.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Streamed(incoming) => incoming.size_hint(),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
