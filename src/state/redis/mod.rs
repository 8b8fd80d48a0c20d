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
//! Files, by role: [`acks`] (the writers' shared ack subscription), [`dial`] (TCP or TLS to the URL's host or to the primary the
//! [`sentinel`]s name, with the password from the URL or `password_file`), [`conn`]
//! (one connection, every call bounded, dropped when a failover made it stale), [`keys`] and
//! [`scripts`] (the names, and each Lua script with its arguments and typed reply, read
//! through [`wire`]), [`writer`] (a change), [`replica`] (the loop), [`status`] (what
//! `GET /admin/v1/cluster` shows) and [`init`] (`authgate cluster init`).

mod acks;
mod conn;
mod dial;
mod init;
mod keys;
mod replica;
mod scripts;
mod sentinel;
mod status;
mod wire;
mod writer;

use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;

use super::{
    Applied, BoxFuture, ClusterStatus, Command, Fence, State, StateHandle, StateStore, StoreError,
};
use crate::config::RedisState;
use conn::Conn;
use dial::{Dialer, Failure};
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
    dialer: Arc<Dialer>,
    /// The writers' ack subscription, shared by every change.
    ack_feed: Arc<acks::AckFeed>,
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
    /// Reads the password files and the TLS files; nothing is dialled until the store
    /// is used.
    pub fn new(settings: RedisState) -> Result<RedisStore, StoreError> {
        let dialer = Arc::new(Dialer::new(&settings)?);
        let timeout = settings.lease;
        let heartbeat = settings.heartbeat;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                keys: Keys::new(&settings.key_prefix),
                scripts: Scripts::new(),
                writer: Conn::new(
                    dialer.clone(),
                    timeout,
                    settings.ack_timeout + heartbeat,
                    true,
                ),
                replica: Conn::new(dialer.clone(), heartbeat, heartbeat, false),
                dialer,
                ack_feed: Arc::new(acks::AckFeed::new()),
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
    ///
    /// One dial first: settings that cannot work (a certificate that fails verification,
    /// a client certificate or password Redis refuses) stop start-up with the reason; a
    /// Redis that is only unreachable does not (the replica starts fenced and retries).
    fn load(&self) -> BoxFuture<'_, Result<State, StoreError>> {
        Box::pin(async {
            match self.inner.writer.dial().await {
                Err(Failure::Refused(why)) => Err(StoreError::Unavailable(why)),
                Ok(()) | Err(Failure::Unreachable(_)) => Ok(State::default()),
            }
        })
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
