//! When each token was last presented and accepted, on this replica, to the second.
//!
//! Kept in memory only and never written on the request path: each token digest has one
//! [`LastUse`] (an atomic), shared by every snapshot that holds the token, so the value
//! survives the snapshot swaps of later changes and follows a token from current to
//! previous. The request path touches it after an accepted decision: one load, and one
//! atomic max only when the second changed. The admin API and the metrics scrape read it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::State;
use crate::auth::token::Digest;

/// Unix seconds of a token's last accepted use; 0 until the first.
#[derive(Debug, Default)]
pub struct LastUse(AtomicU64);

impl LastUse {
    /// Records a use at `now_s`. Never moves backwards (two requests racing across a
    /// second boundary leave the later second).
    #[inline]
    pub fn touch(&self, now_s: u64) {
        if self.0.load(Ordering::Relaxed) < now_s {
            self.0.fetch_max(now_s, Ordering::Relaxed);
        }
    }

    /// Unix seconds of the last use, if any.
    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&s| s > 0)
    }
}

/// Every token's [`LastUse`], by digest: only tokens of the newest state are kept.
#[derive(Debug, Default)]
pub struct LastUses {
    by_digest: Mutex<HashMap<Digest, Arc<LastUse>>>,
}

impl LastUses {
    /// The entries of every token in `state` (kept when known, new otherwise); tokens
    /// no longer in it are forgotten.
    pub fn for_state(&self, state: &State) -> HashMap<Digest, Arc<LastUse>> {
        let mut known = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        let digests = state.tenants.values().flat_map(|t| {
            let previous = t.previous.as_ref().map(|p| &p.token);
            t.token.iter().chain(previous).map(|t| t.digest)
        });
        let kept: HashMap<Digest, Arc<LastUse>> = digests
            .map(|d| (d, known.get(&d).cloned().unwrap_or_default()))
            .collect();
        known.clone_from(&kept);
        kept
    }

    /// Unix seconds of `digest`'s last accepted use on this replica.
    pub fn get(&self, digest: &Digest) -> Option<u64> {
        let known = self.by_digest.lock().unwrap_or_else(|e| e.into_inner());
        known.get(digest).and_then(|u| u.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, TokenRecord};

    #[test]
    fn a_use_is_kept_across_states_and_never_moves_back() {
        let use_ = LastUse::default();
        assert_eq!(use_.get(), None);
        use_.touch(10);
        use_.touch(9);
        assert_eq!(use_.get(), Some(10));

        let token = |n| TokenRecord {
            digest: Digest([n; 32]),
            created_at_ms: 0,
            expires_at_ms: u64::MAX,
        };
        let set = |state: &State, n| {
            state.apply(&Command::SetToken {
                tenant: "acme".into(),
                token: token(n),
                previous_valid_until_ms: Some(u64::MAX),
            })
        };
        let uses = LastUses::default();
        let s1 = set(&State::default(), 1);
        uses.for_state(&s1)[&Digest([1; 32])].touch(5);
        let s2 = set(&s1, 2);
        let both = uses.for_state(&s2);
        assert_eq!(both.len(), 2);
        assert_eq!(
            uses.get(&Digest([1; 32])),
            Some(5),
            "kept as the previous token"
        );
        let s3 = set(&s2, 3);
        uses.for_state(&s3);
        assert_eq!(uses.get(&Digest([1; 32])), None, "forgotten once ended");
    }
}
