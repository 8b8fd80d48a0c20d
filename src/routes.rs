//! Protected route table: method list plus path template (matchit syntax, `{client}`),
//! matched against a request's normalised path.
//!
//! One trailing slash is ignored for matching; with `case_insensitive_paths` templates
//! and paths are compared in lower case (and captured tenants are lower-cased too, since
//! such a backend treats `ACME` and `acme` as one tenant).

use std::borrow::Cow;

use http::Method;

use crate::config::ProtectedRoute;

/// The compiled protected routes.
#[derive(Debug)]
pub struct RouteTable {
    router: matchit::Router<Vec<Method>>,
    case_insensitive: bool,
    tenant_param: Option<String>,
}

/// A protected route matched by a request.
#[derive(Debug, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    /// The tenant captured from the path, when the template names `tenant_param`.
    pub tenant: Option<Cow<'a, str>>,
}

impl RouteTable {
    /// Compiles routes the config has already validated. Routes sharing a template have
    /// their methods merged.
    pub fn new(
        routes: &[ProtectedRoute],
        case_insensitive: bool,
        tenant_param: Option<String>,
    ) -> RouteTable {
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
            tenant_param,
        }
    }

    /// The protected route `method` on `path` falls under, if any.
    pub fn find<'a>(&self, method: &Method, path: &'a str) -> Option<RouteMatch<'a>> {
        let path = trim_one_slash(path);
        if self.case_insensitive {
            let lowered = path.to_ascii_lowercase();
            let m = self.router.at(&lowered).ok()?;
            if !m.value.contains(method) {
                return None;
            }
            let tenant = self.param(&m.params).map(|t| Cow::Owned(t.to_string()));
            Some(RouteMatch { tenant })
        } else {
            let m = self.router.at(path).ok()?;
            if !m.value.contains(method) {
                return None;
            }
            Some(RouteMatch {
                tenant: self.param(&m.params).map(Cow::Borrowed),
            })
        }
    }

    /// Whether `path` matches any protected template, whatever the method.
    pub fn matches_any_method(&self, path: &str) -> bool {
        let path = trim_one_slash(path);
        if self.case_insensitive {
            self.router.at(&path.to_ascii_lowercase()).is_ok()
        } else {
            self.router.at(path).is_ok()
        }
    }

    /// Whether `method` on `path` is a protected route.
    pub fn is_protected(&self, method: &Method, path: &str) -> bool {
        self.find(method, path).is_some()
    }

    pub fn is_case_insensitive(&self) -> bool {
        self.case_insensitive
    }

    pub fn tenant_param(&self) -> Option<&str> {
        self.tenant_param.as_deref()
    }

    fn param<'p>(&self, params: &matchit::Params<'_, 'p>) -> Option<&'p str> {
        params.get(self.tenant_param.as_deref()?)
    }
}

fn trim_one_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(rest) if !rest.is_empty() => rest,
        _ => path,
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
mod tests;
