//! How keys and values are laid out inside a table's column family.
//!
//! Every table generation is one column family. Inside it, a leading byte
//! keeps the table's own bookkeeping apart from user data, so one write batch
//! can carry both (the applied index is always stored with the data it
//! covers):
//! - `0x00 <name>`: meta records (applied index, revision, leader index, ...)
//! - `0x01 <user key>`: user data; the value is `create_revision (u64 BE)`,
//!   `mod_revision (u64 BE)`, then the user's value bytes.

use super::error::{Error, Result};

pub(crate) const DATA_PREFIX: u8 = 0x01;
/// First byte past all data keys: the exclusive upper bound of a full scan.
pub(crate) const DATA_END: [u8; 1] = [DATA_PREFIX + 1];

pub(crate) const META_APPLIED_INDEX: &[u8] = b"\x00applied_index";
pub(crate) const META_REVISION: &[u8] = b"\x00revision";
pub(crate) const META_LEADER_INDEX: &[u8] = b"\x00leader_index";
pub(crate) const META_RAFT_STATE: &[u8] = b"\x00raft_state";

const VALUE_HEADER: usize = 16;

/// A user value as stored, with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub create_revision: u64,
    pub mod_revision: u64,
    pub value: Vec<u8>,
}

pub(crate) fn data_key(user_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(user_key.len() + 1);
    key.push(DATA_PREFIX);
    key.extend_from_slice(user_key);
    key
}

pub(crate) fn encode_value(stored: &Stored) -> Vec<u8> {
    let mut out = Vec::with_capacity(VALUE_HEADER + stored.value.len());
    out.extend_from_slice(&stored.create_revision.to_be_bytes());
    out.extend_from_slice(&stored.mod_revision.to_be_bytes());
    out.extend_from_slice(&stored.value);
    out
}

pub(crate) fn decode_value(raw: &[u8]) -> Result<Stored> {
    if raw.len() < VALUE_HEADER {
        return Err(Error::Corrupt(format!(
            "value of {} bytes is shorter than its {VALUE_HEADER}-byte header",
            raw.len()
        )));
    }
    let (create, rest) = raw.split_at(8);
    let (modr, value) = rest.split_at(8);
    Ok(Stored {
        create_revision: u64_be(create),
        mod_revision: u64_be(modr),
        value: value.to_vec(),
    })
}

pub(crate) fn encode_u64(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

pub(crate) fn decode_u64(raw: &[u8], what: &str) -> Result<u64> {
    let bytes: [u8; 8] = raw
        .try_into()
        .map_err(|_| Error::Corrupt(format!("{what}: expected 8 bytes, found {}", raw.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn u64_be(raw: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&raw[..8]);
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_round_trips_with_revisions() {
        let stored = Stored {
            create_revision: 3,
            mod_revision: u64::MAX,
            value: vec![0xff, 0, 1],
        };
        assert_eq!(decode_value(&encode_value(&stored)).unwrap(), stored);
    }

    #[test]
    fn short_value_is_corrupt_not_a_panic() {
        assert!(matches!(decode_value(&[1, 2, 3]), Err(Error::Corrupt(_))));
    }

    #[test]
    fn meta_keys_sort_before_every_data_key() {
        assert!(META_REVISION < data_key(b"").as_slice());
        assert!(data_key(&[0xff; 1024]).as_slice() < DATA_END.as_slice());
    }
}
