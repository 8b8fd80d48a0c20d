//! The protected route table: path templates (matchit syntax, `{client}`) with an
//! optional method list, matched against a request's normalised path — strictly (what
//! the route *is*) and loosely (what a lenient backend could *take* for it).
//!
//! Strict matching ignores one trailing slash; with `case_insensitive_paths` (the
//! default) literals compare in ASCII lower case and captured tenants come out lower
//! case. A route without methods covers every method; methods compare
//! case-insensitively (Werkzeug upper-cases `post`).
//!
//! Loose matching ([`RouteTable::loosely_matches`]) reads the path as the sloppiest
//! backends do ([`loose_reading`]): escapes decoded (twice), non-ASCII text folded
//! before the path is split (NFKC, Unicode case mapping, accents and other marks dropped,
//! then any non-ASCII character left out: Java's `equalsIgnoreCase` takes `İ` for `i`,
//! MySQL's collations ignore accents and zero-width characters, and NFKC turns `／` into
//! `/`), `\` a separator, `;` parameters cut, whitespace, controls and NBSP trimmed from
//! both ends of a segment and dots from its end, segments left empty dropped, dot
//! segments resolved, ASCII case ignored; the final literal also matches with a
//! `.suffix` (Spring's suffix patterns). A path that matches a template only loosely is
//! refused by the decision: no spelling of a protected route reaches the backend
//! unchecked.

use std::borrow::Cow;

use http::Method;
use unicode_normalization::UnicodeNormalization;

use crate::config::ProtectedRoute;

/// The compiled protected routes.
#[derive(Debug)]
pub struct RouteTable {
    /// Template (literals lower-cased in case-insensitive mode) → index into `routes`.
    router: matchit::Router<usize>,
    routes: Vec<Route>,
    case_insensitive: bool,
    tenant_param: Option<String>,
}

/// One template and the methods it covers.
#[derive(Debug)]
struct Route {
    /// Upper case; empty: every method.
    methods: Vec<Method>,
    /// The template's segments, for loose matching.
    parts: Vec<Part>,
}

impl Route {
    /// How many segments the template names before a catch-all.
    fn fixed(&self) -> usize {
        self.parts.len() - usize::from(self.parts.last() == Some(&Part::CatchAll))
    }

    /// Whether a path of `segments` segments can match the template.
    fn fits(&self, segments: usize) -> bool {
        match self.parts.last() {
            Some(Part::CatchAll) => segments >= self.fixed(),
            _ => segments == self.parts.len(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Part {
    /// Lower case.
    Literal(String),
    /// `{name}`, or a segment mixing text and parameters: any one segment.
    Param,
    /// `{*name}`: the rest of the path.
    CatchAll,
}

/// A protected template matched by a path.
#[derive(Debug, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    /// The tenant captured from the path, when the template names `tenant_param`.
    pub tenant: Option<Cow<'a, str>>,
    /// The methods the route covers; empty: every method.
    pub methods: &'a [Method],
}

impl RouteMatch<'_> {
    /// Whether the route covers `method` (compared case-insensitively).
    pub fn covers(&self, method: &Method) -> bool {
        self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|m| m.as_str().eq_ignore_ascii_case(method.as_str()))
    }
}

impl RouteTable {
    /// Compiles routes the config has already validated. Routes sharing a template have
    /// their methods merged (a route without methods makes the template cover all).
    pub fn new(
        routes: &[ProtectedRoute],
        case_insensitive: bool,
        tenant_param: Option<String>,
    ) -> RouteTable {
        let mut merged: Vec<(String, Vec<Method>, bool)> = Vec::new();
        for route in routes {
            let path = if case_insensitive {
                lowercase_literals(&route.path)
            } else {
                route.path.clone()
            };
            let every = route.methods.is_empty();
            match merged.iter_mut().find(|(p, _, _)| *p == path) {
                Some((_, methods, all)) => {
                    methods.extend(route.methods.iter().cloned());
                    *all |= every;
                }
                None => merged.push((path, route.methods.clone(), every)),
            }
        }
        let mut router = matchit::Router::new();
        let mut compiled = Vec::new();
        for (path, methods, every) in merged {
            if let Err(e) = router.insert(path.clone(), compiled.len()) {
                // The config validated each template alone; lower-casing can make two collide.
                tracing::error!(%path, error = %e, "protected route ignored");
                continue;
            }
            compiled.push(Route {
                methods: if every { Vec::new() } else { methods },
                parts: parts(&path),
            });
        }
        RouteTable {
            router,
            routes: compiled,
            case_insensitive,
            tenant_param,
        }
    }

    /// The protected template `path` strictly matches, whatever the method.
    pub fn at<'a>(&'a self, path: &'a str) -> Option<RouteMatch<'a>> {
        let path = trim_one_slash(path);
        if self.case_insensitive {
            let lowered = path.to_ascii_lowercase();
            let m = self.router.at(&lowered).ok()?;
            let tenant = self.param(&m.params).map(|t| Cow::Owned(t.to_string()));
            let methods = &self.routes[*m.value].methods;
            Some(RouteMatch { tenant, methods })
        } else {
            let m = self.router.at(path).ok()?;
            Some(RouteMatch {
                tenant: self.param(&m.params).map(Cow::Borrowed),
                methods: &self.routes[*m.value].methods,
            })
        }
    }

    /// The protected route `method` on `path` falls under, if any.
    pub fn find<'a>(&'a self, method: &Method, path: &'a str) -> Option<RouteMatch<'a>> {
        self.at(path).filter(|m| m.covers(method))
    }

    /// Whether `path` matches any protected template, whatever the method.
    pub fn matches_any_method(&self, path: &str) -> bool {
        self.at(path).is_some()
    }

    /// Whether `method` on `path` is a protected route.
    pub fn is_protected(&self, method: &Method, path: &str) -> bool {
        self.find(method, path).is_some()
    }

    /// Whether a lenient backend could take the canonical `path` for a protected
    /// template (see the module documentation), whatever the method.
    pub fn loosely_matches(&self, path: &str) -> bool {
        let path = trim_one_slash(path);
        if path.bytes().all(|b| b == b'/' || is_plain_byte(b)) {
            // Nothing to decode, fold, trim or cut: the reading is the path up to ASCII
            // case, which the strict match already compared in case-insensitive mode.
            if self.case_insensitive {
                return false;
            }
            let segments: Vec<&str> = path.split('/').skip(1).collect();
            return self.any_template(&segments);
        }
        self.any_template(&loose_reading(path))
    }

    /// Whether `segments` (already read loosely, in lower case unless plain) fit a
    /// protected template.
    fn any_template<S: AsRef<str>>(&self, segments: &[S]) -> bool {
        self.routes.iter().any(|route| {
            let fixed = &route.parts[..route.fixed()];
            route.fits(segments.len())
                && segments
                    .iter()
                    .zip(fixed)
                    .enumerate()
                    .all(|(i, (read, part))| {
                        let read = read.as_ref();
                        match part {
                            Part::Param | Part::CatchAll => true,
                            Part::Literal(literal) => {
                                read.eq_ignore_ascii_case(literal)
                                    || (i + 1 == segments.len()
                                        && read.len() > literal.len()
                                        && read.as_bytes()[literal.len()] == b'.'
                                        && read[..literal.len()].eq_ignore_ascii_case(literal))
                            }
                        }
                    })
        })
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

/// How the sloppiest backends read a path, as its segments in lower case: escapes
/// decoded (twice, for double encoding), Unicode folded to ASCII ([`fold_to_ascii`]: NFKC
/// may turn `／`, `＼` or `‥` into separators and dot segments, so folding comes before
/// splitting), `\` a separator, `;` parameters cut, whitespace and controls trimmed from
/// both ends and dots from the end, segments left empty dropped (Spring's `trimTokens`),
/// `.` and `..` resolved.
pub fn loose_reading(path: &str) -> Vec<String> {
    let once = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let twice = percent_encoding::percent_decode_str(&once).decode_utf8_lossy();
    let folded = fold_to_ascii(&twice);
    let mut out: Vec<String> = Vec::new();
    let junk = |c: char| c.is_ascii_whitespace() || c.is_ascii_control();
    for raw in folded.split(['/', '\\']) {
        let segment = raw.split(';').next().unwrap_or_default().trim_matches(junk);
        match segment {
            "." => continue,
            ".." => {
                out.pop();
                continue;
            }
            _ => {}
        }
        let segment = segment.trim_end_matches(|c: char| c == '.' || junk(c));
        if !segment.is_empty() {
            out.push(segment.to_ascii_lowercase());
        }
    }
    out
}

/// `text` as backends that fold Unicode compare it: compatibility forms (fullwidth,
/// ligatures, the Kelvin sign), Unicode case mapping both ways (`ı` → `I` → `i`,
/// `İ` → `i̇`), marks dropped, and whatever is still not ASCII (zero-width characters,
/// NBSP, other scripts) left out. ASCII text is returned as it is.
pub fn fold_to_ascii(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let mapped: String = text
        .nfkc()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect();
    Cow::Owned(mapped.nfkd().filter(char::is_ascii).collect())
}

/// A byte a lenient backend reads as it is (up to ASCII case).
fn is_plain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')
}

fn trim_one_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(rest) if !rest.is_empty() => rest,
        _ => path,
    }
}

/// A template's segments.
fn parts(template: &str) -> Vec<Part> {
    trim_one_slash(template)
        .strip_prefix('/')
        .unwrap_or(template)
        .split('/')
        .map(|segment| {
            if segment.starts_with("{*") {
                Part::CatchAll
            } else if segment.contains('{') {
                Part::Param
            } else {
                Part::Literal(segment.to_ascii_lowercase())
            }
        })
        .collect()
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
