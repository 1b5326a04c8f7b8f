//! What issue 4 promises of a cluster, scenario by scenario.

use std::collections::BTreeMap;
use std::time::Duration;

use regatta::cluster::Error;

use crate::harness::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_group_elects_a_leader_and_writes_on_any_node_read_linearizably_everywhere() {
    let cluster = Cluster::start(3, 10_000).await;
    let shard = cluster.must_create_table(1, "t").await;
    assert!(shard >= 10001, "shard ids start at 10001: {shard}");
    let second = cluster.must_create_table(2, "u").await;
    assert!(second > shard, "shard ids grow: {second} after {shard}");
    assert_eq!(
        cluster.must_create_table(3, "t").await,
        shard,
        "creating an existing table is a no-op"
    );
    let leader = cluster.wait_leader("t").await;
    assert!((1..=3).contains(&leader));

    let mut revisions = Vec::new();
    for via in 1..=3 {
        let written = cluster
            .must_put(via, "t", &format!("k{via}"), &format!("from {via}"))
            .await;
        revisions.push(written.result.revision);
    }
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions strictly increase: {revisions:?}"
    );
    let expected: BTreeMap<String, String> = (1..=3)
        .map(|via| (format!("k{via}"), format!("from {via}")))
        .collect();
    for via in 1..=3 {
        assert_eq!(
            cluster.must_read_all(via, "t").await,
            expected,
            "linearizable read on node {via}"
        );
    }
    for via in 1..=3 {
        let info = cluster.node(via).status(b"t").expect("group").info;
        assert_eq!(
            (info.shard_id, info.replica_id, info.raft_leader_id),
            (shard, via, leader)
        );
        assert!(info.raft_term >= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_the_leader_elects_another_and_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, 10_000).await;
    cluster.must_create_table(1, "t").await;
    let leader = cluster.wait_leader("t").await;
    let other = (1..=3).find(|id| *id != leader).expect("another node");
    let mut acknowledged = BTreeMap::new();
    for i in 0..20 {
        cluster
            .must_put(other, "t", &format!("before{i:02}"), "v")
            .await;
        acknowledged.insert(format!("before{i:02}"), "v".to_string());
    }
    cluster.stop(leader).await;
    for i in 0..20 {
        cluster
            .must_put(other, "t", &format!("after{i:02}"), "v")
            .await;
        acknowledged.insert(format!("after{i:02}"), "v".to_string());
    }
    let new_leader = cluster.wait_leader("t").await;
    assert_ne!(new_leader, leader);
    for via in cluster.running() {
        assert_eq!(
            cluster.must_read_all(via, "t").await,
            acknowledged,
            "node {via}"
        );
    }
    cluster.restart(leader).await;
    assert_eq!(
        cluster.must_read_all(leader, "t").await,
        acknowledged,
        "the old leader catches up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_every_node_keeps_every_write_and_revisions_continue() {
    let mut cluster = Cluster::start(3, 10_000).await;
    cluster.must_create_table(1, "t").await;
    let mut last = 0;
    for i in 0..10 {
        last = cluster
            .must_put(1 + i % 3, "t", &format!("k{i}"), "v")
            .await
            .result
            .revision;
    }
    cluster.stop_all().await;
    for id in 1..=3 {
        cluster.restart(id).await;
    }
    cluster.wait_leader("t").await;
    assert_eq!(cluster.must_read_all(2, "t").await.len(), 10);
    let next = cluster
        .must_put(3, "t", "after", "restart")
        .await
        .result
        .revision;
    assert!(next > last, "revision {next} continues after {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_missed_compacted_entries_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, 20).await;
    cluster.must_create_table(1, "t").await;
    let leader = cluster.wait_leader("t").await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.stop(lagging).await;
    let writer = (1..=3).find(|id| *id != lagging).expect("a running node");
    for i in 0..120 {
        cluster
            .must_put(writer, "t", &format!("k{i:03}"), &format!("v{i}"))
            .await;
    }
    // The leader purges what it replicated once no replication to the
    // lost node is in flight, which the paused retries to it (`network.rs`)
    // leave open for a moment at a time: wait for it.
    let deadline = std::time::Instant::now() + super::harness::TIMEOUT;
    loop {
        let purged = cluster
            .node(leader)
            .status(b"t")
            .expect("group")
            .last_purged_index;
        if purged.is_some_and(|index| index > 20) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the leader did not compact its log: purged {purged:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    cluster.restart(lagging).await;
    let expected = cluster.must_read_all(writer, "t").await;
    assert_eq!(expected.len(), 120);
    assert_eq!(cluster.must_read_all(lagging, "t").await, expected);
    let status = cluster.node(lagging).status(b"t").expect("group");
    assert!(
        status.snapshot_index.is_some(),
        "the lagging node installed a snapshot: leader {leader}, lagging {lagging}, last log {}, leader now {:?}",
        status.last_log_index,
        status.leader
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tables_created_or_deleted_while_a_node_is_down_follow_it_when_it_returns() {
    let mut cluster = Cluster::start(3, 10_000).await;
    cluster.must_create_table(1, "doomed").await;
    cluster.must_put(1, "doomed", "k", "v").await;
    cluster.stop(3).await;
    let shard = cluster.must_create_table(1, "late").await;
    cluster.must_put(2, "late", "k", "v").await;
    cluster
        .node(1)
        .delete_table(b"doomed", super::harness::TIMEOUT)
        .await
        .expect("delete");
    cluster.restart(3).await;
    cluster.wait_table(3, "late", Some(shard)).await;
    cluster.wait_table(3, "doomed", None).await;
    assert_eq!(cluster.must_read_all(3, "late").await.len(), 1);
    for id in 1..=3 {
        assert!(
            cluster.node(id).storage().table(b"doomed").is_none(),
            "node {id} still has data of the deleted table"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_acknowledges_neither_writes_nor_linearizable_reads() {
    let mut cluster = Cluster::start(3, 10_000).await;
    cluster.must_create_table(1, "t").await;
    cluster.must_put(1, "t", "k", "v").await;
    cluster.stop(2).await;
    cluster.stop(3).await;
    let short = Duration::from_secs(2);
    let write = cluster.node(1).write(b"t", &put_command("k2"), short).await;
    assert!(
        matches!(write, Err(Error::Unavailable(_))),
        "write on a minority: {write:?}"
    );
    assert!(write.as_ref().err().is_some_and(Error::is_retryable));
    let read = cluster.read_all(1, "t", short).await;
    assert!(
        matches!(read, Err(Error::Unavailable(_))),
        "linearizable read on a minority: {read:?}"
    );
}

/// A Put of `key` = "v" (the table is named by the write call).
pub(crate) fn put_command(key: &str) -> regatta_proto::mvcc::v1::Command {
    use regatta_proto::mvcc::v1::command::CommandType;
    regatta_proto::mvcc::v1::Command {
        r#type: CommandType::Put as i32,
        kv: Some(regatta_proto::mvcc::v1::KeyValue {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_of_many_groups_share_fsyncs() {
    let cluster = Cluster::start(3, 10_000).await;
    let tables = ["a", "b", "c", "d", "e", "f", "g", "h"];
    for table in tables {
        cluster.must_create_table(1, table).await;
    }
    let before = cluster.node(1).log_sync_stats();
    let mut writers = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let node = cluster.node(1 + (i as u64 % 3)).clone();
        let table = table.to_string();
        writers.push(tokio::spawn(async move {
            for j in 0..25 {
                node.write(
                    table.as_bytes(),
                    &put_command(&format!("k{j}")),
                    super::harness::TIMEOUT,
                )
                .await
                .expect("write");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let after = cluster.node(1).log_sync_stats();
    let (appends, syncs) = (after.0 - before.0, after.1 - before.1);
    println!("node 1: {appends} appends made durable with {syncs} WAL syncs");
    assert!(appends >= 50, "the writes reached node 1's log: {appends}");
    assert!(
        syncs < appends,
        "group commit shares syncs: {syncs} syncs for {appends} appends"
    );
}

/// docs/operations.md "Damaged disks": a node whose data is gone comes back
/// empty under its id, once the others lead every table, and catches up
/// (by snapshot: the leaders compacted their logs meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_disk_was_lost_rejoins_empty_and_catches_up() {
    let mut cluster = Cluster::start(3, 20).await;
    cluster.must_create_table(1, "t").await;
    for i in 0..30 {
        cluster
            .must_put(1 + i % 3, "t", &format!("k{i}"), "v")
            .await;
    }
    let lost = 3;
    cluster.stop(lost).await;
    for i in 30..60 {
        cluster.must_put(1, "t", &format!("k{i}"), "v").await;
    }
    let settings = cluster.settings[(lost - 1) as usize].clone();
    for dir in [&settings.node_host_dir, &settings.state_machine_dir] {
        std::fs::remove_dir_all(dir).expect("lose the disk");
    }
    cluster.wait_leader("t").await;
    cluster.restart(lost).await;
    let shard = cluster.node(1).tables().get(b"t".as_slice()).copied();
    cluster.wait_table(lost, "t", shard).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let here = cluster
            .read_all(lost, "t", std::time::Duration::from_secs(2))
            .await;
        if here.as_ref().is_ok_and(|pairs| pairs.len() == 60) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the emptied node holds {:?} pairs",
            here.map(|pairs| pairs.len())
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // And it takes part again: a write through it lands everywhere.
    cluster.must_put(lost, "t", "after", "rejoin").await;
    assert_eq!(cluster.must_read_all(1, "t").await.len(), 61);
}
