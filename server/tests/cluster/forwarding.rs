//! Writes a node forwards to its leader: applied once, or reported as of
//! unknown outcome, never applied twice.

use std::time::{Duration, Instant};

use regatta::cluster::Error;
use regatta::storage::RangeQuery;

use crate::harness::{proxied_cluster, Cluster, TIMEOUT};
use crate::scenarios::put_command;

/// How the answer to a forwarded write goes missing.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// The connection is closed once the leader applied the write.
    Reset,
    /// Nothing more comes back, PING acknowledgements included, until the
    /// forwarding node's HTTP/2 keep-alive gives up (5 s interval, 5 s
    /// timeout): tonic answers that with `Unavailable`, as for a refused
    /// connection, and the old code sent the write again.
    KeepAliveTimeout,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_write_whose_connection_resets_is_applied_once_and_reported_unknown() {
    forwarded_write_loses_its_answer(Loss::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_write_whose_keep_alive_times_out_is_applied_once_and_reported_unknown() {
    forwarded_write_loses_its_answer(Loss::KeepAliveTimeout).await;
}

/// The leader takes a forwarded Put and applies it; its answer never comes
/// back. The forwarding node must not send it again: the Put is applied
/// once and the caller hears "write outcome unknown" (Unavailable), which
/// leaves the retry to it.
async fn forwarded_write_loses_its_answer(loss: Loss) {
    let (proxies, cluster, leader, via) = proxied_cluster().await;

    let link = &proxies[&(via, leader)];
    link.swallow_replies(true);
    let put = {
        let node = cluster.node(via).clone();
        tokio::spawn(async move {
            let command = put_command("once");
            // Longer than the keep-alive needs to give up, so that a retry
            // would have time to apply the write again.
            node.write(b"t", &command, Duration::from_secs(30)).await
        })
    };
    // The leader took the request: the key is there.
    let deadline = Instant::now() + TIMEOUT;
    while local_pair(&cluster, leader, "once").is_none() {
        assert!(
            Instant::now() < deadline,
            "the leader never applied the put"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Loss::Reset = loss {
        link.drop_connections();
    }
    let outcome = put.await.expect("join");
    link.swallow_replies(false);
    match &outcome {
        Err(Error::Unavailable(reason)) => assert!(
            reason.starts_with("write outcome unknown"),
            "{loss:?}: the caller is told the outcome is unknown: {reason}"
        ),
        other => panic!("{loss:?}: expected Unavailable \"write outcome unknown\", got {other:?}"),
    }
    // Applied once: a second apply would move mod_revision past create_revision.
    cluster.must_read_all(leader, "t").await;
    let (create, modified) = local_pair(&cluster, leader, "once").expect("the key");
    assert_eq!(
        create, modified,
        "{loss:?}: the put was applied once (create_revision {create}, mod_revision {modified})"
    );
    // And the link works again for the next write.
    cluster.must_put(via, "t", "after", "v").await;
}

/// A leader that takes a forwarded write and then goes silent (paused, or
/// cut off) answers nothing until the forwarding node's keep-alive gives up
/// or the caller's deadline passes. Once the forwarding node knows another
/// leader, it stops waiting and answers "write outcome unknown" at once, so
/// clients move on to the new leader instead of stalling a whole timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_forwarded_to_a_leader_that_went_silent_is_answered_once_another_leads() {
    let (proxies, cluster, leader, via) = proxied_cluster().await;

    proxies[&(via, leader)].swallow_replies(true);
    let put = {
        let node = cluster.node(via).clone();
        tokio::spawn(async move {
            node.write(b"t", &put_command("silent"), Duration::from_secs(30))
                .await
        })
    };
    let deadline = Instant::now() + TIMEOUT;
    while local_pair(&cluster, leader, "silent").is_none() {
        assert!(
            Instant::now() < deadline,
            "the leader never applied the put"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The old leader is cut off from the others, alive and silent: the
    // two others elect a new leader, and `via` hears of it.
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for other in &others {
        proxies[&(leader, *other)].cut(true);
        proxies[&(*other, leader)].cut(true);
    }
    let outcome = put.await.expect("join");
    match &outcome {
        Err(Error::Unavailable(reason)) => assert!(
            reason.starts_with("write outcome unknown")
                && reason.contains(&format!("node {leader} was no longer the leader")),
            "answered because another node leads, not by a timeout: {reason}"
        ),
        other => panic!("expected Unavailable \"write outcome unknown\", got {other:?}"),
    }
    // Writes through `via` go on to the new leader while the old one is
    // still silent: the call it never answers holds nothing up.
    // The old leader's keep-alive would end that call after 10 s; the
    // write must not wait for it (it did, 9.5 s, before the call was
    // dropped with its last waiter).
    let after = cluster
        .node(via)
        .write(b"t", &put_command("while-silent"), Duration::from_secs(5))
        .await;
    assert!(after.is_ok(), "a write to the new leader: {after:?}");
    for other in &others {
        proxies[&(leader, *other)].cut(false);
        proxies[&(*other, leader)].cut(false);
        proxies[&(*other, leader)].swallow_replies(false);
    }
    let now_leading = cluster.wait_leader("t").await;
    assert_ne!(now_leading, leader);
    cluster.must_put(via, "t", "after", "v").await;
}

/// Writes a follower forwards while earlier ones are still unanswered
/// queue and go to the leader together; each is applied once and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarded_writes_queued_together_go_in_few_calls_and_each_is_applied_once() {
    const WRITES: u64 = 64;
    let (proxies, cluster, leader, via) = proxied_cluster().await;
    let (writes_before, calls_before) = cluster.node(via).forward_stats();

    // The leader gets nothing from `via` for now: the calls in flight stay
    // unanswered and every later write queues behind them.
    let link = &proxies[&(via, leader)];
    link.hold_requests(true);
    let puts: Vec<_> = (0..WRITES)
        .map(|i| {
            let node = cluster.node(via).clone();
            tokio::spawn(async move {
                node.write(
                    b"t",
                    &put_command(&format!("batched-{i}")),
                    Duration::from_secs(30),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    link.hold_requests(false);
    for put in puts {
        let written = put.await.expect("join");
        assert!(
            written.is_ok(),
            "every forwarded write is answered: {written:?}"
        );
    }

    let (writes, calls) = cluster.node(via).forward_stats();
    assert_eq!(writes - writes_before, WRITES, "every write was forwarded");
    // One call in flight per table; everything queued behind it goes in the
    // next call (a few calls in all, whatever the timing). Without batching this is one call per write.
    assert!(
        calls - calls_before <= 8,
        "{WRITES} writes went in {} calls",
        calls - calls_before
    );
    cluster.must_read_all(leader, "t").await;
    for i in 0..WRITES {
        let (create, modified) =
            local_pair(&cluster, leader, &format!("batched-{i}")).expect("the key");
        assert_eq!(create, modified, "batched-{i} was applied once");
    }
}

/// `(create_revision, mod_revision)` of `key` in node `id`'s copy of "t".
fn local_pair(cluster: &Cluster, id: u64, key: &str) -> Option<(i64, i64)> {
    let data = cluster.node(id).table(b"t").ok()?;
    let answer = data
        .range(&RangeQuery {
            key: key.as_bytes().to_vec(),
            ..RangeQuery::default()
        })
        .ok()?;
    answer
        .value
        .kvs
        .first()
        .map(|kv| (kv.create_revision, kv.mod_revision))
}
