//! The OpenAPI 3.1 document of the admin listener, `openapi/admin.json` in the
//! repository, built into the binary and served byte for byte at
//! `GET /admin/v1/openapi.json` (viewer). The tests below keep it and the route table
//! ([`super::routes::ROUTES`]) describing the same paths and methods; `tests/openapi.rs`
//! validates it as OpenAPI 3.1 and runs schemathesis against the real binary with it.

/// The document, as committed.
pub(super) const DOCUMENT: &str = include_str!("../../openapi/admin.json");

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::super::routes::ROUTES;
    use super::DOCUMENT;

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi/admin.json is JSON")
    }

    /// `(path, method)` of every operation in the document, methods in upper case.
    fn documented() -> BTreeSet<(String, String)> {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        let mut operations = BTreeSet::new();
        for (path, item) in paths {
            for method in item.as_object().expect("path item").keys() {
                if !matches!(method.as_str(), "parameters" | "summary" | "description") {
                    operations.insert((path.clone(), method.to_ascii_uppercase()));
                }
            }
        }
        operations
    }

    /// `(path, method)` of every route, with matchit's catch-all `{*asset}` written as
    /// OpenAPI's `{asset}`.
    fn routed() -> BTreeSet<(String, String)> {
        let mut operations = BTreeSet::new();
        for route in ROUTES {
            let path = route.path.replace("{*", "{");
            for (method, _) in route.methods {
                operations.insert((path.clone(), method.as_str().to_string()));
            }
        }
        operations
    }

    #[test]
    fn the_document_is_openapi_3_1() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["components"]["securitySchemes"]["adminKey"].is_object());
    }

    #[test]
    fn every_route_is_documented_and_every_documented_operation_routed() {
        let documented = documented();
        let routed = routed();
        let missing: Vec<_> = routed.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routes missing from the document: {missing:?}"
        );
        let extra: Vec<_> = documented.difference(&routed).collect();
        assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    }

    #[test]
    fn every_operation_says_who_may_call_it() {
        let doc = document();
        for (path, method) in documented() {
            let op = &doc["paths"][&path][method.to_ascii_lowercase()];
            let what = format!("{method} {path}");
            let security = op["security"].as_array().expect(&what);
            let role = op["x-authgate-role"].as_str();
            match role {
                Some("viewer" | "approver") => {
                    assert_eq!(security.len(), 1, "{what}");
                    assert!(security[0]["adminKey"].is_array(), "{what}");
                    assert!(op["responses"]["401"].is_object(), "{what}: 401");
                }
                None => assert!(security.is_empty(), "{what}: a key but no role"),
                Some(other) => panic!("{what}: role {other}"),
            }
            if role == Some("approver") {
                assert!(op["responses"]["403"].is_object(), "{what}: 403");
            }
            assert!(op["responses"]["405"].is_object(), "{what}: 405");
        }
    }
}
