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
