//! One lazily dialled, multiplexed connection to Redis, with every call bounded.
//!
//! Nothing blocks while Redis is away: dialling, a script and a command each get at most
//! `timeout`; a connection that failed or went silent is dropped, so the next call dials
//! again. A call that timed out after it may have been sent is
//! [`StoreError::Uncertain`] (it may still run), never reported as "nothing changed".
//!
//! Failover: each connection remembers which primary it reached ([`Dialer::generation`]);
//! one made before another connection found a newer primary is dropped instead of used,
//! and a `-READONLY` answer (the node was demoted) drops it too, so the next call asks
//! the sentinels again. A command refused with `-READONLY` did not run.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Value};

use super::dial::{Dialer, Failure};
use crate::state::StoreError;

/// A lazily (re)connected multiplexed connection: every call is bounded by a timeout,
/// and a failed connection is dropped so the next call dials again (never a call that
/// blocks while Redis is away).
#[derive(Debug)]
pub(super) struct Conn {
    dialer: Arc<Dialer>,
    timeout: Duration,
    /// The longest any call may take (a `WAIT` outlasts `timeout`); the connection's own
    /// response timeout, so the library never cuts such a call short.
    longest: Duration,
    /// PING an idle connection before each script (writers: a change must not go down
    /// a dead connection; the replica loop retries by itself and skips the round trip).
    probe: bool,
    /// The connection and the generation of the primary it reached.
    slot: tokio::sync::Mutex<Option<(MultiplexedConnection, u64)>>,
}

impl Conn {
    pub(super) fn new(
        dialer: Arc<Dialer>,
        timeout: Duration,
        longest: Duration,
        probe: bool,
    ) -> Conn {
        Conn {
            dialer,
            timeout,
            longest: longest.max(timeout),
            probe,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) async fn get(&self) -> Result<MultiplexedConnection, StoreError> {
        Ok(self.get_with_generation().await?.0)
    }

    /// The connection and the generation of the primary it reached; one older than the
    /// newest primary known is dropped and a new one dialled.
    pub(super) async fn get_with_generation(
        &self,
    ) -> Result<(MultiplexedConnection, u64), StoreError> {
        let mut slot = self.slot.lock().await;
        if let Some((conn, generation)) = slot.as_ref() {
            if *generation >= self.dialer.generation() {
                return Ok((conn.clone(), *generation));
            }
            slot.take();
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.longest);
        let dialled =
            tokio::time::timeout(self.timeout, self.dialer.multiplexed(&config, self.timeout))
                .await
                .map_err(|_| StoreError::Unavailable("connecting timed out".into()))??;
        *slot = Some(dialled.clone());
        Ok(dialled)
    }

    /// Dials now (keeping the connection), telling a refusal from an unreachable Redis.
    pub(super) async fn dial(&self) -> Result<(), Failure> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.longest);
        let dialled =
            tokio::time::timeout(self.timeout, self.dialer.multiplexed(&config, self.timeout))
                .await
                .map_err(|_| Failure::Unreachable("connecting timed out".into()))??;
        *self.slot.lock().await = Some(dialled);
        Ok(())
    }

    /// Drops the connection so the next call dials (and, with sentinels, asks) again.
    pub(super) async fn forget(&self) {
        self.slot.lock().await.take();
    }

    /// A connection that answered `PING` just now: a change is never sent down a
    /// connection that died while idle (Redis restarted), where its fate would be unknown.
    async fn checked(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut conn = self.get().await?;
        let ping = ::redis::cmd("PING");
        match tokio::time::timeout(self.timeout, ping.query_async::<Value>(&mut conn)).await {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err(_)) => {
                self.forget().await;
                self.get().await
            }
            Err(_) => {
                self.forget().await;
                Err(StoreError::Unavailable(format!(
                    "no answer to PING within {:?}",
                    self.timeout
                )))
            }
        }
    }

    /// Runs `invocation`; a timeout after the request may have been sent is
    /// [`StoreError::Uncertain`].
    pub(super) async fn run(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Result<Value, StoreError> {
        Ok(self.run_keeping(invocation).await?.0)
    }

    /// [`Conn::run`], also returning the connection the script went down (a `WAIT` must
    /// follow on the same one: it counts the writes of the client that sends it).
    pub(super) async fn run_keeping(
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

    /// [`Conn::run`], but only on a connection to the primary of `generation`: once
    /// another primary is known, nothing is sent and the caller starts over (the replica
    /// loop's subscription and snapshot belong to one primary).
    pub(super) async fn run_on(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
        generation: u64,
    ) -> Result<Value, StoreError> {
        let (mut conn, reached) = self.get_with_generation().await?;
        if reached != generation {
            return Err(StoreError::Unavailable(
                "the Redis primary changed (failover)".into(),
            ));
        }
        self.bounded(invocation.invoke_async::<Value>(&mut conn))
            .await
    }

    pub(super) async fn cmd(&self, cmd: &::redis::Cmd) -> Result<Value, StoreError> {
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
                let demoted = e.kind() == ::redis::ErrorKind::ReadOnly;
                if demoted || e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.forget().await;
                }
                if demoted {
                    return Err(StoreError::Unavailable(format!(
                        "the Redis node is no longer the primary ({e}); asking again"
                    )));
                }
                if e.is_timeout() {
                    Err(StoreError::Uncertain(e.to_string()))
                } else {
                    Err(StoreError::Unavailable(e.to_string()))
                }
            }
            Err(_) => {
                self.forget().await;
                Err(StoreError::Uncertain(format!(
                    "no answer within {:?}",
                    self.timeout
                )))
            }
        }
    }
}
