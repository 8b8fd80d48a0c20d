//! Strict `application/x-www-form-urlencoded` decoding, for bodies, query strings and path
//! segments of the sample backend.
//!
//! `form_urlencoded::parse` is lenient by design: it passes a malformed `%zz` through
//! verbatim and replaces invalid UTF-8 with U+FFFD. The backend must instead reject such
//! input with a `400` (a batch is all-or-nothing), so every escape is validated here first
//! and only then decoded with `percent_encoding`.

use percent_encoding::percent_decode_str;

/// Why a form, query string or path segment could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// The raw bytes (before any decoding) are not UTF-8.
    #[error("body is not valid UTF-8")]
    NotUtf8,
    /// A `%` not followed by two hexadecimal digits.
    #[error("bad percent-encoding at byte {offset} of {what}")]
    BadPercentEncoding { what: &'static str, offset: usize },
    /// Percent-decoding produced bytes that are not UTF-8.
    #[error("{what} is not valid UTF-8 after percent-decoding")]
    DecodedNotUtf8 { what: &'static str },
}

/// Decodes a whole form body (raw bytes) into its name/value pairs, in order.
pub fn parse_form_bytes(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    let text = std::str::from_utf8(body).map_err(|_| FormError::NotUtf8)?;
    parse_form(text, "form body")
}

/// Decodes `a=1&b=2` (a query string or a form body) into name/value pairs, in order.
///
/// Empty pairs (`a=1&&b=2`) are skipped and a pair without `=` has an empty value, as
/// browsers and `form_urlencoded` do; `+` means a space.
pub fn parse_form(input: &str, what: &'static str) -> Result<Vec<(String, String)>, FormError> {
    let mut pairs = Vec::new();
    let mut offset = 0;
    for pair in input.split('&') {
        if !pair.is_empty() {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value_offset = offset + name.len() + 1;
            pairs.push((
                decode_component(name, true, what, offset)?,
                decode_component(value, true, what, value_offset)?,
            ));
        }
        offset += pair.len() + 1;
    }
    Ok(pairs)
}

/// Decodes one percent-encoded path segment (`+` stays a plus sign).
pub fn decode_path_segment(segment: &str) -> Result<String, FormError> {
    decode_component(segment, false, "path", 0)
}

fn decode_component(
    raw: &str,
    plus_as_space: bool,
    what: &'static str,
    base_offset: usize,
) -> Result<String, FormError> {
    validate_escapes(raw).map_err(|at| FormError::BadPercentEncoding {
        what,
        offset: base_offset + at,
    })?;
    let spaced;
    let raw = if plus_as_space && raw.contains('+') {
        spaced = raw.replace('+', " ");
        spaced.as_str()
    } else {
        raw
    };
    percent_decode_str(raw)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| FormError::DecodedNotUtf8 { what })
}

/// Returns the offset of the first `%` that is not followed by two hex digits.
fn validate_escapes(raw: &str) -> Result<(), usize> {
    let bytes = raw.as_bytes();
    for (at, byte) in bytes.iter().enumerate() {
        if *byte == b'%' {
            let hex = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(at + 1) && hex(at + 2)) {
                return Err(at);
            }
        }
    }
    Ok(())
}

/// A parameter that must appear at most once appeared several times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeated;

/// Returns the value of the only pair called `name`: `Ok(None)` when absent, `Err` when
/// it appears more than once (ambiguous, so refused rather than guessed).
pub fn single<'a>(pairs: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, Repeated> {
    let mut found = pairs
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str());
    let first = found.next();
    match found.next() {
        Some(_) => Err(Repeated),
        None => Ok(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn decodes_plus_and_escapes() {
        let got = parse_form("batch=a%2Cb+c%0A&x=%C3%A9", "query").unwrap();
        assert_eq!(got, pairs(&[("batch", "a,b c\n"), ("x", "é")]));
    }

    #[test]
    fn skips_empty_pairs_and_allows_missing_equals() {
        let got = parse_form("&a=1&&flag&=v&", "query").unwrap();
        assert_eq!(got, pairs(&[("a", "1"), ("flag", ""), ("", "v")]));
    }

    #[test]
    fn value_may_contain_equals() {
        let got = parse_form("a=b=c", "query").unwrap();
        assert_eq!(got, pairs(&[("a", "b=c")]));
    }

    #[test]
    fn rejects_bad_percent_encoding_with_offset() {
        for (input, offset) in [("a=%zz", 2), ("a=1&b=%4", 6), ("a=%", 2), ("%g1=x", 0)] {
            assert_eq!(
                parse_form(input, "query"),
                Err(FormError::BadPercentEncoding {
                    what: "query",
                    offset
                }),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_non_utf8_after_decoding() {
        assert_eq!(
            parse_form("a=%FF", "query"),
            Err(FormError::DecodedNotUtf8 { what: "query" })
        );
    }

    #[test]
    fn rejects_non_utf8_body() {
        assert_eq!(parse_form_bytes(b"batch=\xff"), Err(FormError::NotUtf8));
        assert_eq!(
            parse_form_bytes(b"batch=ok").unwrap(),
            pairs(&[("batch", "ok")])
        );
    }

    #[test]
    fn path_segment_keeps_plus() {
        assert_eq!(decode_path_segment("a+b%20c").unwrap(), "a+b c");
        assert!(decode_path_segment("a%2").is_err());
    }

    #[test]
    fn single_refuses_duplicates() {
        let list = pairs(&[("a", "1"), ("b", "2"), ("b", "3")]);
        assert_eq!(single(&list, "a"), Ok(Some("1")));
        assert_eq!(single(&list, "c"), Ok(None));
        assert_eq!(single(&list, "b"), Err(Repeated));
    }
}
