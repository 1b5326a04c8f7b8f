//! Key ranges as the API spells them: `key` plus an optional `range_end`.

/// A set of keys, as selected by `(key, range_end)` (`features/kv_range.feature`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// `range_end` empty: exactly this key.
    Single(Vec<u8>),
    /// `[start, end)` in unsigned byte order; `end = None` means no upper bound
    /// (`range_end = "\0"`). `end <= start` selects nothing.
    Span {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    /// Interprets a request's `key` and `range_end`.
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key.to_vec()),
            [0] => KeyRange::Span {
                start: key.to_vec(),
                end: None,
            },
            end => KeyRange::Span {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    /// Whether the range can hold no key at all.
    pub fn is_empty(&self) -> bool {
        match self {
            KeyRange::Single(_) => false,
            KeyRange::Span { start, end } => {
                end.as_deref().is_some_and(|end| end <= start.as_slice())
            }
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(single) => single == key,
            KeyRange::Span { start, end } => {
                key >= start.as_slice() && end.as_deref().is_none_or(|end| key < end)
            }
        }
    }
}

/// The `range_end` that selects every key starting with `prefix` (what
/// clients compute for prefix queries); `"\0"` when no such bound exists.
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
    fn empty_range_end_is_one_key() {
        assert_eq!(KeyRange::new(b"a", b""), KeyRange::Single(b"a".to_vec()));
    }

    #[test]
    fn zero_byte_range_end_is_unbounded() {
        let range = KeyRange::new(b"b", b"\0");
        assert!(range.contains(b"b"));
        assert!(range.contains(&[0xff; 1024]));
        assert!(!range.contains(b"a"));
    }

    #[test]
    fn range_end_not_above_key_is_empty() {
        assert!(KeyRange::new(b"b", b"a").is_empty());
        assert!(KeyRange::new(b"b", b"b").is_empty());
        assert!(!KeyRange::new(b"a", b"b").is_empty());
    }

    #[test]
    fn prefix_end_carries_over_ff() {
        assert_eq!(prefix_end(b"aa"), b"ab");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
