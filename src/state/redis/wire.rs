//! Reading the Lua scripts' replies: flat arrays of strings and integers, decoded field
//! by field (each script's own reply type is in [`super::scripts`]).

use ::redis::Value;

use crate::auth::token::Digest;
use crate::state::{Mode, PreviousToken, StoreError, TenantState, TokenRecord};

fn bad(what: &str) -> StoreError {
    StoreError::Unavailable(format!("unexpected reply from Redis: {what}"))
}

/// A script's array reply, read front to back: each typed reply in [`super::scripts`]
/// takes its fields in the order the script's header documents.
#[derive(Debug)]
pub struct Fields {
    items: Vec<Value>,
    next: usize,
}

impl Fields {
    pub fn of(value: Value) -> Result<Fields, StoreError> {
        match value {
            Value::Array(items) | Value::Set(items) => Ok(Fields { items, next: 0 }),
            Value::ServerError(e) => Err(StoreError::Unavailable(format!("{e:?}"))),
            other => Err(bad(&format!("{other:?}"))),
        }
    }

    fn take(&mut self) -> Option<&Value> {
        let at = self.next;
        self.next += 1;
        self.items.get(at)
    }

    pub fn text(&mut self) -> Result<String, StoreError> {
        text(self.take())
    }

    pub fn int(&mut self) -> Result<u64, StoreError> {
        int(self.take())
    }

    pub fn pairs(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        pairs(self.take())
    }

    /// A tenant's stored fields ([`TENANT_FIELDS`] of them), as of `revision`.
    pub fn tenant(&mut self, revision: u64) -> Result<TenantState, StoreError> {
        let fields = self.tenant_fields()?;
        tenant(&fields, revision)
    }

    /// A tenant's stored fields, undecoded: `mode, sha256, created_ms, expires_ms,
    /// prev_sha256, prev_created_ms, prev_expires_ms, prev_until_ms`.
    pub fn tenant_fields(&mut self) -> Result<[String; TENANT_FIELDS], StoreError> {
        let mut fields: [String; TENANT_FIELDS] = Default::default();
        for field in &mut fields {
            *field = self.text()?;
        }
        Ok(fields)
    }

    /// Whether every field has been read.
    pub fn is_done(&self) -> bool {
        self.next >= self.items.len()
    }

    /// The end of a reply of fixed length: fields left over mean the script and its
    /// decoder disagree.
    pub fn done(self) -> Result<(), StoreError> {
        if self.is_done() {
            Ok(())
        } else {
            Err(bad(&format!(
                "{} fields where {} were expected",
                self.items.len(),
                self.next
            )))
        }
    }

    /// An outcome tag this reply does not have.
    pub fn unknown(&self, tag: &str) -> StoreError {
        bad(&format!("unknown outcome {tag:?}"))
    }
}

pub fn text(value: Option<&Value>) -> Result<String, StoreError> {
    match value {
        Some(Value::BulkString(b)) => String::from_utf8(b.clone()).map_err(|_| bad("not UTF-8")),
        Some(Value::SimpleString(s)) => Ok(s.clone()),
        Some(Value::Int(i)) => Ok(i.to_string()),
        Some(Value::Okay) => Ok("OK".into()),
        other => Err(bad(&format!("expected text, got {other:?}"))),
    }
}

/// A non-negative integer, sent as an integer or as digits (scores may come as `1e+12`
/// style doubles, hence the float fallback).
pub fn int(value: Option<&Value>) -> Result<u64, StoreError> {
    match value {
        Some(Value::Int(i)) if *i >= 0 => Ok(*i as u64),
        Some(Value::Double(d)) if *d >= 0.0 => Ok(*d as u64),
        Some(_) => {
            let s = text(value)?;
            s.parse::<u64>()
                .or_else(|_| s.parse::<f64>().map(|f| f as u64))
                .map_err(|_| bad(&format!("expected a number, got {s:?}")))
        }
        None => Err(bad("missing element")),
    }
}

/// `[name, number, name, number, …]` (ZRANGE WITHSCORES, HGETALL) as pairs.
pub fn pairs(value: Option<&Value>) -> Result<Vec<(String, u64)>, StoreError> {
    let items = match value {
        Some(Value::Array(items)) => items.as_slice(),
        Some(Value::Map(map)) => {
            return map
                .iter()
                .map(|(k, v)| Ok((text(Some(k))?, int(Some(v))?)))
                .collect()
        }
        Some(Value::Nil) | None => &[],
        other => return Err(bad(&format!("expected pairs, got {other:?}"))),
    };
    items
        .chunks(2)
        .map(|pair| Ok((text(pair.first())?, int(pair.get(1))?)))
        .collect()
}

/// How many fields a tenant takes in a script's reply.
pub const TENANT_FIELDS: usize = 8;

/// A tenant from its stored fields (see [`Fields::tenant_fields`]); an empty `sha256`
/// means no token, an empty `prev_sha256` no previous token.
pub fn tenant(fields: &[String; TENANT_FIELDS], revision: u64) -> Result<TenantState, StoreError> {
    let [mode, sha256, created_ms, expires_ms, prev_sha256, prev_created_ms, prev_expires_ms, prev_until_ms] =
        fields;
    let mode = Mode::parse(mode).ok_or_else(|| bad(&format!("mode {mode:?}")))?;
    let ms = |s: &str| s.parse::<u64>().map_err(|_| bad("token time"));
    let record = |sha256: &str, created_ms: &str, expires_ms: &str| {
        if sha256.is_empty() {
            return Ok(None);
        }
        let digest = Digest::from_hex(sha256).ok_or_else(|| bad("token digest"))?;
        Ok(Some(TokenRecord {
            digest,
            created_at_ms: ms(created_ms)?,
            expires_at_ms: ms(expires_ms)?,
        }))
    };
    let token = record(sha256, created_ms, expires_ms)?;
    let previous = match record(prev_sha256, prev_created_ms, prev_expires_ms)? {
        None => None,
        Some(token) => Some(PreviousToken {
            token,
            valid_until_ms: ms(prev_until_ms)?,
        }),
    };
    Ok(TenantState {
        mode,
        token,
        previous,
        revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(items: [&str; TENANT_FIELDS]) -> [String; TENANT_FIELDS] {
        items.map(String::from)
    }

    #[test]
    fn tenants_decode_with_and_without_tokens() {
        let ab = "ab".repeat(32);
        let t = tenant(&fields(["on", &ab, "10", "20", "", "", "", ""]), 7).unwrap();
        assert_eq!(t.mode, Mode::On);
        assert_eq!(t.token.unwrap().expires_at_ms, 20);
        assert_eq!((t.previous, t.revision), (None, 7));
        let t = tenant(&fields(["off", "", "", "", "", "", "", ""]), 3).unwrap();
        assert_eq!(t.token, None);
        let cd = "cd".repeat(32);
        let t = tenant(
            &fields(["report", &ab, "10", "20", &cd, "1", "30", "15"]),
            4,
        )
        .unwrap();
        assert_eq!(t.mode, Mode::Report);
        let previous = t.previous.unwrap();
        assert_eq!(
            (previous.token.expires_at_ms, previous.valid_until_ms),
            (30, 15)
        );
        let bad_digest = fields(["on", "zz", "1", "2", "", "", "", ""]);
        assert!(tenant(&bad_digest, 1).is_err(), "bad digest refused");
        let bad_mode = fields(["1", "", "", "", "", "", "", ""]);
        assert!(tenant(&bad_mode, 1).is_err(), "unknown mode refused");
        let no_deadline = fields(["on", &ab, "10", "20", &cd, "1", "30", ""]);
        assert!(
            tenant(&no_deadline, 1).is_err(),
            "a previous token needs its deadline"
        );
    }

    #[test]
    fn scores_as_text_or_doubles_are_numbers() {
        let v = Value::Array(vec![
            Value::BulkString(b"a".to_vec()),
            Value::BulkString(b"1717000000123".to_vec()),
            Value::BulkString(b"b".to_vec()),
            Value::Double(5.0),
        ]);
        assert_eq!(
            pairs(Some(&v)).unwrap(),
            vec![("a".into(), 1_717_000_000_123), ("b".into(), 5)]
        );
    }
}
