//! Reading a table's committed log for follower clusters (`Log.Replicate`)
//! never serves an entry that was not committed.

use std::time::{Duration, Instant};

use regatta::cluster::TableLogRead;

use crate::harness::{proxied_cluster_with, TIMEOUT};
use crate::scenarios::put_command;

/// A leader cut off from the others keeps appending writes nobody
/// commits; the others elect, write on, snapshot and purge past where it
/// was. On its return it installs their snapshot, and openraft truncates
/// its log only when it holds an entry at the snapshot's index: a log that
/// ends short of it keeps its uncommitted entries below the snapshot,
/// under the new applied index, until the purge that follows the install.
/// A reader of the log in between must not take them for committed (found
/// by `cargo xtask jepsen --follower 3`: the leader log a follower followed
/// held writes the cluster never committed; bug record in
/// `conformance/README.md`). Without the fix the reader below caught them
/// in 4 of 9 runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_left_below_an_installed_snapshot_are_not_read_as_committed() {
    const SNAPSHOT_ENTRIES: u64 = 100;
    let (proxies, cluster, old, _) = proxied_cluster_with(SNAPSHOT_ENTRIES).await;
    let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let set_cut = |on: bool| {
        for other in &others {
            proxies[&(old, *other)].cut(on);
            proxies[&(*other, old)].cut(on);
        }
    };
    let committed = cluster.node(old).status(b"t").expect("t").last_log_index;
    set_cut(true);
    // While it still believes it leads, the old leader appends writes
    // that can never commit, up to a little below the index of the second
    // snapshot the others will take.
    let stale_end = 2 * SNAPSHOT_ENTRIES - 12;
    let stale: Vec<_> = (committed + 1..=stale_end)
        .map(|i| {
            let node = cluster.node(old).clone();
            tokio::spawn(async move {
                let command = put_command(&format!("stale-{i}"));
                let _ = node.write(b"t", &command, Duration::from_secs(1)).await;
            })
        })
        .collect();
    for write in stale {
        write.await.expect("join");
    }
    assert_eq!(
        cluster.node(old).status(b"t").expect("t").last_log_index,
        stale_end,
        "the old leader appended its writes"
    );

    // The others elect and write until the new leader has a snapshot past
    // the old log's end and has purged past what the old one committed:
    // the old one catches up only by that snapshot.
    let new = wait_for(|| {
        let leader = cluster.node(others[0]).status(b"t").ok()?.leader?;
        (leader != old).then_some(leader)
    })
    .await;
    // The new leader's committed log from `from`, read while it still holds
    // it: its own purge may pass `from` once its snapshot is taken.
    let from = stale_end - 2;
    let mut committed_entries = Vec::new();
    let mut written = 0;
    let snapshot = loop {
        cluster
            .must_put(new, "t", &format!("k{written}"), "v")
            .await;
        written += 1;
        if let Ok((_, TableLogRead::Entries(entries))) =
            cluster.node(new).read_table_log(b"t", from, 1 << 20)
        {
            if entries.len() > committed_entries.len() {
                committed_entries = entries;
            }
        }
        let status = cluster.node(new).status(b"t").expect("t");
        if let Some(snapshot) = status.snapshot_index {
            if snapshot > stale_end && status.last_purged_index > Some(committed) {
                break snapshot;
            }
        }
        assert!(written < 1_000, "the new leader never purged");
    };

    // A follower cluster reads the old node's log all along; so does this
    // reader, from the heal until the old node has caught up.
    let reads = {
        let node = cluster.node(old).clone();
        tokio::spawn(async move {
            let mut reads = Vec::new();
            let deadline = Instant::now() + TIMEOUT;
            while Instant::now() < deadline {
                if let Ok((_, TableLogRead::Entries(entries))) =
                    node.read_table_log(b"t", from, 1 << 20)
                {
                    if !entries.is_empty() {
                        reads.push(entries);
                    }
                }
                if node
                    .status(b"t")
                    .is_ok_and(|status| status.last_purged_index >= Some(from))
                {
                    break;
                }
                tokio::task::yield_now().await;
            }
            reads
        })
    };
    set_cut(false);
    wait_for(|| {
        let status = cluster.node(old).status(b"t").ok()?;
        (status.snapshot_index >= Some(snapshot) && status.leader == Some(new)).then_some(())
    })
    .await;
    let reads = reads.await.expect("join");
    let (_, on_old) = cluster
        .node(old)
        .read_table_log(b"t", from, 1 << 20)
        .expect("read the old leader's log");
    if let Ok((_, TableLogRead::Entries(entries))) =
        cluster.node(new).read_table_log(b"t", from, 1 << 20)
    {
        if entries.len() > committed_entries.len() {
            committed_entries = entries;
        }
    }
    assert!(
        !committed_entries.is_empty(),
        "node {new}'s log from {from} was never read before its purge"
    );
    // Committed entries from `from` are one sequence: any two reads of it
    // agree on their common prefix; an uncommitted entry differs at once.
    let agree = |a: &[_], b: &[_]| a.starts_with(b) || b.starts_with(a);
    for read in &reads {
        assert!(
            agree(&committed_entries, read),
            "node {old} served entries from {from} that were never committed: {read:?}"
        );
    }
    match on_old {
        TableLogRead::Compacted => {}
        TableLogRead::Entries(old_entries) => {
            assert!(
                agree(&committed_entries, &old_entries),
                "node {old} served entries from {from} that were never committed: {old_entries:?}"
            );
        }
        other => panic!("node {old}: {other:?}"),
    }
}

async fn wait_for<T>(mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
