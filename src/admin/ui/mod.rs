//! The admin web page (`/admin/ui/`): a settings screen for operators who do not live
//! in curl, built only on the documented admin API.
//!
//! Its HTML, CSS and JavaScript are embedded in the binary (`include_str!`), so the page
//! works offline and needs no build step. The files themselves hold no secret and are
//! served without a key; the page asks for an admin key, keeps it in the tab's
//! `sessionStorage` only, and sends it as `Authorization: Bearer` to `/admin/v1/…`.
//!
//! [`secure`] adds the browser security headers to *every* admin response (API and
//! page alike): a Content-Security-Policy allowing only this origin's own script and
//! style (no inline script, no third-party origin), no framing, no referrer.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::Body;

/// Where the page lives; `/admin`, `/admin/` and `/admin/ui` redirect here.
pub const HOME: &str = "/admin/ui/";

/// The policy on every admin response. `connect-src 'self'` is the admin API;
/// `form-action 'none'` because the page's forms are handled by its script.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const JS: &str = "text/javascript; charset=utf-8";

/// The page's files: name under [`HOME`], content type, content. `app.js` is the entry
/// module; it imports the others.
const ASSETS: &[(&str, &str, &str)] = &[
    ("", "text/html; charset=utf-8", include_str!("index.html")),
    ("app.js", JS, include_str!("app.js")),
    ("api.js", JS, include_str!("api.js")),
    ("format.js", JS, include_str!("format.js")),
    ("page.js", JS, include_str!("page.js")),
    ("tenant.js", JS, include_str!("tenant.js")),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("app.css"),
    ),
    ("icon.svg", "image/svg+xml", include_str!("icon.svg")),
];

/// The response for the file `name` under [`HOME`] (`""` is the page itself).
pub fn asset(name: &str) -> Option<Response<Body>> {
    let (_, content_type, content) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    let mut response = Response::new(Body::full(content.as_bytes()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Some(response)
}

/// A redirect to the page.
pub fn redirect() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(HOME));
    response
}

/// Adds the browser security headers every admin response carries.
pub fn secure(headers: &mut HeaderMap) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_style_or_foreign_origin() {
        let (_, _, page) = ASSETS[0];
        let lower = page.to_ascii_lowercase();
        for tag in lower.split("<script").skip(1) {
            let head = &tag[..tag.find('>').expect("closed tag")];
            assert!(head.contains("src="), "inline script: <script{head}>");
        }
        assert!(!lower.contains("<style"), "inline <style>");
        assert!(!lower.contains(" style="), "inline style attribute");
        let handler = lower.match_indices(" on").any(|(at, _)| {
            let rest = &lower[at + 3..];
            let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name > 0 && rest[name..].starts_with('=')
        });
        assert!(!handler, "inline event handler attribute");
        for (name, _, content) in ASSETS {
            let content = content.replace(r#"xmlns="http://www.w3.org/2000/svg""#, "");
            for foreign in ["http://", "https://", "\"//", "'//", "(//"] {
                assert!(!content.contains(foreign), "{name}: {foreign}");
            }
        }
    }

    #[test]
    fn the_policy_forbids_inline_script_and_framing() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        let mut headers = HeaderMap::new();
        secure(&mut headers);
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    }

    #[test]
    fn unknown_files_are_not_served() {
        assert!(asset("").is_some());
        assert!(asset("app.js").is_some());
        assert!(asset("../Cargo.toml").is_none());
        assert!(asset("index.html").is_none());
    }
}
