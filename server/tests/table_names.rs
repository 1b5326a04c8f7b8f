//! Table names clients send, hostile ones included, on every path that
//! creates or restores a table, against the real binary.
//!
//! Bug record: the server once kept its table catalogue in a user table
//! named `"\0catalogue"`. A `Restore` into that name with one record
//! answered OK on a node started with the README's flags (maintenance on,
//! no token); after a restart the node exited at once ("creating table
//! base: unavailable: ... table not found") and never started again. A
//! guard on every path refused such names; now the catalogue lives in the
//! server's own table space, `"\0catalogue"` is an ordinary table name, and
//! these tests replay the attack and the other hostile names as an outside
//! client would, restart included.

use std::io::Write;
use std::time::Duration;

use prost::Message;
use regatta_proto::maintenance::v1::maintenance_client::MaintenanceClient;
use regatta_proto::maintenance::v1::restore_message::Data;
use regatta_proto::maintenance::v1::{RestoreInfo, RestoreMessage};
use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::{Command, KeyValue};
use regatta_proto::regatta::v1::{PutRequest, RangeRequest};
use regatta_proto::replication::v1::metadata_client::MetadataClient;
use regatta_proto::replication::v1::{MetadataRequest, SnapshotChunk};
use tonic::transport::Channel;
use tonic::Code;

mod support;
use support::node::{range, serving, NodeConfig};

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
    let channel = maintenance_channel(config).await;
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

async fn maintenance_channel(config: &NodeConfig) -> Channel {
    Channel::from_shared(format!("http://{}", config.maintenance))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the maintenance listener")
}

/// The tables the node lists (`Metadata.Get` on the maintenance listener).
async fn listed(config: &NodeConfig) -> Vec<String> {
    let mut names: Vec<String> = MetadataClient::new(maintenance_channel(config).await)
        .get(MetadataRequest::default())
        .await
        .expect("Metadata.Get")
        .into_inner()
        .tables
        .into_iter()
        .map(|table| table.name)
        .collect();
    names.sort();
    names
}

/// Old reserved names and path-like names are ordinary tables.
const ORDINARY: [&[u8]; 5] = [b"\0catalogue", b"\0", b"\0catalogue\0", b"..", b"/"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_into_the_old_catalogue_name_fills_a_user_table_and_the_node_starts_again() {
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

    // Refused before anything is written: the maintenance API's message
    // for a missing table, Regatta 0.5's for a long name, and one for bytes
    // that are no text (Restore's table is a `bytes` field).
    for (name, message) in [
        (&b""[..], "table must be set"),
        (&[b'n'; 1025][..], "name length exceeded max allowed value"),
        (b"\xff\xfe", "name must be valid UTF-8"),
    ] {
        let status = restore(&config, name)
            .await
            .expect_err("a restore into that name must be refused");
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, message),
            "restore into {name:?}"
        );
    }
    // Accepted: each is a table of its own, holding what was restored, and
    // the catalogue gains exactly these names (the record would have named
    // a table "evil" had it reached the catalogue).
    for name in ORDINARY {
        restore(&config, name)
            .await
            .unwrap_or_else(|err| panic!("restore into {name:?}: {err}"));
    }
    let mut expected: Vec<String> = ORDINARY
        .iter()
        .map(|name| String::from_utf8(name.to_vec()).expect("text"))
        .chain(["regatta".to_string()])
        .collect();
    expected.sort();
    assert_eq!(listed(&config).await, expected);
    for name in ORDINARY {
        let found = kv
            .range(RangeRequest {
                table: name.to_vec(),
                key: b"table/evil".to_vec(),
                ..RangeRequest::default()
            })
            .await
            .unwrap_or_else(|err| panic!("read {name:?}: {err}"))
            .into_inner();
        assert_eq!(found.kvs.len(), 1, "{name:?}");
    }
    let evil = kv
        .range(RangeRequest {
            table: b"evil".to_vec(),
            key: b"k".to_vec(),
            ..RangeRequest::default()
        })
        .await
        .expect_err("no table evil");
    assert_eq!(evil.code(), Code::NotFound);
    let kept = kv.range(range(b"kept")).await.expect("read after");
    assert_eq!(kept.into_inner().kvs[0].value, b"before");
    node.assert_running("after the restores");

    // Restart (SIGKILL, as a crash would): the node must start and serve
    // every table as before.
    drop(kv);
    drop(node);
    let mut node = config.start(dir.path());
    let mut kv = serving(&config, &mut node).await;
    let kept = kv.range(range(b"kept")).await.expect("read after restart");
    assert_eq!(kept.into_inner().kvs[0].value, b"before");
    assert_eq!(listed(&config).await, expected);
    tokio::time::sleep(Duration::from_secs(1)).await;
    node.assert_running("after the restart");
}

#[test]
fn a_name_too_long_in_tables_names_stops_startup_before_anything_is_written() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let long = "n".repeat(1025);
    let names = format!("regatta,{long}");
    let output = config
        .command(dir.path(), &["--tables.names", &names])
        .output()
        .expect("run regatta leader");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the node started: {stderr}");
    assert!(
        stderr.contains("name length exceeded max allowed value")
            && stderr.contains("--tables.names"),
        "stderr does not say which flag and why: {stderr}"
    );
    assert!(
        !dir.path().join("sm").exists() && !dir.path().join("raft").exists(),
        "the refused start wrote data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_catalogue_name_in_tables_names_is_an_ordinary_table() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    // A config file is the one way to hand the server a name with a zero
    // byte (argv and the environment cannot carry one).
    let file = dir.path().join("regatta.yaml");
    std::fs::write(&file, "tables.names: \"regatta,\\0catalogue\"\n").expect("write config");
    let mut node = config.start_with(
        dir.path(),
        &["--config", file.to_str().expect("utf-8 path")],
    );
    let mut kv = serving(&config, &mut node).await;
    kv.put(PutRequest {
        table: b"\0catalogue".to_vec(),
        key: b"table/evil".to_vec(),
        value: 7u64.to_be_bytes().to_vec(),
        ..PutRequest::default()
    })
    .await
    .expect("put into the table named like the old catalogue");
    assert_eq!(
        listed(&config).await,
        vec!["\0catalogue".to_string(), "regatta".to_string()]
    );
    node.assert_running("with a table named like the old catalogue");
}
