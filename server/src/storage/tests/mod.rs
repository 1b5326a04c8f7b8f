//! Tests of the storage layer against real RocksDB in temporary directories.

mod fixtures;
mod iterate;
mod kv_rules;
mod model;
mod restart;
mod restore;
mod snapshot;
mod txn_rules;
mod wire_generations;

use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::{Command, KeyValue, Txn};
use tempfile::TempDir;

use super::{ApplyResult, RangeQuery, RangeResult, Storage, StorageOptions, Table};

/// A fresh database with one table, `t`.
pub(super) struct Fixture {
    pub dir: TempDir,
    pub storage: Storage,
    pub table: Table,
    /// Next Raft index to apply at.
    pub index: u64,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let storage = Storage::open(dir.path(), &StorageOptions::default()).expect("open storage");
        let table = storage.create_table(b"t").expect("create table");
        Fixture {
            dir,
            storage,
            table,
            index: 1,
        }
    }

    /// Applies `command` at the next index; panics with context on error.
    pub fn must_apply(&mut self, command: Command) -> ApplyResult {
        let index = self.index;
        self.index += 1;
        self.table
            .apply(index, &command)
            .unwrap_or_else(|err| panic!("apply at {index}: {err}"))
    }

    pub fn must_put(&mut self, key: &[u8], value: &[u8]) -> ApplyResult {
        self.must_apply(put(key, value))
    }

    pub fn must_range(&self, query: RangeQuery) -> RangeResult {
        self.table.range(&query).expect("range").value
    }

    pub fn must_get(&self, key: &[u8]) -> Option<KeyValue> {
        self.must_range(RangeQuery {
            key: key.to_vec(),
            ..RangeQuery::default()
        })
        .kvs
        .pop()
    }
}

pub(super) fn put(key: &[u8], value: &[u8]) -> Command {
    Command {
        table: b"t".to_vec(),
        r#type: CommandType::Put as i32,
        kv: Some(KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            ..KeyValue::default()
        }),
        ..Command::default()
    }
}

pub(super) fn delete(key: &[u8], range_end: Option<&[u8]>, prev_kvs: bool) -> Command {
    Command {
        table: b"t".to_vec(),
        r#type: CommandType::Delete as i32,
        kv: Some(KeyValue {
            key: key.to_vec(),
            ..KeyValue::default()
        }),
        range_end: range_end.map(<[u8]>::to_vec),
        prev_kvs,
        ..Command::default()
    }
}

pub(super) fn txn(txn: Txn) -> Command {
    Command {
        table: b"t".to_vec(),
        r#type: CommandType::Txn as i32,
        txn: Some(txn),
        ..Command::default()
    }
}

pub(super) fn range(key: &[u8], range_end: &[u8]) -> RangeQuery {
    RangeQuery {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..RangeQuery::default()
    }
}

pub(super) fn keys(result: &RangeResult) -> Vec<Vec<u8>> {
    result.kvs.iter().map(|kv| kv.key.clone()).collect()
}
