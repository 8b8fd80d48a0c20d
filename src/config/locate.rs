//! Finds the line of a key path (`upstream.url`, `protected_routes[1].path`) in the YAML
//! source, so that problems found after parsing can still point at the line to fix.
//!
//! serde_yaml keeps no positions once a value is deserialized; this walks the text
//! instead, following each path segment forward from where its parent was found. It
//! understands block mappings, block sequences and flow mappings on one line, which is
//! what configuration files use; when a segment cannot be found it answers with the
//! parent's line, which is still the right neighbourhood.

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Renders a path the way problems print it: `protected_routes[1].path`.
pub fn display(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// 1-based line of the deepest segment of `path` that could be found.
pub fn line_of(src: &str, path: &[Seg]) -> Option<usize> {
    let lines: Vec<&str> = src.lines().map(strip_comment).collect();
    let mut found: Option<(usize, usize)> = None; // (line index, indent of that key)
    let mut from = 0;
    for seg in path {
        let parent_indent = found.map(|(_, indent)| indent);
        let hit = match seg {
            Seg::Key(key) => find_key(&lines, from, parent_indent, key),
            Seg::Index(n) => find_item(&lines, from, parent_indent, *n),
        };
        match hit {
            Some(h) => {
                found = Some(h);
                from = h.0;
            }
            None => break,
        }
    }
    found.map(|(line, _)| line + 1)
}

fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Searches from line `from` for `key:` at a key position; stops when a block line
/// dedents to or past the parent (the key would belong to another mapping).
fn find_key(
    lines: &[&str],
    from: usize,
    parent_indent: Option<usize>,
    key: &str,
) -> Option<(usize, usize)> {
    // An empty key (`"": x`) has no text to look for; the parent's line will do.
    if key.is_empty() {
        return None;
    }
    for (i, line) in lines.iter().enumerate().skip(from) {
        if line.trim().is_empty() {
            continue;
        }
        if i > from {
            if let Some(p) = parent_indent {
                if indent(line) <= p {
                    return None;
                }
            }
        }
        let mut search = 0;
        while let Some(pos) = line[search..].find(key) {
            let start = search + pos;
            let end = start + key.len();
            let before = line[..start].trim_end();
            // A top-level key starts its line; the same name nested deeper (`tls` under
            // `upstream`) is another key.
            if parent_indent.is_none() && start != 0 {
                search = end;
                continue;
            }
            let key_position = before.is_empty()
                || before.ends_with('{')
                || before.ends_with(',')
                || before.ends_with('-');
            let after = line[end..].trim_start();
            if key_position && after.starts_with(':') {
                return Some((i, start));
            }
            search = end;
        }
    }
    None
}

/// Finds the `n`th block sequence item (`- `) below the parent key.
fn find_item(
    lines: &[&str],
    from: usize,
    parent_indent: Option<usize>,
    n: usize,
) -> Option<(usize, usize)> {
    let mut item_indent = None;
    let mut seen = 0;
    for (i, line) in lines.iter().enumerate().skip(from + 1) {
        if line.trim().is_empty() {
            continue;
        }
        let ind = indent(line);
        if let Some(p) = parent_indent {
            if ind < p || (ind == p && !line.trim_start().starts_with('-')) {
                return None;
            }
        }
        if line.trim_start().starts_with('-') {
            match item_indent {
                None => item_indent = Some(ind),
                Some(ii) if ii != ind => continue,
                Some(_) => {}
            }
            if seen == n {
                return Some((i, ind));
            }
            seen += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }

    const SRC: &str = "\
listen:
  proxy: \"0.0.0.0:8080\"   # clients
upstream:
  url: \"http://x\"
  request_timeout: 60s
protected_routes:
  - { methods: [POST], path: \"/a\" }
  - methods: [POST]
    path: \"/b\"
tokens: { default_ttl: 24h, max_ttl: 90d }
";

    #[test]
    fn finds_block_flow_and_sequence_keys() {
        assert_eq!(line_of(SRC, &[key("upstream"), key("url")]), Some(4));
        assert_eq!(
            line_of(SRC, &[key("upstream"), key("request_timeout")]),
            Some(5)
        );
        assert_eq!(line_of(SRC, &[key("tokens"), key("max_ttl")]), Some(10));
        let p = [key("protected_routes"), Seg::Index(0), key("path")];
        assert_eq!(line_of(SRC, &p), Some(7));
        let p = [key("protected_routes"), Seg::Index(1), key("path")];
        assert_eq!(line_of(SRC, &p), Some(9));
    }

    #[test]
    fn a_top_level_key_is_not_confused_with_a_nested_one_of_the_same_name() {
        let src = "upstream:\n  tls: { ca: a.pem }\ntls:\n  proxy: { cert: c.pem }\n";
        assert_eq!(line_of(src, &[key("tls"), key("proxy")]), Some(4));
        assert_eq!(
            line_of(src, &[key("upstream"), key("tls"), key("ca")]),
            Some(2)
        );
    }

    #[test]
    fn missing_child_falls_back_to_parent() {
        assert_eq!(line_of(SRC, &[key("upstream"), key("nope")]), Some(3));
        assert_eq!(line_of(SRC, &[key("nope")]), None);
    }

    #[test]
    fn an_empty_key_is_not_searched_for() {
        // Regression (fuzzing): `"".find` matches without advancing, which looped.
        let src = "\"\": x\nupstream:\n  \"\": 1\n";
        assert_eq!(line_of(src, &[key("")]), None);
        assert_eq!(line_of(src, &[key("upstream"), key("")]), Some(2));
    }

    #[test]
    fn display_joins_keys_and_indices() {
        let p = [key("protected_routes"), Seg::Index(1), key("path")];
        assert_eq!(display(&p), "protected_routes[1].path");
    }
}
