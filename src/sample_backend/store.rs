//! The sample backend's in-memory state: profiles and batch statuses, per client.
//!
//! A profile is keyed by (client, id kind, id): one created through a `thirdPartyId` is a
//! different profile from one created through an equal `pcId`. Both maps are `DashMap`s and
//! every operation takes its shard locks briefly and synchronously, never across an await.
//! A batch is applied row by row (validation already happened), so a concurrent reader may
//! see a batch half applied, as with the real service's asynchronous processing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use super::batch::Batch;

/// Which identifier a profile is addressed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// The customer's own id (`thirdPartyId`, `mbox3rdPartyId`).
    ThirdPartyId,
    /// The service's visitor id (`pcId`, `mboxPC`).
    PcId,
}

impl IdKind {
    /// Recognises a CSV id column or a single-update parameter name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "thirdPartyId" | "mbox3rdPartyId" => Some(IdKind::ThirdPartyId),
            "pcId" | "mboxPC" => Some(IdKind::PcId),
            _ => None,
        }
    }
}

/// Whether a batch may create profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// v1: rows for unknown profiles are skipped and counted as not found.
    UpdateExisting,
    /// v2: rows for unknown profiles create them.
    Upsert,
}

/// Attribute name → value, sorted so JSON output is deterministic.
pub type Attributes = BTreeMap<String, String>;

/// The outcome of one processed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStatus {
    pub batch_id: String,
    pub size: usize,
    pub successful: usize,
    pub not_found: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ProfileKey {
    client: String,
    kind: IdKind,
    id: String,
}

impl ProfileKey {
    fn new(client: &str, kind: IdKind, id: &str) -> Self {
        ProfileKey {
            client: client.to_owned(),
            kind,
            id: id.to_owned(),
        }
    }
}

/// All profiles and batch statuses of every client.
#[derive(Debug, Default)]
pub struct Store {
    profiles: DashMap<ProfileKey, Attributes>,
    /// (client, batch id) → status; a batch is only visible under its own client.
    batches: DashMap<(String, String), BatchStatus>,
    next_batch: AtomicU64,
}

impl Store {
    /// Applies a validated batch, records its status under a fresh id and returns it.
    pub fn apply_batch(&self, client: &str, batch: &Batch, mode: Mode) -> BatchStatus {
        let mut successful = 0;
        for row in &batch.rows {
            let key = ProfileKey::new(client, batch.kind, &row.id);
            let updates = row.updates(&batch.attributes);
            match mode {
                Mode::Upsert => {
                    self.profiles
                        .entry(key)
                        .or_default()
                        .extend(updates.map(owned));
                    successful += 1;
                }
                Mode::UpdateExisting => {
                    if let Some(mut profile) = self.profiles.get_mut(&key) {
                        profile.extend(updates.map(owned));
                        successful += 1;
                    }
                }
            }
        }
        let number = self.next_batch.fetch_add(1, Ordering::Relaxed) + 1;
        let status = BatchStatus {
            batch_id: format!("{client}-{number}"),
            size: batch.rows.len(),
            successful,
            not_found: batch.rows.len() - successful,
        };
        self.batches
            .insert((client.to_owned(), status.batch_id.clone()), status.clone());
        status
    }

    /// The status of a batch submitted for `client`.
    pub fn batch_status(&self, client: &str, batch_id: &str) -> Option<BatchStatus> {
        self.batches
            .get(&(client.to_owned(), batch_id.to_owned()))
            .map(|status| status.clone())
    }

    /// Creates or updates one profile; returns whether it was created.
    pub fn upsert<'a>(
        &self,
        client: &str,
        kind: IdKind,
        id: &str,
        updates: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> bool {
        let key = ProfileKey::new(client, kind, id);
        let mut created = false;
        let mut profile = self.profiles.entry(key).or_insert_with(|| {
            created = true;
            Attributes::new()
        });
        profile.extend(updates.into_iter().map(owned));
        created
    }

    /// A copy of one profile's attributes.
    pub fn profile(&self, client: &str, kind: IdKind, id: &str) -> Option<Attributes> {
        self.profiles
            .get(&ProfileKey::new(client, kind, id))
            .map(|profile| profile.clone())
    }
}

fn owned((name, value): (&str, &str)) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::batch::parse_csv;
    use super::*;

    #[test]
    fn v2_creates_and_v1_updates_only_existing() {
        let store = Store::default();
        let created = parse_csv("thirdPartyId,a,b\n1,x,y\n").unwrap();
        let status = store.apply_batch("acme", &created, Mode::Upsert);
        assert_eq!(
            (status.size, status.successful, status.not_found),
            (1, 1, 0)
        );

        let update = parse_csv("thirdPartyId,a,b\n1,z,\n2,q,r\n").unwrap();
        let status = store.apply_batch("acme", &update, Mode::UpdateExisting);
        assert_eq!(
            (status.size, status.successful, status.not_found),
            (2, 1, 1)
        );

        let profile = store.profile("acme", IdKind::ThirdPartyId, "1").unwrap();
        assert_eq!(profile.get("a").map(String::as_str), Some("z"));
        assert_eq!(
            profile.get("b").map(String::as_str),
            Some("y"),
            "empty cell keeps value"
        );
        assert_eq!(store.profile("acme", IdKind::ThirdPartyId, "2"), None);
    }

    #[test]
    fn profiles_are_keyed_by_client_and_id_kind() {
        let store = Store::default();
        assert!(store.upsert("acme", IdKind::PcId, "7", [("a", "1")]));
        assert!(!store.upsert("acme", IdKind::PcId, "7", [("b", "2")]));
        assert_eq!(
            store.profile("acme", IdKind::PcId, "7").map(|p| p.len()),
            Some(2)
        );
        assert_eq!(store.profile("acme", IdKind::ThirdPartyId, "7"), None);
        assert_eq!(store.profile("other", IdKind::PcId, "7"), None);
    }

    #[test]
    fn batch_ids_are_unique_and_scoped_to_their_client() {
        let store = Store::default();
        let batch = parse_csv("pcId,a\n1,x\n").unwrap();
        let first = store.apply_batch("acme", &batch, Mode::Upsert);
        let second = store.apply_batch("acme", &batch, Mode::Upsert);
        assert_ne!(first.batch_id, second.batch_id);
        assert_eq!(
            store.batch_status("acme", &first.batch_id),
            Some(first.clone())
        );
        assert_eq!(store.batch_status("other", &first.batch_id), None);
    }
}
