//! The client's request body on its way upstream, streamed frame by frame: cut off past
//! a byte limit (`limits.max_body_bytes` on protected routes), or when no data arrives
//! for `limits.body_read_timeout`. Either cut surfaces as the exchange's error, which
//! [`super::PoolError::classify`] recognises as the client's fault.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

/// A request body with a size limit and a stall timeout.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    remaining: u64,
    timeout: Duration,
    /// Armed lazily the first time the body has to wait, so a body that arrives in one
    /// go costs no timer.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes read so far, for the access log.
    counted: Option<Arc<AtomicU64>>,
}

impl RequestBody {
    /// `inner`, cut off past `limit` bytes or after `timeout` without data.
    pub fn new(inner: Incoming, limit: u64, timeout: Duration) -> RequestBody {
        RequestBody {
            inner,
            remaining: limit,
            timeout,
            stalled: None,
            counted: None,
        }
    }

    /// Adds every byte read to `counter`.
    pub fn counting(mut self, counter: Option<Arc<AtomicU64>>) -> RequestBody {
        self.counted = counter;
        self
    }
}

/// No request body data arrived within `limits.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled past limits.body_read_timeout")]
pub(super) struct BodyTimeout;

/// The body exceeded `limits.max_body_bytes` while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds limits.max_body_bytes")]
pub(super) struct BodyTooLarge;

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    this.remaining -= len;
                    if let Some(counted) = &this.counted {
                        counted.fetch_add(len, Ordering::Relaxed);
                    }
                }
                if let Some(sleep) = &mut this.stalled {
                    let deadline = tokio::time::Instant::now() + this.timeout;
                    sleep.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
