//! Each script's reply, as Redis hands it over, decoded into its type.

use super::*;
use crate::state::TokenRecord;

fn s(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

fn array(items: Vec<Value>) -> Value {
    Value::Array(items)
}

fn digest() -> String {
    "ab".repeat(32)
}

#[test]
fn a_change_decodes_its_three_outcomes() {
    let ok = array(vec![
        s("ok"),
        Value::Int(7),
        Value::Int(1_000),
        s("e1"),
        array(vec![s("a"), s("5000"), s("b"), s("6000")]),
        s("on"),
        s(&digest()),
        s("10"),
        s("20"),
        s(&"cd".repeat(32)),
        s("5"),
        s("30"),
        s("15"),
    ]);
    let ChangeReply::Applied(change) = ChangeReply::decode(ok).unwrap() else {
        panic!("not applied")
    };
    assert_eq!(change.revision, 7);
    assert_eq!(change.now_ms, 1_000);
    assert_eq!(
        change.leases,
        vec![("a".into(), 5_000), ("b".into(), 6_000)]
    );
    assert!(change.tenant.require_authentication());
    assert_eq!(change.tenant.revision, 7, "stamped with the new revision");
    assert_eq!(change.tenant.token.unwrap().expires_at_ms, 20);
    let previous = change.tenant.previous.unwrap();
    assert_eq!(
        (previous.token.created_at_ms, previous.valid_until_ms),
        (5, 15)
    );
    assert_eq!(
        ChangeReply::decode(array(vec![s("noepoch")])).unwrap(),
        ChangeReply::NoEpoch
    );
    assert_eq!(
        ChangeReply::decode(array(vec![s("conflict"), Value::Int(3)])).unwrap(),
        ChangeReply::Conflict { current: 3 }
    );
}

#[test]
fn unknown_tags_and_wrong_lengths_are_errors_not_guesses() {
    assert!(ChangeReply::decode(array(vec![s("maybe")])).is_err());
    assert!(
        ChangeReply::decode(array(vec![s("conflict")])).is_err(),
        "short"
    );
    assert!(
        ChangeReply::decode(array(vec![s("noepoch"), s("extra")])).is_err(),
        "long"
    );
    assert!(RenewReply::decode(array(vec![])).is_err(), "no tag");
    assert!(Snapshot::decode(s("ok")).is_err(), "not an array");
}

#[test]
fn a_snapshot_holds_every_tenant() {
    let reply = array(vec![
        s("ok"),
        s("e1"),
        Value::Int(9),
        s("acme"),
        s("on"),
        s(&digest()),
        s("10"),
        s("20"),
        s(""),
        s(""),
        s(""),
        s(""),
        s("9"),
        s("open"),
        s("report"),
        s(""),
        s(""),
        s(""),
        s(""),
        s(""),
        s(""),
        s(""),
        s("4"),
    ]);
    let snapshot = Snapshot::decode(reply).unwrap().unwrap();
    assert_eq!(snapshot.epoch, "e1");
    assert_eq!(snapshot.state.revision, 9);
    assert_eq!(
        snapshot.state.tenant("acme").token,
        Some(TokenRecord {
            digest: crate::auth::token::Digest([0xab; 32]),
            created_at_ms: 10,
            expires_at_ms: 20,
        })
    );
    let open = snapshot.state.tenant("open");
    assert_eq!(open.mode, crate::state::Mode::Report);
    assert_eq!((open.token, open.revision), (None, 4));
    assert_eq!(Snapshot::decode(array(vec![s("noepoch")])).unwrap(), None);
    let torn = array(vec![s("ok"), s("e1"), Value::Int(9), s("acme"), s("on")]);
    assert!(Snapshot::decode(torn).is_err(), "a partial tenant");
}

#[test]
fn log_entries_carry_their_revision_from_the_stream_id() {
    let reply = array(vec![
        s("ok"),
        s("e1"),
        Value::Int(12),
        s("11-0"),
        s("acme"),
        s("on"),
        s(""),
        s(""),
        s(""),
        s(""),
        s(""),
        s(""),
        s(""),
        s("12-3"),
        s("beta"),
        s("off"),
        s(""),
        s(""),
        s(""),
        s(""),
        s(""),
        s(""),
        s(""),
    ]);
    let log = Log::decode(reply).unwrap().unwrap();
    assert_eq!((log.epoch.as_str(), log.current), ("e1", 12));
    assert_eq!(log.entries.len(), 2);
    assert_eq!(log.entries[0].revision, 11);
    assert_eq!(log.entries[0].tenant, "acme");
    assert_eq!(log.entries[0].state.revision, 11);
    assert!(log.entries[0].state.require_authentication());
    assert_eq!(log.entries[1].revision, 0, "an id of another form is a gap");
    assert_eq!(Log::decode(array(vec![s("noepoch")])).unwrap(), None);
}

#[test]
fn a_renewal_decodes_its_five_outcomes() {
    let decode = |items| RenewReply::decode(array(items)).unwrap();
    assert_eq!(
        decode(vec![s("ok"), Value::Int(5_000), Value::Int(8)]),
        RenewReply::Renewed { current: 8 }
    );
    assert_eq!(
        decode(vec![s("behind"), Value::Int(9)]),
        RenewReply::Behind { current: 9 }
    );
    assert_eq!(
        decode(vec![s("ahead"), Value::Int(3)]),
        RenewReply::Ahead { current: 3 }
    );
    assert_eq!(
        decode(vec![s("epoch"), s("e2")]),
        RenewReply::OtherEpoch { epoch: "e2".into() }
    );
    assert_eq!(decode(vec![s("noepoch")]), RenewReply::NoEpoch);
}

#[test]
fn the_status_reads_an_empty_epoch_as_none() {
    let reply = |epoch: &str| {
        array(vec![
            s(epoch),
            Value::Int(2),
            Value::Int(1_000),
            array(vec![s("a"), s("1500")]),
            array(vec![s("a"), s("2")]),
        ])
    };
    let status = StatusReply::decode(reply("e1")).unwrap();
    assert_eq!(status.epoch.as_deref(), Some("e1"));
    assert_eq!((status.revision, status.now_ms), (2, 1_000));
    assert_eq!(status.leases, vec![("a".into(), 1_500)]);
    assert_eq!(status.acks.get("a"), Some(&2));
    assert_eq!(StatusReply::decode(reply("")).unwrap().epoch, None);
}
