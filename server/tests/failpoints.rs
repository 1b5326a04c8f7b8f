//! Failing fsyncs and I/O errors, injected with failpoints (the `fail`
//! crate; the debug binary of `cargo test` has them, release builds do not)
//! into real three-node clusters of the binary.
//!
//! The contract in every case: the node that hit the failure acknowledges
//! nothing it did not store, stops (exits non-zero, naming the failure, so
//! that its supervisor restarts it); the other nodes go on serving writes;
//! restarted without the failure, the node catches up; every acknowledged
//! write is there.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regatta_proto::regatta::v1::{PutRequest, RangeRequest};

mod support;
use support::cluster::{set_failpoint, Cluster};

const TABLE: &str = "regatta";

/// The scenarios run one at a time: each is three nodes on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cluster(extra: &[&str]) -> Cluster {
    let mut flags = vec!["--tables.names", TABLE, "--raft.rtt", "25ms"];
    flags.extend_from_slice(extra);
    let mut cluster = Cluster::new(3, &flags);
    cluster.start_all();
    cluster
}

/// Acknowledged writes: key -> value.
type Acked = Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>;

/// Writers putting unique keys through `nodes` until `stop`, and what was
/// acknowledged.
struct Writers {
    acked: Acked,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    async fn start(cluster: &Cluster, nodes: &[usize], prefix: &str) -> Writers {
        let acked: Acked = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            for w in 0..4 {
                let mut kv = cluster.kv(*node).await;
                let (acked, stop) = (acked.clone(), stop.clone());
                let prefix = format!("{prefix}-{n}-{w}-");
                tasks.push(tokio::spawn(async move {
                    let mut seq = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        seq += 1;
                        let key = format!("{prefix}{seq:06}").into_bytes();
                        let value = format!("v{seq}").into_bytes();
                        let put = kv.put(PutRequest {
                            table: TABLE.into(),
                            key: key.clone(),
                            value: value.clone(),
                            prev_kv: false,
                        });
                        match tokio::time::timeout(Duration::from_secs(5), put).await {
                            Ok(Ok(_)) => {
                                acked.lock().unwrap().insert(key, value);
                            }
                            // Not acknowledged: may or may not be stored.
                            _ => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                    }
                }));
            }
        }
        Writers { acked, stop, tasks }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `count` writes were acknowledged.
    async fn until_acked(&self, count: usize) {
        while self.acked_count() < count {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (30 s at most) for 200 more acknowledged writes: the nodes
    /// other than `stopped` go on without it.
    async fn go_on_without(&self, stopped: usize) {
        let target = self.acked_count() + 200;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked_count() < target {
            assert!(
                Instant::now() < deadline,
                "the cluster took no writes after node {stopped} stopped"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Writes `count` keys `<prefix>-<n>` through node `via`, each acknowledged.
async fn write_keys(
    cluster: &Cluster,
    via: usize,
    prefix: &str,
    count: usize,
) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut kv = cluster.kv(via).await;
    let mut written = BTreeMap::new();
    for n in 0..count {
        let (key, value) = (format!("{prefix}-{n:05}").into_bytes(), b"x".to_vec());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let put = kv.put(PutRequest {
                table: TABLE.into(),
                key: key.clone(),
                value: value.clone(),
                prev_kv: false,
            });
            match put.await {
                Ok(_) => break,
                Err(status) => {
                    assert!(
                        Instant::now() < deadline,
                        "put {n} via node {via}: {status}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        written.insert(key, value);
    }
    written
}

/// Everything in the table as node `id` answers it (serializable: its own
/// copy), or `None` while it does not answer.
async fn contents(
    cluster: &Cluster,
    id: usize,
    linearizable: bool,
) -> Option<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut kv = cluster.kv(id).await;
    let read = kv
        .range(RangeRequest {
            table: TABLE.into(),
            key: vec![0],
            range_end: vec![0],
            linearizable,
            ..RangeRequest::default()
        })
        .await
        .ok()?
        .into_inner();
    Some(read.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect())
}

/// Waits until node `id`'s own copy holds every key of `acked` with its
/// value (the node caught up), then checks the cluster's linearizable view.
async fn assert_holds(
    cluster: &Cluster,
    id: usize,
    acked: &BTreeMap<Vec<u8>, Vec<u8>>,
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing = usize::MAX;
    while Instant::now() < deadline {
        if let Some(held) = contents(cluster, id, false).await {
            missing = acked
                .iter()
                .filter(|(key, value)| held.get(*key) != Some(*value))
                .count();
            if missing == 0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        missing,
        0,
        "{what}: node {id} lacks {missing} of {} acknowledged writes",
        acked.len()
    );
    let all = contents(cluster, id, true)
        .await
        .expect("linearizable read");
    for (key, value) in acked {
        assert_eq!(
            all.get(key),
            Some(value),
            "{what}: acknowledged {:?} lost",
            String::from_utf8_lossy(key)
        );
    }
}

/// Node `id` exits on its own within 60 s, non-zero, naming `failure`.
fn assert_stops_naming(cluster: &mut Cluster, id: usize, failure: &str) {
    let Some((status, _)) = cluster.process(id).wait_exit(Duration::from_secs(60)) else {
        cluster.kill(id);
        panic!(
            "node {id} kept running after the failure ({failure}); its log:\n{}",
            cluster.log(id)
        );
    };
    let stderr = cluster.log(id);
    assert!(
        !status.success(),
        "node {id} exited with success after a storage failure"
    );
    assert!(
        stderr.contains(failure) && stderr.contains("storage failure"),
        "node {id}'s last words do not name the failure {failure:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "node {id} panicked:\n{stderr}"
    );
    cluster.members[id - 1].process.take();
}

fn other_than(id: usize) -> Vec<usize> {
    (1..=3).filter(|n| *n != id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_sync_on_the_leader_acknowledges_nothing_and_the_node_catches_up_after_a_restart(
) {
    let _serial = SERIAL.lock().await;
    let mut cluster = cluster(&[]);
    let before = write_keys(&cluster, 1, "before", 20).await;
    let leader = cluster.agreed_leader(TABLE).await;
    // Writers through every node: the leader's own and forwarded writes are
    // pending on its log when the sync fails.
    let writers = Writers::start(&cluster, &[1, 2, 3], "during").await;
    writers.until_acked(100).await;
    set_failpoint(cluster.rest(leader), "raft-log-sync", "return");
    assert_stops_naming(&mut cluster, leader, "syncing the Raft log");
    // The other two elect a leader and go on taking writes.
    writers.go_on_without(leader).await;
    let mut acked = writers.stop().await;
    acked.extend(before);
    for id in other_than(leader) {
        assert_holds(&cluster, id, &acked, "surviving node").await;
    }
    cluster.start(leader, &[]);
    assert_holds(&cluster, leader, &acked, "restarted node").await;
    let after = write_keys(&cluster, leader, "after", 20).await;
    assert_holds(&cluster, leader, &after, "write through the restarted node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_state_machine_write_stops_the_node_and_the_others_go_on() {
    let _serial = SERIAL.lock().await;
    let mut cluster = cluster(&[]);
    let before = write_keys(&cluster, 1, "before", 20).await;
    let leader = cluster.agreed_leader(TABLE).await;
    let failing = other_than(leader)[0];
    let writers = Writers::start(&cluster, &[leader], "during").await;
    writers.until_acked(50).await;
    set_failpoint(cluster.rest(failing), "state-machine-write", "return");
    assert_stops_naming(&mut cluster, failing, "applying log entry");
    writers.go_on_without(failing).await;
    let mut acked = writers.stop().await;
    acked.extend(before);
    cluster.start(failing, &[]);
    assert_holds(&cluster, failing, &acked, "restarted node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_snapshot_build_stops_the_node_and_a_restart_builds_it() {
    let _serial = SERIAL.lock().await;
    let mut cluster = cluster(&[
        "--raft.snapshot-entries",
        "150",
        "--raft.compaction-overhead",
        "20",
    ]);
    let leader = {
        write_keys(&cluster, 1, "warm", 5).await;
        cluster.agreed_leader(TABLE).await
    };
    let failing = other_than(leader)[0];
    set_failpoint(cluster.rest(failing), "snapshot-build", "return");
    let writers = Writers::start(&cluster, &[leader], "during").await;
    assert_stops_naming(&mut cluster, failing, "building a snapshot");
    writers.go_on_without(failing).await;
    let acked = writers.stop().await;
    cluster.start(failing, &[]);
    assert_holds(&cluster, failing, &acked, "restarted node").await;
    // It snapshots from now on without stopping.
    let more = write_keys(&cluster, leader, "more", 400).await;
    assert_holds(&cluster, failing, &more, "after further snapshots").await;
    cluster
        .process(failing)
        .assert_running("after building snapshots");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_snapshot_install_stops_the_node_and_a_restart_installs_it() {
    let _serial = SERIAL.lock().await;
    let mut cluster = cluster(&[
        "--raft.snapshot-entries",
        "100",
        "--raft.compaction-overhead",
        "10",
    ]);
    write_keys(&cluster, 1, "warm", 5).await;
    let leader = cluster.agreed_leader(TABLE).await;
    let lagging = other_than(leader)[0];
    cluster.kill(lagging);
    // The log is purged past everything the stopped node has: it can only
    // catch up from a snapshot.
    let written = write_keys(&cluster, leader, "while-down", 400).await;
    cluster.start(lagging, &[("FAILPOINTS", "snapshot-install=return")]);
    assert_stops_naming(&mut cluster, lagging, "installing a snapshot");
    cluster.start(lagging, &[]);
    assert_holds(&cluster, lagging, &written, "restarted node").await;
}
