//! The routing part of the config: `protected_routes` (every method unless `methods` is
//! listed, which draws a warning), `case_insensitive_paths` (default `true`; `false`
//! draws a warning) and `tenant_param`.

use http::Method;
use serde_yaml::Value;

use super::locate::Seg;
use super::validate::{k, path, Problems};
use super::ProtectedRoute;

/// `tenant_param`: absent → `client`; `~` or `none` → no tenant parameter.
pub(super) fn tenant_param(raw: Option<Value>, p: &mut Problems<'_>) -> Option<String> {
    match raw {
        None => Some("client".to_string()),
        Some(Value::Null) => None,
        Some(Value::String(s)) if s == "none" => None,
        Some(Value::String(s)) if !s.is_empty() && s.chars().all(is_param_char) => Some(s),
        Some(_) => {
            let msg = "expected a parameter name (letters, digits, `_`) or `none`";
            p.push(&path(&["tenant_param"]), msg.into());
            None
        }
    }
}

pub(super) fn routes(
    raw: Option<Vec<super::raw::RawRoute>>,
    p: &mut Problems<'_>,
) -> Vec<ProtectedRoute> {
    let Some(raw) = raw else {
        return [
            "/m2/{client}/profile/batchUpdate",
            "/m2/{client}/v2/profile/batchUpdate",
        ]
        .into_iter()
        .map(|path| ProtectedRoute {
            methods: Vec::new(),
            path: path.into(),
        })
        .collect();
    };
    let mut out = Vec::new();
    let mut router = matchit::Router::new();
    for (i, route) in raw.into_iter().enumerate() {
        let at = |key: &str| vec![k("protected_routes"), Seg::Index(i), k(key)];
        let mut methods = Vec::new();
        match &route.methods {
            None => {}
            Some(listed) if listed.is_empty() => p.push(
                &at("methods"),
                "leave `methods` out to cover every method, or list at least one".into(),
            ),
            Some(_) => p.warn(
                &at("methods"),
                "a lenient backend may accept other methods on this path; leave `methods` out \
                 to protect every method (override headers on other methods are refused)"
                    .into(),
            ),
        }
        for m in route.methods.iter().flatten() {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(method) => methods.push(method),
                Err(_) => p.push(&at("methods"), format!("`{m}` is not an HTTP method")),
            }
        }
        let Some(route_path) = route.path else {
            p.push(&at("path"), "`path` is required".into());
            continue;
        };
        if !route_path.starts_with('/') {
            p.push(&at("path"), format!("`{route_path}` must start with `/`"));
            continue;
        }
        // Two identical templates are allowed (e.g. different methods); matchit only has
        // to accept each distinct template once.
        if !out.iter().any(|r: &ProtectedRoute| r.path == route_path) {
            if let Err(e) = router.insert(route_path.clone(), ()) {
                p.push(&at("path"), format!("`{route_path}`: {e}"));
                continue;
            }
        }
        out.push(ProtectedRoute {
            methods,
            path: route_path,
        });
    }
    out
}

pub(super) fn case_insensitive_paths(raw: Option<bool>, p: &mut Problems<'_>) -> bool {
    if raw == Some(false) {
        p.warn(
            &path(&["case_insensitive_paths"]),
            "literal path segments compare case-sensitively: only right for a backend known \
             to route case-sensitively (Express, IIS, ASP.NET and some Spring setups do not)"
                .into(),
        );
    }
    raw.unwrap_or(true)
}

fn is_param_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}
