//! The Lua scripts, each one atomic step of the protocol, with what goes in and what
//! comes out: per script, one method that fills its KEYS and ARGV in the order its
//! header documents, and one reply type decoded from the flat array it returns. Only
//! this file knows the scripts' positions and outcome tags.

use std::collections::HashMap;
use std::time::Duration;

use ::redis::{Script, ScriptInvocation, Value};

use super::keys::Keys;
use super::wire::Fields;
use crate::state::{Command, State, StoreError, TenantState};

/// The scripts, loaded once per store (`EVALSHA`, falling back to `EVAL`).
#[derive(Debug)]
pub(super) struct Scripts {
    change: Script,
    snapshot: Script,
    catchup: Script,
    renew: Script,
    status: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            change: Script::new(include_str!("change.lua")),
            snapshot: Script::new(include_str!("snapshot.lua")),
            catchup: Script::new(include_str!("catchup.lua")),
            renew: Script::new(include_str!("renew.lua")),
            status: Script::new(include_str!("status.lua")),
        }
    }

    /// `change.lua`: apply `cmd` if the tenant is at `if_match` (when given).
    pub fn change(
        &self,
        keys: &Keys,
        cmd: &Command,
        if_match: Option<u64>,
    ) -> ScriptInvocation<'_> {
        let (op, mode, digest, created, expires, previous_until) = match cmd {
            Command::SetMode { mode, .. } => ("mode", mode.as_str(), String::new(), 0, 0, None),
            Command::SetToken {
                token,
                previous_valid_until_ms,
                ..
            } => (
                "token",
                "",
                token.digest.to_hex(),
                token.created_at_ms,
                token.expires_at_ms,
                *previous_valid_until_ms,
            ),
            Command::RevokeToken { .. } => ("revoke", "", String::new(), 0, 0, None),
        };
        let mut invocation = self.change.prepare_invoke();
        invocation
            .key(&keys.epoch)
            .key(&keys.rev)
            .key(&keys.tenants)
            .key(&keys.log)
            .key(&keys.leases)
            .key(keys.tenant(cmd.tenant()))
            .arg(cmd.tenant())
            .arg(if_match.map(|r| r.to_string()).unwrap_or_default())
            .arg(op)
            .arg(mode)
            .arg(digest)
            .arg(created)
            .arg(expires)
            .arg(previous_until.map(|ms| ms.to_string()).unwrap_or_default())
            .arg(&keys.changes);
        invocation
    }

    /// `snapshot.lua`: the whole state.
    pub fn snapshot(&self, keys: &Keys) -> ScriptInvocation<'_> {
        let mut invocation = self.snapshot.prepare_invoke();
        invocation
            .key(&keys.epoch)
            .key(&keys.rev)
            .key(&keys.tenants)
            .arg(&keys.tenant_prefix);
        invocation
    }

    /// `catchup.lua`: the log from revision `from` on.
    pub fn catchup(&self, keys: &Keys, from: u64) -> ScriptInvocation<'_> {
        let mut invocation = self.catchup.prepare_invoke();
        invocation
            .key(&keys.epoch)
            .key(&keys.rev)
            .key(&keys.log)
            .arg(from);
        invocation
    }

    /// `renew.lua`: acknowledge `applied` and renew `replica`'s lease for `lease`.
    pub fn renew(
        &self,
        keys: &Keys,
        replica: &str,
        epoch: &str,
        applied: u64,
        lease: Duration,
    ) -> ScriptInvocation<'_> {
        let mut invocation = self.renew.prepare_invoke();
        invocation
            .key(&keys.epoch)
            .key(&keys.rev)
            .key(&keys.leases)
            .key(&keys.acks)
            .arg(replica)
            .arg(epoch)
            .arg(applied)
            .arg(lease.as_millis() as u64)
            .arg(&keys.acked);
        invocation
    }

    /// `status.lua`: what `GET /admin/v1/cluster` shows.
    pub fn status(&self, keys: &Keys) -> ScriptInvocation<'_> {
        let mut invocation = self.status.prepare_invoke();
        invocation
            .key(&keys.epoch)
            .key(&keys.rev)
            .key(&keys.leases)
            .key(&keys.acks);
        invocation
    }
}

/// What `change.lua` answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ChangeReply {
    Applied(Change),
    /// Redis holds no epoch: nothing changed.
    NoEpoch,
    /// `If-Match` named another revision: nothing changed.
    Conflict {
        current: u64,
    },
}

/// A change Redis applied.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Change {
    /// The deployment revision it created.
    pub revision: u64,
    /// Redis `TIME` when it ran, in ms: the clock the lease deadlines are on.
    pub now_ms: u64,
    /// Every live lease then: replica → deadline in ms of Redis time.
    pub leases: Vec<(String, u64)>,
    /// The tenant after the change.
    pub tenant: TenantState,
}

impl ChangeReply {
    pub fn decode(value: Value) -> Result<ChangeReply, StoreError> {
        let mut f = Fields::of(value)?;
        let reply = match f.text()?.as_str() {
            "ok" => {
                let revision = f.int()?;
                let now_ms = f.int()?;
                let _epoch = f.text()?;
                let leases = f.pairs()?;
                let tenant = f.tenant(revision)?;
                ChangeReply::Applied(Change {
                    revision,
                    now_ms,
                    leases,
                    tenant,
                })
            }
            "noepoch" => ChangeReply::NoEpoch,
            "conflict" => ChangeReply::Conflict { current: f.int()? },
            other => return Err(f.unknown(other)),
        };
        f.done()?;
        Ok(reply)
    }
}

/// What `snapshot.lua` answered: the epoch and the whole state, or `None` when Redis
/// holds no epoch.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Snapshot {
    pub epoch: String,
    pub state: State,
}

impl Snapshot {
    pub fn decode(value: Value) -> Result<Option<Snapshot>, StoreError> {
        let mut f = Fields::of(value)?;
        match f.text()?.as_str() {
            "ok" => {}
            "noepoch" => return f.done().map(|()| None),
            other => return Err(f.unknown(other)),
        }
        let epoch = f.text()?;
        let mut state = State {
            revision: f.int()?,
            ..State::default()
        };
        while !f.is_done() {
            let name = f.text()?;
            let fields = f.tenant_fields()?;
            let revision = f.int()?;
            let tenant = super::wire::tenant(&fields, revision)?;
            state.tenants.insert(name, tenant);
        }
        Ok(Some(Snapshot { epoch, state }))
    }
}

/// What `catchup.lua` answered: the epoch, the current revision and the log entries
/// from the wanted revision on, or `None` when Redis holds no epoch.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Log {
    pub epoch: String,
    pub current: u64,
    pub entries: Vec<LogEntry>,
}

/// One change in the log.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LogEntry {
    /// From the entry id `<rev>-0`; 0 for an id of another form, which never follows
    /// any revision and so reads as a gap.
    pub revision: u64,
    pub tenant: String,
    pub state: TenantState,
}

impl Log {
    pub fn decode(value: Value) -> Result<Option<Log>, StoreError> {
        let mut f = Fields::of(value)?;
        match f.text()?.as_str() {
            "ok" => {}
            "noepoch" => return f.done().map(|()| None),
            other => return Err(f.unknown(other)),
        }
        let epoch = f.text()?;
        let current = f.int()?;
        let mut entries = Vec::new();
        while !f.is_done() {
            let id = f.text()?;
            let revision = id
                .strip_suffix("-0")
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            let tenant = f.text()?;
            let state = f.tenant(revision)?;
            entries.push(LogEntry {
                revision,
                tenant,
                state,
            });
        }
        Ok(Some(Log {
            epoch,
            current,
            entries,
        }))
    }
}

/// What `renew.lua` answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RenewReply {
    /// Acknowledged, and the lease extended; `current` is Redis's revision.
    Renewed { current: u64 },
    /// Acknowledged, but not renewed: the replica is behind `current`.
    Behind { current: u64 },
    /// Not acknowledged (any earlier ack forgotten) and not renewed: the replica holds
    /// revisions beyond Redis's `current`, which a failover lost.
    Ahead { current: u64 },
    /// Not renewed: Redis is on another epoch.
    OtherEpoch { epoch: String },
    /// Redis holds no epoch.
    NoEpoch,
}

impl RenewReply {
    pub fn decode(value: Value) -> Result<RenewReply, StoreError> {
        let mut f = Fields::of(value)?;
        let reply = match f.text()?.as_str() {
            "ok" => {
                // The deadline is on Redis's clock; the fence keeps its own (see `replica`).
                let _deadline_ms = f.int()?;
                RenewReply::Renewed { current: f.int()? }
            }
            "behind" => RenewReply::Behind { current: f.int()? },
            "ahead" => RenewReply::Ahead { current: f.int()? },
            "epoch" => RenewReply::OtherEpoch { epoch: f.text()? },
            "noepoch" => RenewReply::NoEpoch,
            other => return Err(f.unknown(other)),
        };
        f.done()?;
        Ok(reply)
    }
}

/// What `status.lua` answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct StatusReply {
    /// `None` when Redis holds no epoch.
    pub epoch: Option<String>,
    pub revision: u64,
    /// Redis `TIME` in ms.
    pub now_ms: u64,
    /// Every lease, live or not yet forgotten: replica → deadline in ms, by deadline.
    pub leases: Vec<(String, u64)>,
    /// Replica → the highest revision it acknowledged.
    pub acks: HashMap<String, u64>,
}

impl StatusReply {
    pub fn decode(value: Value) -> Result<StatusReply, StoreError> {
        let mut f = Fields::of(value)?;
        let epoch = Some(f.text()?).filter(|e| !e.is_empty());
        let reply = StatusReply {
            epoch,
            revision: f.int()?,
            now_ms: f.int()?,
            leases: f.pairs()?,
            acks: f.pairs()?.into_iter().collect(),
        };
        f.done()?;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests;
