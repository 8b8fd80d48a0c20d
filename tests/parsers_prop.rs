//! Property tests for the two request-head parsers on the hot path:
//! `auth::bearer::parse` (RFC 6750 credentials) and `auth::path::normalize`, and for the
//! config loader (`Config::parse`).
//!
//! The request-head parsers are security boundaries, so beyond "never panics" the
//! properties check them against a reference model (Bearer) and against an attacker
//! re-spelling a protected path (path): every spelling is refused, normalises to the
//! protected path, or has a lenient reading that does. The config loader gets arbitrary
//! text, YAML-ish lines and arbitrary YAML structures keyed mostly by the schema's own
//! keys: it never panics, a refusal always lists at least one problem with a message
//! and a line inside the file, and a typo'd key is always reported.
use std::borrow::Cow;
use std::path::Path;

use authgate::auth::bearer::{parse, Credentials};
use authgate::auth::path::{normalize, Normalized};
use authgate::config::{Config, Problem};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_yaml::{Mapping, Value};

// ---------------------------------------------------------------------------------------
// Bearer
// ---------------------------------------------------------------------------------------

const B64_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/";

fn headers(values: &[Vec<u8>]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for value in values {
        map.append(AUTHORIZATION, HeaderValue::from_bytes(value).ok()?);
    }
    Some(map)
}

/// Every byte `HeaderValue` accepts: visible ASCII, SP, HTAB and obs-text.
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'\t'), 0x20u8..=0x7E, 0x80u8..=0xFF]
}

/// Header bytes that are neither a b64token character nor `=`.
fn non_b64_byte() -> impl Strategy<Value = u8> {
    header_byte().prop_filter("outside b64token", |&b| {
        b != b'=' && !B64_CHARS.as_bytes().contains(&b)
    })
}

fn b64token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._~+/-]{1,40}={0,3}"
}

/// `Bearer` with every letter in a random case.
fn bearer_scheme() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<bool>(), 6).prop_map(|upper| {
        "bearer"
            .chars()
            .zip(upper)
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Missing,
    Bearer(String),
    Malformed,
}

impl From<Credentials<'_>> for Expected {
    fn from(c: Credentials<'_>) -> Expected {
        match c {
            Credentials::Missing => Expected::Missing,
            Credentials::Bearer(t) => Expected::Bearer(t.to_owned()),
            Credentials::Malformed => Expected::Malformed,
        }
    }
}

/// The RFC 6750 grammar written the obvious way, on `str`.
fn reference(value: &str) -> Expected {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let scheme_end = value.find(|c: char| !is_tchar(c)).unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Expected::Missing;
    }
    let token = rest.trim_start_matches(' ');
    if token.len() == rest.len() {
        return Expected::Malformed;
    }
    let body = token.trim_end_matches('=');
    if !body.is_empty() && body.chars().all(|c| B64_CHARS.contains(c)) {
        Expected::Bearer(token.to_owned())
    } else {
        Expected::Malformed
    }
}

proptest! {
    #[test]
    fn bearer_never_panics_on_any_header_bytes(
        values in proptest::collection::vec(
            (
                prop_oneof![Just(""), Just("Bearer "), Just("bearer"), Just("Basic ")],
                proptest::collection::vec(header_byte(), 0..48),
            ),
            0..3,
        )
    ) {
        let values: Vec<Vec<u8>> = values
            .into_iter()
            .map(|(prefix, rest)| [prefix.as_bytes(), &rest].concat())
            .collect();
        let map = headers(&values).expect("only bytes HeaderValue accepts");
        if let Credentials::Bearer(token) = parse(&map) {
            prop_assert_eq!(values.len(), 1);
            prop_assert!(values[0].ends_with(token.as_bytes()));
            let body = token.trim_end_matches('=');
            prop_assert!(!body.is_empty() && body.chars().all(|c| B64_CHARS.contains(c)));
        }
    }

    #[test]
    fn bearer_accepts_every_valid_token(
        scheme in bearer_scheme(),
        spaces in 1usize..=3,
        token in b64token(),
    ) {
        let value = format!("{scheme}{}{token}", " ".repeat(spaces));
        let map = headers(&[value.into_bytes()]).unwrap();
        prop_assert_eq!(parse(&map), Credentials::Bearer(&token));
    }

    #[test]
    fn bearer_rejects_any_character_outside_b64token(
        scheme in bearer_scheme(),
        spaces in 1usize..=3,
        before in "[A-Za-z0-9._~+/-]{0,10}",
        bad in non_b64_byte(),
        after in proptest::collection::vec(header_byte(), 0..10),
    ) {
        // A space right after the scheme's spaces is just one more space.
        prop_assume!(!(before.is_empty() && bad == b' '));
        let value = [
            scheme.as_bytes(),
            " ".repeat(spaces).as_bytes(),
            before.as_bytes(),
            &[bad],
            &after,
        ]
        .concat();
        let map = headers(&[value]).unwrap();
        prop_assert_eq!(parse(&map), Credentials::Malformed);
    }

    #[test]
    fn bearer_rejects_padding_before_the_end(
        scheme in bearer_scheme(),
        token in "[A-Za-z0-9._~+/-]{0,10}={1,3}[A-Za-z0-9._~+/-]{1,10}",
    ) {
        let map = headers(&[format!("{scheme} {token}").into_bytes()]).unwrap();
        prop_assert_eq!(parse(&map), Credentials::Malformed);
    }

    #[test]
    fn bearer_agrees_with_the_reference_model(
        scheme in prop_oneof![
            bearer_scheme(),
            Just("Basic".to_owned()),
            Just("BearerX".to_owned()),
            Just("Bear".to_owned()),
            Just(String::new()),
        ],
        rest in proptest::collection::vec(
            proptest::sample::select(vec![
                ' ', ' ', '\t', '=', ',', '"', ';', 'a', 'Z', '0', '-', '.', '_', '~', '+', '/',
                'é', '\u{a0}',
            ]),
            0..10,
        ),
    ) {
        let value: String = scheme.chars().chain(rest).collect();
        let map = headers(&[value.clone().into_bytes()]).unwrap();
        prop_assert_eq!(Expected::from(parse(&map)), reference(&value), "{:?}", value);
    }

    #[test]
    fn bearer_several_headers_are_malformed(
        a in "[ -~]{0,20}",
        b in "[ -~]{0,20}",
    ) {
        let map = headers(&[a.into_bytes(), b.into_bytes()]).unwrap();
        prop_assert_eq!(parse(&map), Credentials::Malformed);
    }
}

// ---------------------------------------------------------------------------------------
// Path
// ---------------------------------------------------------------------------------------

/// Characters that exercise every rule: separators, dots, escapes, parameters, controls.
fn tricky_path() -> impl Strategy<Value = String> {
    let pieces = proptest::sample::select(vec![
        "/", "/", "//", ".", "..", "a", "B", "~", "%", "%2", "%2e", "%2E", "%2f", "%2F", "%5c",
        "%25", "%3B", "%3b", "%00", "%41", "%zz", ";", ";x=1", "\\", "é", "\"", "{", " ", "\t",
        "\0", "x", "2", "5", "e", "F", "0",
    ]);
    proptest::collection::vec(pieces, 0..16).prop_map(|pieces| pieces.concat())
}

fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        any::<String>().prop_map(|s| format!("/{s}")),
        tricky_path(),
        tricky_path().prop_map(|s| format!("/{s}")),
    ]
}

fn is_dot_segment_or_empty(segment: &str) -> bool {
    matches!(segment, "" | "." | "..")
}

/// Checks the shape every normalised path has.
fn assert_canonical(path: &str) -> Result<(), TestCaseError> {
    prop_assert!(path.starts_with('/'), "{path:?} starts with '/'");
    prop_assert!(path.is_ascii(), "{path:?} is ASCII");
    let segments: Vec<&str> = path[1..].split('/').collect();
    let (last, middle) = segments.split_last().unwrap();
    prop_assert!(
        !middle.iter().any(|s| is_dot_segment_or_empty(s)),
        "{path:?}"
    );
    prop_assert!(!matches!(*last, "." | ".."), "{path:?}");
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        prop_assert!(b > 0x20 && b < 0x7F, "{path:?} has no control or space");
        if b == b'%' {
            let hex = path.get(i + 1..i + 3).unwrap_or("");
            prop_assert!(hex.len() == 2, "{path:?}: complete escape");
            prop_assert!(hex
                .bytes()
                .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h)));
            let byte = u8::from_str_radix(hex, 16).unwrap();
            let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
            prop_assert!(!unreserved, "{path:?}: no escaped unreserved character");
            prop_assert!(byte >= 0x20 && byte != 0x7F, "{path:?}: no escaped control");
        }
    }
    Ok(())
}

/// Whether a lenient backend could read the canonical `path` differently.
fn has_hazard(path: &str) -> bool {
    ["%2F", "%5C", "%3B", "%25", ";", "\\"]
        .iter()
        .any(|h| path.contains(h))
}

/// A path from a small alphabet of unreserved characters; may hold `.`/`..` segments.
fn plain_segments() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("[a-c0-1._~-]{1,4}", 1..6)
}

/// Re-spells `c` as a percent-escape with random hex case.
fn encode(c: char, lower: bool) -> String {
    let escape = format!("%{:02X}", c as u32);
    if lower {
        escape.to_ascii_lowercase()
    } else {
        escape
    }
}

proptest! {
    #[test]
    fn path_never_panics(path in any_path()) {
        let _ = normalize(&path);
    }

    #[test]
    fn path_output_is_canonical(path in any_path()) {
        if let Ok(n) = normalize(&path) {
            if path == "*" {
                prop_assert_eq!(n, Normalized { path: Cow::Borrowed("*"), lenient: None });
                return Ok(());
            }
            assert_canonical(&n.path)?;
            if let Some(lenient) = &n.lenient {
                prop_assert_ne!(lenient, &n.path);
                prop_assert!(lenient.starts_with('/'));
                let segments: Vec<&str> = lenient[1..].split('/').collect();
                let (last, middle) = segments.split_last().unwrap();
                prop_assert!(!middle.iter().any(|s| is_dot_segment_or_empty(s)), "{lenient:?}");
                prop_assert!(!matches!(*last, "." | ".."), "{lenient:?}");
                prop_assert!(!lenient.contains(';'), "{lenient:?} has no parameters");
            }
            if !has_hazard(&n.path) {
                prop_assert_eq!(n.lenient, None);
            }
        }
    }

    #[test]
    fn path_is_idempotent(path in any_path()) {
        if let Ok(n) = normalize(&path) {
            let again = normalize(&n.path).expect("a normalised path is valid");
            prop_assert!(matches!(again.path, Cow::Borrowed(_)), "no rewrite of {:?}", n.path);
            prop_assert_eq!(&again, &n);
        }
    }

    #[test]
    fn path_plain_canonical_is_borrowed_without_lenient(
        segments in proptest::collection::vec("[a-zA-Z0-9_~-][a-zA-Z0-9._~-]{0,6}", 0..8),
        trailing_slash in any::<bool>(),
    ) {
        let mut path = format!("/{}", segments.join("/"));
        if trailing_slash && !segments.is_empty() {
            path.push('/');
        }
        let n = normalize(&path).unwrap();
        prop_assert!(matches!(n.path, Cow::Borrowed(p) if p == path));
        prop_assert_eq!(n.lenient, None);
    }

    #[test]
    fn path_respellings_normalise_alike(
        segments in plain_segments(),
        gadgets in proptest::collection::vec(
            proptest::sample::select(vec!["", "", "./", "x/../", "/", "//", "%2e/", "x/%2E%2e/"]),
            6,
        ),
        encodings in proptest::collection::vec(0u8..3, 24),
    ) {
        let base = format!("/{}", segments.join("/"));
        let mut variant = String::from("/");
        let mut k = 0;
        for (i, segment) in segments.iter().enumerate() {
            // A gadget before each segment, never after the last one: that would add a
            // trailing slash, which is kept.
            variant.push_str(gadgets[i]);
            for c in segment.chars() {
                match encodings[k % encodings.len()] {
                    0 => variant.push(c),
                    e => variant.push_str(&encode(c, e == 2)),
                }
                k += 1;
            }
            if i + 1 < segments.len() {
                variant.push('/');
            }
        }
        let expected = normalize(&base).unwrap();
        let got = normalize(&variant).unwrap();
        prop_assert_eq!(&got.path, &expected.path, "{} vs {}", variant, base);
        prop_assert_eq!(got.lenient, None);
    }

    /// The security property: however a protected path is spelled, the request is
    /// refused, or its path or its lenient reading is the protected path.
    #[test]
    fn path_respelled_protected_route_is_always_caught(
        separators in proptest::collection::vec(
            proptest::sample::select(vec![
                "/", "/", "//", "/./", "/x/../", "/%2e/", "/x/%2E%2E/", "%2F", "%2f", "%5C", "\\",
                "%252F", "/%252e/", "/x/%252e%252e/", "/x/..;/", "/x;y/../",
            ]),
            5,
        ),
        parameters in proptest::collection::vec(
            proptest::sample::select(vec![
                "", "", "", ";x", ";jsessionid=1", "%3Bx", "%253Bx",
                // Read as nothing by backends that strip parameters up to the raw '/'.
                ";x%2F..%2F..", "%3Bx%5C..", ";x\\..\\x",
            ]),
            5,
        ),
        spellings in proptest::collection::vec(0u8..5, 40),
        trailing_slash in any::<bool>(),
    ) {
        const TARGET: [&str; 5] = ["m2", "acme", "v2", "profile", "batchUpdate"];
        let mut path = String::new();
        let mut k = 0;
        for (i, segment) in TARGET.iter().enumerate() {
            path.push_str(separators[i]);
            for c in segment.chars() {
                match spellings[k % spellings.len()] {
                    0 | 1 => path.push(c),
                    2 => path.push_str(&encode(c, false)),
                    3 => path.push_str(&encode(c, true)),
                    _ => path.push_str(&format!("%25{:02x}", c as u32)),
                }
                k += 1;
            }
            path.push_str(parameters[i]);
        }
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if trailing_slash {
            path.push('/');
        }
        let target = format!("/{}", TARGET.join("/"));
        let is_target = |p: &str| p.strip_suffix('/').unwrap_or(p) == target;
        match normalize(&path) {
            Err(_) => {}
            Ok(n) => prop_assert!(
                is_target(&n.path) || n.lenient.as_deref().is_some_and(is_target),
                "{:?} slipped through as {:?}",
                path,
                n
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Config loader
// ---------------------------------------------------------------------------------------

/// Keys of the config file's schema (at any level), so generated documents reach the
/// validation code and not only "unknown key".
const CONFIG_KEYS: &[&str] = &[
    "listen",
    "proxy",
    "admin",
    "upstream",
    "url",
    "connect_timeout",
    "request_timeout",
    "pool_idle_timeout",
    "pool_max_idle",
    "protected_routes",
    "methods",
    "path",
    "case_insensitive_paths",
    "tenant_param",
    "tokens",
    "default_ttl",
    "max_ttl",
    "limits",
    "max_header_bytes",
    "header_read_timeout",
    "idle_timeout",
    "max_connections",
    "max_body_bytes",
    "shutdown_timeout",
    "state",
    "backend",
    "keys",
    "name",
    "role",
    "sha256",
    "runtime",
    "worker_threads",
    "log",
    "format",
    "level",
    "tls",
];

/// Scalars each of which is valid for some key and wrong for most others.
fn config_scalar() -> impl Strategy<Value = Value> {
    let texts = proptest::sample::select(vec![
        "2s",
        "0s",
        "500ms",
        "90d",
        "-1s",
        "1y",
        "forever",
        "http://127.0.0.1:8081",
        "http://127.0.0.1:8081/base/",
        "https://profiles.internal",
        "ftp://x",
        "not a url",
        "http://",
        "POST",
        "GET",
        "bad method",
        "/m2/{client}/profile/batchUpdate",
        "/{a}/{a}",
        "/{",
        "*x",
        "",
        "approver",
        "viewer",
        "root",
        "file",
        "redis",
        "json",
        "human",
        "0.0.0.0:8080",
        "[::1]:0",
        "127.0.0.1:99999",
        "none",
        "client",
        "é",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "zz",
    ]);
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(8191),
            Just(8192),
            Just(65536),
            Just(1 << 24),
            Just((1 << 24) + 1)
        ]
        .prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| Value::Number(f.into())),
        texts.prop_map(|s| Value::String(s.to_owned())),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

fn config_key() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => proptest::sample::select(CONFIG_KEYS).prop_map(|k| Value::String(k.to_owned())),
        1 => "[a-z_]{1,8}".prop_map(Value::String),
        1 => config_scalar(),
    ]
}

/// An arbitrary YAML document whose keys are mostly the schema's.
fn config_value() -> impl Strategy<Value = Value> {
    config_scalar().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            proptest::collection::vec((config_key(), inner), 0..6)
                .prop_map(|entries| Value::Mapping(entries.into_iter().collect::<Mapping>())),
        ]
    })
}

/// Lines as serde_yaml (libyaml, YAML 1.1) counts them: `\n`, `\r\n`, a lone `\r`, NEL,
/// LINE SEPARATOR and PARAGRAPH SEPARATOR each end one.
fn yaml_line_count(text: &str) -> usize {
    let breaks = ['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'];
    text.replace("\r\n", "\n").matches(breaks).count() + 1
}

/// `Config::parse` on another thread, so that a loop in the loader fails the test with
/// the input instead of hanging the whole suite.
fn parse_config_watched(text: &str) -> Result<Result<Config, Vec<Problem>>, TestCaseError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = text.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(Config::parse(
            &owned,
            Path::new("/nonexistent-authgate-base"),
        ));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(5)) {
        Ok(result) => Ok(result),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(TestCaseError::fail(format!(
            "Config::parse still running after 5 s on {text:?}"
        ))),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(TestCaseError::fail(format!(
            "Config::parse panicked on {text:?}"
        ))),
    }
}

/// The config loader's contract on any input: no panic, and a refusal always says why.
fn check_config_text(text: &str) -> Result<(), TestCaseError> {
    let first = parse_config_watched(text)?;
    if let Err(problems) = &first {
        prop_assert!(!problems.is_empty(), "refused without a problem: {text:?}");
        for Problem { key, line, message } in problems {
            prop_assert!(
                !message.trim().is_empty(),
                "{key:?} has no message: {text:?}"
            );
            if let Some(line) = line {
                // serde_yaml places "unexpected end of input" one line past the last one.
                prop_assert!(
                    (1..=yaml_line_count(text) + 1).contains(line),
                    "{key:?} points at line {line} of {text:?}"
                );
            }
        }
    }
    // The same text always gets the same verdict.
    let second = parse_config_watched(text)?;
    prop_assert_eq!(first.is_ok(), second.is_ok());
    if let (Err(a), Err(b)) = (&first, &second) {
        prop_assert_eq!(a, b);
    }
    Ok(())
}

/// A document with a valid upstream and a typo'd key inside one of the schema's mappings.
fn config_with_typo() -> impl Strategy<Value = (String, String)> {
    let sections = proptest::sample::select(vec![
        "", "listen", "upstream", "tokens", "limits", "state", "admin", "runtime", "log",
    ]);
    (
        sections,
        "[a-z]{1,6}_typo",
        "[a-z]{1,6}".prop_map(Value::String),
    )
        .prop_map(|(section, typo, value)| {
            let mut root = Mapping::new();
            let mut upstream = Mapping::new();
            upstream.insert("url".into(), "http://127.0.0.1:8081".into());
            root.insert("upstream".into(), Value::Mapping(upstream));
            let target = if section.is_empty() {
                &mut root
            } else {
                let entry = root
                    .entry(section.into())
                    .or_insert_with(|| Value::Mapping(Mapping::new()));
                match entry {
                    Value::Mapping(m) => m,
                    _ => unreachable!("sections are mappings"),
                }
            };
            target.insert(Value::String(typo.clone()), value);
            let key = if section.is_empty() {
                typo
            } else {
                format!("{section}.{typo}")
            };
            (serde_yaml::to_string(&root).unwrap(), key)
        })
}

proptest! {
    #[test]
    fn config_never_panics_on_any_text(text in any::<String>()) {
        check_config_text(&text)?;
    }

    #[test]
    fn config_never_panics_on_yaml_ish_text(
        lines in proptest::collection::vec(
            (
                0usize..6,
                proptest::sample::select(CONFIG_KEYS),
                proptest::sample::select(vec![
                    ":", ": ", ":  ", " :", "", ": -", "- ", ": [", ": {", ": &a", ": *a", ": !!str",
                    ": |", ": >", ": '", ": \"", ": ~", ": 2s", ": 0", ": -1", ": 1e999", ": {a: b",
                    ": [POST]", ": http://h:1", "\t:", ": \"\\u0000\"", ": # c",
                ]),
            ),
            0..24,
        ),
        line_end in proptest::sample::select(vec!["\n", "\r\n", "\r"]),
    ) {
        let text: String = lines
            .iter()
            .map(|(indent, key, rest)| format!("{}{key}{rest}{line_end}", " ".repeat(*indent)))
            .collect();
        check_config_text(&text)?;
    }

    #[test]
    fn config_never_panics_on_arbitrary_structures(doc in config_value()) {
        let text = serde_yaml::to_string(&doc).unwrap();
        check_config_text(&text)?;
    }

    #[test]
    fn config_never_panics_on_damaged_structures(
        doc in config_value(),
        at in any::<proptest::sample::Index>(),
        cut in 0usize..8,
        insert in "\\PC{0,6}",
    ) {
        let text = serde_yaml::to_string(&doc).unwrap();
        let mut chars: Vec<char> = text.chars().collect();
        let start = if chars.is_empty() { 0 } else { at.index(chars.len()) };
        let end = (start + cut).min(chars.len());
        chars.splice(start..end, insert.chars());
        let damaged: String = chars.into_iter().collect();
        check_config_text(&damaged)?;
    }

    /// Unknown keys are errors wherever they are (a typo must never silently drop a setting).
    #[test]
    fn config_unknown_key_is_always_reported((text, key) in config_with_typo()) {
        let problems = Config::parse(&text, Path::new("/nonexistent-authgate-base"))
            .expect_err("a typo'd key is refused");
        prop_assert!(
            problems.iter().any(|p| p.key == key && p.message.contains("unknown key")),
            "{key} not reported in {problems:?} for {text:?}"
        );
    }
}

/// Found by the `config` fuzz target: an empty key (`"": x`, `?`, or `&a:` whose key is
/// an empty plain scalar), at the top or nested, sent `authgate check` and `serve` into an
/// endless loop in `config::locate::find_key` (`"".find` matches without advancing).
#[test]
fn config_empty_key_is_reported() {
    for text in [
        "\"\": x\n",
        "&s:\n",
        "?\n",
        "upstream: { url: \"http://h:1\", \"\": 1 }\n",
        // Found by the fuzzer once the above were skipped: duplicate keys plus an empty one.
        "u: rld/\nu: rld/\n&y: /\ny: /\n",
        // Also from the fuzzer: a quoted empty key, and an anchor-only key in a flow map.
        "'':\n",
        "protected_routes:\n- {s,&a}\n",
    ] {
        let problems = parse_config_watched(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect_err("an empty key is an unknown key");
        assert!(
            problems.iter().any(|p| p.message.contains("unknown key")),
            "{text:?}: {problems:?}"
        );
    }
}
