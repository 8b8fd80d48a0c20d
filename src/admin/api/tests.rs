//! Tenant documents, tenant names and the cluster document.

use super::*;
use crate::state::redis::{RedisStatus, ReplicaLease};

#[test]
fn tenant_names_are_url_safe() {
    assert_eq!(tenant_name("acme-1").unwrap(), "acme-1");
    assert_eq!(tenant_name("ACME").unwrap(), "acme");
    for bad in ["", ".", "..", "a/b", "a%2Fb", "a b", "é", &"a".repeat(129)] {
        assert!(tenant_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_document_shows_public_token_facts_only() {
    let record = |n| TokenRecord {
        digest: crate::auth::token::Digest([n; 32]),
        created_at_ms: 0,
        expires_at_ms: 86_400_000,
    };
    let t = TenantState {
        mode: Mode::On,
        token: Some(record(9)),
        previous: Some(crate::state::PreviousToken {
            token: record(8),
            valid_until_ms: 3_600_000,
        }),
        revision: 4,
    };
    let used = |d: &crate::auth::token::Digest| (d.0[0] == 9).then_some(7_200);
    let doc = document("acme", &t, &used);
    assert_eq!(doc["token"]["expires_at"], "1970-01-02T00:00:00Z");
    assert_eq!(doc["token"]["last_used_at"], "1970-01-01T02:00:00Z");
    assert_eq!(doc["mode"], "on");
    assert_eq!(doc["require_authentication"], true);
    assert_eq!(
        doc["previous_token"]["valid_until"],
        "1970-01-01T01:00:00.000Z"
    );
    assert_eq!(doc["previous_token"]["last_used_at"], Value::Null);
    assert_eq!(doc["previous_token"]["id"], "080808080808");
    assert_eq!(doc["revision"], 4);
    assert!(
        !doc.to_string().contains(&"09".repeat(32)),
        "no full digest"
    );
    let new = document("new", &TenantState::default(), &|_| None);
    assert_eq!(new["token"], Value::Null);
    assert_eq!(new["previous_token"], Value::Null);
    assert_eq!(
        (&new["mode"], &new["require_authentication"]),
        (&json!("off"), &json!(false))
    );
}

#[test]
fn the_cluster_document_keeps_its_shape() {
    assert_eq!(cluster(&ClusterStatus::File), json!({ "backend": "file" }));
    let status = RedisStatus {
        epoch: Some("e1".into()),
        revision: 7,
        replica: "a".into(),
        fenced: false,
        replicas: vec![ReplicaLease {
            replica: "b".into(),
            applied_revision: 6,
            deadline_ms: 86_400_250,
            live: true,
        }],
    };
    assert_eq!(
        cluster(&ClusterStatus::Redis(status.clone())),
        json!({
            "backend": "redis",
            "epoch": "e1",
            "revision": 7,
            "replica": "a",
            "fenced": false,
            "replicas": [{
                "replica": "b",
                "applied_revision": 6,
                "lease_deadline": "1970-01-02T00:00:00.250Z",
                "live": true,
            }],
        })
    );
    let uninitialised = RedisStatus {
        epoch: None,
        ..status
    };
    assert_eq!(
        cluster(&ClusterStatus::Redis(uninitialised))["epoch"],
        Value::Null
    );
}
