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

fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .expect("free port")
}

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
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (api, replication) = (free_address(), free_address());
    let child = Process::new(env!("CARGO_BIN_EXE_regatta"))
        .args(["leader", "--log-level", "warn", "--raft.rtt", "10ms"])
        .args(["--tables.names", tables])
        .args(["--api.address", &api, "--replication.address", &replication])
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
        let got: Option<Vec<(Vec<u8>, Vec<u8>)>> =
            node.table_group(table.as_bytes()).ok().map(|group| {
                let query = RangeQuery {
                    key: vec![0],
                    range_end: vec![0],
                    ..RangeQuery::default()
                };
                group
                    .table
                    .range(&query)
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
    let mut settings = RaftSettings::single_node(dir.path().to_path_buf(), free_address());
    settings.rtt = Duration::from_millis(10);
    let node = Node::start(settings, StorageOptions::default())
        .await
        .expect("follower node starts");
    let channel = Channel::from_shared(format!("http://{}", leader.replication))
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

    let group = node.table_group(b"alpha").expect("alpha");
    assert!(group.table.state().leader_index.unwrap_or(0) >= 3);
    let rendered = metrics.render();
    assert!(
        rendered.contains("regatta_replication_leased{table=\"alpha\"} 1"),
        "{rendered}"
    );
    assert!(rendered.contains("regatta_replication_index{role=\"follower\",table=\"alpha\"}"));

    follower.abort();
    node.shutdown().await;
}
