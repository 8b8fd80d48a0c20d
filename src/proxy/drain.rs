//! Reading a refused request's small body to its end before answering, as nginx
//! discards request bodies, so that every HTTP/2 client can read the refusal.
//!
//! Over HTTP/2 an answer sent while the request body is still arriving is followed by
//! `RST_STREAM(NO_ERROR)` (RFC 9113 §8.1: the server need not read the rest). Some
//! clients take that reset for a failure and drop the answer with it: Debian's curl 7.88
//! reports `(92) Stream error` instead of the 401, most of the time, even when the whole
//! body was a 25-byte frame already on its way. Once the body has been read to its end
//! the stream closes cleanly, with no reset.
//!
//! Bounded so that a refused client cannot hold the gateway: at most [`LIMIT`] bytes,
//! within [`PATIENCE`] (or `limits.body_read_timeout`, if shorter). A declared
//! `Content-Length` over the bound is not read at all, a body growing past it stops
//! being read: a large refused upload is still cut short by the reset. A request with
//! `Expect` is never read: reading would invite its body (`100 Continue`).
//!
//! HTTP/1.1 needs none of this. hyper answers, then reads whatever of the unread body
//! has already arrived; if that ends the body the connection stays open, otherwise
//! hyper closes it after the answer, which the client has already been sent in full.

use std::time::Duration;

use bytes::Buf;
use http::{header, request, Version};
use http_body::Body;
use http_body_util::BodyExt;

/// The most body bytes read for a refused request.
pub(super) const LIMIT: u64 = 64 * 1024;

/// The longest a refused request's body is waited for.
pub(super) const PATIENCE: Duration = Duration::from_secs(1);

/// Reads and drops the body of a refused HTTP/2 request when it is small and arrives
/// promptly. Returns whether it was read to its end (otherwise it was left alone, or
/// abandoned part-read).
pub(super) async fn discard<B>(
    head: &request::Parts,
    mut body: B,
    body_read_timeout: Duration,
) -> bool
where
    B: Body + Unpin,
{
    if head.version != Version::HTTP_2 || head.headers.contains_key(header::EXPECT) {
        return false;
    }
    if body.is_end_stream() {
        return true;
    }
    // hyper's HTTP/2 body reports a declared Content-Length as its exact size.
    if body.size_hint().lower() > LIMIT {
        return false;
    }
    let read_to_end = async {
        let mut read = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                read += data.remaining() as u64;
                if read > LIMIT {
                    return false;
                }
            }
        }
        true
    };
    let drained = tokio::time::timeout(PATIENCE.min(body_read_timeout), read_to_end)
        .await
        .unwrap_or(false);
    if !drained {
        tracing::debug!("refused request's body left unread: over the bound or too slow");
    }
    drained
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http::Request;
    use http_body::{Frame, SizeHint};
    use http_body_util::channel::{Channel, Sender};

    use super::*;

    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn head(version: Version, expect: bool) -> request::Parts {
        let mut req = Request::post("/m2/acme/v2/profile/batchUpdate").version(version);
        if expect {
            req = req.header(header::EXPECT, "100-continue");
        }
        req.body(()).unwrap().into_parts().0
    }

    fn h2() -> request::Parts {
        head(Version::HTTP_2, false)
    }

    const WAIT: Duration = Duration::from_secs(20);

    /// A body of a declared length that must never be read.
    struct Untouchable(u64);

    impl Body for Untouchable {
        type Data = Bytes;
        type Error = Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
            panic!("the body was read")
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0)
        }
    }

    fn channel() -> (Sender<Bytes, Error>, Channel<Bytes, Error>) {
        Channel::new(1)
    }

    #[tokio::test]
    async fn a_small_body_is_read_to_its_end() {
        let (mut tx, body) = channel();
        let feed = tokio::spawn(async move {
            tx.send_data(Bytes::from_static(b"pcId,profile.tier\n1,gold\n"))
                .await
                .unwrap();
        });
        assert!(discard(&h2(), body, WAIT).await);
        feed.await.unwrap();
    }

    #[tokio::test]
    async fn a_body_up_to_the_bound_is_read_to_its_end() {
        let (mut tx, body) = channel();
        let feed = tokio::spawn(async move {
            for _ in 0..LIMIT / 1024 {
                tx.send_data(Bytes::from(vec![b'a'; 1024])).await.unwrap();
            }
        });
        assert!(discard(&h2(), body, WAIT).await);
        feed.await.unwrap();
    }

    #[tokio::test]
    async fn a_body_growing_past_the_bound_stops_being_read() {
        let (mut tx, body) = channel();
        let feed = tokio::spawn(async move {
            let mut sent = 0u64;
            while tx
                .send_data(Bytes::from(vec![b'a'; 16 * 1024]))
                .await
                .is_ok()
            {
                sent += 16 * 1024;
            }
            sent
        });
        assert!(!tokio::time::timeout(WAIT, discard(&h2(), body, WAIT))
            .await
            .unwrap());
        let sent = feed.await.unwrap();
        assert!(sent <= LIMIT + 32 * 1024, "{sent} bytes taken");
    }

    #[tokio::test]
    async fn a_declared_length_over_the_bound_is_not_read() {
        assert!(!discard(&h2(), Untouchable(LIMIT + 1), WAIT).await);
        assert!(!discard(&h2(), Untouchable(1 << 20), WAIT).await);
    }

    #[tokio::test]
    async fn a_body_behind_expect_is_not_read() {
        assert!(!discard(&head(Version::HTTP_2, true), Untouchable(25), WAIT).await);
    }

    #[tokio::test]
    async fn http_1_bodies_are_left_to_hyper() {
        assert!(!discard(&head(Version::HTTP_11, false), Untouchable(25), WAIT).await);
    }

    #[tokio::test]
    async fn a_stalled_body_is_abandoned_after_the_timeout() {
        let (tx, body) = channel();
        let timeout = Duration::from_millis(50);
        assert!(!tokio::time::timeout(WAIT, discard(&h2(), body, timeout))
            .await
            .unwrap());
        drop(tx);
    }
}
