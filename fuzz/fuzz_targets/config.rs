//! Fuzzes `authgate::config::Config::parse` with arbitrary UTF-8 text.
//!
//! The config loader must never panic, whatever the operator (or a broken deploy
//! script) writes, and every refusal must say what is wrong: at least one problem, and
//! every problem with a message and, when it has a line, a line inside the file.
#![no_main]

use std::path::Path;

use authgate::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) = Config::parse(text, Path::new("/tmp")) {
        assert!(!problems.is_empty(), "refused without a problem: {text:?}");
        let lines = yaml_line_count(text);
        for problem in &problems {
            assert!(!problem.message.trim().is_empty(), "{problem:?} for {text:?}");
            if let Some(line) = problem.line {
                // serde_yaml may point one past the last line at end of input.
                assert!(
                    (1..=lines + 1).contains(&line),
                    "{problem:?} for {text:?} points outside the file"
                );
            }
        }
    }
});

/// Lines as serde_yaml (libyaml, YAML 1.1) counts them: `\n`, `\r\n`, a lone `\r`, NEL,
/// LINE SEPARATOR and PARAGRAPH SEPARATOR each end one.
fn yaml_line_count(text: &str) -> usize {
    let breaks = ['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'];
    text.replace("\r\n", "\n").matches(breaks).count() + 1
}
