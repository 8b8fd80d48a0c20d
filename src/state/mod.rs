//! Tenant state: what each tenant requires and its current token digest.
//!
//! Data flow: an admin call becomes a [`Command`]; [`StateHandle::apply`] has the
//! [`StateStore`] make it durable (the file store writes and fsyncs before returning),
//! then swaps the new immutable [`Snapshot`] in. The request path only ever loads the
//! current snapshot (one atomic load, no lock, no I/O), so any request whose check
//! starts after the admin call returned sees the new state.
//!
//! Stores implement one trait with boxed futures, so a deployment picks one at run
//! time; an external store (Redis, for several replicas) pushes states it learns of
//! through [`StateHandle::publish`], which never moves the snapshot backwards, and
//! holds a [`Fence`] the request path consults before serving protected routes.

pub mod fence;
pub mod file;
pub mod lock;
pub mod redis;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::auth::token::Digest;
use crate::metrics::TenantCounters;
pub use fence::Fence;

/// A boxed future, so that [`StateStore`] can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The whole durable state of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Bumped by every change.
    pub revision: u64,
    pub tenants: BTreeMap<String, TenantState>,
}

/// One tenant's state. A tenant never configured behaves as `TenantState::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantState {
    pub require_authentication: bool,
    pub token: Option<TokenRecord>,
    /// The deployment revision of this tenant's last change.
    pub revision: u64,
}

/// A token as stored: its digest and public metadata, never the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    #[serde(with = "digest_hex", rename = "sha256")]
    pub digest: Digest,
    /// Unix time in milliseconds.
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

/// A state change requested through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    SetRequireAuthentication {
        tenant: String,
        require: bool,
    },
    /// Replaces the tenant's token (the previous one dies with this command).
    SetToken {
        tenant: String,
        token: TokenRecord,
    },
    RevokeToken {
        tenant: String,
    },
}

impl Command {
    pub fn tenant(&self) -> &str {
        match self {
            Command::SetRequireAuthentication { tenant, .. }
            | Command::SetToken { tenant, .. }
            | Command::RevokeToken { tenant } => tenant,
        }
    }

    /// The name written to the audit log.
    pub fn action(&self) -> &'static str {
        match self {
            Command::SetRequireAuthentication { require: true, .. } => "require_authentication_on",
            Command::SetRequireAuthentication { require: false, .. } => {
                "require_authentication_off"
            }
            Command::SetToken { .. } => "token_generated",
            Command::RevokeToken { .. } => "token_revoked",
        }
    }
}

impl State {
    /// The state after `cmd`: the deployment revision is bumped and stamped on the tenant.
    pub fn apply(&self, cmd: &Command) -> State {
        let mut next = self.clone();
        next.revision += 1;
        let tenant = next.tenants.entry(cmd.tenant().to_string()).or_default();
        tenant.revision = next.revision;
        match cmd {
            Command::SetRequireAuthentication { require, .. } => {
                tenant.require_authentication = *require
            }
            Command::SetToken { token, .. } => tenant.token = Some(token.clone()),
            Command::RevokeToken { .. } => tenant.token = None,
        }
        next
    }

    pub fn tenant(&self, name: &str) -> TenantState {
        self.tenants.get(name).cloned().unwrap_or_default()
    }
}

/// What a store reports about one applied change.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The deployment revision the change created.
    pub revision: u64,
    /// The tenant's state after the change.
    pub tenant: TenantState,
    /// The whole state to swap in; `None` when the store swaps states in itself
    /// (Redis: the replica loop applies every revision in order).
    pub state: Option<State>,
    /// Redis: every replica that held a lease, and whether it acknowledged the change.
    pub replicas: Option<Vec<ReplicaAck>>,
}

/// One replica's answer to a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaAck {
    pub replica: String,
    /// The highest revision it acknowledged.
    pub applied_revision: u64,
    /// Whether that covers the change; a replica that did not has let its lease run out
    /// (and refuses protected routes) by the time the writer returns.
    pub acknowledged: bool,
}

/// What a store reports about the deployment behind it (`GET /admin/v1/cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterStatus {
    /// One process and its state file: nothing shared.
    File,
    /// Replicas sharing the state in Redis.
    Redis(redis::RedisStatus),
}

/// Why the state could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `If-Match` named another revision than the tenant's current one.
    #[error("the tenant is at revision {current}, not the one named in If-Match")]
    Conflict { current: u64 },
    /// Redis holds no epoch: it lost its data (or was never initialised).
    #[error("the Redis state is not initialised (no epoch); run `authgate cluster init`")]
    NotInitialised,
    /// Redis refused or could not be reached; nothing changed.
    #[error("redis: {0}")]
    Unavailable(String),
    /// Redis did not answer in time: the change may still be applied.
    #[error("redis did not answer in time: {0}")]
    Uncertain(String),
    /// Also uncertain: the change is applied on the Redis primary (and acknowledged or
    /// fenced as usual), but only `confirmed` of the `wanted` Redis replicas confirmed it
    /// (`state.redis.wait_replicas`), so a failover could still lose it.
    #[error("revision {revision} is on the Redis primary but only {confirmed} of {wanted} Redis replicas confirmed it")]
    NotReplicated {
        revision: u64,
        wanted: u64,
        confirmed: u64,
    },
    #[error("state file {path}: {problem}")]
    Corrupt { path: String, problem: String },
    #[error("state file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the state lives. `apply` returns only once the change is durable.
pub trait StateStore: Send + Sync + std::fmt::Debug + 'static {
    /// Reads the current state (at start-up, and to resync).
    fn load(&self) -> BoxFuture<'_, Result<State, StoreError>>;
    /// Applies `cmd` on top of the store's current state, durably, and returns the result.
    /// With `if_match`, only if the tenant's revision is that one ([`StoreError::Conflict`]).
    /// On error nothing has changed (except [`StoreError::Uncertain`] and
    /// [`StoreError::NotReplicated`]).
    fn apply(
        &self,
        cmd: Command,
        if_match: Option<u64>,
    ) -> BoxFuture<'_, Result<Applied, StoreError>>;

    /// The fence of a store shared by several replicas; `None`: always serve.
    fn fence(&self) -> Option<&Fence> {
        None
    }

    /// `GET /admin/v1/cluster`.
    fn cluster(&self) -> BoxFuture<'_, Result<ClusterStatus, StoreError>> {
        Box::pin(async { Ok(ClusterStatus::File) })
    }

    /// Starts the store's background work (Redis: the replica loop), which publishes
    /// into `handle` until `shutdown` fires.
    fn start(
        &self,
        handle: Weak<StateHandle>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let _ = (handle, shutdown);
        None
    }
}

/// One tenant as the request path reads it: its state and its metric handles, found
/// with one lookup.
#[derive(Debug)]
pub struct SnapshotTenant {
    pub state: TenantState,
    pub counters: TenantCounters,
}

/// What the request path reads: the state plus, per tenant, its metric handles
/// (resolved once per snapshot).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub state: State,
    pub tenants: HashMap<String, SnapshotTenant>,
}

impl Snapshot {
    /// The request path's view of `state`. Tenants are keyed in lower case, as the proxy
    /// compares them; should a state written by an older authgate hold two spellings of
    /// one name, the one requiring authentication wins (fail closed).
    pub fn new(state: State) -> Snapshot {
        let mut tenants: HashMap<String, SnapshotTenant> = HashMap::new();
        for (name, tenant) in &state.tenants {
            let key = name.to_ascii_lowercase();
            if tenants
                .get(&key)
                .is_some_and(|kept| kept.state.require_authentication)
            {
                continue;
            }
            let entry = SnapshotTenant {
                state: tenant.clone(),
                counters: TenantCounters::new(&key),
            };
            tenants.insert(key, entry);
        }
        Snapshot { state, tenants }
    }
}

/// The current snapshot and the store behind it.
#[derive(Debug)]
pub struct StateHandle {
    snapshot: ArcSwap<Snapshot>,
    store: Box<dyn StateStore>,
    /// Serialises this process's writers, so snapshots are swapped in commit order.
    writer: tokio::sync::Mutex<()>,
}

impl StateHandle {
    /// Loads the state from `store`.
    pub async fn open(store: Box<dyn StateStore>) -> Result<StateHandle, StoreError> {
        let state = store.load().await?;
        crate::metrics::state_revision(state.revision);
        Ok(StateHandle {
            snapshot: ArcSwap::from_pointee(Snapshot::new(state)),
            store,
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// The current snapshot: one atomic load.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Makes `cmd` durable, then swaps the new snapshot in before returning (Redis:
    /// waits for the replicas' acknowledgements). Returns the tenant's state before the
    /// change and what the store reported.
    pub async fn apply(
        &self,
        cmd: Command,
        if_match: Option<u64>,
    ) -> Result<(TenantState, Applied), StoreError> {
        let _writer = self.writer.lock().await;
        let before = self.snapshot.load().state.tenant(cmd.tenant());
        let applied = self.store.apply(cmd, if_match).await?;
        if let Some(state) = &applied.state {
            self.publish(state.clone());
        }
        Ok((before, applied))
    }

    /// Swaps in `state` unless the current snapshot is already as new.
    pub fn publish(&self, state: State) {
        let current = self.snapshot.load();
        if state.revision > current.state.revision {
            crate::metrics::state_revision(state.revision);
            self.snapshot.store(Arc::new(Snapshot::new(state)));
        }
    }

    /// Swaps in `state` whatever its revision: the store started over (Redis re-initialised
    /// under a new epoch, so revisions restarted).
    pub fn replace(&self, state: State) {
        crate::metrics::state_revision(state.revision);
        self.snapshot.store(Arc::new(Snapshot::new(state)));
    }

    /// Whether protected routes must be refused now (one clock read; never I/O).
    pub fn fenced(&self) -> bool {
        self.store.fence().is_some_and(Fence::is_fenced)
    }

    /// Starts the store's background work; see [`StateStore::start`].
    pub fn start(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.store.start(Arc::downgrade(self), shutdown)
    }

    /// `GET /admin/v1/cluster`.
    pub async fn cluster(&self) -> Result<ClusterStatus, StoreError> {
        self.store.cluster().await
    }
}

mod digest_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::auth::token::Digest;

    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(de)?;
        Digest::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits (a SHA-256 digest)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u8) -> TokenRecord {
        TokenRecord {
            digest: Digest([n; 32]),
            created_at_ms: 1,
            expires_at_ms: 2,
        }
    }

    #[test]
    fn commands_bump_the_revision_and_stamp_the_tenant() {
        let s0 = State::default();
        let s1 = s0.apply(&Command::SetRequireAuthentication {
            tenant: "acme".into(),
            require: true,
        });
        let s2 = s1.apply(&Command::SetToken {
            tenant: "acme".into(),
            token: token(1),
        });
        let s3 = s2.apply(&Command::SetToken {
            tenant: "acme".into(),
            token: token(2),
        });
        assert_eq!(s3.revision, 3);
        let acme = s3.tenant("acme");
        assert!(acme.require_authentication);
        assert_eq!(acme.token, Some(token(2)), "the new token replaces the old");
        assert_eq!(acme.revision, 3);
        let s4 = s3.apply(&Command::RevokeToken {
            tenant: "acme".into(),
        });
        assert_eq!(s4.tenant("acme").token, None);
        assert_eq!(
            s0.tenant("acme"),
            TenantState::default(),
            "old states are untouched"
        );
    }
}
