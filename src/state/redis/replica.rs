//! The replica loop: keeps this process's snapshot equal to Redis's, acknowledges every
//! revision it applies, and holds the lease that lets it serve protected routes.
//!
//! Session: subscribe to the change channel, THEN load a snapshot (so no change can fall
//! between the two), THEN renew the lease (which Redis refuses if a change landed in
//! between: the replica catches up first). Then, until the subscription breaks: on a
//! change message or a refused renewal, read the log after the applied revision and
//! apply it strictly in order (a gap or an epoch change is a full resync), publish the
//! new snapshot, then acknowledge; renew every heartbeat. Messages only wake the loop
//! up; a lost one is found by the next renewal, which Redis refuses while behind.

use std::sync::{Arc, Weak};
use std::time::Instant;

use ::redis::{ScriptInvocation, Value};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::scripts::{Log, RenewReply, Snapshot};
use super::Inner;
use crate::state::{State, StateHandle, StoreError};

/// Why a session ended.
enum End {
    Shutdown,
    /// Start over (reconnect and resync) after a pause.
    Retry(String),
}

/// What this replica holds.
struct Local {
    /// The primary ([`super::dial::Dialer::generation`]) this session subscribed to:
    /// every read and renewal of the session must reach that one.
    generation: u64,
    epoch: Option<String>,
    state: State,
    /// The newest revision heard of on this epoch (change messages, renewals, log
    /// reads): the lag metric is this minus the applied revision.
    heard: u64,
}

impl Local {
    fn heard_of(&mut self, revision: u64) {
        self.heard = self.heard.max(revision);
        self.report_lag();
    }

    fn report_lag(&self) {
        crate::metrics::state_lag(self.heard, self.state.revision);
    }
}

pub(super) async fn run(inner: Arc<Inner>, handle: Weak<StateHandle>, shutdown: CancellationToken) {
    let mut local = Local {
        generation: 0,
        epoch: None,
        state: State::default(),
        heard: 0,
    };
    inner.fence.report();
    loop {
        match session(&inner, &handle, &mut local, &shutdown).await {
            End::Shutdown => break,
            End::Retry(why) => {
                tracing::warn!(replica = %inner.settings.replica, "state sync: {why}; retrying");
                inner.fence.report();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(inner.settings.heartbeat) => {}
                }
            }
        }
    }
    // Leaving: stop serving protected routes first, then tell writers not to wait for us.
    inner.fence.close();
    let mut leave = ::redis::pipe();
    leave
        .cmd("ZREM")
        .arg(&inner.keys.leases)
        .arg(&inner.settings.replica)
        .cmd("HDEL")
        .arg(&inner.keys.acks)
        .arg(&inner.settings.replica);
    if let Ok(mut conn) = inner.replica.get().await {
        let _ = tokio::time::timeout(
            inner.settings.heartbeat,
            leave.query_async::<Value>(&mut conn),
        )
        .await;
    }
}

async fn session(
    inner: &Inner,
    handle: &Weak<StateHandle>,
    local: &mut Local,
    shutdown: &CancellationToken,
) -> End {
    let heartbeat = inner.settings.heartbeat;
    let subscribe = async {
        let (mut pubsub, generation) = inner
            .dialer
            .pubsub(heartbeat, true)
            .await
            .map_err(|f| f.message())?;
        pubsub
            .subscribe(&inner.keys.changes)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((pubsub.into_on_message(), generation))
    };
    let mut messages = match tokio::time::timeout(heartbeat * 2, subscribe).await {
        Ok(Ok((messages, generation))) => {
            local.generation = generation;
            messages
        }
        Ok(Err(e)) => return End::Retry(format!("cannot subscribe: {e}")),
        Err(_) => return End::Retry("subscribing timed out".into()),
    };
    if let Err(end) = resync(inner, handle, local).await {
        return end;
    }
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Biased: a subscription that broke (the primary died) is seen before the next
        // renewal could reach a newly promoted primary with this session's revision.
        let woke_by_change = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return End::Shutdown,
            message = messages.next() => match message {
                None => return End::Retry("the change subscription was lost".into()),
                Some(message) => {
                    // An unreadable payload still wakes a catch-up: the log decides.
                    if let Ok(rev) = message.get_payload::<u64>() {
                        local.heard_of(rev);
                        if rev <= local.state.revision {
                            continue;
                        }
                    }
                    true
                }
            },
            _ = tick.tick() => false,
        };
        if woke_by_change {
            if let Err(end) = catch_up(inner, handle, local).await {
                return end;
            }
        }
        if let Err(end) = renew(inner, handle, local).await {
            return end;
        }
    }
}

/// Loads the whole state and publishes it.
async fn resync(inner: &Inner, handle: &Weak<StateHandle>, local: &mut Local) -> Result<(), End> {
    crate::metrics::resync();
    let snapshot = inner.scripts.snapshot(&inner.keys);
    let Some(Snapshot { epoch, state }) = call(inner, local, &snapshot, Snapshot::decode).await?
    else {
        return Err(no_epoch(inner));
    };
    let handle = handle.upgrade().ok_or(End::Shutdown)?;
    if local.epoch.as_deref() != Some(epoch.as_str()) || state.revision < local.state.revision {
        if local.epoch.is_some() {
            tracing::warn!(%epoch, revision = state.revision, "the Redis state started over (new epoch); replacing the local state");
        }
        handle.replace(state.clone());
        // Revisions heard of before belong to the old epoch.
        local.heard = 0;
    } else {
        handle.publish(state.clone());
    }
    local.epoch = Some(epoch);
    let revision = state.revision;
    local.state = state;
    local.heard_of(revision);
    Ok(())
}

/// Applies the log entries after the local revision, in order; a gap means a resync.
async fn catch_up(inner: &Inner, handle: &Weak<StateHandle>, local: &mut Local) -> Result<(), End> {
    let from = local.state.revision + 1;
    let read = inner.scripts.catchup(&inner.keys, from);
    let Some(Log {
        epoch,
        current,
        entries,
    }) = call(inner, local, &read, Log::decode).await?
    else {
        return Err(no_epoch(inner));
    };
    if local.epoch.as_deref() != Some(epoch.as_str()) || current < local.state.revision {
        inner.fence.close();
        return resync(inner, handle, local).await;
    }
    local.heard_of(current);
    if current == local.state.revision {
        return Ok(());
    }
    let mut next = local.state.clone();
    for entry in entries {
        if entry.revision != next.revision + 1 {
            break;
        }
        next.tenants.insert(entry.tenant, entry.state);
        next.revision = entry.revision;
    }
    if next.revision != current {
        // The log no longer holds every revision we missed (trimmed, or more than one
        // read's worth): take the whole state instead of serving a skipped revision.
        tracing::info!(
            applied = local.state.revision,
            current,
            "change log gap; resyncing"
        );
        return resync(inner, handle, local).await;
    }
    handle.upgrade().ok_or(End::Shutdown)?.publish(next.clone());
    local.state = next;
    local.report_lag();
    Ok(())
}

/// Acknowledges the local revision and renews the lease; a refusal because we are
/// behind catches up once and tries again.
async fn renew(inner: &Inner, handle: &Weak<StateHandle>, local: &mut Local) -> Result<(), End> {
    for attempt in 0..2 {
        let invocation = inner.scripts.renew(
            &inner.keys,
            &inner.settings.replica,
            local.epoch.as_deref().unwrap_or(""),
            local.state.revision,
            inner.settings.lease,
        );
        let sent = Instant::now();
        let reply = inner.replica.run_on(&invocation, local.generation).await;
        let reply = match reply.and_then(RenewReply::decode) {
            Ok(reply) => reply,
            Err(_) if inner.dialer.generation() != local.generation => {
                crate::metrics::renewal(false);
                return Err(End::Retry(
                    "the Redis primary changed; resubscribing and resyncing".into(),
                ));
            }
            Err(e) => {
                // The lease runs out by itself; nothing to undo.
                crate::metrics::renewal(false);
                inner.fence.report();
                tracing::debug!(error = %e, "lease renewal failed");
                return Ok(());
            }
        };
        crate::metrics::renewal(matches!(reply, RenewReply::Renewed { .. }));
        match reply {
            RenewReply::Ahead { current } => {
                // Redis holds fewer revisions than we applied: a promoted replica that
                // missed the newest changes. Take its state whole.
                inner.fence.close();
                return Err(End::Retry(format!(
                    "Redis is at revision {current}, behind this replica's {} (failover lost changes); resyncing",
                    local.state.revision
                )));
            }
            RenewReply::Renewed { current } => {
                local.heard_of(current);
                // Serve until the lease Redis recorded, minus one heartbeat of margin:
                // `sent` is before Redis read its clock, so this ends earlier still.
                let margin = inner.settings.heartbeat;
                inner
                    .fence
                    .open_until(sent, inner.settings.lease.saturating_sub(margin));
                return Ok(());
            }
            RenewReply::Behind { current } => {
                local.heard_of(current);
                if attempt > 0 {
                    return Ok(());
                }
                catch_up(inner, handle, local).await?;
            }
            RenewReply::OtherEpoch { epoch } => {
                inner.fence.close();
                return Err(End::Retry(format!(
                    "the epoch changed (Redis is on {epoch})"
                )));
            }
            RenewReply::NoEpoch => return Err(no_epoch(inner)),
        }
    }
    Ok(())
}

/// Runs one of the replica's scripts and decodes its reply; any failure restarts the
/// session.
async fn call<T>(
    inner: &Inner,
    local: &Local,
    invocation: &ScriptInvocation<'_>,
    decode: fn(Value) -> Result<T, StoreError>,
) -> Result<T, End> {
    inner
        .replica
        .run_on(invocation, local.generation)
        .await
        .and_then(decode)
        .map_err(retry)
}

fn retry(e: StoreError) -> End {
    End::Retry(e.to_string())
}

/// Redis lost its data (or was never initialised): refuse protected routes until an
/// operator runs `authgate cluster init`, never fall back to "authentication off".
fn no_epoch(inner: &Inner) -> End {
    inner.fence.close();
    End::Retry("Redis holds no epoch (empty or never initialised); protected routes refuse until `authgate cluster init`".into())
}
