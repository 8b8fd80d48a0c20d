//! Fuzzes `authgate::auth::path::normalize` with arbitrary request paths.
//!
//! Inputs that are not UTF-8 are skipped (hyper hands the gateway a `&str`). For every
//! path it accepts, the normaliser must be idempotent (normalising its output again gives
//! the same path, borrowed, with no error and the same lenient reading) and its output
//! must be canonical: `/`-rooted (unless the input was `*`), no `//`, no `.` or `..`
//! segment, ASCII with no control character or space, complete upper-case escapes that
//! encode neither an unreserved character nor a control character.
#![no_main]

use std::borrow::Cow;

use authgate::auth::path::normalize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(n) = normalize(input) else {
        return;
    };
    if input == "*" {
        assert_eq!(n.path, "*");
        assert_eq!(n.lenient, None);
        return;
    }
    assert_canonical(&n.path, input);

    let again = normalize(&n.path)
        .unwrap_or_else(|e| panic!("{input:?} → {:?}, which is refused: {e}", n.path));
    assert_eq!(again.path, n.path, "not idempotent for {input:?}");
    assert!(
        matches!(again.path, Cow::Borrowed(_)),
        "{:?} (from {input:?}) is rewritten again",
        n.path
    );
    assert_eq!(again.lenient, n.lenient, "lenient reading of {input:?} changes");

    if let Some(lenient) = &n.lenient {
        assert_ne!(lenient, &n.path, "{input:?}");
        assert!(lenient.starts_with('/'), "lenient {lenient:?} of {input:?}");
        assert!(!lenient.contains("//"), "lenient {lenient:?} of {input:?}");
        assert!(!lenient.contains(';'), "lenient {lenient:?} of {input:?}");
        assert!(
            !lenient.split('/').any(|s| s == "." || s == ".."),
            "lenient {lenient:?} of {input:?}"
        );
    }
});

fn assert_canonical(path: &str, input: &str) {
    assert!(path.starts_with('/'), "{path:?} (from {input:?}) is not rooted");
    assert!(!path.contains("//"), "{path:?} (from {input:?}) has '//'");
    assert!(
        !path.split('/').any(|s| s == "." || s == ".."),
        "{path:?} (from {input:?}) has a dot segment"
    );
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        assert!(
            b > 0x20 && b < 0x7F,
            "{path:?} (from {input:?}) has byte 0x{b:02X}"
        );
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
            assert!(
                hex.len() == 2 && hex.iter().all(|h| matches!(h, b'0'..=b'9' | b'A'..=b'F')),
                "{path:?} (from {input:?}) has a broken or lower-case escape"
            );
            let hex = std::str::from_utf8(hex).unwrap();
            let byte = u8::from_str_radix(hex, 16).unwrap();
            assert!(
                !(byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)),
                "{path:?} (from {input:?}) escapes an unreserved character"
            );
            assert!(
                byte >= 0x20 && byte != 0x7F,
                "{path:?} (from {input:?}) escapes a control character"
            );
        }
    }
}
