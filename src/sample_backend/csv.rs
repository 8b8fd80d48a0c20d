//! A small CSV record reader for batch files (the text of the `batch` form field).
//!
//! Dialect, close to RFC 4180:
//! - fields are separated by `,`; records end at `\n` or `\r\n` (or the end of input);
//! - a field that *starts* with `"` is quoted: it may contain `,`, `"` written as `""`, and
//!   line breaks; after the closing quote only `,`, a line break or the end may follow;
//! - a `"` inside an unquoted field is kept literally (lenient, as spreadsheets write it);
//! - empty lines are skipped; nothing is trimmed.
//!
//! Records come out one at a time with the line they start on, so a caller can stop at a
//! row limit without materialising a huge file.

/// One CSV record and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: usize,
    pub fields: Vec<String>,
}

/// A syntax error in the CSV text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("unterminated quoted field starting on line {line}")]
    UnterminatedQuote { line: usize },
    #[error("unexpected character after a closing quote on line {line}")]
    TextAfterQuote { line: usize },
}

/// Iterator over the records of a CSV text; stops after the first error.
#[derive(Debug)]
pub struct Records<'a> {
    input: &'a str,
    pos: usize,
    /// Line breaks consumed so far; the current line is `breaks + 1`.
    breaks: usize,
    failed: bool,
}

impl<'a> Records<'a> {
    pub fn new(input: &'a str) -> Self {
        Records {
            input,
            pos: 0,
            breaks: 0,
            failed: false,
        }
    }

    fn rest(&self) -> &'a str {
        self.input.get(self.pos..).unwrap_or("")
    }

    /// Consumes a line break at the cursor, if there is one.
    fn eat_line_break(&mut self) -> bool {
        let len = if self.rest().starts_with("\r\n") {
            2
        } else if self.rest().starts_with('\n') {
            1
        } else {
            return false;
        };
        self.pos += len;
        self.breaks += 1;
        true
    }

    fn record(&mut self) -> Result<Record, CsvError> {
        let line = self.breaks + 1;
        let mut fields = Vec::new();
        loop {
            let field = if self.rest().starts_with('"') {
                self.quoted_field()?
            } else {
                self.unquoted_field()
            };
            fields.push(field);
            if self.rest().starts_with(',') {
                self.pos += 1;
            } else if self.eat_line_break() || self.rest().is_empty() {
                return Ok(Record { line, fields });
            } else {
                return Err(CsvError::TextAfterQuote {
                    line: self.breaks + 1,
                });
            }
        }
    }

    fn unquoted_field(&mut self) -> String {
        let rest = self.rest();
        let mut end = rest.find([',', '\n']).unwrap_or(rest.len());
        if rest[..end].ends_with('\r') && rest[end..].starts_with('\n') {
            end -= 1;
        }
        self.pos += end;
        rest[..end].to_owned()
    }

    fn quoted_field(&mut self) -> Result<String, CsvError> {
        let start_line = self.breaks + 1;
        self.pos += 1; // the opening quote
        let mut value = String::new();
        loop {
            let rest = self.rest();
            let Some(quote) = rest.find('"') else {
                return Err(CsvError::UnterminatedQuote { line: start_line });
            };
            let chunk = &rest[..quote];
            value.push_str(chunk);
            self.breaks += chunk.matches('\n').count();
            self.pos += quote + 1;
            if self.rest().starts_with('"') {
                value.push('"');
                self.pos += 1;
            } else {
                return Ok(value);
            }
        }
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Record, CsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        while self.eat_line_break() {}
        if self.rest().is_empty() {
            return None;
        }
        let record = self.record();
        self.failed = record.is_err();
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &str) -> Result<Vec<Record>, CsvError> {
        Records::new(input).collect()
    }

    fn rec(line: usize, fields: &[&str]) -> Record {
        Record {
            line,
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn plain_records_with_both_line_endings() {
        let got = read("thirdPartyId,a,b\r\n1,x,y\n2,,z").unwrap();
        assert_eq!(
            got,
            vec![
                rec(1, &["thirdPartyId", "a", "b"]),
                rec(2, &["1", "x", "y"]),
                rec(3, &["2", "", "z"]),
            ]
        );
    }

    #[test]
    fn skips_blank_lines_and_trailing_newline() {
        let got = read("\nh,a\n\n\r\n1,x\n\n").unwrap();
        assert_eq!(got, vec![rec(2, &["h", "a"]), rec(5, &["1", "x"])]);
    }

    #[test]
    fn keeps_spaces_and_lone_carriage_returns() {
        let got = read(" a , b\rc ").unwrap();
        assert_eq!(got, vec![rec(1, &[" a ", " b\rc "])]);
    }

    #[test]
    fn trailing_comma_is_an_empty_field() {
        assert_eq!(read("a,").unwrap(), vec![rec(1, &["a", ""])]);
    }

    #[test]
    fn quoted_fields_hold_commas_quotes_and_newlines() {
        let got =
            read("id,v\n1,\"a,b\"\n2,\"say \"\"hi\"\"\"\n3,\"two\r\nlines\"\n4,\"\"\n").unwrap();
        assert_eq!(
            got,
            vec![
                rec(1, &["id", "v"]),
                rec(2, &["1", "a,b"]),
                rec(3, &["2", "say \"hi\""]),
                rec(4, &["3", "two\r\nlines"]),
                rec(6, &["4", ""]),
            ]
        );
    }

    #[test]
    fn quote_inside_unquoted_field_is_literal() {
        assert_eq!(read("a\"b,c").unwrap(), vec![rec(1, &["a\"b", "c"])]);
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert_eq!(
            read("id,v\n1,\"open\n2,x\n"),
            Err(CsvError::UnterminatedQuote { line: 2 })
        );
    }

    #[test]
    fn text_after_closing_quote_is_an_error() {
        assert_eq!(
            read("id,v\n1,\"a\"b\n"),
            Err(CsvError::TextAfterQuote { line: 2 })
        );
    }

    #[test]
    fn stops_after_first_error() {
        let mut records = Records::new("\"x\"y\nok\n");
        assert!(matches!(records.next(), Some(Err(_))));
        assert_eq!(records.next(), None);
    }

    #[test]
    fn multibyte_text_is_sliced_safely() {
        assert_eq!(read("é,\"ü,ß\"\n").unwrap(), vec![rec(1, &["é", "ü,ß"])]);
    }
}
