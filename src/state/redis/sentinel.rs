//! Finding the primary through Redis Sentinel (`state.redis.sentinel`), the way the
//! Sentinel client guidelines describe: ask each sentinel in turn
//! `SENTINEL get-master-addr-by-name <master_name>`; connect to the address it names and
//! ask that node `ROLE`; only a node that answers `master` is used (a sentinel may name
//! a node that was demoted and not yet reconfigured). The sentinel that answered moves
//! to the front, so the next dial asks it first.
//!
//! Sentinels are dialled like the data nodes (TLS for `rediss://`), with their own
//! password (`sentinel.password_file` / `sentinel.password`), no database.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, RedisConnectionInfo, Value};

use super::dial::{self, Dialer, Failure};
use crate::config::RedisSentinel;
use crate::state::StoreError;

/// The sentinels of one deployment.
pub(super) struct Sentinels {
    master_name: String,
    /// In the order to ask them; the last one that answered first.
    nodes: Mutex<Vec<(String, u16)>>,
    /// Credentials for the sentinels themselves.
    info: RedisConnectionInfo,
}

impl fmt::Debug for Sentinels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sentinels")
            .field("master_name", &self.master_name)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// Each sentinel gets this share of a dial's time, so one that is silent leaves time to
/// ask the others.
const MIN_PER_SENTINEL: Duration = Duration::from_millis(50);

impl Sentinels {
    pub(super) fn new(settings: &RedisSentinel) -> Result<Sentinels, StoreError> {
        let password = match (&settings.password_file, &settings.password) {
            (Some(file), _) => {
                Some(crate::config::read_password(file).map_err(StoreError::Unavailable)?)
            }
            (None, Some(secret)) => Some(secret.0.clone()),
            (None, None) => None,
        };
        Ok(Sentinels {
            master_name: settings.master_name.clone(),
            nodes: Mutex::new(settings.nodes.clone()),
            info: RedisConnectionInfo {
                password,
                ..RedisConnectionInfo::default()
            },
        })
    }

    fn nodes(&self) -> Vec<(String, u16)> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn answered(&self, node: &(String, u16)) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = nodes.iter().position(|n| n == node) {
            let first = nodes.remove(i);
            nodes.insert(0, first);
        }
    }

    /// A set-up connection to the node a sentinel names and that confirms it is the
    /// primary, and its address. A refusal (TLS, password) from any node is reported as
    /// such; otherwise the last reason.
    pub(super) async fn primary(
        &self,
        dialer: &Dialer,
        config: &AsyncConnectionConfig,
        timeout: Duration,
    ) -> Result<(MultiplexedConnection, (String, u16)), Failure> {
        let nodes = self.nodes();
        let mut last = Failure::Unreachable("no sentinel configured".into());
        let per = (timeout / (nodes.len() as u32 + 1)).max(MIN_PER_SENTINEL);
        for node in &nodes {
            let asked = tokio::time::timeout(per, self.ask(dialer, node, config)).await;
            let addr = match asked {
                Err(_) => {
                    last = Failure::Unreachable(format!(
                        "sentinel {}:{} did not answer within {per:?}",
                        node.0, node.1
                    ));
                    continue;
                }
                Ok(Err(refused @ Failure::Refused(_))) => return Err(refused),
                Ok(Err(e)) => {
                    last = e;
                    continue;
                }
                Ok(Ok(addr)) => addr,
            };
            match tokio::time::timeout(per, verified(dialer, &addr, config)).await {
                Ok(Ok(conn)) => {
                    self.answered(node);
                    return Ok((conn, addr));
                }
                Ok(Err(refused @ Failure::Refused(_))) => return Err(refused),
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = Failure::Unreachable(format!(
                        "primary {}:{} (named by sentinel {}:{}) did not answer within {per:?}",
                        addr.0, addr.1, node.0, node.1
                    ))
                }
            }
        }
        Err(last)
    }

    /// `SENTINEL get-master-addr-by-name` on one sentinel.
    async fn ask(
        &self,
        dialer: &Dialer,
        node: &(String, u16),
        config: &AsyncConnectionConfig,
    ) -> Result<(String, u16), Failure> {
        let stream = dialer.tcp(&node.0, node.1).await?;
        let mut conn = dial::setup(&self.info, stream, config).await?;
        let mut ask = ::redis::cmd("SENTINEL");
        ask.arg("get-master-addr-by-name").arg(&self.master_name);
        let answer: Value = ask
            .query_async(&mut conn)
            .await
            .map_err(|e| Failure::Unreachable(format!("sentinel {}:{}: {e}", node.0, node.1)))?;
        let unknown = || {
            Failure::Unreachable(format!(
                "sentinel {}:{} knows no primary named `{}`",
                node.0, node.1, self.master_name
            ))
        };
        let Value::Array(parts) = answer else {
            return Err(unknown());
        };
        let text = |v: Option<&Value>| match v {
            Some(Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
            Some(Value::SimpleString(s)) => Some(s.clone()),
            _ => None,
        };
        let host = text(parts.first()).ok_or_else(unknown)?;
        let port = text(parts.get(1))
            .and_then(|p| p.parse().ok())
            .ok_or_else(unknown)?;
        Ok((host, port))
    }
}

/// Connects to `addr` and checks that it is the primary (`ROLE` → `master`).
async fn verified(
    dialer: &Dialer,
    addr: &(String, u16),
    config: &AsyncConnectionConfig,
) -> Result<MultiplexedConnection, Failure> {
    let stream = dialer.tcp(&addr.0, addr.1).await?;
    let mut conn = dialer.setup(stream, config).await?;
    let role: Value = ::redis::cmd("ROLE")
        .query_async(&mut conn)
        .await
        .map_err(|e| Failure::Unreachable(format!("ROLE on {}:{}: {e}", addr.0, addr.1)))?;
    let is_primary = match &role {
        Value::Array(parts) => matches!(
            parts.first(),
            Some(Value::BulkString(b)) if b == b"master"
        ),
        _ => false,
    };
    if !is_primary {
        return Err(Failure::Unreachable(format!(
            "{}:{} is not the primary (ROLE is not `master`); a failover is under way",
            addr.0, addr.1
        )));
    }
    Ok(conn)
}
