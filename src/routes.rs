//! Protected route table: method list plus path template (matchit syntax, `{client}`),
//! matched against a request's path.
//!
//! One trailing slash is ignored for matching; with `case_insensitive_paths` templates
//! and paths are compared in lower case, for backends that ignore case.

use http::Method;

use crate::config::ProtectedRoute;

/// The compiled protected routes.
#[derive(Debug)]
pub struct RouteTable {
    router: matchit::Router<Vec<Method>>,
    case_insensitive: bool,
}

impl RouteTable {
    /// Compiles routes the config has already validated. Routes sharing a template have
    /// their methods merged.
    pub fn new(routes: &[ProtectedRoute], case_insensitive: bool) -> RouteTable {
        let mut merged: Vec<(String, Vec<Method>)> = Vec::new();
        for route in routes {
            let path = if case_insensitive {
                lowercase_literals(&route.path)
            } else {
                route.path.clone()
            };
            match merged.iter_mut().find(|(p, _)| *p == path) {
                Some((_, methods)) => methods.extend(route.methods.iter().cloned()),
                None => merged.push((path, route.methods.clone())),
            }
        }
        let mut router = matchit::Router::new();
        for (path, methods) in merged {
            if let Err(e) = router.insert(path.clone(), methods) {
                // The config validated each template alone; lower-casing can make two collide.
                tracing::error!(%path, error = %e, "protected route ignored");
            }
        }
        RouteTable {
            router,
            case_insensitive,
        }
    }

    /// Whether `method` on `path` is a protected route.
    pub fn is_protected(&self, method: &Method, path: &str) -> bool {
        let trimmed = match path.strip_suffix('/') {
            Some(rest) if !rest.is_empty() => rest,
            _ => path,
        };
        let lowered;
        let path = if self.case_insensitive {
            lowered = trimmed.to_ascii_lowercase();
            &lowered
        } else {
            trimmed
        };
        self.router
            .at(path)
            .is_ok_and(|m| m.value.iter().any(|allowed| allowed == method))
    }
}

/// Lower-cases a template's literal parts, keeping `{param}` names as written.
fn lowercase_literals(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut in_param = false;
    for c in template.chars() {
        match c {
            '{' => in_param = true,
            '}' => in_param = false,
            _ => {}
        }
        out.push(if in_param { c } else { c.to_ascii_lowercase() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ];
        RouteTable::new(&routes, case_insensitive)
    }

    #[test]
    fn matches_method_and_template() {
        let t = table(false);
        assert!(t.is_protected(&Method::POST, "/m2/acme/profile/batchUpdate"));
        assert!(t.is_protected(&Method::PUT, "/m2/acme/profile/batchUpdate"));
        assert!(t.is_protected(&Method::POST, "/m2/acme/profile/batchUpdate/"));
        assert!(!t.is_protected(&Method::GET, "/m2/acme/profile/batchUpdate"));
        assert!(!t.is_protected(&Method::POST, "/m2/acme/profile/batchStatus"));
        assert!(!t.is_protected(&Method::POST, "/m2/acme/profile/batchupdate"));
    }

    #[test]
    fn case_insensitive_paths_fold_literals() {
        let t = table(true);
        assert!(t.is_protected(&Method::POST, "/M2/acme/PROFILE/batchupdate"));
    }
}
