//! Restores carried by the log: staging, commit, abort, replacement, restart
//! in the middle, and Raft snapshots taken while a restore is open.

use regatta_proto::mvcc::v1::KeyValue;

use super::{put, range, Fixture};
use crate::storage::{Install, Storage, StorageOptions, TableState};

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..KeyValue::default()
    }
}

fn pairs(f: &Fixture) -> Vec<(String, String)> {
    f.must_range(range(b"\0", b"\0"))
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Begins restore `id` at the fixture's next index.
fn begin(f: &mut Fixture, id: u64) {
    let index = f.next();
    f.table.restore_begin(index, id, None).expect("begin");
}

fn batch(f: &mut Fixture, id: u64, records: &[KeyValue]) -> bool {
    let index = f.next();
    f.table
        .restore_batch(index, id, records, None)
        .expect("batch")
}

fn commit(f: &mut Fixture, id: u64, leader_index: Option<u64>) -> bool {
    let index = f.next();
    f.table
        .restore_commit(index, id, leader_index, None)
        .expect("commit")
}

impl Fixture {
    fn next(&mut self) -> u64 {
        self.index += 1;
        self.index - 1
    }
}

#[test]
fn readers_see_old_content_until_the_commit_then_only_the_new() {
    let mut f = Fixture::new();
    f.must_put(b"old", b"1");
    f.must_put(b"kept-name", b"old");
    begin(&mut f, 7);
    assert!(batch(&mut f, 7, &[kv("a", "1"), kv("kept-name", "new")]));
    assert!(batch(&mut f, 7, &[kv("b", "2")]));
    assert_eq!(pairs(&f), owned(&[("kept-name", "old"), ("old", "1")]));
    assert_eq!(f.table.open_restore(), Some(7));
    assert!(commit(&mut f, 7, Some(42)));
    assert_eq!(
        pairs(&f),
        owned(&[("a", "1"), ("b", "2"), ("kept-name", "new")])
    );
    assert_eq!(
        f.table.state(),
        TableState {
            applied_index: 6,
            revision: 6,
            leader_index: Some(42)
        }
    );
    assert_eq!(f.table.open_restore(), None);
    // Writes go on at the next index, on the new content.
    f.must_put(b"c", b"3");
    assert_eq!(f.must_get(b"c").expect("c").mod_revision, 7);
    assert_eq!(f.must_get(b"a").expect("a").mod_revision, 4);
}

#[test]
fn steps_of_another_restore_change_nothing_but_the_applied_index() {
    let mut f = Fixture::new();
    f.must_put(b"x", b"1");
    begin(&mut f, 1);
    assert!(batch(&mut f, 1, &[kv("first", "1")]));
    // A second worker begins again: the first restore's steps are void.
    begin(&mut f, 2);
    assert!(!batch(&mut f, 1, &[kv("late", "1")]));
    assert!(batch(&mut f, 2, &[kv("second", "2")]));
    assert!(!commit(&mut f, 1, Some(9)));
    assert_eq!(pairs(&f), owned(&[("x", "1")]));
    assert!(commit(&mut f, 2, Some(10)));
    assert_eq!(pairs(&f), owned(&[("second", "2")]));
    assert_eq!(f.table.state().leader_index, Some(10));
}

#[test]
fn abort_throws_the_staging_copy_away() {
    let mut f = Fixture::new();
    f.must_put(b"x", b"1");
    begin(&mut f, 3);
    batch(&mut f, 3, &[kv("y", "2")]);
    let index = f.next();
    assert!(f.table.restore_abort(index, 3, None).expect("abort"));
    assert_eq!(f.table.open_restore(), None);
    assert!(!commit(&mut f, 3, Some(1)));
    assert_eq!(pairs(&f), owned(&[("x", "1")]));
    assert_eq!(f.table.state().applied_index, 5);
}

#[test]
fn a_step_at_or_below_the_applied_index_is_skipped() {
    let mut f = Fixture::new();
    begin(&mut f, 5);
    batch(&mut f, 5, &[kv("a", "1")]);
    // Replayed entries (after a restart, say) change nothing.
    f.table.restore_begin(1, 5, None).expect("replayed begin");
    assert!(!f
        .table
        .restore_batch(2, 5, &[kv("dup", "1")], None)
        .expect("replayed batch"));
    assert!(commit(&mut f, 5, None));
    assert_eq!(pairs(&f), owned(&[("a", "1")]));
    assert_eq!(f.table.state().leader_index, None);
}

#[test]
fn an_open_restore_survives_a_restart_and_completes_after_it() {
    let mut f = Fixture::new();
    f.must_put(b"x", b"1");
    begin(&mut f, 11);
    batch(&mut f, 11, &[kv("a", "1")]);
    f.storage.make_durable().expect("durable");
    let Fixture {
        dir,
        storage,
        table,
        index,
    } = f;
    drop(table);
    drop(storage);
    let storage = Storage::open(dir.path(), &StorageOptions::default()).expect("reopen");
    let table = storage.table(b"t").expect("t");
    let mut f = Fixture {
        dir,
        storage,
        table,
        index,
    };
    assert_eq!(f.table.open_restore(), Some(11));
    assert!(batch(&mut f, 11, &[kv("b", "2")]));
    assert!(commit(&mut f, 11, Some(3)));
    assert_eq!(pairs(&f), owned(&[("a", "1"), ("b", "2")]));
}

#[test]
fn dropping_the_table_drops_its_staging_copy() {
    let mut f = Fixture::new();
    begin(&mut f, 1);
    batch(&mut f, 1, &[kv("a", "1")]);
    f.storage.drop_table(b"t").expect("drop");
    let table = f.storage.create_table(b"t").expect("create again");
    assert_eq!(table.open_restore(), None);
    assert!(table
        .range(&range(b"\0", b"\0"))
        .expect("range")
        .value
        .kvs
        .is_empty());
}

#[test]
fn a_raft_snapshot_taken_mid_restore_carries_the_staging_copy() {
    let mut source = Fixture::new();
    source.must_put(b"old", b"1");
    begin(&mut source, 21);
    batch(&mut source, 21, &[kv("a", "1"), kv("b", "2")]);
    let (state, _, bytes) = source.table.export_raft().expect("export");
    assert_eq!(state.applied_index, 3);

    let mut target = Fixture::new();
    target.must_put(b"stale", b"x");
    target
        .table
        .install_raft(
            &bytes,
            Install {
                applied_index: 3,
                keep_revisions: true,
                raft_state: None,
            },
        )
        .expect("install");
    target.index = 4;
    assert_eq!(pairs(&target), owned(&[("old", "1")]));
    assert_eq!(target.table.open_restore(), Some(21));
    // The rest of the restore applies on the installed copy.
    assert!(batch(&mut target, 21, &[kv("c", "3")]));
    assert!(commit(&mut target, 21, Some(99)));
    assert_eq!(pairs(&target), owned(&[("a", "1"), ("b", "2"), ("c", "3")]));
    assert_eq!(target.table.state().leader_index, Some(99));
}

#[test]
fn a_raft_snapshot_without_a_restore_ends_one_open_on_the_installer() {
    let mut source = Fixture::new();
    source.must_put(b"k", b"v");
    let (_, _, bytes) = source.table.export_raft().expect("export");
    let mut target = Fixture::new();
    begin(&mut target, 4);
    target
        .table
        .install_raft(
            &bytes,
            Install {
                applied_index: 1,
                keep_revisions: true,
                raft_state: None,
            },
        )
        .expect("install");
    assert_eq!(target.table.open_restore(), None);
    assert_eq!(pairs(&target), owned(&[("k", "v")]));
    // A plain snapshot is a plain command stream.
    let mut plain = Vec::new();
    source
        .table
        .write_snapshot(&mut plain, crate::storage::Trailer::LeaderIndex)
        .expect("write");
    assert_eq!(plain, bytes);
}

#[test]
fn a_truncated_envelope_is_refused_and_changes_nothing() {
    let mut source = Fixture::new();
    begin(&mut source, 1);
    batch(&mut source, 1, &[kv("a", "1")]);
    let (_, _, bytes) = source.table.export_raft().expect("export");
    let mut target = Fixture::new();
    target.must_apply(put(b"keep", b"1"));
    for cut in [9, 17, bytes.len() - 3] {
        let result = target.table.install_raft(
            &bytes[..cut],
            Install {
                applied_index: 5,
                keep_revisions: true,
                raft_state: None,
            },
        );
        assert!(result.is_err(), "cut at {cut} was accepted");
    }
    assert_eq!(pairs(&target), owned(&[("keep", "1")]));
    assert_eq!(target.table.open_restore(), None);
}

/// A snapshot install holds the writer lock for as long as it takes; the
/// table's state stays readable meanwhile, as of the last finished writer.
#[test]
fn the_state_is_read_without_waiting_for_a_writer_at_work() {
    let mut f = Fixture::new();
    f.must_put(b"a", b"1");
    let before = f.table.state();
    let writer = f.table.lock_writer();
    let (answer, answered) = std::sync::mpsc::channel();
    let table = f.table.clone();
    std::thread::spawn(move || {
        let _ = answer.send(table.state());
    });
    let seen = answered
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("state() answered while a writer held the lock");
    assert_eq!(seen, before);
    drop(writer);
    f.must_put(b"b", b"2");
    assert_eq!(f.table.state().revision, before.revision + 1);
    assert_eq!(f.table.state().applied_index, before.applied_index + 1);
}

/// Snapshots on disk (Raft's): exported into a file as read, installed from
/// the file as read; the same bytes and the same outcome as in memory, open
/// restore included, and a truncated file is refused.
#[test]
fn a_raft_snapshot_goes_through_a_file_as_it_does_through_memory() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let install = |index| Install {
        applied_index: index,
        keep_revisions: true,
        raft_state: None,
    };
    for mid_restore in [false, true] {
        let mut source = Fixture::new();
        source.must_put(b"old", b"1");
        if mid_restore {
            begin(&mut source, 21);
            batch(&mut source, 21, &[kv("a", "1")]);
        }
        let (_, _, bytes) = source.table.export_raft().expect("export");
        let path = dir.path().join(format!("snapshot-{mid_restore}"));
        let file = std::fs::File::create(&path).expect("create");
        source.table.export_raft_to(file).expect("export to a file");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            bytes,
            "mid_restore {mid_restore}"
        );

        let mut target = Fixture::new();
        target.must_put(b"stale", b"x");
        target
            .table
            .install_raft_file(&path, install(3))
            .expect("install from the file");
        target.index = 4;
        assert_eq!(pairs(&target), owned(&[("old", "1")]));
        assert_eq!(target.table.open_restore(), mid_restore.then_some(21));

        let mut refused = Fixture::new();
        refused.must_apply(put(b"keep", b"1"));
        let cuts: &[usize] = if mid_restore {
            &[9, 17, bytes.len() - 3]
        } else {
            &[bytes.len() - 3]
        };
        for &cut in cuts {
            let truncated = dir.path().join(format!("cut-{mid_restore}-{cut}"));
            std::fs::write(&truncated, &bytes[..cut]).expect("write");
            let result = refused.table.install_raft_file(&truncated, install(5));
            assert!(result.is_err(), "cut at {cut} was accepted");
        }
        assert_eq!(pairs(&refused), owned(&[("keep", "1")]));
    }
}
