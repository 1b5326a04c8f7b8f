//! Idle groups park their Raft timers and send nothing of their own; the
//! node-level liveness beat (`raft/liveness.rs`) still replaces a lost
//! leader, and a node that comes back disturbs no leader.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::harness::{Cluster, TIMEOUT};

const TABLES: usize = 6;

/// A 3-node cluster with `TABLES` tables, each with a leader.
async fn idle_cluster() -> (Cluster, Vec<String>) {
    let cluster = Cluster::start(3, 0).await;
    let names: Vec<String> = (0..TABLES).map(|i| format!("idle-{i}")).collect();
    for name in &names {
        cluster.must_create_table(1, name).await;
    }
    for name in &names {
        cluster.wait_leader(name).await;
    }
    (cluster, names)
}

/// Waits until no group's timer runs on any running node.
async fn wait_parked(cluster: &Cluster) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let running: Vec<usize> = cluster
            .running()
            .iter()
            .map(|id| cluster.node(*id).liveness_stats().0)
            .collect();
        if running.iter().all(|timers| *timers == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timers still running per node: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (node, table) -> (term, leader) on every running node.
fn views(cluster: &Cluster, names: &[String]) -> BTreeMap<(u64, String), (u64, Option<u64>)> {
    let mut views = BTreeMap::new();
    for id in cluster.running() {
        for name in names {
            let status = cluster
                .node(id)
                .status(name.as_bytes())
                .unwrap_or_else(|err| panic!("status of {name} on node {id}: {err}"));
            views.insert((id, name.clone()), (status.info.raft_term, status.leader));
        }
    }
    views
}

fn elections(cluster: &Cluster) -> Vec<u64> {
    cluster
        .running()
        .iter()
        .map(|id| cluster.node(*id).liveness_stats().1)
        .collect()
}

/// The harness's election timeout (rtt 20 ms × 20).
const ELECTION: Duration = Duration::from_millis(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_groups_park_their_timers_and_keep_their_leaders() {
    let (cluster, names) = idle_cluster().await;
    wait_parked(&cluster).await;
    let before = views(&cluster, &names);
    let elections_before = elections(&cluster);
    // Five election timeouts without a heartbeat of any group: no follower
    // may take that for a lost leader.
    tokio::time::sleep(ELECTION * 5).await;
    assert_eq!(views(&cluster, &names), before, "terms or leaders moved");
    assert_eq!(elections(&cluster), elections_before);

    // A parked leader takes writes (it renews its lapsed lease first), and
    // writes need no timer.
    for name in &names {
        cluster.must_put(2, name, "k", "v").await;
    }
    wait_parked(&cluster).await;
    // A linearizable read of a parked group confirms leadership on its own.
    for id in 1..=3 {
        assert_eq!(
            cluster.must_read_all(id, &names[0]).await.get("k"),
            Some(&"v".to_string())
        );
    }
    let after = views(&cluster, &names);
    for ((node, name), (term, leader)) in &before {
        assert_eq!(
            after[&(*node, name.clone())],
            (*term, *leader),
            "{name} on node {node}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_back_from_a_stop_catches_up_without_another_write() {
    let (mut cluster, names) = idle_cluster().await;
    let table = &names[0];
    let leader = cluster.wait_leader(table).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.stop(follower).await;
    for key in ["a", "b", "c"] {
        cluster.must_put(leader, table, key, "missed").await;
    }
    // No timer runs for it: openraft's replication retries the follower
    // on its own backoff.
    tokio::time::sleep(ELECTION).await;
    assert_eq!(cluster.node(leader).liveness_stats().0, 0);
    cluster.restart(follower).await;
    // Its own copy, read without asking the leader anything.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let local = cluster
            .node(follower)
            .table(table.as_bytes())
            .and_then(|data| {
                data.range(&regatta::storage::RangeQuery {
                    key: b"a".to_vec(),
                    range_end: b"d".to_vec(),
                    ..Default::default()
                })
                .map_err(regatta::cluster::Error::Storage)
            })
            .map(|found| found.value.kvs.len());
        if local.as_ref().is_ok_and(|count| *count == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower did not catch up: {local:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_parked(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_leader_of_parked_groups_is_replaced_and_its_return_disturbs_none() {
    let (mut cluster, names) = idle_cluster().await;
    wait_parked(&cluster).await;
    // The node that leads the most tables.
    let mut led = BTreeMap::<u64, usize>::new();
    for name in &names {
        *led.entry(cluster.wait_leader(name).await).or_default() += 1;
    }
    let lost = led
        .iter()
        .max_by_key(|(_, count)| **count)
        .map(|(id, _)| *id)
        .expect("leaders");
    cluster.stop(lost).await;

    for name in &names {
        let leader = cluster.wait_leader(name).await;
        assert_ne!(leader, lost);
    }
    let survivor = cluster.running()[0];
    for name in &names {
        cluster.must_put(survivor, name, "after", "loss").await;
    }

    cluster.restart(lost).await;
    for name in &names {
        cluster.wait_leader(name).await;
    }
    wait_parked(&cluster).await;
    let before = views(&cluster, &names);
    tokio::time::sleep(ELECTION * 5).await;
    assert_eq!(
        views(&cluster, &names),
        before,
        "the returned node moved a term or leader"
    );
    for name in &names {
        assert_eq!(
            cluster.must_read_all(lost, name).await.get("after"),
            Some(&"loss".to_string())
        );
    }
}
