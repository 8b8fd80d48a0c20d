//! One lazily dialled, multiplexed connection to Redis, with every call bounded.
//!
//! Nothing blocks while Redis is away: dialling, a script and a command each get at most
//! `timeout`; a connection that failed or went silent is dropped, so the next call dials
//! again. A call that timed out after it may have been sent is
//! [`StoreError::Uncertain`] (it may still run), never reported as "nothing changed".

use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, Value};

use crate::state::StoreError;

/// The client for `url` (`state.redis.url`); nothing is dialled yet.
pub(super) fn client(url: &str) -> Result<Client, StoreError> {
    Client::open(url).map_err(|e| StoreError::Unavailable(format!("state.redis.url: {e}")))
}

/// A lazily (re)connected multiplexed connection: every call is bounded by a timeout,
/// and a failed connection is dropped so the next call dials again (never a call that
/// blocks while Redis is away).
#[derive(Debug)]
pub(super) struct Conn {
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
    pub(super) fn new(client: Client, timeout: Duration, longest: Duration, probe: bool) -> Conn {
        Conn {
            client,
            timeout,
            longest: longest.max(timeout),
            probe,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) async fn get(&self) -> Result<MultiplexedConnection, StoreError> {
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
