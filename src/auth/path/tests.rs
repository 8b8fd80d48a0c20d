use super::*;

#[track_caller]
fn assert_normal(input: &str, path: &str, lenient: Option<&str>) {
    let got = normalize(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
    assert_eq!(got.path, path, "path of {input:?}");
    assert_eq!(got.lenient.as_deref(), lenient, "lenient of {input:?}");
}

#[test]
fn canonical_path_is_borrowed() {
    let p = "/m2/acme/v2/profile/batchUpdate";
    let got = normalize(p).unwrap();
    assert!(matches!(got.path, Cow::Borrowed(_)));
    assert_eq!(
        got,
        Normalized {
            path: p.into(),
            lenient: None
        }
    );
    for p in [
        "/",
        "/m2/acme/",
        "/a:b@c/!$&'()*+,=-._~",
        "/100%25",
        "/caf%C3%A9",
    ] {
        assert!(
            matches!(normalize(p).unwrap().path, Cow::Borrowed(_)),
            "{p}"
        );
    }
}

#[test]
fn unreserved_escapes_are_decoded() {
    assert_normal("/%62atchUpdate", "/batchUpdate", None);
    assert_normal("/%41%7a%30%2D%5f%7E%2e", "/Az0-_~.", None);
}

#[test]
fn other_escapes_are_kept_upper_case() {
    assert_normal("/caf%c3%a9", "/caf%C3%A9", None);
    assert_normal("/a%20b%3a", "/a%20b%3A", None);
}

#[test]
fn raw_characters_not_allowed_in_a_path_are_encoded() {
    assert_normal("/a\"b{c}|d^e[f]", "/a%22b%7Bc%7D%7Cd%5Ee%5Bf%5D", None);
    assert_normal("/café", "/caf%C3%A9", None);
    assert_normal("/a b#c?d", "/a%20b%23c%3Fd", None);
}

#[test]
fn repeated_slashes_are_merged() {
    assert_normal("//m2/acme", "/m2/acme", None);
    assert_normal("//m2///x", "/m2/x", None);
    assert_normal("/m2/acme//", "/m2/acme/", None);
    assert_normal("//", "/", None);
}

#[test]
fn dot_segments_are_removed() {
    assert_normal("/x/../m2/acme", "/m2/acme", None);
    assert_normal("/m2/./acme", "/m2/acme", None);
    assert_normal("/../m2", "/m2", None);
    assert_normal("/a/b/..", "/a/", None);
    assert_normal("/a/b/.", "/a/b/", None);
    assert_normal("/a//..", "/", None);
    assert_normal("/..", "/", None);
    assert_normal("/a/.b/..c/...", "/a/.b/..c/...", None);
}

#[test]
fn encoded_dot_segments_are_removed() {
    assert_normal("/%2e%2e/m2", "/m2", None);
    assert_normal("/m2/x/.%2E/%2e/acme", "/m2/acme", None);
}

#[test]
fn trailing_slash_is_kept() {
    assert_normal(
        "/m2/acme/v2/profile/batchUpdate/",
        "/m2/acme/v2/profile/batchUpdate/",
        None,
    );
}

#[test]
fn asterisk_is_unchanged() {
    assert_normal("*", "*", None);
}

#[test]
fn errors() {
    use PathError::*;
    for (input, error) in [
        ("", NotAbsolute),
        ("m2/acme", NotAbsolute),
        ("**", NotAbsolute),
        ("http://h/m2", NotAbsolute),
        ("/a%", InvalidEscape { at: 2 }),
        ("/a%4", InvalidEscape { at: 2 }),
        ("/a%zz", InvalidEscape { at: 2 }),
        ("/a%4g", InvalidEscape { at: 2 }),
        ("/a\0b", ControlCharacter { byte: 0, at: 2 }),
        ("/a\nb", ControlCharacter { byte: 0x0A, at: 2 }),
        ("/a\tb", ControlCharacter { byte: 0x09, at: 2 }),
        ("/a\x7fb", ControlCharacter { byte: 0x7F, at: 2 }),
        ("/a%00", EncodedControlCharacter { byte: 0, at: 2 }),
        ("/a%0d%0a", EncodedControlCharacter { byte: 0x0D, at: 2 }),
        ("/a%7F", EncodedControlCharacter { byte: 0x7F, at: 2 }),
        ("/a;x%2F..%2Fb", SeparatorInParameter),
        ("/a%3Bx%5C..", SeparatorInParameter),
        ("/a;x\\..", SeparatorInParameter),
        ("/a%253Bx%252f..", SeparatorInParameter),
    ] {
        assert_eq!(normalize(input), Err(error), "{input:?}");
    }
}

#[test]
fn error_messages_say_what_is_wrong() {
    let message = normalize("/a%00").unwrap_err().to_string();
    assert_eq!(
        message,
        "the path contains the percent-encoded control character %00 at byte 2"
    );
}

#[test]
fn lenient_strips_path_parameters() {
    assert_normal(
        "/m2/acme/v2/profile/batchUpdate;x",
        "/m2/acme/v2/profile/batchUpdate;x",
        Some("/m2/acme/v2/profile/batchUpdate"),
    );
    assert_normal("/m2;x/acme", "/m2;x/acme", Some("/m2/acme"));
    assert_normal(
        "/batchUpdate;jsessionid=1",
        "/batchUpdate;jsessionid=1",
        Some("/batchUpdate"),
    );
    assert_normal("/x/..;/m2/acme", "/x/..;/m2/acme", Some("/m2/acme"));
    assert_normal("/;x/m2", "/;x/m2", Some("/m2"));
}

#[test]
fn lenient_reads_encoded_separators_and_backslash_as_slash() {
    assert_normal("/m2%2Facme", "/m2%2Facme", Some("/m2/acme"));
    assert_normal("/m2%2facme", "/m2%2Facme", Some("/m2/acme"));
    assert_normal("/m2%5cacme", "/m2%5Cacme", Some("/m2/acme"));
    assert_normal("/m2\\acme", "/m2%5Cacme", Some("/m2/acme"));
    assert_normal("/x%2F..%2Fm2", "/x%2F..%2Fm2", Some("/m2"));
    assert_normal("/m2%3Bx/acme", "/m2%3Bx/acme", Some("/m2/acme"));
}

#[test]
fn lenient_decodes_percent_once_more() {
    assert_normal("/m2/%2525", "/m2/%2525", Some("/m2/%25"));
    assert_normal("/%2562atchUpdate", "/%2562atchUpdate", Some("/batchUpdate"));
    assert_normal("/x/%252e%252E/m2", "/x/%252e%252E/m2", Some("/m2"));
    assert_normal("/m2%252Facme", "/m2%252Facme", Some("/m2/acme"));
    assert_normal(
        "/batchUpdate%2500.txt",
        "/batchUpdate%2500.txt",
        Some("/batchUpdate"),
    );
    assert_normal("/a%25%25", "/a%25%25", None);
    assert_normal("/100%25", "/100%25", None);
}

#[test]
fn separator_before_a_parameter_is_not_ambiguous() {
    assert_normal("/m2%2Facme;x", "/m2%2Facme;x", Some("/m2/acme"));
    assert_normal("/a;x/b%2Fc", "/a;x/b%2Fc", Some("/a/b/c"));
}
