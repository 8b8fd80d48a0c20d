use super::*;
use proptest::prelude::*;

fn table(case_insensitive: bool) -> RouteTable {
    let routes = [
        ProtectedRoute {
            methods: vec![Method::POST],
            path: "/m2/{client}/profile/batchUpdate".into(),
        },
        ProtectedRoute {
            methods: vec![Method::PUT],
            path: "/m2/{client}/profile/batchUpdate".into(),
        },
        ProtectedRoute {
            methods: vec![Method::GET],
            path: "/rest/v1/profiles/{id}".into(),
        },
    ];
    RouteTable::new(&routes, case_insensitive, Some("client".into()))
}

#[test]
fn matches_method_and_template_and_captures_the_tenant() {
    let t = table(false);
    let m = t
        .find(&Method::POST, "/m2/acme/profile/batchUpdate")
        .unwrap();
    assert_eq!(m.tenant.as_deref(), Some("acme"));
    assert!(t.is_protected(&Method::PUT, "/m2/acme/profile/batchUpdate"));
    assert!(t.is_protected(&Method::POST, "/m2/acme/profile/batchUpdate/"));
    assert!(!t.is_protected(&Method::GET, "/m2/acme/profile/batchUpdate"));
    assert!(!t.is_protected(&Method::POST, "/m2/acme/profile/batchStatus"));
    assert!(!t.is_protected(&Method::POST, "/m2/acme/profile/batchupdate"));
    assert!(t.matches_any_method("/m2/acme/profile/batchUpdate"));
    let m = t.find(&Method::GET, "/rest/v1/profiles/p1").unwrap();
    assert_eq!(m.tenant, None, "no {{client}} in this template");
}

#[test]
fn case_insensitive_paths_fold_literals_and_tenants() {
    let t = table(true);
    let m = t
        .find(&Method::POST, "/M2/ACME/PROFILE/batchupdate")
        .unwrap();
    assert_eq!(m.tenant.as_deref(), Some("acme"));
}

proptest! {
    /// Any protected path with any tenant segment matches, with one trailing slash or not.
    #[test]
    fn every_tenant_segment_matches(tenant in "[a-zA-Z0-9._~-]{1,20}", slash in any::<bool>()) {
        let t = table(false);
        let path = format!("/m2/{tenant}/profile/batchUpdate{}", if slash { "/" } else { "" });
        let found = t.find(&Method::POST, &path).and_then(|m| m.tenant).map(|t| t.into_owned());
        prop_assert_eq!(found, Some(tenant));
    }

    /// Arbitrary paths never panic, and a match always names a route's literal parts.
    #[test]
    fn arbitrary_paths_never_panic(path in "\\PC*") {
        let t = table(true);
        if t.find(&Method::POST, &path).is_some() {
            prop_assert!(path.to_ascii_lowercase().contains("/profile/batchupdate"));
        }
    }
}

fn default_table() -> RouteTable {
    let routes = [
        "/m2/{client}/profile/batchUpdate",
        "/m2/{client}/v2/profile/batchUpdate",
    ]
    .map(|path| ProtectedRoute {
        methods: Vec::new(),
        path: path.into(),
    });
    RouteTable::new(&routes, true, Some("client".into()))
}

#[test]
fn a_route_without_methods_covers_every_method_in_any_case() {
    let t = default_table();
    for method in ["POST", "post", "Post", "PUT", "GET", "OPTIONS", "FOO"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        assert!(
            t.is_protected(&method, "/m2/acme/profile/batchUpdate"),
            "{method}"
        );
    }
    let listed = table(false);
    let lower = Method::from_bytes(b"post").unwrap();
    assert!(listed.is_protected(&lower, "/m2/acme/profile/batchUpdate"));
}

#[test]
fn loose_spellings_of_a_protected_path_match_loosely_only() {
    let t = default_table();
    for path in [
        "/m2/acme/profile/batchUpdate.json",
        "/m2/acme/profile/batchUpdate.",
        "/m2/acme/profile/batchUpdate%20",
        "/m2/acme/profile/batchUpdate%C2%A0",
        "/m2/acme/profile%20/batchUpdate",
        "/m2/acme/prof%C4%B0le/batchUpdate",
        "/m2/acme/v2/prof%C4%B1le/batchUpdate",
        "/m2/acme/v2/%EF%BD%90rofile/batchUpdate",
        "/m2/acme/profile/batch%E2%80%8BUpdate",
        "/m2/acme/profile/batchUpd%C3%A4te",
        "/%EF%BD%8D2/acme/profile/batchUpdate",
    ] {
        assert!(t.at(path).is_none(), "{path} matches strictly");
        assert!(t.loosely_matches(path), "{path}");
    }
    for path in [
        "/m2/acme/profile/batchStatus",
        "/m2/acme/profile/batchUpdateX",
        "/m2/acme/profile/update",
        "/m2/acme/profile",
        "/m2/acme/v3/profile/batchUpdate",
        "/rest/v1/profiles/1",
    ] {
        assert!(!t.loosely_matches(path), "{path}");
    }
}

#[test]
fn folding_to_ascii_follows_unicode_case_and_compatibility() {
    assert_eq!(fold_to_ascii("PROFİLE"), "profile");
    assert_eq!(fold_to_ascii("profıle"), "profile");
    assert_eq!(fold_to_ascii("ａｃｍｅ"), "acme");
    assert_eq!(fold_to_ascii("acmé\u{200B}"), "acme");
    assert!(matches!(fold_to_ascii("plain"), Cow::Borrowed("plain")));
}
