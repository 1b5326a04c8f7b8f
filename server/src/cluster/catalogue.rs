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
/// On a follower cluster: `origin/<name>` -> the leader cluster's shard id
/// of the table this one copies, so a table deleted and created again there
/// is not taken for the one copied before.
const ORIGIN_PREFIX: &[u8] = b"origin/";

fn table_key(name: &[u8]) -> Vec<u8> {
    [TABLE_PREFIX, name].concat()
}

fn origin_key(name: &[u8]) -> Vec<u8> {
    [ORIGIN_PREFIX, name].concat()
}

fn put_u64(key: Vec<u8>, value: u64) -> KeyValue {
    KeyValue {
        key,
        value: value.to_be_bytes().to_vec(),
        ..KeyValue::default()
    }
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
    ids_under(table, TABLE_PREFIX)
}

/// On a follower cluster: every table whose origin is known, with the
/// leader cluster's shard id it copies.
pub fn origins(table: &Table) -> storage::Result<BTreeMap<Vec<u8>, u64>> {
    ids_under(table, ORIGIN_PREFIX)
}

fn ids_under(table: &Table, prefix: &[u8]) -> storage::Result<BTreeMap<Vec<u8>, u64>> {
    let found = table.range(&RangeQuery {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        ..RangeQuery::default()
    })?;
    Ok(found
        .value
        .kvs
        .into_iter()
        .filter_map(|kv| {
            let id = u64::from_be_bytes(kv.value.as_slice().try_into().ok()?);
            Some((kv.key[prefix.len()..].to_vec(), id))
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
    let (name, create, exclusive, origin) = match command {
        MetaCommand::CreateTable { name } => (name, true, false, None),
        MetaCommand::DeleteTable { name } => (name, false, false, None),
        MetaCommand::CreateNewTable { name } => (name, true, true, None),
        MetaCommand::DeleteExistingTable { name } => (name, false, true, None),
        MetaCommand::CreateCopy { name, origin } => (name, true, false, Some(*origin)),
        MetaCommand::RecordOrigin { name, origin } => {
            let existing = read_u64(table, &table_key(name))?;
            let record = existing.map(|_| Command {
                r#type: CommandType::Put as i32,
                kv: Some(put_u64(origin_key(name), *origin)),
                ..Command::default()
            });
            table.apply_entry(index, record.as_ref(), Some(raft_state))?;
            return Ok(existing);
        }
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
            let mut batch = vec![
                put_u64(table_key(name), shard),
                put_u64(NEXT_SHARD_KEY.to_vec(), shard + 1),
            ];
            batch.extend(origin.map(|origin| put_u64(origin_key(name), origin)));
            let command = Command {
                r#type: CommandType::PutBatch as i32,
                batch,
                ..Command::default()
            };
            table.apply_entry(index, Some(&command), Some(raft_state))?;
            return Ok(Some(shard));
        }
        (false, Some(_)) => Command {
            r#type: CommandType::DeleteBatch as i32,
            batch: [table_key(name), origin_key(name)]
                .into_iter()
                .map(|key| KeyValue {
                    key,
                    ..KeyValue::default()
                })
                .collect(),
            ..Command::default()
        },
    };
    table.apply_entry(index, Some(&command), Some(raft_state))?;
    Ok(existing.filter(|_| exclusive))
}
