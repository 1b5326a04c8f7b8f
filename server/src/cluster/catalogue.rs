//! The table catalogue, kept by the metadata Raft group in a storage table of
//! its own: `table/<name>` -> shard id (u64 BE), and `next_shard_id`, so shard
//! ids grow from 10001 and are never reused.

use std::collections::BTreeMap;

use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::{Command, KeyValue};

use super::raft::types::{GroupId, MetaCommand, FIRST_TABLE_SHARD};
use crate::storage::{self, prefix_end, RangeQuery, Table};

/// Name of the storage table holding the catalogue, in the server's own
/// table space (`storage::Space::Server`): no user name reaches it.
pub const CATALOGUE_TABLE: &[u8] = b"catalogue";

/// Where versions before the split of table spaces kept the catalogue: a
/// user table name with a leading zero byte, which only a guard on every
/// path kept clients from (a `Restore` into it once left a node that never
/// started again). Moved to the server's space on start.
pub const LEGACY_CATALOGUE_TABLE: &[u8] = b"\0catalogue";

const TABLE_PREFIX: &[u8] = b"table/";
const NEXT_SHARD_KEY: &[u8] = b"next_shard_id";

fn table_key(name: &[u8]) -> Vec<u8> {
    [TABLE_PREFIX, name].concat()
}

fn read_u64(table: &Table, key: &[u8]) -> storage::Result<Option<u64>> {
    let found = table.range(&RangeQuery {
        key: key.to_vec(),
        ..RangeQuery::default()
    })?;
    Ok(found
        .value
        .kvs
        .first()
        .and_then(|kv| kv.value.as_slice().try_into().ok())
        .map(u64::from_be_bytes))
}

/// Every table of the catalogue with its shard id.
pub fn tables(table: &Table) -> storage::Result<BTreeMap<Vec<u8>, GroupId>> {
    let found = table.range(&RangeQuery {
        key: TABLE_PREFIX.to_vec(),
        range_end: prefix_end(TABLE_PREFIX),
        ..RangeQuery::default()
    })?;
    Ok(found
        .value
        .kvs
        .into_iter()
        .filter_map(|kv| {
            let id = u64::from_be_bytes(kv.value.as_slice().try_into().ok()?);
            Some((kv.key[TABLE_PREFIX.len()..].to_vec(), id))
        })
        .collect())
}

/// Applies a catalogue change as Raft entry `index`; returns the table's
/// shard id if the table exists afterwards (`CreateTable`, `DeleteTable`),
/// the shard id of the table this entry created or deleted
/// (`CreateNewTable`, `DeleteExistingTable`).
pub fn apply(
    table: &Table,
    index: u64,
    command: &MetaCommand,
    raft_state: &[u8],
) -> storage::Result<Option<GroupId>> {
    let (name, create, exclusive) = match command {
        MetaCommand::CreateTable { name } => (name, true, false),
        MetaCommand::DeleteTable { name } => (name, false, false),
        MetaCommand::CreateNewTable { name } => (name, true, true),
        MetaCommand::DeleteExistingTable { name } => (name, false, true),
    };
    let existing = read_u64(table, &table_key(name))?;
    let command = match (create, existing) {
        (true, Some(shard)) => {
            table.apply_entry(index, None, Some(raft_state))?;
            return Ok((!exclusive).then_some(shard));
        }
        (false, None) => {
            table.apply_entry(index, None, Some(raft_state))?;
            return Ok(None);
        }
        (true, None) => {
            let shard = read_u64(table, NEXT_SHARD_KEY)?.unwrap_or(FIRST_TABLE_SHARD);
            let put = |key: Vec<u8>, value: u64| KeyValue {
                key,
                value: value.to_be_bytes().to_vec(),
                ..KeyValue::default()
            };
            let command = Command {
                r#type: CommandType::PutBatch as i32,
                batch: vec![
                    put(table_key(name), shard),
                    put(NEXT_SHARD_KEY.to_vec(), shard + 1),
                ],
                ..Command::default()
            };
            table.apply_entry(index, Some(&command), Some(raft_state))?;
            return Ok(Some(shard));
        }
        (false, Some(_)) => Command {
            r#type: CommandType::Delete as i32,
            kv: Some(KeyValue {
                key: table_key(name),
                ..KeyValue::default()
            }),
            ..Command::default()
        },
    };
    table.apply_entry(index, Some(&command), Some(raft_state))?;
    Ok(existing.filter(|_| exclusive))
}
