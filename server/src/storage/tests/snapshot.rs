//! Snapshots out and in: consistent copies, trailers, atomic replacement.

use regatta_proto::mvcc::v1::KeyValue;

use super::{keys, put, range, Fixture};
use crate::storage::stream::{data_record, CommandStreamReader, CommandStreamWriter, Record};
use crate::storage::{Error, Install, TableState, Trailer};

fn records(bytes: &[u8]) -> Vec<Record> {
    CommandStreamReader::new(bytes)
        .collect::<Result<_, _>>()
        .expect("valid stream")
}

#[test]
fn snapshot_is_one_put_per_key_ascending_then_the_trailer() {
    let mut f = Fixture::new();
    f.must_put(b"b", b"2");
    f.must_put(b"a", b"1");
    let (state, bytes) = f
        .table
        .write_snapshot(Vec::new(), Trailer::AppliedIndex)
        .expect("snapshot");
    assert_eq!(
        state,
        TableState {
            applied_index: 2,
            revision: 2,
            leader_index: None
        }
    );
    assert_eq!(
        records(&bytes),
        vec![
            Record::Data(KeyValue {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                create_revision: 2,
                mod_revision: 2
            }),
            Record::Data(KeyValue {
                key: b"b".to_vec(),
                value: b"2".to_vec(),
                create_revision: 1,
                mod_revision: 1
            }),
            Record::Trailer {
                leader_index: Some(2),
                revision: Some(2)
            },
        ]
    );
}

#[test]
fn snapshot_sees_one_point_in_time() {
    let mut f = Fixture::new();
    for i in 0..100u32 {
        f.must_put(format!("k{i:03}").as_bytes(), b"before");
    }
    // A writer that applies more entries while the snapshot is being written.
    struct Interleaving<'a> {
        fixture: &'a mut Fixture,
        out: Vec<u8>,
    }
    impl std::io::Write for Interleaving<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let index = self.fixture.index;
            self.fixture
                .must_put(format!("k{:03}", index % 100).as_bytes(), b"after");
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let table = f.table.clone();
    let mut sink = Interleaving {
        fixture: &mut f,
        out: Vec::new(),
    };
    let (state, _) = table
        .write_snapshot(&mut sink, Trailer::None)
        .expect("snapshot");
    let bytes = std::mem::take(&mut sink.out);
    assert_eq!(state.applied_index, 100);
    let values: Vec<Vec<u8>> = records(&bytes)
        .into_iter()
        .map(|record| match record {
            Record::Data(kv) => kv.value,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(values.len(), 100);
    assert!(
        values.iter().all(|v| v == b"before"),
        "writes after the snapshot began are not in it"
    );
}

#[test]
fn raft_snapshot_round_trip_keeps_revisions_state_and_raft_state() {
    let mut source = Fixture::new();
    source.must_put(b"a", b"1");
    source.must_put(b"a", b"2");
    source.must_apply(super::delete(b"zz", None, false));
    let (state, bytes) = source
        .table
        .write_snapshot(Vec::new(), Trailer::LeaderIndex)
        .expect("snapshot");

    let target = Fixture::new();
    let installed = target
        .table
        .install_snapshot(
            bytes.as_slice(),
            Install {
                applied_index: state.applied_index,
                keep_revisions: true,
                raft_state: Some(b"membership".to_vec()),
            },
        )
        .expect("install");
    assert_eq!(
        installed.state,
        TableState {
            applied_index: 3,
            revision: 3,
            leader_index: None
        }
    );
    assert_eq!(target.table.state(), installed.state);
    assert_eq!(
        target.table.raft_state().expect("raft state"),
        Some(b"membership".to_vec())
    );
    let kv = target.must_get(b"a").expect("a");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.value.as_slice()),
        (1, 2, &b"2"[..])
    );
}

#[test]
fn follower_snapshot_trailer_carries_the_replicated_leader_index() {
    let mut f = Fixture::new();
    let mut command = put(b"k", b"v");
    command.leader_index = Some(1);
    f.must_apply(command);
    let (_, bytes) = f
        .table
        .write_snapshot(Vec::new(), Trailer::LeaderIndex)
        .expect("snapshot");
    assert_eq!(
        records(&bytes).last(),
        Some(&Record::Trailer {
            leader_index: Some(1),
            revision: Some(1)
        })
    );
}

#[test]
fn malformed_stream_changes_nothing() {
    let mut f = Fixture::new();
    f.must_put(b"keep", b"me");
    let before = f.table.state();
    let mut writer = CommandStreamWriter::new(Vec::new());
    for i in 0..2000u32 {
        writer
            .write(&data_record(
                b"t",
                KeyValue {
                    key: format!("new{i}").into_bytes(),
                    value: vec![1; 100],
                    ..KeyValue::default()
                },
            ))
            .expect("write");
    }
    let bytes = writer.finish().expect("finish");
    let truncated = &bytes[..bytes.len() - 3];
    let err = f
        .table
        .install_snapshot(
            truncated,
            Install {
                applied_index: 50,
                ..Install::default()
            },
        )
        .expect_err("truncated stream must be refused");
    assert!(matches!(err, Error::MalformedStream(_)), "{err}");
    assert_eq!(f.table.state(), before);
    assert_eq!(
        keys(&f.must_range(range(b"\0", b"\0"))),
        vec![b"keep".to_vec()]
    );
    // And the table still takes writes at the old position.
    f.must_put(b"after", b"ok");
    assert_eq!(f.table.state().applied_index, 2);
}

#[test]
fn every_handle_reads_the_new_content_after_install() {
    let mut f = Fixture::new();
    f.must_put(b"old", b"1");
    let before = f.table.clone();
    let (_, bytes) = {
        let mut other = Fixture::new();
        other.must_put(b"new", b"2");
        other
            .table
            .write_snapshot(Vec::new(), Trailer::None)
            .expect("snapshot")
    };
    f.table
        .install_snapshot(
            bytes.as_slice(),
            Install {
                applied_index: 9,
                ..Install::default()
            },
        )
        .expect("install");
    // Every handle, old or new, now reads the new content.
    assert_eq!(
        keys(&before.range(&range(b"\0", b"\0")).expect("range").value),
        vec![b"new".to_vec()]
    );
    assert_eq!(f.table.state().applied_index, 9);
    assert!(
        f.table
            .apply(5, &put(b"late", b"x"))
            .expect("apply")
            .result
            .responses
            .is_empty(),
        "index 5 <= 9 is not applied again"
    );
}

#[test]
fn readers_see_the_old_content_until_the_switch() {
    let mut f = Fixture::new();
    f.must_put(b"old", b"1");
    let (_, bytes) = {
        let mut other = Fixture::new();
        for i in 0..1000u32 {
            other.must_put(format!("new{i:04}").as_bytes(), &[9; 100]);
        }
        other
            .table
            .write_snapshot(Vec::new(), Trailer::None)
            .expect("snapshot")
    };
    // A stream that, while the install is consuming it, reads the table.
    struct Spy<'a> {
        bytes: &'a [u8],
        table: crate::storage::Table,
        seen: Vec<Vec<Vec<u8>>>,
    }
    impl std::io::Read for Spy<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let read = self
                .table
                .range(&range(b"\0", b"\0"))
                .expect("range during install");
            self.seen.push(keys(&read.value));
            let n = buf.len().min(self.bytes.len()).min(4096);
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }
    let mut spy = Spy {
        bytes: &bytes,
        table: f.table.clone(),
        seen: Vec::new(),
    };
    f.table
        .install_snapshot(
            &mut spy,
            Install {
                applied_index: 7,
                ..Install::default()
            },
        )
        .expect("install");
    assert!(
        spy.seen.len() > 2,
        "the install read the stream in several pieces"
    );
    assert!(
        spy.seen.iter().all(|seen| seen == &vec![b"old".to_vec()]),
        "a reader saw partial content"
    );
    assert_eq!(f.must_range(range(b"\0", b"\0")).kvs.len(), 1000);
}
