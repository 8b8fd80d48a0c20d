//! The response body type of both listeners: a small body the gateway wrote itself, or
//! the upstream's body streamed through.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::upstream::PooledBody;

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// Written by the gateway; `None` once sent (or when empty).
    Full(Option<Bytes>),
    /// The upstream's body.
    Streamed(PooledBody),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body::Full((!bytes.is_empty()).then_some(bytes))
    }

    pub fn empty() -> Body {
        Body::Full(None)
    }
}

impl From<PooledBody> for Body {
    fn from(body: PooledBody) -> Body {
        Body::Streamed(body)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Streamed(body) => Pin::new(body).poll_frame(cx),
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Streamed(body) => body.is_end_stream(),
            Body::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Streamed(body) => body.size_hint(),
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
