//! Files written by Regatta (Go) read exactly as documented in
//! `features/fixtures/regatta-go/README.md`.

use std::path::PathBuf;

use regatta_proto::mvcc::v1::KeyValue;

use super::{keys, range, Fixture};
use crate::storage::stream::{CommandStreamReader, Record};
use crate::storage::{Install, Trailer};

pub(crate) fn fixture_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../features/fixtures/regatta-go")
        .join(relative)
}

fn read_fixture(relative: &str) -> Vec<u8> {
    let path = fixture_path(relative);
    std::fs::read(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

fn records(bytes: &[u8]) -> Vec<Record> {
    CommandStreamReader::new(bytes)
        .collect::<Result<_, _>>()
        .expect("fixture is a valid command stream")
}

fn data(key: String, value: String) -> Record {
    Record::Data(KeyValue {
        key: key.into_bytes(),
        value: value.into_bytes(),
        ..KeyValue::default()
    })
}

/// Records ordered by key, as a snapshot writes them.
fn by_key(mut records: Vec<Record>) -> Vec<Record> {
    records.sort_by(|a, b| match (a, b) {
        (Record::Data(a), Record::Data(b)) => a.key.cmp(&b.key),
        _ => std::cmp::Ordering::Equal,
    });
    records
}

fn backup_records() -> Vec<Record> {
    by_key(
        (0..1000)
            .map(|i| data(format!("1631262254_{i}"), format!("value_{i}")))
            .collect(),
    )
}

#[test]
fn go_backup_holds_the_documented_records_in_key_order() {
    assert_eq!(
        records(&read_fixture("backups/complete/regatta-test.bak")),
        backup_records()
    );
}

#[test]
fn go_backup_records_name_their_table() {
    let bytes = read_fixture("backups/complete/regatta-test.bak");
    // Decode the raw commands once more to check what the reader drops.
    let mut decoder = snap::read::FrameDecoder::new(bytes.as_slice());
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut decoder, &mut raw).expect("snappy framing");
    let len = u64::from_le_bytes(raw[..8].try_into().expect("8 bytes")) as usize;
    let first: regatta_proto::mvcc::v1::Command =
        prost::Message::decode(&raw[8..8 + len]).expect("command");
    assert_eq!(first.table, b"regatta-test");
    assert_eq!(
        first.r#type,
        regatta_proto::mvcc::v1::command::CommandType::Put as i32
    );
}

#[test]
fn empty_go_backup_is_an_empty_stream() {
    assert!(records(&read_fixture(
        "backups/complete/applicable-device-secure-policy.bak"
    ))
    .is_empty());
    assert!(records(&read_fixture("backups/empty/regatta-test.bak")).is_empty());
}

#[test]
fn go_replication_snapshot_holds_the_documented_records_without_trailer() {
    let expected = by_key(
        (0..1000)
            .map(|i| data(format!("foo{i}"), "bar".repeat(22)))
            .collect(),
    );
    let got = by_key(records(&read_fixture("replication-snapshot.bin")));
    assert_eq!(got, expected);
}

#[test]
fn installed_go_backup_serves_every_record_and_our_copy_reads_back_identical() {
    let mut f = Fixture::new();
    f.must_put(b"old", b"gone after install");
    let bytes = read_fixture("backups/complete/regatta-test.bak");
    let installed = f
        .table
        .install_snapshot(
            bytes.as_slice(),
            Install {
                applied_index: 10,
                ..Install::default()
            },
        )
        .expect("install");
    assert_eq!(installed.keys, 1000);
    assert_eq!(
        installed.state.leader_index, None,
        "backups carry no trailer"
    );
    let all = f.must_range(range(b"\0", b"\0"));
    assert_eq!(all.kvs.len(), 1000);
    assert!(!keys(&all).contains(&b"old".to_vec()));
    let kv = f.must_get(b"1631262254_7").expect("key 7");
    assert_eq!(kv.value, b"value_7");
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (10, 10),
        "restored keys get the install index"
    );

    // Our own copy of the same data holds the same records (plus revisions).
    let (_, ours) = f
        .table
        .write_snapshot(Vec::new(), Trailer::None)
        .expect("snapshot");
    let without_revisions: Vec<Record> = records(&ours)
        .into_iter()
        .map(|record| match record {
            Record::Data(kv) => Record::Data(KeyValue {
                create_revision: 0,
                mod_revision: 0,
                ..kv
            }),
            other => other,
        })
        .collect();
    assert_eq!(without_revisions, backup_records());
}

#[test]
fn installed_go_replication_snapshot_serves_every_record() {
    let f = Fixture::new();
    let bytes = read_fixture("replication-snapshot.bin");
    let installed = f
        .table
        .install_snapshot(
            bytes.as_slice(),
            Install {
                applied_index: 3,
                ..Install::default()
            },
        )
        .expect("install");
    assert_eq!(installed.keys, 1000);
    assert_eq!(
        f.must_get(b"foo999").expect("foo999").value,
        "bar".repeat(22).as_bytes()
    );
}
