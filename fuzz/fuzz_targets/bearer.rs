//! Fuzzes `authgate::auth::bearer::parse` with arbitrary `Authorization` headers.
//!
//! The input is split on `\n` into field values (so one input can carry zero, one or
//! several `Authorization` headers); values `HeaderValue` refuses are dropped, as hyper
//! would refuse them before the gateway sees them. Besides "never panics", every answer
//! is checked against the RFC 6750 grammar written the obvious way.
#![no_main]

use authgate::auth::bearer::{parse, Credentials};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    // An unrelated header must never change the answer.
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/csv"));
    let mut values = Vec::new();
    for piece in data.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(piece) {
            headers.append(AUTHORIZATION, value);
            values.push(piece);
        }
    }

    let got = parse(&headers);
    let expected = match values.as_slice() {
        [] => Expected::Missing,
        [one] => reference(one),
        _ => Expected::Malformed,
    };
    match (got, &expected) {
        (Credentials::Missing, Expected::Missing) | (Credentials::Malformed, Expected::Malformed) => {}
        (Credentials::Bearer(token), Expected::Bearer(want)) => {
            assert_eq!(token.as_bytes(), *want, "token of {values:?}");
            // The token is borrowed from the header, never copied or rewritten.
            assert!(values[0].ends_with(token.as_bytes()));
        }
        _ => panic!("{values:?}: parse says {got:?}, the grammar says {expected:?}"),
    }
});

#[derive(Debug)]
enum Expected<'a> {
    Missing,
    Bearer(&'a [u8]),
    Malformed,
}

/// `credentials = "Bearer" 1*SP b64token`, with the scheme being the leading run of
/// RFC 9110 `tchar`s (so `BearerX` is another scheme, `Bearer,` a malformed Bearer).
fn reference(value: &[u8]) -> Expected<'_> {
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    let scheme_end = value.iter().position(|b| !is_tchar(b)).unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Expected::Missing;
    }
    let token_start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    if token_start == 0 {
        return Expected::Malformed;
    }
    let token = &rest[token_start..];
    let body_end = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let body = &token[..body_end];
    let is_b64 = |b: &u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(b);
    if !body.is_empty() && body.iter().all(is_b64) {
        Expected::Bearer(token)
    } else {
        Expected::Malformed
    }
}
