//! Close and reopen: data, applied index, revisions and tables survive.

use super::{put, range, Fixture};
use crate::storage::{Install, Storage, StorageOptions, TableState};

fn reopen(f: Fixture) -> (tempfile::TempDir, Storage) {
    let Fixture {
        dir,
        storage,
        table,
        ..
    } = f;
    drop(table);
    drop(storage);
    let storage = Storage::open(dir.path(), &StorageOptions::default()).expect("reopen");
    (dir, storage)
}

#[test]
fn reopen_keeps_data_applied_index_and_revisions() {
    let mut f = Fixture::new();
    f.must_put(b"a", b"1");
    f.must_put(b"a", b"2");
    let mut with_leader = put(b"b", b"3");
    with_leader.leader_index = Some(1);
    f.must_apply(with_leader);
    f.storage.create_table(b"second").expect("second table");
    f.storage.make_durable().expect("durable");
    let (_dir, storage) = reopen(f);
    assert_eq!(
        storage.table_names(),
        vec![b"second".to_vec(), b"t".to_vec()]
    );
    let table = storage.table(b"t").expect("t");
    assert_eq!(
        table.state(),
        TableState {
            applied_index: 3,
            revision: 3,
            leader_index: Some(1)
        }
    );
    let kvs = table.range(&range(b"\0", b"\0")).expect("range").value.kvs;
    assert_eq!(kvs.len(), 2);
    assert_eq!(
        (
            kvs[0].create_revision,
            kvs[0].mod_revision,
            kvs[0].value.as_slice()
        ),
        (1, 2, &b"2"[..])
    );
    // Revisions continue upward.
    assert_eq!(
        table
            .apply(4, &put(b"c", b"4"))
            .expect("apply")
            .result
            .revision,
        4
    );
}

#[test]
fn reopen_after_install_and_drop_keeps_the_catalogue_consistent() {
    let mut f = Fixture::new();
    f.must_put(b"a", b"1");
    let (_, bytes) = f
        .table
        .write_snapshot(Vec::new(), crate::storage::Trailer::None)
        .expect("snapshot");
    let other = f.storage.create_table(b"other").expect("other");
    other
        .install_snapshot(
            bytes.as_slice(),
            Install {
                applied_index: 5,
                ..Install::default()
            },
        )
        .expect("install");
    f.storage.create_table(b"doomed").expect("doomed");
    f.storage.drop_table(b"doomed").expect("drop");
    drop(other);
    let (_dir, storage) = reopen(f);
    assert_eq!(
        storage.table_names(),
        vec![b"other".to_vec(), b"t".to_vec()]
    );
    let other = storage.table(b"other").expect("other");
    assert_eq!(other.state().applied_index, 5);
    assert_eq!(
        other.range(&range(b"a", b"")).expect("range").value.kvs[0].value,
        b"1"
    );
}

#[test]
fn reopen_removes_generations_a_crash_left_half_installed() {
    let f = Fixture::new();
    // A generation created but never switched to, as a crash mid-install leaves it.
    let orphan = f.table.shared.create_generation().expect("generation");
    let (dir, storage) = reopen(f);
    drop(storage);
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).expect("list");
    assert!(
        !names.contains(&orphan),
        "{orphan} still present in {names:?}"
    );
}

/// How creating a table's column family grows with the number of tables
/// (RocksDB rewrites and re-reads its OPTIONS file, naming every column
/// family, on each creation). A measurement, not a check: run with
/// `--ignored --nocapture`.
#[test]
#[ignore]
fn measure_table_creation_cost() {
    let f = Fixture::new();
    let mut started = std::time::Instant::now();
    for i in 1..=1_000 {
        f.storage
            .create_table(format!("t{i}").as_bytes())
            .expect("create");
        if i % 100 == 0 {
            println!("tables {i}: last 100 created in {:?}", started.elapsed());
            started = std::time::Instant::now();
        }
    }
}
