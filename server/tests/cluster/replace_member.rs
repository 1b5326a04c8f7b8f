//! Replacing a node whose disk is lost (issue 21, item 5): the old id is
//! removed, a fresh node joins under a new id, catches up by snapshot and
//! votes; the old id is refused for good.

use std::time::{Duration, Instant};

use regatta::cluster::{Error, MembershipError};

use crate::harness::{Cluster, TIMEOUT};

const SETTLE: Duration = Duration::from_secs(30);

/// Waits until node `via` holds `count` pairs of `table` (serializable:
/// what it applied itself).
async fn wait_pairs(cluster: &Cluster, via: u64, table: &str, count: usize) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let held = cluster
            .read_all(via, table, Duration::from_secs(2))
            .await
            .map(|pairs| pairs.len());
        if held.as_ref().is_ok_and(|held| *held == count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node in slot {via} holds {held:?} pairs of {table}, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes node `id` through the node in slot `via` and waits until every
/// group there dropped it.
async fn remove_and_settle(cluster: &Cluster, via: u64, id: u64) {
    let node = cluster.node(via);
    node.remove_member(id, TIMEOUT)
        .await
        .unwrap_or_else(|err| panic!("remove node {id}: {err}"));
    node.wait_members_settled(SETTLE)
        .await
        .unwrap_or_else(|changing| panic!("groups {changing:?} still count node {id}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_node_is_replaced_under_a_new_id_which_catches_up_by_snapshot_and_votes() {
    let mut cluster = Cluster::start(3, 20).await;
    cluster.must_create_table(1, "t").await;
    for i in 0..60 {
        cluster
            .must_put(1 + i % 3, "t", &format!("k{i}"), "v")
            .await;
    }
    // Node 3's disk is lost.
    cluster.stop(3).await;
    let lost = cluster.settings[2].clone();
    for dir in [&lost.node_host_dir, &lost.state_machine_dir] {
        std::fs::remove_dir_all(dir).expect("lose the disk");
    }
    remove_and_settle(&cluster, 1, 3).await;
    assert_eq!(cluster.node(2).wanted_voters_ids().expect("voters"), [1, 2]);
    for i in 60..120 {
        cluster.must_put(1, "t", &format!("k{i}"), "v").await;
    }

    // A fresh node in the same place under id 4, joining.
    cluster.settings[2].node_id = 4;
    cluster.settings[2].join = true;
    cluster.settings[2].identity.name = "node-4".into();
    cluster.restart(3).await;
    assert_eq!(cluster.node(3).id(), 4);
    cluster
        .node(2)
        .add_member(4, &lost.address, TIMEOUT)
        .await
        .expect("add node 4");
    for via in [1, 2, 3] {
        cluster
            .node(via)
            .wait_members_settled(SETTLE)
            .await
            .unwrap_or_else(|changing| panic!("slot {via}: groups {changing:?} still changing"));
    }
    let members: Vec<u64> = cluster.node(3).members().iter().map(|m| m.id).collect();
    assert_eq!(members, [1, 2, 4]);
    wait_pairs(&cluster, 3, "t", 120).await;
    let status = cluster.node(3).status(b"t").expect("status");
    assert!(
        status.installed_snapshot_index > 0,
        "node 4 caught up without a snapshot: {status:?}"
    );

    // It votes: without node 1, nodes 2 and 4 are a quorum.
    cluster.stop(1).await;
    let deadline = Instant::now() + SETTLE;
    loop {
        match cluster.put(3, "t", "quorum", "2 and 4").await {
            Ok(_) => break,
            Err(err) => assert!(Instant::now() < deadline, "no write without node 1: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_pairs(&cluster, 2, "t", 121).await;

    // Id 3 is never taken again.
    let again = cluster.node(2).add_member(3, &lost.address, TIMEOUT).await;
    assert!(
        matches!(again, Err(Error::Membership(MembershipError::Removed(3)))),
        "{again:?}"
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_node_that_comes_back_with_its_disk_is_refused_and_changes_nothing() {
    let mut cluster = Cluster::start(3, 10_000).await;
    cluster.must_create_table(1, "t").await;
    cluster.must_put(1, "t", "before", "v").await;
    cluster.stop(3).await;
    remove_and_settle(&cluster, 2, 3).await;
    // The old machine comes back with its old disk and campaigns.
    cluster.restart(3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for via in [1, 2] {
        assert_eq!(
            cluster.node(via).wanted_voters_ids().expect("voters"),
            [1, 2]
        );
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let leaders: Vec<Option<u64>> = [1, 2]
            .iter()
            .map(|via| cluster.node(*via).status(b"t").ok().and_then(|s| s.leader))
            .collect();
        if leaders[0].is_some_and(|l| [1, 2].contains(&l)) && leaders[0] == leaders[1] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes 1 and 2 agree on no leader: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.must_put(2, "t", "after", "v").await;
    // Its writes go nowhere: the members refuse every message from it.
    let refused = cluster.put(3, "t", "from-removed", "v").await;
    assert!(refused.is_err(), "the removed node wrote: {refused:?}");
    let pairs = cluster.must_read_all(1, "t").await;
    assert_eq!(pairs.keys().collect::<Vec<_>>(), ["after", "before"]);
    let removed = cluster.node(1).remove_member(2, TIMEOUT).await;
    assert!(removed.is_ok(), "{removed:?}");
    let last = cluster.node(1).remove_member(1, TIMEOUT).await;
    assert!(
        matches!(last, Err(Error::Membership(MembershipError::LastMember(1)))),
        "{last:?}"
    );
    cluster.stop_all().await;
}
