//! The response body type of both listeners: a small body the gateway wrote itself, or
//! the upstream's body streamed through; optionally told, when hyper is done with it, how
//! many bytes went out and whether it ended (the access log's hook).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::upstream::PooledBody;

/// Called once, when the response body is dropped: the bytes sent and whether the body
/// reached its end.
pub trait OnEnd: Send {
    fn ended(self: Box<Self>, bytes_out: u64, complete: bool);
}

/// A response body.
#[derive(Debug)]
pub struct Body {
    kind: Kind,
    sent: u64,
    complete: bool,
    on_end: Option<Hook>,
}

struct Hook(Box<dyn OnEnd>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnEnd")
    }
}

#[derive(Debug)]
enum Kind {
    /// Written by the gateway; `None` once sent (or when empty).
    Full(Option<Bytes>),
    /// The upstream's body.
    Streamed(PooledBody),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body::of(Kind::Full((!bytes.is_empty()).then_some(bytes)))
    }

    pub fn empty() -> Body {
        Body::of(Kind::Full(None))
    }

    fn of(kind: Kind) -> Body {
        Body {
            kind,
            sent: 0,
            complete: false,
            on_end: None,
        }
    }

    /// Tells `hook` when hyper is done with this body.
    pub fn on_end(mut self, hook: Box<dyn OnEnd>) -> Body {
        self.on_end = Some(Hook(hook));
        self
    }
}

impl From<PooledBody> for Body {
    fn from(body: PooledBody) -> Body {
        Body::of(Kind::Streamed(body))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = match &mut this.kind {
            Kind::Streamed(body) => Pin::new(body).poll_frame(cx),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                this.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(None) => this.complete = true,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Streamed(body) => body.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Streamed(body) => body.size_hint(),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(Hook(hook)) = self.on_end.take() {
            let complete = self.complete || http_body::Body::is_end_stream(self);
            hook.ended(self.sent, complete);
        }
    }
}
