//! `authgate cluster init`: give the Redis state an epoch, the mark that it holds a
//! deployment's state. Replicas refuse protected routes while Redis holds none (it lost
//! its data, or was never initialised), and resync when it changes.

use std::time::Duration;

use ::redis::Value;

use std::sync::Arc;

use super::conn::Conn;
use super::dial::Dialer;
use super::keys::Keys;
use super::wire::text;
use crate::config::RedisState;
use crate::state::StoreError;

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
    let dialer = Arc::new(Dialer::new(settings)?);
    let timeout = Duration::from_secs(5);
    let conn = Conn::new(dialer, timeout, timeout, false);
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
