//! RFC 6750 §2.1 Bearer credentials, read from the request's `Authorization` header.
//!
//! The auth decision calls [`parse`] on every request to a protected route (and the admin
//! API on every admin call): [`Credentials::Missing`] becomes `401`,
//! [`Credentials::Malformed`] `400 invalid_request`, and a [`Credentials::Bearer`] token
//! is compared with the current one. The parser works on the header's raw bytes, borrows
//! the token from the header map, never allocates and never panics.
//!
//! Grammar, applied to the field value as received (HTTP/1 parsing already drops the
//! whitespace around it; over HTTP/2 a trailing space makes the value malformed and a
//! leading one leaves no scheme, so `Missing`):
//!
//! ```text
//! credentials = "Bearer" 1*SP b64token        ; "Bearer" case-insensitive
//! b64token    = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
//! ```
//!
//! The scheme is the leading run of RFC 9110 `tchar`s, so `BearerX abc` names another
//! scheme while `Bearer\tabc`, `Bearer,abc` and `Bearer` alone are malformed Bearer
//! credentials.
use http::header::AUTHORIZATION;
use http::HeaderMap;

/// What the `Authorization` header(s) of a request carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// No `Authorization` header, or one with another scheme (e.g. `Basic`).
    Missing,
    /// Exactly one header of the form `Bearer <b64token>`; the token.
    Bearer(&'a str),
    /// A Bearer header that is not of the RFC 6750 form, or several `Authorization` headers.
    Malformed,
}

const SCHEME: &[u8] = b"bearer";

/// Reads the request's Bearer credentials.
///
/// More than one `Authorization` field line is [`Credentials::Malformed`] whatever
/// schemes they name: which one a backend would honour is anyone's guess.
pub fn parse(headers: &HeaderMap) -> Credentials<'_> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Credentials::Missing;
    };
    if values.next().is_some() {
        return Credentials::Malformed;
    }
    parse_value(value.as_bytes())
}

/// Parses one `Authorization` field value.
fn parse_value(value: &[u8]) -> Credentials<'_> {
    let scheme_len = value.iter().take_while(|&&b| is_tchar(b)).count();
    let (scheme, rest) = value.split_at(scheme_len);
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Credentials::Missing;
    }
    let spaces = rest.iter().take_while(|&&b| b == b' ').count();
    if spaces == 0 {
        return Credentials::Malformed;
    }
    let token = &rest[spaces..];
    if !is_b64token(token) {
        return Credentials::Malformed;
    }
    // A b64token is ASCII, so this cannot fail; the match keeps the parser panic-free.
    match std::str::from_utf8(token) {
        Ok(token) => Credentials::Bearer(token),
        Err(_) => Credentials::Malformed,
    }
}

/// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.iter().take_while(|&&b| is_b64char(b)).count();
    body_len > 0 && token[body_len..].iter().all(|&b| b == b'=')
}

fn is_b64char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// RFC 9110 §5.6.2 `tchar`: the characters of an auth-scheme.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Parses `value` as the request's only `Authorization` header.
    #[track_caller]
    fn assert_parses(value: &[u8], expected: Credentials<'_>) {
        let mut headers = HeaderMap::new();
        let header = HeaderValue::from_bytes(value).expect("a valid header value");
        headers.insert(AUTHORIZATION, header);
        assert_eq!(
            parse(&headers),
            expected,
            "{:?}",
            value.escape_ascii().to_string()
        );
    }

    #[test]
    fn no_header_is_missing() {
        assert_eq!(parse(&HeaderMap::new()), Credentials::Missing);
    }

    #[test]
    fn plain_bearer_token() {
        assert_parses(b"Bearer abc", Credentials::Bearer("abc"));
        assert_parses(
            b"Bearer ag_0123-abc.DEF~x+y/z==",
            Credentials::Bearer("ag_0123-abc.DEF~x+y/z=="),
        );
    }

    #[test]
    fn scheme_is_case_insensitive() {
        for value in [&b"bearer abc"[..], b"BEARER abc", b"bEaReR abc"] {
            assert_parses(value, Credentials::Bearer("abc"));
        }
    }

    #[test]
    fn several_spaces_before_the_token() {
        assert_parses(b"Bearer   abc", Credentials::Bearer("abc"));
    }

    #[test]
    fn several_headers_are_malformed_whatever_their_schemes() {
        for (a, b) in [
            ("Bearer abc", "Bearer abc"),
            ("Bearer abc", "Basic eHk6eg=="),
            ("Basic eHk6eg==", "Basic eHk6eg=="),
            ("Bearer abc", ""),
        ] {
            let mut headers = HeaderMap::new();
            headers.append(AUTHORIZATION, HeaderValue::from_static(a));
            headers.append(AUTHORIZATION, HeaderValue::from_static(b));
            assert_eq!(parse(&headers), Credentials::Malformed, "{a} + {b}");
        }
    }

    #[test]
    fn other_schemes_are_missing() {
        for value in [
            &b"Basic eHk6eg=="[..],
            b"Digest username=\"x\", realm=\"y\"",
            b"Token abc",
            b"BearerX abc",
            b"Bearer-x abc",
            b"Bearerabc",
            b"Bear abc",
            b"",
            b" Bearer abc",
        ] {
            assert_parses(value, Credentials::Missing);
        }
    }

    #[test]
    fn bearer_without_token_is_malformed() {
        for value in [&b"Bearer"[..], b"Bearer ", b"Bearer    ", b"bearer"] {
            assert_parses(value, Credentials::Malformed);
        }
    }

    #[test]
    fn scheme_must_be_followed_by_a_space() {
        for value in [
            &b"Bearer\tabc"[..],
            b"Bearer \tabc",
            b"Bearer,abc",
            b"Bearer=abc",
        ] {
            assert_parses(value, Credentials::Malformed);
        }
    }

    #[test]
    fn characters_outside_b64token_are_malformed() {
        for value in [
            &b"Bearer a b"[..],
            b"Bearer abc ",
            b"Bearer abc\t",
            b"Bearer a,b",
            b"Bearer \"abc\"",
            b"Bearer a\"b",
            b"Bearer abc;",
            b"Bearer abc%20",
        ] {
            assert_parses(value, Credentials::Malformed);
        }
    }

    #[test]
    fn control_bytes_are_malformed() {
        // `HeaderValue` refuses these, so they can only reach `parse_value` directly.
        for value in [&b"Bearer abc\x00"[..], b"Bearer abc\x7f", b"Bearer a\x1bc"] {
            assert_eq!(parse_value(value), Credentials::Malformed, "{value:?}");
        }
    }

    #[test]
    fn padding_only_at_the_end() {
        assert_parses(b"Bearer a=", Credentials::Bearer("a="));
        assert_parses(b"Bearer a===", Credentials::Bearer("a==="));
        for value in [
            &b"Bearer a=b"[..],
            b"Bearer =abc",
            b"Bearer ==",
            b"Bearer a==b",
        ] {
            assert_parses(value, Credentials::Malformed);
        }
    }

    #[test]
    fn obs_text_is_malformed_for_bearer_and_missing_otherwise() {
        assert_parses(b"Bearer \xc3\xa9t\xc3\xa9", Credentials::Malformed);
        assert_parses(b"Bearer abc\xff", Credentials::Malformed);
        assert_parses(b"Bearer\xa0abc", Credentials::Malformed);
        assert_parses(b"Basic \xff", Credentials::Missing);
        assert_parses(b"\xffBearer abc", Credentials::Missing);
    }
}
