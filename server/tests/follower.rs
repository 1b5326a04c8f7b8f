//! A follower node copying a real leader process over the replication API:
//! the catalogue, existing data, and new writes pushed in follow mode.

use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regatta::cluster::{Node, RaftSettings};
use regatta::replication::metrics::ReplicationMetrics;
use regatta::replication::{Follower, FollowerSettings};
use regatta::storage::{RangeQuery, StorageOptions};
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::PutRequest;
use tonic::transport::Channel;

mod support;
use support::free_address;

struct Leader {
    child: Child,
    api: String,
    replication: String,
    _dir: tempfile::TempDir,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_leader(tables: &str) -> Leader {
    start_leader_with(tables, &[])
}

fn start_leader_with(tables: &str, extra: &[&str]) -> Leader {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (api, replication) = (free_address(), free_address());
    let child = Process::new(env!("CARGO_BIN_EXE_regatta"))
        .args(["leader", "--log-level", "warn", "--raft.rtt", "10ms"])
        .args(["--tables.names", tables])
        .args(["--api.address", &api, "--replication.address", &replication])
        .args(["--maintenance.address", "127.0.0.1:0"])
        .args([
            "--raft.address",
            &free_address(),
            "--rest.address",
            &free_address(),
        ])
        .arg("--raft.node-host-dir")
        .arg(dir.path().join("raft"))
        .arg("--raft.state-machine-dir")
        .arg(dir.path().join("sm"))
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn regatta leader");
    Leader {
        child,
        api,
        replication,
        _dir: dir,
    }
}

async fn must_put(api: &str, table: &str, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let channel = Channel::from_shared(format!("http://{api}"))
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            KvClient::new(channel)
                .put(PutRequest {
                    table: table.as_bytes().to_vec(),
                    key: key.as_bytes().to_vec(),
                    value: value.as_bytes().to_vec(),
                    prev_kv: false,
                })
                .await
                .map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(_) => return,
            Err(err) => {
                assert!(Instant::now() < deadline, "put on the leader: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits until the follower node's copy of `table` holds exactly `pairs`.
async fn wait_for(node: &Node, table: &str, pairs: &[(&str, &str)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let wanted: Vec<(Vec<u8>, Vec<u8>)> = pairs
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    loop {
        let got: Option<Vec<(Vec<u8>, Vec<u8>)>> = node.table(table.as_bytes()).ok().map(|data| {
            let query = RangeQuery {
                key: vec![0],
                range_end: vec![0],
                ..RangeQuery::default()
            };
            data.range(&query)
                .map(|r| {
                    r.value
                        .kvs
                        .into_iter()
                        .map(|kv| (kv.key, kv.value))
                        .collect()
                })
                .unwrap_or_default()
        });
        if got.as_ref() == Some(&wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "follower's {table} is {got:?}, expected {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_copies_tables_existing_data_and_new_writes() {
    let leader = start_leader("alpha,beta");
    must_put(&leader.api, "alpha", "a", "1").await;
    must_put(&leader.api, "alpha", "b", "2").await;
    must_put(&leader.api, "beta", "x", "9").await;

    let dir = tempfile::TempDir::new().expect("temp dir");
    let (node, metrics, follower) = start_follower(&leader.replication, &dir).await;

    // The catalogue and the data already there.
    wait_for(&node, "alpha", &[("a", "1"), ("b", "2")]).await;
    wait_for(&node, "beta", &[("x", "9")]).await;

    // New writes arrive while the stream stays open (follow mode).
    let before = Instant::now();
    must_put(&leader.api, "alpha", "c", "3").await;
    wait_for(&node, "alpha", &[("a", "1"), ("b", "2"), ("c", "3")]).await;
    assert!(
        before.elapsed() < Duration::from_secs(5),
        "a pushed write took {:?}",
        before.elapsed()
    );

    let data = node.table(b"alpha").expect("alpha");
    assert!(data.state().leader_index.unwrap_or(0) >= 3);
    let rendered = metrics.render();
    assert!(
        rendered.contains("regatta_replication_leased{table=\"alpha\"} 1"),
        "{rendered}"
    );
    assert!(rendered.contains("regatta_replication_index{role=\"follower\",table=\"alpha\"}"));

    follower.abort();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_deleted_and_created_again_on_the_leader_is_copied_from_scratch() {
    use regatta_proto::regatta::v1::tables_client::TablesClient;
    use regatta_proto::regatta::v1::{CreateTableRequest, DeleteTableRequest};
    let leader = start_leader("re");
    must_put(&leader.api, "re", "old", "1").await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (node, _metrics, follower) = start_follower(&leader.replication, &dir).await;
    wait_for(&node, "re", &[("old", "1")]).await;

    // Both between two of the follower's reconciles: the name never
    // disappears from the leader's list, only its shard id changes.
    let channel = Channel::from_shared(format!("http://{}", leader.api))
        .expect("uri")
        .connect_lazy();
    let mut tables = TablesClient::new(channel);
    tables
        .delete(DeleteTableRequest { name: "re".into() })
        .await
        .expect("delete on the leader");
    tables
        .create(CreateTableRequest {
            name: "re".into(),
            config: None,
        })
        .await
        .expect("create again on the leader");
    must_put(&leader.api, "re", "new", "2").await;
    wait_for(&node, "re", &[("new", "2")]).await;
    // A restarted follower keeps knowing which table it copies.
    assert_eq!(node.table_origins().expect("origins").len(), 1);

    follower.abort();
    node.shutdown().await;
}

/// Starts an in-process follower node of the leader cluster whose
/// replication API is at `replication`.
async fn start_follower(
    replication: &str,
    dir: &tempfile::TempDir,
) -> (
    Arc<Node>,
    Arc<ReplicationMetrics>,
    tokio::task::JoinHandle<()>,
) {
    let mut settings = RaftSettings::single_node(dir.path().to_path_buf(), free_address());
    settings.rtt = Duration::from_millis(10);
    let node = Node::start(settings, StorageOptions::default())
        .await
        .expect("follower node starts");
    let channel = Channel::from_shared(format!("http://{replication}"))
        .expect("uri")
        .connect_lazy();
    let metrics = Arc::new(ReplicationMetrics::default());
    let follower = Follower::new(
        node.clone(),
        channel,
        FollowerSettings {
            poll_interval: Duration::from_millis(100),
            reconcile_interval: Duration::from_millis(200),
            ..FollowerSettings::default()
        },
        metrics.clone(),
    )
    .start();
    (node, metrics, follower)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_compacted_leader_recovers_by_snapshot() {
    let leader = start_leader_with(
        "t",
        &[
            "--raft.snapshot-entries",
            "20",
            "--raft.compaction-overhead",
            "2",
        ],
    );
    // About 2.5 MiB: the copy travels in several chunks and restore batches.
    let value = "v".repeat(8 * 1024);
    let mut pairs = Vec::new();
    for i in 0..300 {
        let key = format!("key-{i:04}");
        must_put(&leader.api, "t", &key, &value).await;
        pairs.push(key);
    }
    must_put(&leader.api, "t", "key-0000", "rewritten").await;
    let expected: Vec<(&str, &str)> = pairs
        .iter()
        .map(|key| {
            let value = if key == "key-0000" {
                "rewritten"
            } else {
                value.as_str()
            };
            (key.as_str(), value)
        })
        .collect();

    let dir = tempfile::TempDir::new().expect("temp dir");
    let (node, metrics, follower) = start_follower(&leader.replication, &dir).await;
    wait_for(&node, "t", &expected).await;
    let rendered = metrics.render();
    assert!(
        rendered.contains("regatta_replication_snapshot_recoveries_total{table=\"t\"} 1"),
        "{rendered}"
    );
    let stored = node
        .table(b"t")
        .expect("t")
        .state()
        .leader_index
        .expect("a leader index after the recovery");
    assert!(stored >= 301, "stored leader index {stored}");

    // Replication goes on from the snapshot's index.
    must_put(&leader.api, "t", "after", "1").await;
    let mut with_after = expected.clone();
    with_after.insert(0, ("after", "1"));
    wait_for(&node, "t", &with_after).await;
    assert!(
        node.table(b"t").expect("t").state().leader_index > Some(stored),
        "the stored leader index moved on"
    );

    follower.abort();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regatta_follower_serves_the_copy_read_only() {
    use regatta_proto::mvcc::v1::request_op::{self, Request as Op};
    use regatta_proto::mvcc::v1::RequestOp;
    use regatta_proto::regatta::v1::{DeleteRangeRequest, RangeRequest, TxnRequest};

    let leader = start_leader("t");
    must_put(&leader.api, "t", "k", "v").await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (api, rest) = (free_address(), free_address());
    let _follower = Leader {
        child: Process::new(env!("CARGO_BIN_EXE_regatta"))
            .args(["follower", "--log-level", "warn", "--raft.rtt", "10ms"])
            .args(["--replication.leader-address", &leader.replication])
            .args(["--replication.reconcile-interval", "200ms"])
            // Regatta 2022's answers to writes (follower_writes.rs has 0.5's).
            .args(["--replication.forward-writes=false"])
            .args(["--api.address", &api, "--rest.address", &rest])
            .args(["--maintenance.address", "127.0.0.1:0"])
            .args(["--raft.address", &free_address()])
            .arg("--raft.node-host-dir")
            .arg(dir.path().join("raft"))
            .arg("--raft.state-machine-dir")
            .arg(dir.path().join("sm"))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn regatta follower"),
        api: api.clone(),
        replication: String::new(),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut kv = loop {
        let attempt = async {
            let channel = Channel::from_shared(format!("http://{api}"))
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let mut kv = KvClient::new(channel);
            let read = kv
                .range(RangeRequest {
                    table: b"t".to_vec(),
                    key: b"k".to_vec(),
                    linearizable: true,
                    ..RangeRequest::default()
                })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            match read.kvs.first() {
                Some(kv_pair) if kv_pair.value == b"v" => Ok(kv),
                other => Err(format!("not copied yet: {other:?}")),
            }
        };
        match attempt.await {
            Ok(kv) => break kv,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "follower never served the copy: {err}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // Writes are refused before any other check, with Regatta 2022's messages.
    let put = kv
        .put(PutRequest::default())
        .await
        .expect_err("put on a follower");
    assert_eq!(put.code(), tonic::Code::Unimplemented);
    assert_eq!(put.message(), "method Put not implemented for follower");
    let delete = kv
        .delete_range(DeleteRangeRequest::default())
        .await
        .expect_err("delete on a follower");
    assert_eq!(
        delete.message(),
        "method DeleteRange not implemented for follower"
    );
    let op = |request| RequestOp {
        request: Some(request),
    };
    let write_txn = kv
        .txn(TxnRequest {
            table: b"t".to_vec(),
            success: vec![op(Op::RequestPut(request_op::Put {
                key: b"x".to_vec(),
                ..Default::default()
            }))],
            ..TxnRequest::default()
        })
        .await
        .expect_err("write txn on a follower");
    assert_eq!(write_txn.code(), tonic::Code::Unimplemented);
    assert_eq!(
        write_txn.message(),
        "writable Txn not implemented for follower"
    );
    let read_txn = kv
        .txn(TxnRequest {
            table: b"t".to_vec(),
            success: vec![op(Op::RequestRange(request_op::Range {
                key: b"k".to_vec(),
                ..Default::default()
            }))],
            ..TxnRequest::default()
        })
        .await
        .expect("read-only txn on a follower")
        .into_inner();
    assert!(read_txn.succeeded);

    // Regatta 0.5's Tables API: List on the follower (its own shard ids),
    // Create and Delete refused with 0.5's messages; tables created and
    // deleted on the leader cluster follow within the reconcile interval.
    {
        use regatta_proto::regatta::v1::cluster_client::ClusterClient;
        use regatta_proto::regatta::v1::tables_client::TablesClient;
        use regatta_proto::regatta::v1::{
            CreateTableRequest, DeleteTableRequest, ListTablesRequest, StatusRequest,
        };
        let connect = |address: &str| {
            Channel::from_shared(format!("http://{address}"))
                .expect("uri")
                .connect_lazy()
        };
        let mut on_follower = TablesClient::new(connect(&api));
        let mut on_leader = TablesClient::new(connect(&leader.api));
        let create = on_follower
            .create(CreateTableRequest {
                name: "x".into(),
                config: None,
            })
            .await
            .expect_err("create on a follower");
        assert_eq!(
            (create.code(), create.message()),
            (
                tonic::Code::Unimplemented,
                "method Create not implemented for follower"
            )
        );
        let delete = on_follower
            .delete(DeleteTableRequest { name: "t".into() })
            .await
            .expect_err("delete on a follower");
        assert_eq!(
            (delete.code(), delete.message()),
            (
                tonic::Code::Unimplemented,
                "method Delete not implemented for follower"
            )
        );
        // Waits until the follower lists exactly `want`.
        async fn wait_listed(follower: &mut TablesClient<Channel>, want: &[&str]) {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let listed: Vec<String> = follower
                    .list(ListTablesRequest {})
                    .await
                    .expect("list on a follower")
                    .into_inner()
                    .tables
                    .into_iter()
                    .map(|table| table.name)
                    .collect();
                if listed == want {
                    return;
                }
                assert!(Instant::now() < deadline, "follower lists {listed:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        on_leader
            .create(CreateTableRequest {
                name: "later".into(),
                config: None,
            })
            .await
            .expect("create on the leader");
        wait_listed(&mut on_follower, &["later", "t"]).await;
        on_leader
            .delete(DeleteTableRequest {
                name: "later".into(),
            })
            .await
            .expect("delete on the leader");
        wait_listed(&mut on_follower, &["t"]).await;
        // The Cluster API answers on a follower cluster too, for itself.
        let status = ClusterClient::new(connect(&api))
            .status(StatusRequest { config: false })
            .await
            .expect("Status on a follower")
            .into_inner();
        assert!(status.tables.contains_key("t"), "{status:?}");
    }

    // The copy keeps up, and the lag shows in the metrics.
    must_put(&leader.api, "t", "k2", "v2").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = kv
            .range(RangeRequest {
                table: b"t".to_vec(),
                key: b"k2".to_vec(),
                ..RangeRequest::default()
            })
            .await
            .expect("range")
            .into_inner();
        if !read.kvs.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "k2 never reached the follower");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = get_metrics(&rest).await;
    assert!(
        metrics.contains("regatta_replication_lag{table=\"t\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("role=\"leader\""),
        "a follower is no leader: {metrics}"
    );
    assert_eq!(
        metrics.matches("# TYPE regatta_replication_index ").count(),
        1,
        "one metric family per name: {metrics}"
    );
}

/// `GET /metrics` over a plain TCP socket (HTTP/1.0, no client crate).
async fn get_metrics(rest: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(rest)
        .await
        .expect("connect REST");
    socket
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut body = String::new();
    socket.read_to_string(&mut body).await.expect("response");
    body
}

/// A leader cluster reduced to its replication API: one table, and a log
/// whose entries the test writes, as Regatta 0.5 (Go) sends them.
mod scripted_leader {
    use regatta_proto::mvcc::v1::Command;
    use regatta_proto::replication::v1::log_server::{Log, LogServer};
    use regatta_proto::replication::v1::metadata_server::{Metadata, MetadataServer};
    use regatta_proto::replication::v1::replicate_response::Response as Reply;
    use regatta_proto::replication::v1::{
        table, MetadataRequest, MetadataResponse, ReplicateCommand, ReplicateCommandsResponse,
        ReplicateErrResponse, ReplicateError, ReplicateRequest, ReplicateResponse, Table,
    };
    use tonic::{Request, Response, Status};

    #[derive(Clone)]
    pub struct Script {
        pub table: String,
        /// Entries from leader index 1 on.
        pub log: Vec<Command>,
    }

    #[tonic::async_trait]
    impl Metadata for Script {
        async fn get(
            &self,
            _request: Request<MetadataRequest>,
        ) -> Result<Response<MetadataResponse>, Status> {
            Ok(Response::new(MetadataResponse {
                tables: vec![Table {
                    name: self.table.clone(),
                    r#type: table::Type::Replicated as i32,
                    // A Regatta leader does not say (an extension of ours).
                    shard_id: 0,
                }],
            }))
        }
    }

    #[tonic::async_trait]
    impl Log for Script {
        type ReplicateStream =
            futures::stream::Iter<std::vec::IntoIter<Result<ReplicateResponse, Status>>>;

        async fn replicate(
            &self,
            request: Request<ReplicateRequest>,
        ) -> Result<Response<Self::ReplicateStream>, Status> {
            let from = request.into_inner().leader_index.max(1);
            let last = self.log.len() as u64;
            let message = if from > last {
                ReplicateResponse {
                    response: Some(Reply::ErrorResponse(ReplicateErrResponse {
                        error: ReplicateError::LeaderBehind as i32,
                    })),
                    leader_index: last,
                }
            } else {
                ReplicateResponse {
                    response: Some(Reply::CommandsResponse(ReplicateCommandsResponse {
                        commands: (from..=last)
                            .map(|index| ReplicateCommand {
                                leader_index: index,
                                command: Some(self.log[index as usize - 1].clone()),
                            })
                            .collect(),
                    })),
                    leader_index: last,
                }
            };
            Ok(Response::new(futures::stream::iter(vec![Ok(message)])))
        }
    }

    /// Serves `script` on a free loopback port; returns its address.
    pub async fn serve(script: Script) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(MetadataServer::new(script.clone()))
                .add_service(LogServer::new(script))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_entry_from_a_leader_stream_applies_its_commands_in_order_as_one_step() {
    use regatta_proto::mvcc::v1::command::CommandType;
    use regatta_proto::mvcc::v1::{Command, KeyValue};

    let command = |kind: CommandType, key: &str, value: &str| Command {
        table: b"seq".to_vec(),
        r#type: kind as i32,
        kv: Some(KeyValue {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..KeyValue::default()
        }),
        ..Command::default()
    };
    // Entry 1: a plain put. Entry 2: a SEQUENCE that puts, overwrites and
    // deletes; applied in order, as one step (one revision).
    let sequence = Command {
        table: b"seq".to_vec(),
        r#type: CommandType::Sequence as i32,
        sequence: vec![
            command(CommandType::Put, "a", "1"),
            command(CommandType::Put, "b", "2"),
            command(CommandType::Put, "a", "3"),
            command(CommandType::Delete, "b", ""),
            command(CommandType::Put, "c", "4"),
        ],
        ..Command::default()
    };
    let address = scripted_leader::serve(scripted_leader::Script {
        table: "seq".into(),
        log: vec![command(CommandType::Put, "z", "0"), sequence],
    })
    .await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (node, _metrics, follower) = start_follower(&address, &dir).await;
    wait_for(&node, "seq", &[("a", "3"), ("c", "4"), ("z", "0")]).await;
    // One step: the sequence's pairs share one revision, the put's is before.
    let table = node.table(b"seq").expect("table seq");
    let all = table
        .range(&RangeQuery {
            key: vec![0],
            range_end: vec![0],
            ..RangeQuery::default()
        })
        .expect("range")
        .value;
    let revision = |key: &[u8]| {
        all.kvs
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.mod_revision)
            .expect("key present")
    };
    assert_eq!(revision(b"a"), revision(b"c"));
    assert!(revision(b"z") < revision(b"a"));
    follower.abort();
    node.shutdown().await;
}
