//! The `redis` store: one source of truth in Redis shared by several replicas, with
//! acknowledged, bounded invalidation.
//!
//! Keys (all under one hash tag, so Redis Cluster keeps them in one slot):
//! `{p}:epoch` (random, set by `authgate cluster init`), `{p}:rev` (deployment revision),
//! `{p}:tenants` (set), `{p}:t:<tenant>` (hash: require, mode, sha256, created_ms,
//! expires_ms, prev_sha256, prev_created_ms, prev_expires_ms, prev_until_ms, revision;
//! `require` is kept, 1 exactly in mode `on`, for readers older than `mode`), `{p}:log` (stream, entry id `<rev>-0`, trimmed to about 1000),
//! `{p}:leases` (zset replica → deadline in ms of Redis `TIME`), `{p}:acks` (hash
//! replica → applied revision); channels `{p}:changes` and `{p}:acked`.
//!
//! A change ([`writer`]): subscribe to the ack channel, run `change.lua`
//! (checks the epoch and `If-Match`, bumps the revision, writes the tenant and the log,
//! publishes, returns the live leases), then wait until every replica holding a live
//! lease acknowledged the revision or its lease ran out (it has fenced itself by then),
//! bounded by `ack_timeout`. With `wait_replicas`, it then runs `WAIT` on the connection
//! the change went down, so the change is on that many Redis replicas before the call
//! succeeds (else [`StoreError::NotReplicated`]: applied on the primary, not confirmed).
//!
//! A replica ([`replica`]): subscribe to changes, load a snapshot atomically, renew its
//! lease every heartbeat with `renew.lua` (refused when it is behind or on another
//! epoch); apply revisions strictly in order from the log and acknowledge each; resync
//! on a gap, a disconnection or an epoch change. Message delivery is only a hint:
//! revisions, resyncs and leases carry correctness. The [`Fence`] closes protected
//! routes when the last lease (minus one heartbeat) runs out.
//!
//! Files, by role: [`conn`] (one connection, every call bounded), [`keys`] and
//! [`scripts`] (the names, and each Lua script with its arguments and typed reply, read
//! through [`wire`]), [`writer`] (a change), [`replica`] (the loop), [`status`] (what
//! `GET /admin/v1/cluster` shows) and [`init`] (`authgate cluster init`).

mod conn;
mod init;
mod keys;
mod replica;
mod scripts;
mod status;
mod wire;
mod writer;

use std::sync::{Arc, Weak};

use ::redis::Client;
use tokio_util::sync::CancellationToken;

use super::{
    Applied, BoxFuture, ClusterStatus, Command, Fence, State, StateHandle, StateStore, StoreError,
};
use crate::config::RedisState;
use conn::Conn;
pub use init::{init, InitOutcome};
pub use keys::Keys;
use scripts::Scripts;
pub use status::{RedisStatus, ReplicaLease};

/// What the store and its replica loop share.
#[derive(Debug)]
struct Inner {
    settings: RedisState,
    keys: Keys,
    scripts: Scripts,
    client: Client,
    /// Writers and the cluster endpoint.
    writer: Conn,
    /// The replica loop's own connection, so renewals never queue behind writers.
    replica: Conn,
    fence: Fence,
}

/// The state in Redis, shared by every replica.
#[derive(Debug, Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl RedisStore {
    /// Connects lazily: nothing is dialled until the store is used.
    pub fn new(settings: RedisState) -> Result<RedisStore, StoreError> {
        let client = conn::client(&settings.url)?;
        let timeout = settings.lease;
        let heartbeat = settings.heartbeat;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                keys: Keys::new(&settings.key_prefix),
                scripts: Scripts::new(),
                writer: Conn::new(
                    client.clone(),
                    timeout,
                    settings.ack_timeout + heartbeat,
                    true,
                ),
                replica: Conn::new(client.clone(), heartbeat, heartbeat, false),
                client,
                fence: Fence::new(),
                settings,
            }),
        })
    }

    /// This replica's name.
    pub fn replica_name(&self) -> &str {
        &self.inner.settings.replica
    }
}

impl StateStore for RedisStore {
    /// The replica loop loads and keeps the state; until it has, the state is empty and
    /// the fence is closed (protected routes answer 503, `/readyz` 503).
    fn load(&self) -> BoxFuture<'_, Result<State, StoreError>> {
        Box::pin(async { Ok(State::default()) })
    }

    fn apply(
        &self,
        cmd: Command,
        if_match: Option<u64>,
    ) -> BoxFuture<'_, Result<Applied, StoreError>> {
        Box::pin(self.inner.apply(cmd, if_match))
    }

    fn fence(&self) -> Option<&Fence> {
        Some(&self.inner.fence)
    }

    fn cluster(&self) -> BoxFuture<'_, Result<ClusterStatus, StoreError>> {
        Box::pin(async { self.inner.status().await.map(ClusterStatus::Redis) })
    }

    fn start(
        &self,
        handle: Weak<StateHandle>,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        Some(tokio::spawn(replica::run(
            self.inner.clone(),
            handle,
            shutdown,
        )))
    }
}
