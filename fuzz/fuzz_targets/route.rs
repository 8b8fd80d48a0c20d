//! Fuzzes `authgate::auth::decide::decide` on the default protected routes against an
//! independent model of a sloppy backend.
//!
//! Input: UTF-8; an optional first line is the method (`POST` otherwise), the rest is the
//! request target (path and query). Targets `http::Uri` refuses are skipped: hyper
//! answers them `400` before the gateway decides. The routes are the defaults
//! (`/m2/{client}/profile/batchUpdate`, `/m2/{client}/v2/profile/batchUpdate`, every
//! method, case-insensitive, tenant parameter `client`); tenant `acme` requires its token
//! and the request carries none.
//!
//! Checks: `decide` never panics and never allows the request; and whenever it forwards
//! it (unprotected, or for a tenant that does not require the token), the model below,
//! reading the path the gateway forwards and the query, must not route it to a protected
//! template for `acme`.
//!
//! The model backend (written here, sharing no code with `authgate::routes`):
//! 1. decodes every percent-escape (once, and also twice), then reads UTF-8 lossily;
//! 2. folds Unicode: NFKC, lower case, compatibility decomposition with the marks
//!    dropped, and whatever is still not ASCII left out (zero-width characters,
//!    NBSP after folding, other scripts);
//! 3. splits on `/` and `\`, cuts each segment's `;` parameter, trims ASCII whitespace and
//!    controls from both ends, resolves `.` and `..`;
//! 4. compares literals in lower case with trailing dots trimmed, dropping segments that
//!    trim to nothing; the last literal also matches with a `.suffix`;
//! 5. reads the tenant segment trimmed and lower-cased (trailing dots kept: `acme.` is
//!    another valid tenant, not a spelling of `acme`), and also takes a `client` query
//!    parameter as the tenant, splitting the query on `&` and `;`, names trimmed,
//!    folded, lower-cased, with a PHP / qs / Rack array suffix (`client[]`, `client[0]`)
//!    dropped.
//!
//! Some of those readings are known to get past `decide` (fullwidth solidus, segments
//! that trim away, `;` and `[]` in the query; see `fuzz/README.md`). A finding that a
//! stricter model (fold each segment after splitting, drop no trimmed-away segment,
//! split the query on `&` only, no array names) does not make is one of those; with
//! `AUTHGATE_FUZZ_KNOWN=skip` they are not reported, so a run can look for new ones.
#![no_main]

use std::borrow::Cow;
use std::sync::OnceLock;

use authgate::auth::decide::{decide, Outcome};
use authgate::auth::token::Digest;
use authgate::config::ProtectedRoute;
use authgate::routes::RouteTable;
use authgate::state::{Command, Mode, Snapshot, State, TokenRecord};
use http::{Method, Request, Uri};
use libfuzzer_sys::fuzz_target;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

const NOW_MS: u64 = 1_700_000_000_000;
const TENANT: &str = "acme";

struct Gate {
    routes: RouteTable,
    snapshot: Snapshot,
    skip_known: bool,
}

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| {
        let routes: Vec<ProtectedRoute> = [
            "/m2/{client}/profile/batchUpdate",
            "/m2/{client}/v2/profile/batchUpdate",
        ]
        .into_iter()
        .map(|path| ProtectedRoute {
            methods: Vec::new(),
            path: path.into(),
        })
        .collect();
        let state = State::default()
            .apply(&Command::SetMode {
                tenant: TENANT.into(),
                mode: Mode::On,
            })
            .apply(&Command::SetToken {
                tenant: TENANT.into(),
                token: TokenRecord {
                    digest: Digest::of("authgate_tk_acmeCurrent0123456789abcdef"),
                    created_at_ms: 0,
                    expires_at_ms: u64::MAX,
                },
                previous_valid_until_ms: None,
            });
        Gate {
            routes: RouteTable::new(&routes, true, Some("client".into())),
            snapshot: Snapshot::new(state),
            skip_known: std::env::var("AUTHGATE_FUZZ_KNOWN").is_ok_and(|v| v == "skip"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (method, target) = input.split_once('\n').unwrap_or(("POST", input));
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let Ok(request) = Request::builder().method(method.clone()).uri(uri).body(()) else {
        return;
    };
    let head = request.into_parts().0;
    let gate = gate();
    let decision = decide(&gate.routes, &gate.snapshot, &head, NOW_MS);
    match decision.outcome {
        Outcome::Rejected(_) => return,
        Outcome::Allowed => panic!("{method} {target:?} allowed without a token"),
        // The tenant is in mode `on`: nothing is only reported.
        Outcome::Reported(_) => panic!("{method} {target:?} forwarded as a report in mode on"),
        Outcome::Unprotected | Outcome::NotRequired => {}
    }
    let forwarded: &str = &decision.path;
    let query = head.uri.query();
    if !Sloppiness::FULL.reads_as_acme(forwarded, query) {
        return;
    }
    let known = !Sloppiness::STRICT.reads_as_acme(forwarded, query);
    if known && gate.skip_known {
        return;
    }
    panic!(
        "{method} {target:?} is forwarded as {forwarded:?} ({:?}) without a token, and a \
         sloppy backend routes it to a protected template for {TENANT}{}",
        decision.outcome,
        if known { " (a known class)" } else { "" }
    );
});

/// Which liberties the model backend takes.
#[derive(Clone, Copy)]
struct Sloppiness {
    /// Fold Unicode before splitting the path (so a fold can make a separator).
    fold_whole_path: bool,
    /// Drop segments that trim or fold to nothing, and resolve dot segments that only
    /// appear after trimming.
    drop_trimmed_segments: bool,
    /// Split the query on `;` too, and read `client[]` / `client[0]` as `client`.
    query_syntax: bool,
}

impl Sloppiness {
    const FULL: Sloppiness = Sloppiness {
        fold_whole_path: true,
        drop_trimmed_segments: true,
        query_syntax: true,
    };
    const STRICT: Sloppiness = Sloppiness {
        fold_whole_path: false,
        drop_trimmed_segments: false,
        query_syntax: false,
    };

    /// Whether the backend may run the request as a protected route of `acme`.
    fn reads_as_acme(self, path: &str, query: Option<&str>) -> bool {
        [1, 2].into_iter().any(|rounds| {
            let decoded = decode(path, rounds, false);
            let Some(tenant) = self.route_tenant(&decoded) else {
                return false;
            };
            tenant == TENANT || self.query_tenants(query).any(|t| t == TENANT)
        })
    }

    /// The tenant segment, if the decoded path routes to a template.
    fn route_tenant(self, decoded: &str) -> Option<String> {
        let whole = if self.fold_whole_path {
            fold(decoded)
        } else {
            decoded.to_owned()
        };
        let mut segments: Vec<(String, String)> = Vec::new(); // (literal key, tenant key)
        for raw in whole.split(['/', '\\']) {
            if raw.is_empty() {
                continue; // `//`; a segment that folds to nothing is not empty here
            }
            let raw = if self.fold_whole_path {
                Cow::Borrowed(raw)
            } else {
                Cow::Owned(fold(raw))
            };
            let without_parameter = raw.split(';').next().unwrap_or_default();
            let trimmed = trim(without_parameter);
            let literal = trim_dots(trimmed);
            let dots = if self.drop_trimmed_segments {
                trimmed
            } else {
                without_parameter
            };
            if dots == ".." {
                segments.pop();
                continue;
            }
            // A `;x` segment is dropped (as the gateway's lenient reading does); one that
            // folds or trims to nothing only by the liberty of doing so.
            let dropped = dots == "."
                || (without_parameter.is_empty() && !raw.is_empty())
                || (literal.is_empty() && self.drop_trimmed_segments);
            if !dropped {
                segments.push((literal.to_ascii_lowercase(), trimmed.to_ascii_lowercase()));
            }
        }
        let literals: Vec<&str> = segments.iter().map(|(l, _)| l.as_str()).collect();
        let matched = match literals.as_slice() {
            ["m2", _, "profile", last] | ["m2", _, "v2", "profile", last] => {
                *last == "batchupdate"
                    || last
                        .strip_prefix("batchupdate")
                        .is_some_and(|rest| rest.starts_with('.'))
            }
            _ => false,
        };
        matched.then(|| segments[1].1.clone())
    }

    /// Values of query parameters the backend takes for `client`, folded and lower-cased.
    fn query_tenants<'q>(self, query: Option<&'q str>) -> impl Iterator<Item = String> + 'q {
        let separators: &'static [char] = if self.query_syntax {
            &['&', ';']
        } else {
            &['&']
        };
        query
            .unwrap_or_default()
            .split(separators)
            .filter_map(move |pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let key = fold(&decode(key, 1, true));
                let mut key = trim(&key);
                if self.query_syntax {
                    if let Some(open) = key.find('[') {
                        if key.ends_with(']') {
                            key = &key[..open];
                        }
                    }
                }
                key.eq_ignore_ascii_case("client")
                    .then(|| trim(&fold(&decode(value, 1, true))).to_ascii_lowercase())
            })
    }
}

/// Percent-decodes `text` `rounds` times (`+` is a space in form encoding), reading the
/// bytes as UTF-8 with replacement characters.
fn decode(text: &str, rounds: usize, form: bool) -> String {
    let mut bytes = text.as_bytes().to_vec();
    if form {
        for b in &mut bytes {
            if *b == b'+' {
                *b = b' ';
            }
        }
    }
    for _ in 0..rounds {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| char::from(b).to_digit(16);
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        bytes = out;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Unicode folded the way lenient backends and collations compare text: compatibility
/// forms, lower case, marks dropped, and nothing but ASCII kept.
fn fold(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    // Upper then lower case, as Java's equalsIgnoreCase compares: `ı` → `I` → `i`.
    let cased: String = text
        .nfkc()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect();
    cased
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .filter(char::is_ascii)
        .collect()
}

/// Trims what `String.trim()` in Java trims: ASCII controls and space.
fn trim(text: &str) -> &str {
    text.trim_matches(|c: char| c <= ' ' || c == '\u{7f}')
}

/// Trims trailing dots, and whitespace around them, until nothing changes.
fn trim_dots(mut text: &str) -> &str {
    loop {
        let next = trim(text.trim_end_matches('.'));
        if next.len() == text.len() {
            return text;
        }
        text = next;
    }
}
