//! No request may make a node unable to start: table names the server keeps
//! for itself (they start with a zero byte, like the catalogue's
//! `"\0catalogue"`) are refused on every path that would create a table,
//! before anything is written.
//!
//! Bug record: a `Restore` into `"\0catalogue"` with one record answered OK
//! on a node started with the README's flags (maintenance on, no token);
//! after a restart the node exited at once ("creating table base:
//! unavailable: ... table not found") and never started again. These tests
//! replay that as an outside client would, on the real binary, restart
//! included.

use std::io::Write;
use std::time::Duration;

use prost::Message;
use regatta_proto::maintenance::v1::maintenance_client::MaintenanceClient;
use regatta_proto::maintenance::v1::restore_message::Data;
use regatta_proto::maintenance::v1::{RestoreInfo, RestoreMessage};
use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::{Command, KeyValue};
use regatta_proto::regatta::v1::PutRequest;
use regatta_proto::replication::v1::SnapshotChunk;
use tonic::transport::Channel;
use tonic::Code;

mod support;
use support::node::{range, serving, NodeConfig};

const RESERVED_MESSAGE: &str = "table name is reserved for the server's own metadata";

/// A command stream of one PUT, as `regatta backup` and Regatta (Go) write
/// it: Snappy framing over `u64 LE length + Command` records.
fn one_record_stream() -> Vec<u8> {
    let command = Command {
        table: b"\0catalogue".to_vec(),
        r#type: CommandType::Put as i32,
        kv: Some(KeyValue {
            key: b"table/evil".to_vec(),
            value: 7u64.to_be_bytes().to_vec(),
            ..KeyValue::default()
        }),
        ..Command::default()
    };
    let record = command.encode_to_vec();
    let mut encoder = snap::write::FrameEncoder::new(Vec::new());
    encoder
        .write_all(&(record.len() as u64).to_le_bytes())
        .and_then(|()| encoder.write_all(&record))
        .expect("encode");
    encoder.into_inner().expect("flush")
}

async fn restore(config: &NodeConfig, table: &[u8]) -> Result<(), tonic::Status> {
    let channel = Channel::from_shared(format!("http://{}", config.maintenance))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the maintenance listener");
    let data = one_record_stream();
    let messages = vec![
        RestoreMessage {
            data: Some(Data::Info(RestoreInfo {
                table: table.to_vec(),
            })),
        },
        RestoreMessage {
            data: Some(Data::Chunk(SnapshotChunk {
                len: data.len() as u64,
                data,
                index: 0,
            })),
        },
    ];
    MaintenanceClient::new(channel)
        .restore(futures::stream::iter(messages))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_into_a_reserved_name_is_refused_and_the_node_starts_again() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let mut node = config.start(dir.path());
    let mut kv = serving(&config, &mut node).await;
    kv.put(PutRequest {
        table: b"regatta".to_vec(),
        key: b"kept".to_vec(),
        value: b"before".to_vec(),
        ..PutRequest::default()
    })
    .await
    .expect("put before the restores");

    for name in [&b"\0catalogue"[..], b"\0", b"\0catalogue\0", b"\0other"] {
        let status = restore(&config, name)
            .await
            .expect_err("a restore into a reserved name must be refused");
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, RESERVED_MESSAGE),
            "restore into {name:?}"
        );
    }
    // The node goes on serving, and a restore into a user table still works.
    restore(&config, b"restored")
        .await
        .expect("a restore into a user table");
    let kept = kv.range(range(b"kept")).await.expect("read after");
    assert_eq!(kept.into_inner().kvs[0].value, b"before");
    node.assert_running("after the refused restores");

    // Restart (SIGKILL, as a crash would): the node must start and serve.
    drop(kv);
    drop(node);
    let mut node = config.start(dir.path());
    let mut kv = serving(&config, &mut node).await;
    let kept = kv.range(range(b"kept")).await.expect("read after restart");
    assert_eq!(kept.into_inner().kvs[0].value, b"before");
    tokio::time::sleep(Duration::from_secs(1)).await;
    node.assert_running("after the restart");
}

#[test]
fn a_reserved_name_in_tables_names_stops_startup_before_anything_is_written() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    // A config file is the one way to hand the server a name with a zero
    // byte (argv and the environment cannot carry one).
    let file = dir.path().join("regatta.yaml");
    std::fs::write(&file, "tables.names: \"regatta,\\0catalogue\"\n").expect("write config");
    let output = config
        .command(
            dir.path(),
            &["--config", file.to_str().expect("utf-8 path")],
        )
        .output()
        .expect("run regatta leader");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the node started: {stderr}");
    assert!(
        stderr.contains(RESERVED_MESSAGE) && stderr.contains("--tables.names"),
        "stderr does not say which flag and why: {stderr}"
    );
    assert!(
        !dir.path().join("sm").exists() && !dir.path().join("raft").exists(),
        "the refused start wrote data"
    );
}
