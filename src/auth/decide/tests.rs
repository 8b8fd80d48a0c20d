use super::*;
use crate::config::ProtectedRoute;
use crate::state::{Command, Mode, State, TokenRecord};
use http::{Method, Request};

const NOW: u64 = 1_000_000;

fn routes(case_insensitive: bool) -> RouteTable {
    let routes = [
        ProtectedRoute {
            methods: vec![Method::POST],
            path: "/m2/{client}/v2/profile/batchUpdate".into(),
        },
        ProtectedRoute {
            methods: vec![Method::GET],
            path: "/rest/v1/profiles/{id}".into(),
        },
    ];
    RouteTable::new(&routes, case_insensitive, Some("client".into()))
}

fn snapshot(token: &str, expires_at_ms: u64) -> Snapshot {
    let state = State::default()
        .apply(&Command::SetMode {
            tenant: "acme".into(),
            mode: Mode::On,
        })
        .apply(&Command::SetToken {
            tenant: "acme".into(),
            token: TokenRecord {
                digest: Digest::of(token),
                created_at_ms: 0,
                expires_at_ms,
            },
            previous_valid_until_ms: None,
        })
        .apply(&Command::SetToken {
            tenant: "open".into(),
            token: TokenRecord {
                digest: Digest::of("unused"),
                created_at_ms: 0,
                expires_at_ms,
            },
            previous_valid_until_ms: None,
        });
    Snapshot::new(state)
}

fn head(method: Method, uri: &str, auth: &[&str]) -> Parts {
    let mut b = Request::builder().method(method).uri(uri);
    for a in auth {
        b = b.header("authorization", *a);
    }
    b.body(()).unwrap().into_parts().0
}

fn outcome(snap: &Snapshot, method: Method, uri: &str, auth: &[&str]) -> Outcome {
    decide(&routes(false), snap, &head(method, uri, auth), NOW).outcome
}

const BATCH: &str = "/m2/acme/v2/profile/batchUpdate";

#[test]
fn the_current_token_passes() {
    let snap = snapshot("good", NOW + 1);
    let h = head(Method::POST, BATCH, &["Bearer good"]);
    let d = decide(&routes(false), &snap, &h, NOW);
    assert_eq!(d.outcome, Outcome::Allowed);
    assert_eq!(d.class, RouteClass::Protected);
    assert!(d.counters.is_some());
    assert!(
        matches!(d.path, Cow::Borrowed(BATCH)),
        "no allocation for a normal path"
    );
    assert_eq!(
        outcome(&snap, Method::POST, BATCH, &["bEaReR good"]),
        Outcome::Allowed
    );
}

#[test]
fn each_failure_has_its_reason() {
    let snap = snapshot("good", NOW + 1);
    let rejected = |r| Outcome::Rejected(r);
    assert_eq!(
        outcome(&snap, Method::POST, BATCH, &[]),
        rejected(Rejection::Missing)
    );
    assert_eq!(
        outcome(&snap, Method::POST, BATCH, &["Basic Zm9v"]),
        rejected(Rejection::Missing)
    );
    assert_eq!(
        outcome(&snap, Method::POST, BATCH, &["Bearer bad"]),
        rejected(Rejection::Invalid)
    );
    assert_eq!(
        outcome(&snap, Method::POST, BATCH, &["Bearer "]),
        rejected(Rejection::Malformed)
    );
    assert_eq!(
        outcome(&snap, Method::POST, BATCH, &["Bearer good", "Bearer good"]),
        rejected(Rejection::Malformed)
    );
    let expired = snapshot("good", NOW);
    assert_eq!(
        outcome(&expired, Method::POST, BATCH, &["Bearer good"]),
        rejected(Rejection::Expired)
    );
}

#[test]
fn a_wrong_token_is_invalid_even_when_the_current_one_expired() {
    let expired = snapshot("good", NOW);
    assert_eq!(
        outcome(&expired, Method::POST, BATCH, &["Bearer other"]),
        Outcome::Rejected(Rejection::Invalid)
    );
}

#[test]
fn unprotected_routes_and_relaxed_tenants_pass_untouched() {
    let snap = snapshot("good", NOW + 1);
    assert_eq!(
        outcome(&snap, Method::GET, BATCH, &[]),
        Outcome::Unprotected
    );
    assert_eq!(
        outcome(&snap, Method::GET, "/m2/acme/profile/batchStatus", &[]),
        Outcome::Unprotected
    );
    let other = "/m2/globex/v2/profile/batchUpdate";
    let h = head(Method::POST, other, &[]);
    let d = decide(&routes(false), &snap, &h, NOW);
    assert_eq!(d.outcome, Outcome::NotRequired);
    assert!(
        d.counters.is_none(),
        "unknown tenants get no counters of their own"
    );
    assert_eq!(
        outcome(
            &snap,
            Method::POST,
            "/m2/open/v2/profile/batchUpdate",
            &["Bearer ,,,"]
        ),
        Outcome::NotRequired,
        "a tenant not requiring auth is forwarded whatever it sends"
    );
}

#[test]
fn query_tenants_need_exactly_one_parameter() {
    let snap = snapshot("good", NOW + 1);
    let uri = |q: &str| format!("/rest/v1/profiles/p1{q}");
    let rejected = Outcome::Rejected(Rejection::BadTenant);
    assert_eq!(
        outcome(&snap, Method::GET, &uri("?client=acme"), &[]),
        Outcome::Rejected(Rejection::Missing)
    );
    assert_eq!(
        outcome(&snap, Method::GET, &uri("?client=ac%6De"), &[]),
        Outcome::Rejected(Rejection::Missing)
    );
    assert_eq!(
        outcome(&snap, Method::GET, &uri("?client=acme&client=x"), &[]),
        rejected
    );
    assert_eq!(outcome(&snap, Method::GET, &uri(""), &[]), rejected);
    assert_eq!(outcome(&snap, Method::GET, &uri("?client="), &[]), rejected);
    assert_eq!(
        outcome(&snap, Method::GET, &uri("?client=acme"), &["Bearer good"]),
        Outcome::Allowed
    );
}

#[test]
fn case_insensitive_mode_folds_the_tenant() {
    let snap = snapshot("good", NOW + 1);
    let h = head(Method::POST, "/M2/ACME/v2/Profile/BATCHUPDATE", &[]);
    assert_eq!(
        decide(&routes(true), &snap, &h, NOW).outcome,
        Outcome::Rejected(Rejection::Missing)
    );
    let h = head(Method::GET, "/rest/v1/profiles/p?client=ACME", &[]);
    assert_eq!(
        decide(&routes(true), &snap, &h, NOW).outcome,
        Outcome::Rejected(Rejection::Missing)
    );
}

fn every_method_routes() -> RouteTable {
    let routes = [ProtectedRoute {
        methods: Vec::new(),
        path: "/m2/{client}/v2/profile/batchUpdate".into(),
    }];
    RouteTable::new(&routes, true, Some("client".into()))
}

fn decided(routes: &RouteTable, method: &str, uri: &str, extra: &[(&str, &str)]) -> Outcome {
    let snap = snapshot("good", NOW + 1);
    let mut b = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri);
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let head = b.body(()).unwrap().into_parts().0;
    decide(routes, &snap, &head, NOW).outcome
}

#[test]
fn connect_is_refused_everywhere() {
    let r = every_method_routes();
    let refused = Outcome::Rejected(Rejection::Connect);
    assert_eq!(decided(&r, "CONNECT", "example.com:443", &[]), refused);
    assert_eq!(decided(&r, "connect", BATCH, &[]), refused);
}

#[test]
fn every_method_in_any_case_needs_the_token() {
    let r = every_method_routes();
    for method in ["POST", "post", "PUT", "GET", "DELETE", "FOO"] {
        assert_eq!(
            decided(&r, method, BATCH, &[]),
            Outcome::Rejected(Rejection::Missing),
            "{method}"
        );
    }
    let ok = decided(&r, "post", BATCH, &[("authorization", "Bearer good")]);
    assert_eq!(ok, Outcome::Allowed);
}

#[test]
fn an_override_header_on_a_method_the_route_does_not_list_is_refused() {
    let r = routes(true);
    for header in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        assert_eq!(
            decided(&r, "PUT", BATCH, &[(header, "POST")]),
            Outcome::Rejected(Rejection::MethodOverride),
            "{header}"
        );
    }
    assert_eq!(decided(&r, "PUT", BATCH, &[]), Outcome::Unprotected);
    assert_eq!(
        decided(&r, "post", BATCH, &[]),
        Outcome::Rejected(Rejection::Missing)
    );
}

#[test]
fn loose_spellings_of_a_protected_path_are_refused() {
    let r = every_method_routes();
    for path in [
        "/m2/acme/v2/profile/batchUpdate.json",
        "/m2/acme/v2/profile/batchUpdate%20",
        "/m2/acme/v2/prof%C4%B0le/batchUpdate",
        "/m2/acme/v2/profile/batchUpdate;x%20",
    ] {
        assert_eq!(
            decided(&r, "POST", path, &[("authorization", "Bearer good")]),
            Outcome::Rejected(Rejection::AmbiguousPath),
            "{path}"
        );
    }
}

#[test]
fn tenants_must_be_valid_names_and_agree_with_the_query() {
    let r = every_method_routes();
    let bad = Outcome::Rejected(Rejection::BadTenant);
    for path in [
        "/m2/acme%20/v2/profile/batchUpdate",
        "/m2/acm%C3%A9/v2/profile/batchUpdate",
        "/m2/acme%E2%80%8B/v2/profile/batchUpdate",
        "/m2/%EF%BD%81cme/v2/profile/batchUpdate",
        "/m2/other/v2/profile/batchUpdate?client=acme",
        "/m2/other/v2/profile/batchUpdate?Client=acme",
        "/m2/acme/v2/profile/batchUpdate?client=acme%20",
    ] {
        assert_eq!(decided(&r, "POST", path, &[]), bad, "{path}");
    }
    let missing = Outcome::Rejected(Rejection::Missing);
    for path in [
        "/m2/ACME/v2/profile/batchUpdate",
        "/m2/%41cme/v2/profile/batchUpdate",
        "/m2/acme/v2/profile/batchUpdate?client=ACME",
    ] {
        assert_eq!(decided(&r, "POST", path, &[]), missing, "{path}");
    }
}

/// `acme` in `mode`, its current token `new` and, until `until`, its previous one `old`.
fn rotated(mode: Mode, until: u64) -> Snapshot {
    let record = |secret: &str, created_at_ms| TokenRecord {
        digest: Digest::of(secret),
        created_at_ms,
        expires_at_ms: NOW + 10_000,
    };
    let rotate = |state: &State, secret, created, until| {
        state.apply(&Command::SetToken {
            tenant: "acme".into(),
            token: record(secret, created),
            previous_valid_until_ms: until,
        })
    };
    let state = State::default().apply(&Command::SetMode {
        tenant: "acme".into(),
        mode,
    });
    let state = rotate(&state, "old", 0, None);
    Snapshot::new(rotate(&state, "new", 1, Some(until)))
}

#[test]
fn report_mode_forwards_what_on_refuses_and_says_why() {
    let on = rotated(Mode::On, NOW + 1);
    let report = rotated(Mode::Report, NOW + 1);
    for (auth, why) in [
        (&[][..], Rejection::Missing),
        (&["Bearer "][..], Rejection::Malformed),
        (&["Bearer wrong"][..], Rejection::Invalid),
    ] {
        assert_eq!(
            outcome(&on, Method::POST, BATCH, auth),
            Outcome::Rejected(why)
        );
        let h = head(Method::POST, BATCH, auth);
        let d = decide(&routes(false), &report, &h, NOW);
        assert_eq!(d.outcome, Outcome::Reported(why));
        assert_eq!(d.mode, Mode::Report);
        assert_eq!(
            d.outcome.reason(),
            Outcome::Rejected(why).reason(),
            "counted alike"
        );
        assert!(d.used.is_none(), "a refusal is no use");
    }
    assert_eq!(
        Outcome::Reported(Rejection::Expired).label(),
        Some("would_refuse:expired")
    );
    let h = head(Method::POST, BATCH, &["Bearer new"]);
    let d = decide(&routes(false), &report, &h, NOW);
    assert_eq!((d.outcome, d.previous), (Outcome::Allowed, false));
    assert!(d.used.is_some() && d.token.is_some());
    let off = rotated(Mode::Off, NOW + 1);
    assert_eq!(
        outcome(&off, Method::POST, BATCH, &["Bearer "]),
        Outcome::NotRequired
    );
}

#[test]
fn the_previous_token_passes_until_its_deadline_and_not_from_it() {
    let snap = rotated(Mode::On, NOW + 500);
    let h = head(Method::POST, BATCH, &["Bearer old"]);
    let routes = routes(false);
    let at = |now| decide(&routes, &snap, &h, now);
    let before = at(NOW + 499);
    assert_eq!((before.outcome, before.previous), (Outcome::Allowed, true));
    assert!(before.used.is_some());
    let from = at(NOW + 500);
    assert_eq!(from.outcome, Outcome::Rejected(Rejection::Invalid));
    assert!(!from.previous && from.used.is_none());
    assert!(
        from.token.is_some(),
        "the log still names the token presented"
    );
    assert_eq!(
        outcome(&snap, Method::POST, BATCH, &["Bearer new"]),
        Outcome::Allowed
    );
}
