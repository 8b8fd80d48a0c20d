//! The upstream's response body, holding the connection it arrives on: the connection
//! goes back to the pool once the body was read to its end, and is closed (dropped) when
//! the body is abandoned halfway, since the rest of that body would still arrive on it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::Checkin;

/// A response body streamed from a pooled upstream connection.
#[derive(Debug)]
pub struct PooledBody {
    incoming: Incoming,
    conn: Checkin,
}

impl PooledBody {
    pub(super) fn new(incoming: Incoming, conn: Checkin) -> PooledBody {
        PooledBody { incoming, conn }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.incoming).poll_frame(cx);
        // hyper stops polling once `is_end_stream` says so, and never polls a body it
        // knows is empty: both end here or in `drop`.
        if matches!(frame, Poll::Ready(None)) || this.incoming.is_end_stream() {
            this.conn.done();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.incoming.is_end_stream() {
            self.conn.done();
        }
    }
}
