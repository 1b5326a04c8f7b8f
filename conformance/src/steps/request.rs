//! Requests written inline: `Range {table: "t", key: "a", limit: -1}`.
//!
//! Fields are the proto field names; values are quoted strings (with the
//! escapes of [`crate::values`]), `N bytes of "x"`, integers, or `true` /
//! `false`; a bare field name means `true`.

use anyhow::{bail, Context, Result};
use regatta_proto::regatta::v1::{DeleteRangeRequest, PutRequest, RangeRequest};

use crate::values;

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Bytes(Vec<u8>),
    Int(i64),
    Bool(bool),
}

/// Splits `a: "x, y", b: 2, c` into name/value pairs.
pub fn parse_fields(text: &str) -> Result<Vec<(String, Field)>> {
    let mut fields = Vec::new();
    for part in split_top_level(text)? {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, value) = match part.split_once(':') {
            Some((name, value)) => (name.trim(), Some(value.trim())),
            None => (part, None),
        };
        let value = match value {
            None | Some("true") => Field::Bool(true),
            Some("false") => Field::Bool(false),
            Some(v) if v.starts_with('"') => {
                let inner = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .with_context(|| format!("unterminated string in {part}"))?;
                Field::Bytes(values::unescape(inner)?)
            }
            Some(v) if v.contains(" bytes of ") => Field::Bytes(values::parse(v)?),
            Some(v) => Field::Int(v.parse().with_context(|| format!("bad value in {part}"))?),
        };
        fields.push((name.to_string(), value));
    }
    Ok(fields)
}

/// Splits on commas outside double quotes.
fn split_top_level(text: &str) -> Result<Vec<String>> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        let current = parts.last_mut().context("no part")?;
        match c {
            _ if escaped => {
                escaped = false;
                current.push(c);
            }
            '\\' => {
                escaped = true;
                current.push(c);
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => parts.push(String::new()),
            _ => current.push(c),
        }
    }
    if quoted {
        bail!("unbalanced quotes in {text}");
    }
    Ok(parts)
}

fn bytes(field: &Field, name: &str) -> Result<Vec<u8>> {
    match field {
        Field::Bytes(b) => Ok(b.clone()),
        other => bail!("{name} takes a string, not {other:?}"),
    }
}

fn int(field: &Field, name: &str) -> Result<i64> {
    match field {
        Field::Int(i) => Ok(*i),
        other => bail!("{name} takes an integer, not {other:?}"),
    }
}

fn flag(field: &Field, name: &str) -> Result<bool> {
    match field {
        Field::Bool(b) => Ok(*b),
        other => bail!("{name} takes true or false, not {other:?}"),
    }
}

pub fn range_request(text: &str) -> Result<RangeRequest> {
    let mut request = RangeRequest::default();
    for (name, value) in parse_fields(text)? {
        match name.as_str() {
            "table" => request.table = bytes(&value, &name)?,
            "key" => request.key = bytes(&value, &name)?,
            "range_end" => request.range_end = bytes(&value, &name)?,
            "limit" => request.limit = int(&value, &name)?,
            "linearizable" => request.linearizable = flag(&value, &name)?,
            "keys_only" => request.keys_only = flag(&value, &name)?,
            "count_only" => request.count_only = flag(&value, &name)?,
            "min_mod_revision" => request.min_mod_revision = int(&value, &name)?,
            "max_mod_revision" => request.max_mod_revision = int(&value, &name)?,
            "min_create_revision" => request.min_create_revision = int(&value, &name)?,
            "max_create_revision" => request.max_create_revision = int(&value, &name)?,
            other => bail!("RangeRequest has no field {other}"),
        }
    }
    Ok(request)
}

pub fn put_request(text: &str) -> Result<PutRequest> {
    let mut request = PutRequest::default();
    for (name, value) in parse_fields(text)? {
        match name.as_str() {
            "table" => request.table = bytes(&value, &name)?,
            "key" => request.key = bytes(&value, &name)?,
            "value" => request.value = bytes(&value, &name)?,
            "prev_kv" => request.prev_kv = flag(&value, &name)?,
            other => bail!("PutRequest has no field {other}"),
        }
    }
    Ok(request)
}

pub fn delete_request(text: &str) -> Result<DeleteRangeRequest> {
    let mut request = DeleteRangeRequest::default();
    for (name, value) in parse_fields(text)? {
        match name.as_str() {
            "table" => request.table = bytes(&value, &name)?,
            "key" => request.key = bytes(&value, &name)?,
            "range_end" => request.range_end = bytes(&value, &name)?,
            "prev_kv" => request.prev_kv = flag(&value, &name)?,
            other => bail!("DeleteRangeRequest has no field {other}"),
        }
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inline_requests() {
        let r = range_request(r#"table: "t", key: "a,\x00", limit: -1, keys_only"#).unwrap();
        assert_eq!(r.table, b"t");
        assert_eq!(r.key, b"a,\0");
        assert_eq!(r.limit, -1);
        assert!(r.keys_only);
        let p = put_request(r#"table: "t", key: "k", value: 3 bytes of "ab""#).unwrap();
        assert_eq!(p.value, b"aba");
        assert!(range_request("nope: 1").is_err());
        assert!(range_request(r#"key: "open"#).is_err());
    }
}
