//! The writer: one admin change, made in Redis and then waited on until every replica
//! either runs it or refuses protected routes.
//!
//! [`Inner::apply`]: subscribe to the ack channel, run `change.lua` (epoch and
//! `If-Match` checked, revision bumped, tenant and log written, change published, live
//! leases returned), then [`Inner::await_acks`] until every replica holding a live lease
//! acknowledged the revision or its lease ran out (it has fenced itself by then), bounded
//! by `ack_timeout`; then [`Inner::confirm_replicated`] when `wait_replicas` asks for
//! Redis replicas to hold the change too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;

use super::acks::Acks;
use super::scripts::{Change, ChangeReply};
use super::{wire, Inner};
use crate::state::{Applied, Command, ReplicaAck, StoreError};

/// Replica → the highest revision it is known to have acknowledged.
type Seen = HashMap<String, u64>;

impl Inner {
    pub(super) async fn apply(
        &self,
        cmd: Command,
        if_match: Option<u64>,
    ) -> Result<Applied, StoreError> {
        // Subscribed before the change runs, so no acknowledgement can slip past.
        let mut acks = self.ack_subscription().await;
        let invocation = self.scripts.change(&self.keys, &cmd, if_match);
        let (value, conn) = self.writer.run_keeping(&invocation).await?;
        let change = match ChangeReply::decode(value)? {
            ChangeReply::Applied(change) => change,
            ChangeReply::NoEpoch => return Err(StoreError::NotInitialised),
            ChangeReply::Conflict { current } => return Err(StoreError::Conflict { current }),
        };
        let started = Instant::now();
        let replicas = self.await_acks(&mut acks, &change, started).await;
        crate::metrics::ack_wait(started.elapsed());
        self.confirm_replicated(conn, change.revision, started)
            .await?;
        Ok(Applied {
            revision: change.revision,
            tenant: change.tenant,
            state: None,
            replicas: Some(replicas),
        })
    }

    /// `WAIT wait_replicas <ms>` on the connection the change went down (it counts the
    /// writes of the client that sends it), within what is left of `ack_timeout` after
    /// the replicas' acknowledgements (so they are in force or fenced whatever the
    /// outcome). Fewer confirmations: the change is on the primary only, and a failover
    /// could lose it; never reported as a success.
    async fn confirm_replicated(
        &self,
        mut conn: MultiplexedConnection,
        revision: u64,
        started: Instant,
    ) -> Result<(), StoreError> {
        let wanted = self.settings.wait_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let left = (started + self.settings.ack_timeout).saturating_duration_since(Instant::now());
        // `WAIT n 0` would block forever.
        let left_ms = (left.as_millis() as u64).max(1);
        let mut wait = ::redis::cmd("WAIT");
        wait.arg(wanted).arg(left_ms);
        // Redis answers by `left_ms` itself; the margin only guards against a Redis that
        // stopped answering altogether.
        let bound = Duration::from_millis(left_ms) + self.settings.heartbeat;
        let confirmed = match tokio::time::timeout(bound, wait.query_async::<u64>(&mut conn)).await
        {
            Ok(Ok(confirmed)) => confirmed,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, revision, "WAIT for Redis replicas failed");
                0
            }
            Err(_) => {
                tracing::warn!(revision, "WAIT for Redis replicas got no answer");
                0
            }
        };
        if confirmed >= wanted {
            return Ok(());
        }
        Err(StoreError::NotReplicated {
            revision,
            wanted,
            confirmed,
        })
    }

    /// Where this change hears acknowledgements: the process's ack feed when it is
    /// subscribed, else a subscription of its own, else nothing (the writer then polls
    /// the acks hash only).
    async fn ack_subscription(&self) -> Acks {
        let heartbeat = self.settings.heartbeat;
        if let Some(rx) = self
            .ack_feed
            .receiver(&self.dialer, &self.keys.acked, heartbeat)
        {
            return Acks::Feed(rx);
        }
        let subscribe = async {
            let (mut pubsub, _) = self.dialer.pubsub(heartbeat, false).await.ok()?;
            pubsub.subscribe(&self.keys.acked).await.ok()?;
            Some(pubsub.into_on_message())
        };
        match tokio::time::timeout(heartbeat, subscribe).await {
            Ok(Some(stream)) => Acks::Own(stream),
            _ => Acks::None,
        }
    }

    /// Waits until every replica with a live lease acknowledged the change, or its lease
    /// deadline has passed, or `ack_timeout` has. Deadlines are Redis time; they are
    /// measured from the change's `now_ms` on our monotonic clock from `started`, which
    /// is later, so a replica is never given up on before its lease ran out.
    async fn await_acks(
        &self,
        acks: &mut Acks,
        change: &Change,
        started: Instant,
    ) -> Vec<ReplicaAck> {
        let give_up = started + self.settings.ack_timeout;
        let waits: Vec<(String, Instant)> = change
            .leases
            .iter()
            .map(|(replica, deadline)| {
                let left = Duration::from_millis(deadline.saturating_sub(change.now_ms));
                (replica.clone(), started + left)
            })
            .collect();
        let mut seen = self.read_acks().await.unwrap_or_default();
        let mut poll = tokio::time::interval(Duration::from_millis(100));
        poll.tick().await;
        while let Some(next) = next_deadline(&waits, &seen, change.revision) {
            if Instant::now() >= give_up {
                break;
            }
            tokio::select! {
                message = acks.next() => match message {
                    Some((replica, rev)) => saw(&mut seen, replica, rev),
                    None => *acks = Acks::None,
                },
                _ = poll.tick() => {
                    for (replica, rev) in self.read_acks().await.unwrap_or_default() {
                        saw(&mut seen, replica, rev);
                    }
                }
                _ = tokio::time::sleep_until(next.min(give_up).into()) => {}
            }
        }
        waits
            .into_iter()
            .map(|(replica, _)| {
                let applied_revision = seen.get(&replica).copied().unwrap_or(0);
                ReplicaAck {
                    replica,
                    applied_revision,
                    acknowledged: applied_revision >= change.revision,
                }
            })
            .collect()
    }

    async fn read_acks(&self) -> Result<Seen, StoreError> {
        let value = self
            .writer
            .cmd(::redis::cmd("HGETALL").arg(&self.keys.acks))
            .await?;
        Ok(wire::pairs(Some(&value))?.into_iter().collect())
    }
}

/// The soonest lease deadline among the replicas yet to acknowledge `revision` whose
/// lease is still running; `None` when there is none left to wait for.
fn next_deadline(waits: &[(String, Instant)], seen: &Seen, revision: u64) -> Option<Instant> {
    let now = Instant::now();
    waits
        .iter()
        .filter(|(replica, until)| {
            seen.get(replica).copied().unwrap_or(0) < revision && *until > now
        })
        .map(|(_, until)| *until)
        .min()
}

fn saw(seen: &mut Seen, replica: String, revision: u64) {
    let known = seen.entry(replica).or_default();
    *known = (*known).max(revision);
}
