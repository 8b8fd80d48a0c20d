//! Fuzzes the PROXY protocol reader's own parts (`authgate::server::proxy_protocol`):
//! the signature check (`start`) and the v1 line framing around the ppp crate, plus ppp
//! itself through `parse`.
//!
//! Besides "never panics": a complete header lies inside the input and is announced by
//! its signature, and the answer does not depend on how the bytes arrive. The reader
//! parses again after every read, so feeding the input one byte at a time must stop at
//! the same answer as the whole input at once (a header followed by more bytes is the
//! same header; a broken one stays broken).
#![no_main]

use authgate::server::proxy_protocol::{parse, start, Parsed, Start};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(1024)];
    let Start::Header(version) = start(data) else {
        // Plain or too short: the reader never calls parse on it.
        if start(data) == Start::NeedMore {
            assert!(data.len() < 12);
        }
        return;
    };
    let whole = parse(version, data);
    if let Parsed::Complete { len, .. } = whole {
        assert!(len <= data.len());
        assert_eq!(parse(version, &data[..len]), whole, "a header without what follows");
    }
    // Byte by byte, as a dribbling peer sends it: the first answer that is not
    // Incomplete is the whole input's.
    let first = (1..=data.len())
        .filter(|&n| start(&data[..n]) == Start::Header(version))
        .map(|n| parse(version, &data[..n]))
        .find(|p| *p != Parsed::Incomplete)
        .unwrap_or(Parsed::Incomplete);
    assert_eq!(first, whole, "{}", data.escape_ascii());
});
