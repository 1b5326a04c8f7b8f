//! Keys and values as scenarios write them.
//!
//! `\x00`, `\xff`, `\n`, `\t`, `\\` and `\"` are escapes; `1024 bytes of "a"`
//! is a value of that many bytes, repeating the quoted pattern; `(empty)` is
//! the empty string. Everything else is taken as UTF-8 text.

use anyhow::{bail, Context, Result};

/// Parses a key or value written in a scenario.
pub fn parse(text: &str) -> Result<Vec<u8>> {
    let text = text.trim();
    if text == "(empty)" {
        return Ok(Vec::new());
    }
    if let Some((count, rest)) = text.split_once(" bytes of ") {
        if let Ok(count) = count.trim().parse::<usize>() {
            let pattern = unescape(rest.trim().trim_matches('"'))?;
            if pattern.is_empty() {
                bail!("empty pattern in {text:?}");
            }
            return Ok(pattern.iter().copied().cycle().take(count).collect());
        }
    }
    unescape(text)
}

/// Resolves backslash escapes.
pub fn unescape(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let escape = *bytes.get(i + 1).context("a trailing backslash")?;
        match escape {
            b'x' => {
                let hex = text.get(i + 2..i + 4).context("\\x needs two hex digits")?;
                out.push(u8::from_str_radix(hex, 16).with_context(|| format!("bad \\x{hex}"))?);
                i += 4;
                continue;
            }
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'\\' => out.push(b'\\'),
            b'"' => out.push(b'"'),
            other => bail!("unknown escape \\{}", other as char),
        }
        i += 2;
    }
    Ok(out)
}

/// Shows bytes the way scenarios write them (escapes for non-printables),
/// shortening long runs so failure messages stay readable.
pub fn show(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)".into();
    }
    if bytes.len() > 64 && bytes.iter().all(|b| *b == bytes[0]) {
        return format!("{} bytes of \"{}\"", bytes.len(), show(&bytes[..1]));
    }
    let mut out = String::new();
    for &byte in bytes {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(byte as char),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out
}

/// The key right after every key with `prefix` (the last byte incremented,
/// carrying over `0xff`), as clients compute prefix range ends.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_sizes() {
        assert_eq!(parse("a\\x00b").unwrap(), b"a\0b");
        assert_eq!(parse("\\xff").unwrap(), vec![0xff]);
        assert_eq!(parse("(empty)").unwrap(), b"");
        assert_eq!(parse("4 bytes of \"ab\"").unwrap(), b"abab");
        assert_eq!(parse("3 bytes of \"\\xff\"").unwrap(), vec![0xff; 3]);
        assert!(parse("\\q").is_err());
        assert!(parse("\\x4").is_err());
    }

    #[test]
    fn show_round_trips() {
        for text in ["a\\x00b", "\\xff\\x01", "plain", "quote\\\"d"] {
            assert_eq!(show(&parse(text).unwrap()), text);
        }
        assert_eq!(show(&[b'a'; 100]), "100 bytes of \"a\"");
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
