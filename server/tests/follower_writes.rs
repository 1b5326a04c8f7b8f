//! Writes sent to a follower cluster (`features/follower_writes.feature`), against real
//! `regatta leader` and `regatta follower` processes: forwarded to the
//! leader cluster, readable on the follower the moment they are answered,
//! the leader's errors passed on, and every way a deadline can pass named.

use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use regatta_proto::mvcc::v1::compare::{CompareResult, CompareTarget, TargetUnion};
use regatta_proto::mvcc::v1::request_op::{self, Request as Op};
use regatta_proto::mvcc::v1::{Compare, RequestOp};
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::{DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest};
use tonic::transport::Channel;
use tonic::Code;

mod support;
use support::free_address;
use support::node::{NodeConfig, Running};

/// A one-node follower cluster of the leader whose replication listener is
/// `leader`, with `extra` flags.
struct FollowerNode {
    api: String,
    node: Running,
    _dir: tempfile::TempDir,
}

fn start_follower(leader: &str, extra: &[&str]) -> FollowerNode {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let api = free_address();
    let child = follower_command(dir.path(), leader, &api, extra)
        .spawn()
        .expect("spawn regatta follower");
    FollowerNode {
        api,
        node: Running::from(child),
        _dir: dir,
    }
}

fn follower_command(dir: &Path, leader: &str, api: &str, extra: &[&str]) -> Process {
    let mut command = Process::new(env!("CARGO_BIN_EXE_regatta"));
    command
        .args(["follower", "--dev-mode", "--log-level", "warn"])
        .args(["--replication.leader-address", leader])
        .args(["--replication.reconcile-interval", "200ms"])
        .args(["--api.address", api, "--rest.address", &free_address()])
        .args(["--maintenance.address", &free_address()])
        .args(["--raft.address", &free_address()])
        .arg("--raft.node-host-dir")
        .arg(dir.join("raft"))
        .arg("--raft.state-machine-dir")
        .arg(dir.join("sm"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// A KV client of `api` once it serves table `regatta` holding `key`.
async fn serving_with(api: &str, node: &mut Running, key: &[u8]) -> KvClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        node.assert_running("before it served");
        if let Ok(channel) = Channel::from_shared(format!("http://{api}"))
            .expect("uri")
            .connect()
            .await
        {
            let mut client = KvClient::new(channel);
            if let Ok(read) = client.range(serializable(key)).await {
                if !read.into_inner().kvs.is_empty() {
                    return client;
                }
            }
        }
        assert!(Instant::now() < deadline, "{api} never served {key:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn serializable(key: &[u8]) -> RangeRequest {
    RangeRequest {
        table: b"regatta".to_vec(),
        key: key.to_vec(),
        ..RangeRequest::default()
    }
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        table: b"regatta".to_vec(),
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..PutRequest::default()
    }
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

async fn value_on(kv: &mut KvClient<Channel>, key: &str) -> Option<Vec<u8>> {
    kv.range(serializable(key.as_bytes()))
        .await
        .expect("serializable range on the follower")
        .into_inner()
        .kvs
        .first()
        .map(|pair| pair.value.clone())
}

/// A leader node with table `regatta` holding `seed=1`, and its KV client.
async fn leader() -> (NodeConfig, Running, tempfile::TempDir, KvClient<Channel>) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let config = NodeConfig::new();
    let mut node = config.start(dir.path());
    let mut kv = support::node::serving(&config, &mut node).await;
    kv.put(put("seed", "1")).await.expect("seed the leader");
    (config, node, dir, kv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_a_follower_are_made_on_the_leader_and_readable_there_at_once() {
    let (config, _leader_node, _dir, mut on_leader) = leader().await;
    let mut follower = start_follower(&config.replication, &[]);
    let mut kv = serving_with(&follower.api, &mut follower.node, b"seed").await;

    // Each write answers with the leader's header, and a serializable read
    // on the same follower node sees it at once.
    for n in 0..20 {
        let key = format!("k{n}");
        let answer = kv
            .put(put(&key, &n.to_string()))
            .await
            .expect("put through the follower")
            .into_inner();
        let header = answer.header.expect("header");
        assert!(header.revision > 0, "{header:?}");
        assert_eq!(
            value_on(&mut kv, &key).await,
            Some(n.to_string().into_bytes())
        );
    }
    let on_the_leader = on_leader
        .range(serializable(b"k19"))
        .await
        .expect("read on the leader")
        .into_inner();
    assert_eq!(
        on_the_leader.kvs[0].value, b"19",
        "made on the leader cluster"
    );

    // prev_kv comes back as the leader gave it.
    let previous = kv
        .put(PutRequest {
            prev_kv: true,
            ..put("k0", "again")
        })
        .await
        .expect("put with prev_kv")
        .into_inner();
    assert_eq!(previous.prev_kv.expect("prev_kv").value, b"0");

    // DeleteRange and a writing Txn go the same way.
    let deleted = kv
        .delete_range(DeleteRangeRequest {
            table: b"regatta".to_vec(),
            key: b"k1".to_vec(),
            ..DeleteRangeRequest::default()
        })
        .await
        .expect("delete through the follower")
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    assert_eq!(value_on(&mut kv, "k1").await, None);

    let cas = |expected: &str, new: &str| TxnRequest {
        table: b"regatta".to_vec(),
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: b"k2".to_vec(),
            target_union: Some(TargetUnion::Value(expected.as_bytes().to_vec())),
            ..Compare::default()
        }],
        success: vec![RequestOp {
            request: Some(Op::RequestPut(request_op::Put {
                key: b"k2".to_vec(),
                value: new.as_bytes().to_vec(),
                ..Default::default()
            })),
        }],
        ..TxnRequest::default()
    };
    let won = kv.txn(cas("2", "won")).await.expect("txn").into_inner();
    assert!(won.succeeded);
    assert_eq!(value_on(&mut kv, "k2").await, Some(b"won".to_vec()));
    let lost = kv.txn(cas("2", "lost")).await.expect("txn").into_inner();
    assert!(!lost.succeeded, "the compare sees the first write");
    assert_eq!(value_on(&mut kv, "k2").await, Some(b"won".to_vec()));

    // The leader validates; its errors keep their code.
    let no_table = kv
        .put(PutRequest::default())
        .await
        .expect_err("put without a table");
    assert_eq!(
        (no_table.code(), no_table.message()),
        (Code::InvalidArgument, "leader error: table must be set")
    );
    let unknown = kv
        .put(PutRequest {
            table: b"nope".to_vec(),
            ..put("k", "v")
        })
        .await
        .expect_err("put into an unknown table");
    assert_eq!(
        (unknown.code(), unknown.message()),
        (Code::NotFound, "leader error: table not found")
    );

    // Many writers at once, each answered once its write is here.
    let writers = (0..32).map(|n| {
        let mut kv = kv.clone();
        tokio::spawn(async move {
            let key = format!("w{n}");
            kv.put(put(&key, "x")).await.expect("concurrent put");
            value_on(&mut kv, &key).await
        })
    });
    for writer in futures::future::join_all(writers).await {
        assert_eq!(writer.expect("writer task"), Some(b"x".to_vec()));
    }
    follower.node.assert_running("after the writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passes_says_what_became_of_the_write() {
    let (config, leader_node, _dir, mut on_leader) = leader().await;
    // A follower that copies once and then waits an hour: writes it
    // forwards are made on the leader but never reach it.
    let mut stalled = start_follower(
        &config.replication,
        &[
            "--replication.follow-mode=false",
            "--replication.poll-interval=1h",
        ],
    );
    let mut kv = serving_with(&stalled.api, &mut stalled.node, b"seed").await;
    let started = Instant::now();
    let late = kv
        .put(with_timeout(put("late", "1"), Duration::from_secs(1)))
        .await
        .expect_err("a write that cannot reach the follower in time");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    let revision = on_leader
        .range(serializable(b"late"))
        .await
        .expect("read on the leader")
        .into_inner()
        .kvs
        .first()
        .map(|pair| pair.mod_revision)
        .expect("the write was made on the leader");
    assert_eq!(
        late.message(),
        format!(
            "write committed on the leader cluster at revision {revision}, not yet replicated here"
        )
    );

    // With the leader cluster gone, nothing is sent and the answer says so.
    drop(leader_node);
    let started = Instant::now();
    let unreachable = kv
        .put(with_timeout(put("lost", "1"), Duration::from_secs(1)))
        .await
        .expect_err("a write with no leader cluster to take it");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        unreachable.code(),
        Code::DeadlineExceeded,
        "{unreachable:?}"
    );
    assert!(
        unreachable
            .message()
            .starts_with("leader cluster unreachable, the write was not made: "),
        "{unreachable:?}"
    );
    stalled.node.assert_running("after the deadlines");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_off_refuses_writes_as_regatta_2022_did() {
    let (config, _leader_node, _dir, _) = leader().await;
    let mut follower = start_follower(&config.replication, &["--replication.forward-writes=false"]);
    let mut kv = serving_with(&follower.api, &mut follower.node, b"seed").await;
    let refused = kv.put(put("k", "v")).await.expect_err("put refused");
    assert_eq!(
        (refused.code(), refused.message()),
        (
            Code::Unimplemented,
            "method Put not implemented for follower"
        )
    );
    assert_eq!(value_on(&mut kv, "k").await, None);
}
