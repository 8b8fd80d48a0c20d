//! Tenant state: each tenant's [`Mode`] (`off`, `report`, `on`), its current token
//! digest and, during a rotation's overlap, the [`PreviousToken`] with its deadline
//! (an instant in the state, so every replica reaches the same verdict).
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
//! holds a [`Fence`] the request path consults before serving protected routes. Each
//! token's last accepted use ([`last_use`]) lives beside the snapshots, in memory only.

pub mod fence;
pub mod file;
pub mod last_use;
pub mod lock;
pub mod redis;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::auth::token::Digest;
use crate::metrics::TenantCounters;
pub use fence::Fence;
pub use last_use::{LastUse, LastUses};

/// A boxed future, so that [`StateStore`] can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The whole durable state of a deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Bumped by every change.
    pub revision: u64,
    pub tenants: BTreeMap<String, TenantState>,
}

/// How a tenant treats requests to protected routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The seed's "not required": forwarded untouched, `Authorization` not even parsed.
    #[default]
    Off,
    /// The token is checked and the verdict counted and logged, but the request is
    /// forwarded whatever it is.
    Report,
    /// The seed's "required": only the tenant's valid tokens get through.
    On,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Report => "report",
            Mode::On => "on",
        }
    }

    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "off" => Some(Mode::Off),
            "report" => Some(Mode::Report),
            "on" => Some(Mode::On),
            _ => None,
        }
    }
}

/// One tenant's state. A tenant never configured behaves as `TenantState::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantState {
    pub mode: Mode,
    pub token: Option<TokenRecord>,
    /// The token the current one replaced, while its overlap lasts (see
    /// [`PreviousToken`]); at most one: a rotation during an overlap ends it.
    pub previous: Option<PreviousToken>,
    /// The deployment revision of this tenant's last change.
    pub revision: u64,
}

impl TenantState {
    /// The seed's flag: true exactly in mode `on`.
    pub fn require_authentication(&self) -> bool {
        self.mode == Mode::On
    }
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

/// A replaced token that stays valid until a deadline: state, not a timer, so every
/// replica compares the same instant with its clock and reaches the same verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousToken {
    #[serde(flatten)]
    pub token: TokenRecord,
    /// Unix ms from which it is refused; never past the token's own expiry.
    pub valid_until_ms: u64,
}

/// A state change requested through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    SetMode {
        tenant: String,
        mode: Mode,
    },
    /// Replaces the tenant's token. With `previous_valid_until_ms`, the token it replaces
    /// stays valid until then (never past its own expiry; not at all if that is not after
    /// the new token's creation); otherwise, and for any older token, it dies with this
    /// command.
    SetToken {
        tenant: String,
        token: TokenRecord,
        previous_valid_until_ms: Option<u64>,
    },
    /// Ends every token of the tenant.
    RevokeToken {
        tenant: String,
    },
}

impl Command {
    pub fn tenant(&self) -> &str {
        match self {
            Command::SetMode { tenant, .. }
            | Command::SetToken { tenant, .. }
            | Command::RevokeToken { tenant } => tenant,
        }
    }

    /// The name written to the audit log (the seed's names for `on` and `off`).
    pub fn action(&self) -> &'static str {
        match self {
            Command::SetMode { mode: Mode::On, .. } => "require_authentication_on",
            Command::SetMode {
                mode: Mode::Off, ..
            } => "require_authentication_off",
            Command::SetMode {
                mode: Mode::Report, ..
            } => "mode_report",
            Command::SetToken {
                previous_valid_until_ms: Some(_),
                ..
            } => "token_generated_with_overlap",
            Command::SetToken { .. } => "token_generated",
            Command::RevokeToken { .. } => "token_revoked",
        }
    }
}

/// The token `current` becomes when `next` replaces it with an overlap until `until_ms`:
/// `None` when there is nothing left of the overlap by the time `next` exists.
pub fn overlap(current: &TokenRecord, until_ms: u64, next: &TokenRecord) -> Option<PreviousToken> {
    let valid_until_ms = until_ms.min(current.expires_at_ms);
    (valid_until_ms > next.created_at_ms).then(|| PreviousToken {
        token: current.clone(),
        valid_until_ms,
    })
}

impl State {
    /// The state after `cmd`: the deployment revision is bumped and stamped on the tenant.
    pub fn apply(&self, cmd: &Command) -> State {
        let mut next = self.clone();
        next.revision += 1;
        let tenant = next.tenants.entry(cmd.tenant().to_string()).or_default();
        tenant.revision = next.revision;
        match cmd {
            Command::SetMode { mode, .. } => tenant.mode = *mode,
            Command::SetToken {
                token,
                previous_valid_until_ms,
                ..
            } => {
                tenant.previous = match (&tenant.token, previous_valid_until_ms) {
                    (Some(current), Some(until)) => overlap(current, *until, token),
                    _ => None,
                };
                tenant.token = Some(token.clone());
            }
            Command::RevokeToken { .. } => {
                tenant.token = None;
                tenant.previous = None;
            }
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
    /// This process is handing over to an upgraded binary (SIGUSR2) and takes no more
    /// changes; nothing changed.
    #[error("handing over to the upgraded process; nothing changed")]
    HandingOver,
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

/// One tenant as the request path reads it: its state, its metric handles and its
/// tokens' last-use cells, found with one lookup.
#[derive(Debug)]
pub struct SnapshotTenant {
    pub state: TenantState,
    pub counters: TenantCounters,
    /// The current token's last use (present exactly when it has a token).
    pub current_use: Option<Arc<LastUse>>,
    /// The previous token's last use (present exactly when it has one).
    pub previous_use: Option<Arc<LastUse>>,
}

/// What the request path reads: the state plus, per tenant, its metric handles
/// (resolved once per snapshot).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub state: State,
    pub tenants: HashMap<String, SnapshotTenant>,
}

impl Snapshot {
    /// The request path's view of `state`, with last uses of its own.
    pub fn new(state: State) -> Snapshot {
        Snapshot::with_uses(state, &LastUses::default())
    }

    /// The request path's view of `state`, its tokens' last uses taken from `uses`.
    /// Tenants are keyed in lower case, as the proxy compares them; should a state
    /// written by an older authgate hold two spellings of one name, the strictest mode
    /// wins (fail closed).
    pub fn with_uses(state: State, uses: &LastUses) -> Snapshot {
        let cells = uses.for_state(&state);
        let cell = |t: Option<&TokenRecord>| t.and_then(|t| cells.get(&t.digest).cloned());
        let mut tenants: HashMap<String, SnapshotTenant> = HashMap::new();
        for (name, tenant) in &state.tenants {
            let key = name.to_ascii_lowercase();
            if tenants
                .get(&key)
                .is_some_and(|kept| kept.state.mode >= tenant.mode)
            {
                continue;
            }
            let entry = SnapshotTenant {
                state: tenant.clone(),
                counters: TenantCounters::new(&key),
                current_use: cell(tenant.token.as_ref()),
                previous_use: cell(tenant.previous.as_ref().map(|p| &p.token)),
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
    /// The tokens' last uses on this replica, carried from snapshot to snapshot.
    uses: LastUses,
    /// Changes are refused ([`StoreError::HandingOver`]): an upgrade's new process is
    /// taking the state over.
    frozen: AtomicBool,
    /// Protected routes are refused: the new process owns the state now, and may have
    /// changed a token this one cannot see.
    handed_over: AtomicBool,
}

impl StateHandle {
    /// Loads the state from `store`.
    pub async fn open(store: Box<dyn StateStore>) -> Result<StateHandle, StoreError> {
        let state = store.load().await?;
        crate::metrics::state_revision(state.revision);
        let uses = LastUses::default();
        Ok(StateHandle {
            snapshot: ArcSwap::from_pointee(Snapshot::with_uses(state, &uses)),
            store,
            writer: tokio::sync::Mutex::new(()),
            uses,
            frozen: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
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
        if self.frozen.load(Ordering::Acquire) {
            return Err(StoreError::HandingOver);
        }
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
            let next = Snapshot::with_uses(state, &self.uses);
            self.snapshot.store(Arc::new(next));
        }
    }

    /// Swaps in `state` whatever its revision: the store started over (Redis re-initialised
    /// under a new epoch, so revisions restarted).
    pub fn replace(&self, state: State) {
        crate::metrics::state_revision(state.revision);
        let next = Snapshot::with_uses(state, &self.uses);
        self.snapshot.store(Arc::new(next));
    }

    /// Unix seconds of the last accepted use of the token `digest` on this replica.
    pub fn last_used(&self, digest: &Digest) -> Option<u64> {
        self.uses.get(digest)
    }

    /// Whether protected routes must be refused now (one clock read; never I/O).
    pub fn fenced(&self) -> bool {
        self.handed_over.load(Ordering::Relaxed) || self.store.fence().is_some_and(Fence::is_fenced)
    }

    /// Resolves once this replica may serve protected routes (at once for the file
    /// store, which has no fence).
    pub async fn confirmed(&self) {
        if let Some(fence) = self.store.fence() {
            fence.opened().await;
        }
    }

    /// Refuses every change from now on, once the one being saved (if any) is.
    pub async fn freeze(&self) {
        let _writer = self.writer.lock().await;
        self.frozen.store(true, Ordering::Release);
    }

    /// Takes changes again after [`freeze`](Self::freeze), from the store's state as it
    /// is now (read whole: the process it was lent to might have changed it).
    pub async fn thaw(&self) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let state = self.store.load().await?;
        if state != self.snapshot.load().state {
            tracing::warn!(
                revision = state.revision,
                "the state changed while it was lent out; serving the stored one"
            );
            self.replace(state);
        }
        self.frozen.store(false, Ordering::Release);
        Ok(())
    }

    /// Takes changes again after [`freeze`](Self::freeze), with the state as loaded (an
    /// upgrade's new process, once the old one stopped serving from its copy).
    pub fn unfreeze(&self) {
        self.frozen.store(false, Ordering::Release);
    }

    /// Refuses protected routes: another process owns the state now.
    pub fn hand_over(&self) {
        self.handed_over.store(true, Ordering::Relaxed);
    }

    /// Serves protected routes again after [`hand_over`](Self::hand_over): the new
    /// process failed before it took any change.
    pub fn resume(&self) {
        self.handed_over.store(false, Ordering::Relaxed);
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
        let s1 = s0.apply(&Command::SetMode {
            tenant: "acme".into(),
            mode: Mode::On,
        });
        let s2 = s1.apply(&Command::SetToken {
            tenant: "acme".into(),
            token: token(1),
            previous_valid_until_ms: None,
        });
        let s3 = s2.apply(&Command::SetToken {
            tenant: "acme".into(),
            token: token(2),
            previous_valid_until_ms: None,
        });
        assert_eq!(s3.revision, 3);
        let acme = s3.tenant("acme");
        assert!(acme.require_authentication());
        assert_eq!(
            acme.previous, None,
            "no overlap asked: the old token is gone"
        );
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

    fn record(n: u8, created_at_ms: u64, expires_at_ms: u64) -> TokenRecord {
        TokenRecord {
            digest: Digest([n; 32]),
            created_at_ms,
            expires_at_ms,
        }
    }

    fn rotate(state: &State, token: TokenRecord, until: Option<u64>) -> State {
        state.apply(&Command::SetToken {
            tenant: "acme".into(),
            token,
            previous_valid_until_ms: until,
        })
    }

    #[test]
    fn an_overlap_keeps_one_previous_token_until_its_deadline() {
        let s1 = rotate(&State::default(), record(1, 0, 10_000), Some(5_000));
        assert_eq!(s1.tenant("acme").previous, None, "nothing to keep yet");
        let s2 = rotate(&s1, record(2, 100, 20_000), Some(2_100));
        let previous = s2.tenant("acme").previous.unwrap();
        assert_eq!(
            (previous.token, previous.valid_until_ms),
            (record(1, 0, 10_000), 2_100)
        );

        let s3 = rotate(&s2, record(3, 200, 30_000), Some(50_000));
        let acme = s3.tenant("acme");
        let previous = acme.previous.unwrap();
        assert_eq!(
            previous.token,
            record(2, 100, 20_000),
            "the first one ended at once"
        );
        assert_eq!(previous.valid_until_ms, 20_000, "never past its own expiry");

        let expired = rotate(&s3, record(4, 40_000, 50_000), Some(45_000));
        assert_eq!(
            expired.tenant("acme").previous,
            None,
            "an expired token does not linger"
        );
        let without = rotate(&s3, record(4, 300, 50_000), None);
        assert_eq!(without.tenant("acme").previous, None, "0: the seed's rule");
        let revoked = s3.apply(&Command::RevokeToken {
            tenant: "acme".into(),
        });
        let acme = revoked.tenant("acme");
        assert_eq!(
            (acme.token, acme.previous),
            (None, None),
            "DELETE ends both"
        );
    }

    #[test]
    fn two_spellings_of_a_tenant_keep_the_strictest_mode() {
        for (first, second) in [
            (Mode::Report, Mode::On),
            (Mode::On, Mode::Off),
            (Mode::Off, Mode::Report),
        ] {
            let state = State::default()
                .apply(&Command::SetMode {
                    tenant: "ACME".into(),
                    mode: first,
                })
                .apply(&Command::SetMode {
                    tenant: "acme".into(),
                    mode: second,
                });
            let snapshot = Snapshot::new(state);
            assert_eq!(snapshot.tenants["acme"].state.mode, first.max(second));
        }
    }
}
