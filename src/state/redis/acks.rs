//! The writers' view of the ack channel: one long-lived subscription per process
//! ([`AckFeed`]), fanned out to every change waiting for acknowledgements, so a change
//! does not dial (and, over TLS, handshake) a subscription of its own.
//!
//! Messages are hints, as everywhere in the protocol: a writer that subscribed to the
//! feed before running its change hears every acknowledgement the feed receives from
//! then on, and re-reads the acks hash every 100 ms anyway, so a feed that is down or
//! lagging costs latency, never correctness. While the feed is not subscribed, or is
//! subscribed to another primary than the newest one reached, a change subscribes on
//! its own connection, as before the feed existed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ::redis::aio::PubSubStream;
use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::dial::Dialer;

/// `replica revision` messages from the ack channel.
type Ack = (String, u64);

/// The process's ack subscription.
#[derive(Debug)]
pub(super) struct AckFeed {
    tx: broadcast::Sender<Ack>,
    /// Subscribed now (SUBSCRIBE answered, stream not ended).
    live: AtomicBool,
    /// The primary ([`Dialer::generation`]) the subscription is on.
    generation: AtomicU64,
    started: AtomicBool,
}

/// Where one change hears acknowledgements from.
pub(super) enum Acks {
    Feed(broadcast::Receiver<Ack>),
    Own(PubSubStream),
    /// Neither: the writer polls the acks hash only.
    None,
}

impl AckFeed {
    pub(super) fn new() -> AckFeed {
        AckFeed {
            tx: broadcast::channel(1024).0,
            live: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            started: AtomicBool::new(false),
        }
    }

    /// A receiver when the feed is subscribed; the first call starts the feed's task.
    pub(super) fn receiver(
        self: &Arc<AckFeed>,
        dialer: &Arc<Dialer>,
        channel: &str,
        heartbeat: Duration,
    ) -> Option<broadcast::Receiver<Ack>> {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(run(
                Arc::downgrade(self),
                dialer.clone(),
                channel.to_string(),
                heartbeat,
            ));
        }
        // Subscribed to the broadcast first, then checked: a message the feed forwards
        // after `live` was seen is received.
        let rx = self.tx.subscribe();
        let current = self.generation.load(Ordering::Acquire) == dialer.generation();
        (self.live.load(Ordering::Acquire) && current).then_some(rx)
    }
}

/// Keeps the subscription up while the store exists; resubscribes after a loss or when
/// another primary was reached (a subscription to the old one would hear nothing).
async fn run(feed: Weak<AckFeed>, dialer: Arc<Dialer>, channel: String, heartbeat: Duration) {
    loop {
        let subscribed = tokio::time::timeout(heartbeat * 2, async {
            let (mut pubsub, generation) = dialer.pubsub(heartbeat, false).await.ok()?;
            pubsub.subscribe(&channel).await.ok()?;
            Some((pubsub.into_on_message(), generation))
        })
        .await
        .ok()
        .flatten();
        if let Some((mut messages, generation)) = subscribed {
            let Some(live) = feed.upgrade() else { return };
            live.generation.store(generation, Ordering::Release);
            live.live.store(true, Ordering::Release);
            drop(live);
            let mut check = tokio::time::interval(heartbeat);
            loop {
                tokio::select! {
                    message = messages.next() => {
                        let Some(message) = message else { break };
                        let Some(feed) = feed.upgrade() else { return };
                        if let Some(ack) = parse(&message) {
                            let _ = feed.tx.send(ack);
                        }
                    }
                    _ = check.tick() => {
                        if feed.strong_count() == 0 {
                            return;
                        }
                        if dialer.generation() != generation {
                            break;
                        }
                    }
                }
            }
            match feed.upgrade() {
                Some(feed) => feed.live.store(false, Ordering::Release),
                None => return,
            }
        }
        if feed.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(heartbeat).await;
    }
}

/// `replica revision` (the replica name may hold spaces; the revision is last).
pub(super) fn parse(msg: &::redis::Msg) -> Option<Ack> {
    let payload = msg.get_payload::<String>().ok()?;
    let (replica, rev) = payload.rsplit_once(' ')?;
    Some((replica.to_string(), rev.parse().ok()?))
}

impl Acks {
    /// The next acknowledgement; `None` once this source is gone (pending forever when
    /// there is none, so `select!` uses its other branches).
    pub(super) async fn next(&mut self) -> Option<Ack> {
        match self {
            Acks::None => std::future::pending().await,
            Acks::Own(stream) => loop {
                let msg = stream.next().await?;
                if let Some(ack) = parse(&msg) {
                    return Some(ack);
                }
            },
            Acks::Feed(rx) => loop {
                match rx.recv().await {
                    Ok(ack) => return Some(ack),
                    // Missed some: the writer's poll of the acks hash catches up.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
        }
    }
}
