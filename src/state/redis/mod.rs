//! The `redis` store: one source of truth in Redis shared by several replicas, with
//! acknowledged, bounded invalidation.
//!
//! Keys (all under one hash tag, so Redis Cluster keeps them in one slot):
//! `{p}:epoch` (random, set by `authgate cluster init`), `{p}:rev` (deployment revision),
//! `{p}:tenants` (set), `{p}:t:<tenant>` (hash: require, sha256, created_ms, expires_ms,
//! revision), `{p}:log` (stream, entry id `<rev>-0`, trimmed to about 1000),
//! `{p}:leases` (zset replica → deadline in ms of Redis `TIME`), `{p}:acks` (hash
//! replica → applied revision); channels `{p}:changes` and `{p}:acked`.
//!
//! A change ([`RedisStore::apply`]): subscribe to the ack channel, run `change.lua`
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

mod replica;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, Script, Value};
use futures_util::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{
    Applied, BoxFuture, Command, Fence, ReplicaAck, State, StateHandle, StateStore, StoreError,
};
use crate::config::RedisState;
use wire::{int, text, Reply};

/// Key and channel names of one deployment.
#[derive(Debug, Clone)]
pub struct Keys {
    pub epoch: String,
    pub rev: String,
    pub tenants: String,
    pub log: String,
    pub leases: String,
    pub acks: String,
    pub changes: String,
    pub acked: String,
    /// `{p}:t:`; a tenant's hash is this plus its name.
    pub tenant_prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let k = |name: &str| format!("{{{prefix}}}:{name}");
        Keys {
            epoch: k("epoch"),
            rev: k("rev"),
            tenants: k("tenants"),
            log: k("log"),
            leases: k("leases"),
            acks: k("acks"),
            changes: k("changes"),
            acked: k("acked"),
            tenant_prefix: k("t:"),
        }
    }

    pub fn tenant(&self, name: &str) -> String {
        format!("{}{name}", self.tenant_prefix)
    }
}

/// The Lua scripts, each one atomic step of the protocol.
#[derive(Debug)]
struct Scripts {
    change: Script,
    snapshot: Script,
    catchup: Script,
    renew: Script,
    status: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            change: Script::new(include_str!("change.lua")),
            snapshot: Script::new(include_str!("snapshot.lua")),
            catchup: Script::new(include_str!("catchup.lua")),
            renew: Script::new(include_str!("renew.lua")),
            status: Script::new(include_str!("status.lua")),
        }
    }
}

/// A lazily (re)connected multiplexed connection: every call is bounded by a timeout,
/// and a failed connection is dropped so the next call dials again (never a call that
/// blocks while Redis is away).
#[derive(Debug)]
struct Conn {
    client: Client,
    timeout: Duration,
    /// The longest any call may take (a `WAIT` outlasts `timeout`); the connection's own
    /// response timeout, so the library never cuts such a call short.
    longest: Duration,
    /// PING an idle connection before each script (writers: a change must not go down
    /// a dead connection; the replica loop retries by itself and skips the round trip).
    probe: bool,
    slot: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Conn {
    fn new(client: Client, timeout: Duration, longest: Duration, probe: bool) -> Conn {
        Conn {
            client,
            timeout,
            longest: longest.max(timeout),
            probe,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    async fn get(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut slot = self.slot.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.longest);
        let conn = tokio::time::timeout(
            self.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| StoreError::Unavailable("connecting timed out".into()))?
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// A connection that answered `PING` just now: a change is never sent down a
    /// connection that died while idle (Redis restarted), where its fate would be unknown.
    async fn checked(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut conn = self.get().await?;
        let ping = ::redis::cmd("PING");
        match tokio::time::timeout(self.timeout, ping.query_async::<Value>(&mut conn)).await {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err(_)) => {
                self.slot.lock().await.take();
                self.get().await
            }
            Err(_) => {
                self.slot.lock().await.take();
                Err(StoreError::Unavailable(format!(
                    "no answer to PING within {:?}",
                    self.timeout
                )))
            }
        }
    }

    /// Runs `invocation`; a timeout after the request may have been sent is
    /// [`StoreError::Uncertain`].
    async fn run(&self, invocation: &::redis::ScriptInvocation<'_>) -> Result<Value, StoreError> {
        Ok(self.run_keeping(invocation).await?.0)
    }

    /// [`Conn::run`], also returning the connection the script went down (a `WAIT` must
    /// follow on the same one: it counts the writes of the client that sends it).
    async fn run_keeping(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Result<(Value, MultiplexedConnection), StoreError> {
        let mut conn = if self.probe {
            self.checked().await?
        } else {
            self.get().await?
        };
        let value = self
            .bounded(invocation.invoke_async::<Value>(&mut conn))
            .await?;
        Ok((value, conn))
    }

    async fn cmd(&self, cmd: &::redis::Cmd) -> Result<Value, StoreError> {
        let mut conn = self.get().await?;
        self.bounded(cmd.query_async::<Value>(&mut conn)).await
    }

    /// Waits for `sent` at most `timeout`. A connection that failed or went silent is
    /// dropped, so the next call dials again; no answer in time means the command may
    /// still have run ([`StoreError::Uncertain`]).
    async fn bounded(
        &self,
        sent: impl std::future::Future<Output = ::redis::RedisResult<Value>>,
    ) -> Result<Value, StoreError> {
        match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.slot.lock().await.take();
                }
                if e.is_timeout() {
                    Err(StoreError::Uncertain(e.to_string()))
                } else {
                    Err(StoreError::Unavailable(e.to_string()))
                }
            }
            Err(_) => {
                self.slot.lock().await.take();
                Err(StoreError::Uncertain(format!(
                    "no answer within {:?}",
                    self.timeout
                )))
            }
        }
    }
}

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
        let client = Client::open(settings.url.as_str())
            .map_err(|e| StoreError::Unavailable(format!("state.redis.url: {e}")))?;
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

    fn cluster(&self) -> BoxFuture<'_, Result<serde_json::Value, StoreError>> {
        Box::pin(self.inner.status())
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

impl Inner {
    async fn apply(&self, cmd: Command, if_match: Option<u64>) -> Result<Applied, StoreError> {
        let keys = &self.keys;
        // Subscribed before the change runs, so no acknowledgement can slip past.
        let mut acks = self.ack_subscription().await;
        let (op, require, digest, created, expires) = match &cmd {
            Command::SetRequireAuthentication { require, .. } => (
                "require",
                if *require { "1" } else { "0" },
                String::new(),
                0,
                0,
            ),
            Command::SetToken { token, .. } => (
                "token",
                "",
                token.digest.to_hex(),
                token.created_at_ms,
                token.expires_at_ms,
            ),
            Command::RevokeToken { .. } => ("revoke", "", String::new(), 0, 0),
        };
        let mut invocation = self.scripts.change.prepare_invoke();
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
            .arg(require)
            .arg(digest)
            .arg(created)
            .arg(expires)
            .arg(&keys.changes);
        let (value, conn) = self.writer.run_keeping(&invocation).await?;
        let reply = Reply::parse(value)?;
        let (revision, now_ms, leases, tenant) = match reply.tag() {
            "ok" => {
                let revision = int(reply.get(1))?;
                let now_ms = int(reply.get(2))?;
                let leases = wire::pairs(reply.get(4))?;
                let tenant = wire::tenant(
                    &text(reply.get(5))?,
                    &text(reply.get(6))?,
                    &text(reply.get(7))?,
                    &text(reply.get(8))?,
                    revision,
                )?;
                (revision, now_ms, leases, tenant)
            }
            "noepoch" => return Err(StoreError::NotInitialised),
            "conflict" => {
                return Err(StoreError::Conflict {
                    current: int(reply.get(1))?,
                })
            }
            other => return Err(StoreError::Unavailable(format!("unexpected reply {other}"))),
        };
        let started = Instant::now();
        let replicas = self
            .await_acks(&mut acks, revision, now_ms, leases, started)
            .await;
        crate::metrics::ack_wait(started.elapsed());
        self.confirm_replicated(conn, revision, started).await?;
        Ok(Applied {
            revision,
            tenant,
            state: None,
            replicas: Some(replicas),
        })
    }

    /// `WAIT wait_replicas <ms>` on the connection the change went down, within what is
    /// left of `ack_timeout` after the replicas' acknowledgements (so they are in force
    /// or fenced whatever the outcome). Fewer confirmations: the change is on the primary
    /// only, and a failover could lose it; never reported as a success.
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

    /// A subscription to the ack channel; `None` when it cannot be had quickly (the
    /// writer then polls the acks hash).
    async fn ack_subscription(&self) -> Option<::redis::aio::PubSubStream> {
        let subscribe = async {
            let mut pubsub = self.client.get_async_pubsub().await.ok()?;
            pubsub.subscribe(&self.keys.acked).await.ok()?;
            Some(pubsub.into_on_message())
        };
        tokio::time::timeout(self.settings.heartbeat, subscribe)
            .await
            .ok()
            .flatten()
    }

    /// Waits until every replica with a live lease acknowledged `revision`, or its lease
    /// deadline (Redis time, measured from `now_ms` on our monotonic clock from
    /// `started`, which is later) has passed, or `ack_timeout`.
    async fn await_acks(
        &self,
        acks: &mut Option<::redis::aio::PubSubStream>,
        revision: u64,
        now_ms: u64,
        leases: Vec<(String, u64)>,
        started: Instant,
    ) -> Vec<ReplicaAck> {
        let give_up = started + self.settings.ack_timeout;
        let waits: Vec<(String, Instant)> = leases
            .iter()
            .map(|(replica, deadline)| {
                let left = Duration::from_millis(deadline.saturating_sub(now_ms));
                (replica.clone(), started + left)
            })
            .collect();
        let mut applied: HashMap<String, u64> = self.read_acks().await.unwrap_or_default();
        let mut poll = tokio::time::interval(Duration::from_millis(100));
        poll.tick().await;
        loop {
            let now = Instant::now();
            let pending = waits.iter().filter(|(replica, until)| {
                applied.get(replica).copied().unwrap_or(0) < revision && *until > now
            });
            let Some(next) = pending.map(|(_, until)| *until).min() else {
                break;
            };
            if now >= give_up {
                break;
            }
            let wake = next.min(give_up);
            tokio::select! {
                message = next_message(acks) => match message {
                    Some((replica, rev)) => {
                        let seen = applied.entry(replica).or_default();
                        *seen = (*seen).max(rev);
                    }
                    None => *acks = None,
                },
                _ = poll.tick() => {
                    if let Ok(read) = self.read_acks().await {
                        for (replica, rev) in read {
                            let seen = applied.entry(replica).or_default();
                            *seen = (*seen).max(rev);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        waits
            .into_iter()
            .map(|(replica, _)| {
                let applied_revision = applied.get(&replica).copied().unwrap_or(0);
                ReplicaAck {
                    replica,
                    applied_revision,
                    acknowledged: applied_revision >= revision,
                }
            })
            .collect()
    }

    async fn read_acks(&self) -> Result<HashMap<String, u64>, StoreError> {
        let value = self
            .writer
            .cmd(::redis::cmd("HGETALL").arg(&self.keys.acks))
            .await?;
        Ok(wire::pairs(Some(&value))?.into_iter().collect())
    }

    /// `GET /admin/v1/cluster`.
    async fn status(&self) -> Result<serde_json::Value, StoreError> {
        let keys = &self.keys;
        let mut invocation = self.scripts.status.prepare_invoke();
        invocation
            .key(&keys.epoch)
            .key(&keys.rev)
            .key(&keys.leases)
            .key(&keys.acks);
        let value = self.writer.run(&invocation).await?;
        let reply = Reply::parse(value)?;
        let epoch = text(reply.get(0))?;
        let revision = int(reply.get(1))?;
        let now_ms = int(reply.get(2))?;
        let leases = wire::pairs(reply.get(3))?;
        let acks: HashMap<String, u64> = wire::pairs(reply.get(4))?.into_iter().collect();
        let replicas: Vec<_> = leases
            .into_iter()
            .map(|(replica, deadline)| {
                json!({
                    "applied_revision": acks.get(&replica).copied().unwrap_or(0),
                    "lease_deadline": crate::time::rfc3339_ms(crate::time::from_unix_ms(deadline)),
                    "live": deadline >= now_ms,
                    "replica": replica,
                })
            })
            .collect();
        Ok(json!({
            "backend": "redis",
            "epoch": if epoch.is_empty() { serde_json::Value::Null } else { json!(epoch) },
            "revision": revision,
            "replica": self.settings.replica,
            "fenced": self.fence.is_fenced(),
            "replicas": replicas,
        }))
    }
}

/// The next `replica revision` ack message; `None` once the subscription is gone
/// (pending forever when there never was one, so `select!` uses its other branches).
async fn next_message(acks: &mut Option<::redis::aio::PubSubStream>) -> Option<(String, u64)> {
    let Some(stream) = acks.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        let msg = stream.next().await?;
        let Ok(payload) = msg.get_payload::<String>() else {
            continue;
        };
        if let Some((replica, rev)) = payload.rsplit_once(' ') {
            if let Ok(rev) = rev.parse() {
                return Some((replica.to_string(), rev));
            }
        }
    }
}

/// What `authgate cluster init` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    Created {
        epoch: String,
    },
    Replaced {
        old: String,
        epoch: String,
    },
    /// An epoch exists and `--force` was not given: nothing changed.
    Exists {
        epoch: String,
    },
}

/// Sets a new random epoch when none exists (or replaces it with `force`). Replicas on
/// another epoch fence themselves and resync.
pub async fn init(settings: &RedisState, force: bool) -> Result<InitOutcome, StoreError> {
    let client = Client::open(settings.url.as_str())
        .map_err(|e| StoreError::Unavailable(format!("state.redis.url: {e}")))?;
    let timeout = Duration::from_secs(5);
    let conn = Conn::new(client, timeout, timeout, false);
    let keys = Keys::new(&settings.key_prefix);
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let epoch = hex::encode(random);
    let old = conn.cmd(::redis::cmd("GET").arg(&keys.epoch)).await?;
    let old = match old {
        Value::Nil => None,
        value => Some(text(Some(&value))?),
    };
    match (old, force) {
        (Some(old), true) => {
            conn.cmd(::redis::cmd("SET").arg(&keys.epoch).arg(&epoch))
                .await?;
            Ok(InitOutcome::Replaced { old, epoch })
        }
        (Some(old), false) => Ok(InitOutcome::Exists { epoch: old }),
        (None, _) => {
            let set = conn
                .cmd(::redis::cmd("SET").arg(&keys.epoch).arg(&epoch).arg("NX"))
                .await?;
            match set {
                Value::Nil => {
                    let now = conn.cmd(::redis::cmd("GET").arg(&keys.epoch)).await?;
                    Ok(InitOutcome::Exists {
                        epoch: text(Some(&now))?,
                    })
                }
                _ => Ok(InitOutcome::Created { epoch }),
            }
        }
    }
}
