//! A bulk-update batch: form body → `batch` field → CSV → validated [`Batch`].
//!
//! The whole batch is validated before anything is applied, so a bad row anywhere means
//! nothing is stored. The header's first column names the id kind (`thirdPartyId` /
//! `mbox3rdPartyId` or `pcId` / `mboxPC`, surrounding whitespace ignored); the other
//! columns are attribute names. Every row must have as many fields as the header and a
//! non-empty id. An empty cell leaves that attribute unchanged.

use super::csv::{CsvError, Records};
use super::form::{parse_form_bytes, FormError};
use super::store::IdKind;

/// The most data rows (header excluded) one batch may hold.
pub const MAX_ROWS: usize = 500_000;

/// A validated batch, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub kind: IdKind,
    pub attributes: Vec<String>,
    pub rows: Vec<Row>,
}

/// One profile's row; `values` lines up with [`Batch::attributes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: String,
    pub values: Vec<String>,
}

impl Row {
    /// The attribute updates of this row: non-empty cells only.
    pub fn updates<'a>(
        &'a self,
        attributes: &'a [String],
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        attributes
            .iter()
            .zip(&self.values)
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

/// Why a batch was refused; the message goes back to the caller in the XML failure body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Form(#[from] FormError),
    #[error("missing batch form field")]
    MissingBatchField,
    #[error("more than one batch form field")]
    RepeatedBatchField,
    #[error("batch is empty")]
    Empty,
    #[error("batch CSV: {0}")]
    Csv(#[from] CsvError),
    #[error("first header column must be thirdPartyId, mbox3rdPartyId, pcId or mboxPC, not {0:?}")]
    UnknownIdColumn(String),
    #[error("header column {column} has an empty attribute name")]
    EmptyAttributeName { column: usize },
    #[error("attribute {0:?} appears twice in the header")]
    RepeatedAttribute(String),
    #[error("batch has a header but no rows")]
    NoRows,
    #[error("batch has more than {MAX_ROWS} rows")]
    TooManyRows,
    #[error("line {line} has {found} columns, the header has {expected}")]
    WrongColumnCount {
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("line {line} has an empty profile id")]
    EmptyId { line: usize },
}

/// Parses a whole `application/x-www-form-urlencoded` body holding a `batch` field.
/// Other form fields are ignored.
pub fn parse_body(body: &[u8]) -> Result<Batch, BatchError> {
    let pairs = parse_form_bytes(body)?;
    let mut batches = pairs.into_iter().filter(|(name, _)| name == "batch");
    let (_, csv) = batches.next().ok_or(BatchError::MissingBatchField)?;
    if batches.next().is_some() {
        return Err(BatchError::RepeatedBatchField);
    }
    parse_csv(&csv)
}

/// Parses and validates the CSV text of a batch.
pub fn parse_csv(csv: &str) -> Result<Batch, BatchError> {
    let mut records = Records::new(csv);
    let header = records.next().ok_or(BatchError::Empty)??;
    let mut columns = header.fields.into_iter().map(|c| c.trim().to_owned());
    let id_column = columns.next().unwrap_or_default();
    let kind = IdKind::from_name(&id_column).ok_or(BatchError::UnknownIdColumn(id_column))?;
    let attributes: Vec<String> = columns.collect();
    for (index, name) in attributes.iter().enumerate() {
        if name.is_empty() {
            return Err(BatchError::EmptyAttributeName { column: index + 2 });
        }
        if attributes[..index].contains(name) {
            return Err(BatchError::RepeatedAttribute(name.clone()));
        }
    }

    let expected = attributes.len() + 1;
    let mut rows = Vec::new();
    for record in records {
        let record = record?;
        if rows.len() == MAX_ROWS {
            return Err(BatchError::TooManyRows);
        }
        if record.fields.len() != expected {
            return Err(BatchError::WrongColumnCount {
                line: record.line,
                expected,
                found: record.fields.len(),
            });
        }
        let mut fields = record.fields.into_iter();
        let id = fields.next().unwrap_or_default();
        if id.is_empty() {
            return Err(BatchError::EmptyId { line: record.line });
        }
        rows.push(Row {
            id,
            values: fields.collect(),
        });
    }
    if rows.is_empty() {
        return Err(BatchError::NoRows);
    }
    Ok(Batch {
        kind,
        attributes,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, values: &[&str]) -> Row {
        Row {
            id: id.to_owned(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn parses_a_url_encoded_third_party_batch() {
        let body = b"other=1&batch=mbox3rdPartyId%2Cparam1%2Cparam2%0Aabc%2Cred%2C%0Adef%2Cblue%2C%C3%A9t%C3%A9";
        let batch = parse_body(body).unwrap();
        assert_eq!(batch.kind, IdKind::ThirdPartyId);
        assert_eq!(batch.attributes, ["param1", "param2"]);
        assert_eq!(
            batch.rows,
            [row("abc", &["red", ""]), row("def", &["blue", "été"])]
        );
        let updates: Vec<_> = batch.rows[0].updates(&batch.attributes).collect();
        assert_eq!(updates, [("param1", "red")]);
    }

    #[test]
    fn id_column_aliases() {
        for (column, kind) in [
            ("thirdPartyId", IdKind::ThirdPartyId),
            ("mbox3rdPartyId", IdKind::ThirdPartyId),
            (" pcId ", IdKind::PcId),
            ("mboxPC", IdKind::PcId),
        ] {
            let batch = parse_csv(&format!("{column},a\n1,x\n")).unwrap();
            assert_eq!(batch.kind, kind, "{column}");
        }
    }

    #[test]
    fn header_with_only_the_id_column_is_allowed() {
        let batch = parse_csv("pcId\np1\n").unwrap();
        assert!(batch.attributes.is_empty());
        assert_eq!(batch.rows, [row("p1", &[])]);
    }

    #[test]
    fn quoted_values_survive() {
        let batch = parse_csv("thirdPartyId,note\n\"id,1\",\"a \"\"b\"\", c\"\n").unwrap();
        assert_eq!(batch.rows, [row("id,1", &["a \"b\", c"])]);
    }

    #[test]
    fn rejections() {
        let cases: &[(&[u8], BatchError)] = &[
            (b"x=1", BatchError::MissingBatchField),
            (b"batch=a&batch=b", BatchError::RepeatedBatchField),
            (b"batch=", BatchError::Empty),
            (b"batch=%0A%0A", BatchError::Empty),
            (
                b"batch=email%2Ca%0A1%2Cx",
                BatchError::UnknownIdColumn("email".into()),
            ),
            (
                b"batch=pcId%2Ca%2C%2Cb%0A1%2Cx%2Cy%2Cz",
                BatchError::EmptyAttributeName { column: 3 },
            ),
            (
                b"batch=pcId%2Ca%2Ca%0A1%2Cx%2Cy",
                BatchError::RepeatedAttribute("a".into()),
            ),
            (b"batch=pcId%2Ca", BatchError::NoRows),
            (
                b"batch=pcId%2Ca%0A1%2Cx%0A2%2Cx%2Cy",
                BatchError::WrongColumnCount {
                    line: 3,
                    expected: 2,
                    found: 3,
                },
            ),
            (
                b"batch=pcId%2Ca%0A1%2Cx%0A%2Cy",
                BatchError::EmptyId { line: 3 },
            ),
            (
                b"batch=pcId%2Ca%0A%221",
                BatchError::Csv(CsvError::UnterminatedQuote { line: 2 }),
            ),
            (
                b"batch=pcId%zz",
                BatchError::Form(FormError::BadPercentEncoding {
                    what: "form body",
                    offset: 10,
                }),
            ),
            (b"batch=pcId\xff", BatchError::Form(FormError::NotUtf8)),
            (
                b"batch=pcId%FF",
                BatchError::Form(FormError::DecodedNotUtf8 { what: "form body" }),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                parse_body(body).as_ref(),
                Err(expected),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn row_limit_is_inclusive() {
        let mut csv = String::from("pcId,a\n");
        for i in 0..MAX_ROWS {
            csv.push_str(&format!("{i},v\n"));
        }
        assert_eq!(parse_csv(&csv).unwrap().rows.len(), MAX_ROWS);
        csv.push_str("one-more,v\n");
        assert_eq!(parse_csv(&csv), Err(BatchError::TooManyRows));
    }
}
