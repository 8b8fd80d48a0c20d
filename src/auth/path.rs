//! Request path normalisation: the one spelling of a path that the gateway both matches
//! against the protected routes and forwards upstream, so that what is checked is what
//! the backend acts on.
//!
//! The proxy calls [`normalize`] on `uri.path()` of every request. An error means `400`,
//! never forwarded. Otherwise [`Normalized::path`] is matched and forwarded, and
//! [`Normalized::lenient`] (how a lenient backend might read the *forwarded* path) is
//! matched too: a request whose lenient reading is protected is refused.
//!
//! `path` is canonical (RFC 3986 §6.2.2):
//! - escapes of unreserved characters are decoded (`%62` → `b`, `%2E` → `.`), other escapes
//!   keep their meaning with upper-case hex (`%2f` → `%2F`);
//! - raw bytes that may not appear in a path (`\`, `"`, `{`, `|`, non-ASCII, …; hyper
//!   lets some through) are percent-encoded, so the result is ASCII and a valid path;
//! - empty segments are merged (`//a///b` → `/a/b`), then `.` and `..` are resolved
//!   (RFC 3986 §5.2.4; `..` stops at the root); a trailing slash is kept.
//!
//! `lenient` reads `path` as the sloppiest backends do: `;` (raw, `%3B` or `%253B`) starts
//! a parameter that runs to the end of its segment; `%2F`, `%5C` and raw `\` are `/`;
//! `%25` is decoded once more (`%2562` → `b`, `%252F` → `/`); a double-encoded NUL
//! (`%2500`) ends the path as in C; then empty and dot segments are resolved again.
//! Backends disagree on whether a parameter ends at the next raw `/` or at the next
//! decoded one, so a parameter holding an encoded separator (`a;x%2F..%2Fb`) has no
//! single reading and is an error.
//!
//! A canonical path without `;`, `\` or `%2F`/`%5C`/`%3B`/`%25` is returned borrowed,
//! with no lenient reading and no allocation.
use std::borrow::Cow;

/// A request path in canonical form, and how a lenient backend might read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized<'a> {
    /// Matched against the protected routes and forwarded upstream.
    pub path: Cow<'a, str>,
    /// How a lenient backend might read `path`, when that differs from `path`.
    pub lenient: Option<String>,
}

/// Why a path is refused (logged; the client gets a plain `400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path neither starts with '/' nor is '*'")]
    NotAbsolute,
    #[error("the path has a '%' not followed by two hex digits at byte {at}")]
    InvalidEscape { at: usize },
    #[error("the path contains the control character 0x{byte:02X} at byte {at}")]
    ControlCharacter { byte: u8, at: usize },
    #[error("the path contains the percent-encoded control character %{byte:02X} at byte {at}")]
    EncodedControlCharacter { byte: u8, at: usize },
    #[error(
        "a ';' path parameter contains an encoded '/' or '\\', which backends split differently"
    )]
    SeparatorInParameter,
}

/// Normalises a request-target path (see the module documentation for the rules).
/// `*` (from `OPTIONS *`) is returned unchanged.
pub fn normalize(path: &str) -> Result<Normalized<'_>, PathError> {
    if path == "*" {
        return Ok(Normalized {
            path: Cow::Borrowed(path),
            lenient: None,
        });
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let path = if is_canonical(path)? {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(canonicalize(path))
    };
    let lenient = lenient_reading(&path)?;
    Ok(Normalized { path, lenient })
}

/// Validates `path` (which starts with `/`) and tells whether it is already canonical.
fn is_canonical(path: &str) -> Result<bool, PathError> {
    let bytes = path.as_bytes();
    let mut canonical = true;
    let mut segment_start = 1;
    let mut i = 1;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let (byte, upper) =
                    hex_pair(bytes, i + 1).ok_or(PathError::InvalidEscape { at: i })?;
                if is_control(byte) {
                    return Err(PathError::EncodedControlCharacter { byte, at: i });
                }
                canonical &= upper && !is_unreserved(byte);
                i += 3;
                continue;
            }
            b'/' => {
                let segment = bytes.get(segment_start..i).unwrap_or_default();
                canonical &= !matches!(segment, b"" | b"." | b"..");
                segment_start = i + 1;
            }
            _ if is_control(b) => return Err(PathError::ControlCharacter { byte: b, at: i }),
            _ => canonical &= is_pchar(b),
        }
        i += 1;
    }
    // An empty last segment is the trailing slash, which is kept.
    let last = bytes.get(segment_start..).unwrap_or_default();
    Ok(canonical && !matches!(last, b"." | b".."))
}

/// Rewrites a valid path into canonical form.
fn canonicalize(path: &str) -> String {
    resolve(path, |segment, out| {
        let bytes = segment.as_bytes();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == b'%' {
                if let Some((byte, _)) = hex_pair(bytes, i + 1) {
                    if is_unreserved(byte) {
                        out.push(char::from(byte));
                    } else {
                        push_escape(out, byte);
                    }
                    i += 3;
                    continue;
                }
            }
            if is_pchar(b) {
                out.push(char::from(b));
            } else {
                // Includes a stray '%', which `is_canonical` has already refused.
                push_escape(out, b);
            }
            i += 1;
        }
    })
}

/// How a lenient backend reads the canonical `path`, if that differs from `path`.
fn lenient_reading(path: &str) -> Result<Option<String>, PathError> {
    if !has_hazard(path.as_bytes()) {
        return Ok(None);
    }
    let decoded = decode_leniently(path)?;
    let read = resolve(&decoded, |segment, out| {
        let without_parameter = segment.split(';').next().unwrap_or_default();
        out.push_str(without_parameter);
    });
    Ok((read != path).then_some(read))
}

/// Whether a lenient backend could read the canonical `path` differently.
fn has_hazard(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| match b {
        b';' | b'\\' => true,
        b'%' => matches!(
            hex_pair(bytes, i + 1),
            Some((b'/' | b'\\' | b';' | b'%', _))
        ),
        _ => false,
    })
}

/// Decodes separators, parameter starts and double escapes the way lenient backends do,
/// leaving `/` as the only separator and `;` as the only parameter start.
fn decode_leniently(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut in_parameter = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let (byte, encoded, len) = match (b, hex_pair(bytes, i + 1)) {
            (b'%', Some((b'%', _))) => match hex_pair(bytes, i + 3) {
                Some((byte, _)) => (byte, true, 5),
                None => (b'%', true, 3),
            },
            (b'%', Some((byte, _))) => (byte, true, 3),
            _ => (b, false, 1),
        };
        i += len;
        match byte {
            b'/' if !encoded => {
                in_parameter = false;
                out.push('/');
            }
            b'/' | b'\\' if in_parameter => return Err(PathError::SeparatorInParameter),
            b'/' | b'\\' => out.push('/'),
            b';' => {
                in_parameter = true;
                out.push(';');
            }
            // A C string ends at NUL (only a double-encoded one can get here).
            0 => break,
            _ if is_unreserved(byte) || (!encoded && is_pchar(byte)) => out.push(char::from(byte)),
            _ => push_escape(&mut out, byte),
        }
    }
    Ok(out)
}

/// Merges empty segments and resolves dot segments of `path` (which starts with `/`),
/// writing each segment through `write_segment` first.
fn resolve(path: &str, mut write_segment: impl FnMut(&str, &mut String)) -> String {
    let mut out = String::with_capacity(path.len());
    out.push('/');
    let mut trailing_slash = true;
    for segment in path.get(1..).unwrap_or_default().split('/') {
        let start = out.len();
        write_segment(segment, &mut out);
        match out.get(start..).unwrap_or_default() {
            "" => {}
            "." => out.truncate(start),
            ".." => {
                out.truncate(start);
                pop_segment(&mut out);
            }
            _ => {
                out.push('/');
                trailing_slash = false;
                continue;
            }
        }
        trailing_slash = true;
    }
    if !trailing_slash {
        out.pop();
    }
    out
}

/// Removes the last segment of `out`, which ends with `/`; the root stays.
fn pop_segment(out: &mut String) {
    let before_slash = out.len().saturating_sub(1);
    if let Some(previous) = out.get(..before_slash).and_then(|s| s.rfind('/')) {
        out.truncate(previous + 1);
    }
}

/// The byte written as two hex digits at `at`, and whether they were upper case.
fn hex_pair(bytes: &[u8], at: usize) -> Option<(u8, bool)> {
    let hi = bytes.get(at).copied()?;
    let lo = bytes.get(at.checked_add(1)?).copied()?;
    let value = (hex_digit(hi)? << 4) | hex_digit(lo)?;
    Some((value, !hi.is_ascii_lowercase() && !lo.is_ascii_lowercase()))
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0xF)]));
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7F
}

/// RFC 3986 `unreserved`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` without `pct-encoded`: what may appear raw in a segment.
fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

#[cfg(test)]
mod tests;
