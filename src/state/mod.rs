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
//! through [`StateHandle::publish`], which never moves the snapshot backwards.

pub mod file;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use metrics::Counter;
use serde::{Deserialize, Serialize};

use crate::auth::token::Digest;

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

/// Why the state could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
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
    /// On error nothing has changed.
    fn apply(&self, cmd: Command) -> BoxFuture<'_, Result<State, StoreError>>;
}

/// Auth outcome counters of one tenant, resolved once per snapshot.
#[derive(Debug, Clone)]
pub struct TenantCounters {
    pub by_reason: [Counter; crate::metrics::AUTH_REASONS.len()],
}

/// What the request path reads: the state plus per-tenant metric handles.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub state: State,
    pub counters: BTreeMap<String, TenantCounters>,
}

impl Snapshot {
    pub fn new(state: State) -> Snapshot {
        let counters = state
            .tenants
            .keys()
            .map(|t| (t.clone(), crate::metrics::tenant_counters(t)))
            .collect();
        Snapshot { state, counters }
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

    /// Makes `cmd` durable, then swaps the new snapshot in before returning. Returns the
    /// tenant's state before the change and the whole state after it.
    pub async fn apply(&self, cmd: Command) -> Result<(TenantState, State), StoreError> {
        let _writer = self.writer.lock().await;
        let before = self.snapshot.load().state.tenant(cmd.tenant());
        let state = self.store.apply(cmd).await?;
        self.publish(state.clone());
        Ok((before, state))
    }

    /// Swaps in `state` unless the current snapshot is already as new.
    pub fn publish(&self, state: State) {
        let current = self.snapshot.load();
        if state.revision > current.state.revision {
            crate::metrics::state_revision(state.revision);
            self.snapshot.store(Arc::new(Snapshot::new(state)));
        }
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
