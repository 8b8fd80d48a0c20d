//! What a Redis deployment looks like from one replica (`GET /admin/v1/cluster`): the
//! epoch and revision in Redis, this replica's fence, and every replica's lease and
//! acknowledged revision, read in one step by `status.lua`. The admin API renders it.

use super::scripts::StatusReply;
use super::Inner;
use crate::state::StoreError;

/// The state of a Redis deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStatus {
    /// `None` while Redis holds no epoch (never initialised, or it lost its data).
    pub epoch: Option<String>,
    /// The deployment revision in Redis.
    pub revision: u64,
    /// The name of the replica answering.
    pub replica: String,
    /// Whether the replica answering refuses protected routes now.
    pub fenced: bool,
    /// Every replica holding a lease, live or not yet forgotten, soonest deadline first.
    pub replicas: Vec<ReplicaLease>,
}

/// One replica's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaLease {
    pub replica: String,
    /// The highest revision it acknowledged (0: none).
    pub applied_revision: u64,
    /// When its lease runs out, in Unix ms of Redis's clock.
    pub deadline_ms: u64,
    /// Whether the lease had not run out when Redis answered.
    pub live: bool,
}

impl RedisStatus {
    fn new(reply: StatusReply, replica: &str, fenced: bool) -> RedisStatus {
        let StatusReply {
            epoch,
            revision,
            now_ms,
            leases,
            acks,
        } = reply;
        let replicas = leases
            .into_iter()
            .map(|(replica, deadline_ms)| ReplicaLease {
                applied_revision: acks.get(&replica).copied().unwrap_or(0),
                deadline_ms,
                live: deadline_ms >= now_ms,
                replica,
            })
            .collect();
        RedisStatus {
            epoch,
            revision,
            replica: replica.to_string(),
            fenced,
            replicas,
        }
    }
}

impl Inner {
    pub(super) async fn status(&self) -> Result<RedisStatus, StoreError> {
        let value = self.writer.run(&self.scripts.status(&self.keys)).await?;
        let reply = StatusReply::decode(value)?;
        Ok(RedisStatus::new(
            reply,
            &self.settings.replica,
            self.fence.is_fenced(),
        ))
    }
}
