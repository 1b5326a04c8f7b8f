//! The table catalogue, kept by the metadata Raft group in a storage table of
//! its own: `table/<name>` -> shard id (u64 BE), and `next_shard_id`, so shard
//! ids grow from 10001 and are never reused. It also records the members an
//! operator added (`member/<id>` -> Raft address) and removed
//! (`removed/<id>`), ids as u64 BE, so that every node steers every group
//! towards the same voters and no id is ever taken twice. An added member's
//! record also holds the first shard id assigned after it was added: the
//! tables it may initialize (older ones exist on the other members already).

use std::collections::{BTreeMap, BTreeSet};

use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::{Command, KeyValue};

use super::raft::types::{GroupId, MetaCommand, NodeId, FIRST_TABLE_SHARD};
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

const MEMBER_PREFIX: &[u8] = b"member/";
const REMOVED_PREFIX: &[u8] = b"removed/";

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

/// Members an operator added and removed since the cluster began.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberRecords {
    /// Added members (an id removed later stays here too).
    pub added: BTreeMap<NodeId, AddedMember>,
    pub removed: BTreeSet<NodeId>,
}

/// A member an operator added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedMember {
    /// Its Raft address.
    pub address: String,
    /// The first shard id assigned after it was added.
    pub first_shard: GroupId,
}

/// The member records of the catalogue.
pub fn members(table: &Table) -> storage::Result<MemberRecords> {
    let id_of = |key: &[u8], prefix: &[u8]| -> Option<NodeId> {
        Some(u64::from_be_bytes(key[prefix.len()..].try_into().ok()?))
    };
    let added = under(table, MEMBER_PREFIX)?
        .into_iter()
        .filter_map(|kv| {
            let (first_shard, address) = kv.value.split_first_chunk::<8>()?;
            let member = AddedMember {
                address: String::from_utf8(address.to_vec()).ok()?,
                first_shard: u64::from_be_bytes(*first_shard),
            };
            Some((id_of(&kv.key, MEMBER_PREFIX)?, member))
        })
        .collect();
    let removed = under(table, REMOVED_PREFIX)?
        .into_iter()
        .filter_map(|kv| id_of(&kv.key, REMOVED_PREFIX))
        .collect();
    Ok(MemberRecords { added, removed })
}

fn member_key(prefix: &[u8], id: NodeId) -> Vec<u8> {
    [prefix, &id.to_be_bytes()].concat()
}

fn under(table: &Table, prefix: &[u8]) -> storage::Result<Vec<KeyValue>> {
    let found = table.range(&RangeQuery {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        ..RangeQuery::default()
    })?;
    Ok(found.value.kvs)
}

/// Applies a member record as entry `index`: `Some(id)` once recorded,
/// `None` for an `AddMember` of a removed id (refused, nothing written).
fn apply_member(
    table: &Table,
    index: u64,
    command: &MetaCommand,
    raft_state: &[u8],
) -> storage::Result<Option<NodeId>> {
    let (id, record) = match command {
        MetaCommand::AddMember { id, address } => {
            let removed = !under(table, &member_key(REMOVED_PREFIX, *id))?.is_empty();
            if removed {
                table.apply_entry(index, None, Some(raft_state))?;
                return Ok(None);
            }
            let first_shard = read_u64(table, NEXT_SHARD_KEY)?.unwrap_or(FIRST_TABLE_SHARD);
            let value = [&first_shard.to_be_bytes(), address.as_bytes()].concat();
            (*id, (member_key(MEMBER_PREFIX, *id), value))
        }
        MetaCommand::RemoveMember { id } => (*id, (member_key(REMOVED_PREFIX, *id), Vec::new())),
        _ => return Ok(None),
    };
    let command = Command {
        r#type: CommandType::Put as i32,
        kv: Some(KeyValue {
            key: record.0,
            value: record.1,
            ..KeyValue::default()
        }),
        ..Command::default()
    };
    table.apply_entry(index, Some(&command), Some(raft_state))?;
    Ok(Some(id))
}

fn ids_under(table: &Table, prefix: &[u8]) -> storage::Result<BTreeMap<Vec<u8>, u64>> {
    Ok(under(table, prefix)?
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
        MetaCommand::AddMember { .. } | MetaCommand::RemoveMember { .. } => {
            return apply_member(table, index, command, raft_state);
        }
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
