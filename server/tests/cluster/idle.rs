//! Idle groups park their Raft timers and send nothing of their own; the
//! node-level liveness beat (`raft/liveness.rs`) still replaces a lost
//! leader; leaderships spread over the nodes, and a node that comes back
//! takes back the groups it is first to lead, once, and disturbs no other.

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
    wait_preferred(&cluster, &names).await;
    (cluster, names)
}

/// Waits until every running node sees each table led by the node the
/// table prefers; returns how many tables each node leads.
async fn wait_preferred(cluster: &Cluster, names: &[String]) -> BTreeMap<u64, usize> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut led = BTreeMap::<u64, usize>::new();
        let mut off = Vec::new();
        for name in names {
            let seen: Vec<(Option<u64>, Option<u64>)> = cluster
                .running()
                .iter()
                .map(|id| {
                    let node = cluster.node(*id);
                    let leader = node.status(name.as_bytes()).ok().and_then(|s| s.leader);
                    (leader, node.preferred_leader(name.as_bytes()).ok())
                })
                .collect();
            match seen.first() {
                Some((Some(leader), Some(preferred)))
                    if leader == preferred && seen.iter().all(|s| *s == seen[0]) =>
                {
                    *led.entry(*leader).or_default() += 1;
                }
                _ => off.push((name.clone(), seen)),
            }
        }
        if off.is_empty() {
            return led;
        }
        assert!(
            Instant::now() < deadline,
            "tables not led by their first choice: {off:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
async fn a_lost_leader_is_replaced_and_on_its_return_takes_back_its_own_tables_once() {
    let (mut cluster, names) = idle_cluster().await;
    wait_parked(&cluster).await;
    // Leaderships spread: each table is led by its first choice, and the
    // node that leads the most of them is lost.
    let led = wait_preferred(&cluster, &names).await;
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
    // Back, it leads its own tables again once they are quiet, and only
    // by taking them back.
    let led_again = wait_preferred(&cluster, &names).await;
    assert_eq!(led_again, led);
    assert!(cluster.node(lost).liveness_stats().2 >= 1);
    wait_parked(&cluster).await;
    let before = views(&cluster, &names);
    tokio::time::sleep(ELECTION * 5).await;
    assert_eq!(
        views(&cluster, &names),
        before,
        "a term or leader moved after the tables went back"
    );
    for name in &names {
        assert_eq!(
            cluster.must_read_all(lost, name).await.get("after"),
            Some(&"loss".to_string())
        );
    }
}
