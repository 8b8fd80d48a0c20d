//! The connection pool: HTTP/1.1 connections (plain or TLS) to the one upstream, kept
//! open between requests.
//!
//! Built on `hyper::client::conn::http1` rather than hyper-util's pooled `Client`, which
//! keys its pool by origin, needs an absolute URI, and spawns a task for every request
//! to hand the connection back once it is ready. authgate has exactly one upstream, so
//! the pool is one list: a connection goes back on it when the upstream's response body
//! has been read to its end (see [`super::PooledBody`]), and a request takes the most recently used
//! connection that is ready, so a few hot connections do the work and the rest age out.
//!
//! With several current-thread runtimes ([`crate::runtime`]), the pool is one list per
//! runtime: a connection's task runs on the runtime that opened it, and only requests
//! served there use it, so no list is shared between threads. `max_idle` is per list,
//! as nginx's `keepalive` is per worker process.
//!
//! **Retries**: a request goes to another connection only when hyper hands it back
//! unwritten (a reused connection closed before a byte was sent). A request that may have
//! reached the upstream is never sent twice, so a POST is never replayed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper::client::conn::http1::{self, SendRequest};
use tower_service::Service;

use super::{PoolError, PooledBody, RequestBody};
use crate::tls::UpstreamConnector;

type Sender = SendRequest<RequestBody>;

/// Connections to the upstream.
#[derive(Debug)]
pub struct Pool {
    connector: UpstreamConnector,
    /// What the connector dials: the upstream's scheme and authority.
    origin: Uri,
    /// One list per connection runtime, indexed by [`crate::runtime::worker_index`].
    idle: Vec<Arc<IdleList>>,
}

impl Pool {
    pub fn new(
        connector: UpstreamConnector,
        origin: Uri,
        max_idle: usize,
        idle_timeout: Duration,
        runtimes: usize,
    ) -> Pool {
        let runtimes = runtimes.max(1);
        let idle = (0..runtimes)
            .map(|_| {
                Arc::new(IdleList {
                    senders: Mutex::new(VecDeque::new()),
                    max_idle,
                    idle_timeout,
                })
            })
            .collect();
        Pool {
            connector,
            origin,
            idle,
        }
    }

    /// The idle connections of the runtime this request is served on.
    fn idle(&self) -> &Arc<IdleList> {
        &self.idle[crate::runtime::worker_index() % self.idle.len()]
    }

    /// Sends `req` (origin-form URI, `Host` set) on a pooled connection, or a new one.
    /// The response's body returns the connection once it is read to its end.
    pub async fn send(
        &self,
        mut req: Request<RequestBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let idle = self.idle();
        while let Some(mut sender) = idle.take() {
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(lend(idle, response, sender)),
                Err(mut e) => match e.take_message() {
                    // Closed before the request was written: safe on another connection.
                    Some(unsent) => req = unsent,
                    None => return Err(PoolError::Request(e.into_error())),
                },
            }
        }
        // Boxed: opening a connection (TLS state included) is the cold path, and would
        // otherwise size every request's future for it, which hyper keeps allocated
        // per client connection.
        let mut sender = Box::pin(self.connect()).await?;
        match sender.try_send_request(req).await {
            Ok(response) => Ok(lend(idle, response, sender)),
            Err(e) => Err(PoolError::Request(e.into_error())),
        }
    }

    async fn connect(&self) -> Result<Sender, PoolError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(PoolError::Connect)?;
        let io = connector
            .call(self.origin.clone())
            .await
            .map_err(PoolError::Connect)?;
        let (sender, connection) = http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// The response, its body holding `sender` until it ends, then giving it back to `idle`.
fn lend(
    idle: &Arc<IdleList>,
    response: Response<hyper::body::Incoming>,
    sender: Sender,
) -> Response<PooledBody> {
    let conn = Checkin {
        sender: Some(sender),
        idle: idle.clone(),
    };
    response.map(|incoming| PooledBody::new(incoming, conn))
}

/// Idle connections, most recently used last: the front is the oldest.
#[derive(Debug)]
struct IdleList {
    senders: Mutex<VecDeque<(Sender, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl IdleList {
    /// The most recently used connection that is ready for a request. Closed and expired
    /// ones are dropped on the way; one that is not ready yet (its connection task has
    /// not noticed the end of the last exchange) stays for a later request.
    fn take(&self) -> Option<Sender> {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        // Ordered by last use, so the expired ones are at the front.
        while senders
            .front()
            .is_some_and(|(_, since)| since.elapsed() > self.idle_timeout)
        {
            senders.pop_front();
        }
        let mut i = senders.len();
        while i > 0 {
            i -= 1;
            if senders[i].0.is_closed() {
                senders.remove(i);
            } else if senders[i].0.is_ready() {
                return senders.remove(i).map(|(sender, _)| sender);
            }
        }
        None
    }

    fn put(&self, sender: Sender) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if senders.len() >= self.max_idle {
            senders.pop_front();
        }
        senders.push_back((sender, Instant::now()));
    }
}

/// A connection lent to one response: back to the pool when the response body was read
/// to its end, closed (dropped) when it was abandoned halfway, since the rest of that
/// body would still arrive on it.
#[derive(Debug)]
pub(super) struct Checkin {
    sender: Option<Sender>,
    idle: Arc<IdleList>,
}

impl Checkin {
    /// The response body ended: the connection can carry the next request.
    pub fn done(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.idle.put(sender);
        }
    }
}
