//! Linearizable reads on a leader that was paused and resumed.

use std::time::{Duration, Instant};

use crate::harness::{proxied_cluster, TIMEOUT};

/// The pause-leader run of `cargo xtask jepsen` that served a stale read,
/// replayed step by step with the link proxies standing in for the pause.
///
/// The old leader L sent entry X to both followers, which acknowledged it
/// while L was "paused" (their answers held in L's links). The followers
/// elect a new leader and acknowledge a newer value. A linearizable read
/// reaches L, which still believes it leads. Then the old answers arrive:
/// first F1's, so L commits X and sends F2 an entry-less request carrying
/// the new commit index; then F2's answer to X. openraft credited that old
/// answer with the entry-less request's send time, later than the read, so
/// L counted a quorum that had left it and served its own stale state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resumed_leader_serves_no_read_on_answers_older_than_the_read() {
    let (proxies, cluster, old_leader, _) = proxied_cluster().await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != old_leader).collect();
    let (f1, f2) = (followers[0], followers[1]);
    cluster.must_put(old_leader, "t", "k", "old").await;

    let last_log_index = |id: u64| cluster.node(id).status(b"t").expect("group").last_log_index;
    // Both followers hold L's whole log, so both replication streams are open.
    wait_for(
        || {
            [f1, f2]
                .iter()
                .all(|f| last_log_index(*f) == last_log_index(old_leader))
        },
        "the followers to catch up",
    )
    .await;
    let before = last_log_index(old_leader);
    // L's appends reach the followers; their answers wait in the links.
    for follower in [f1, f2] {
        proxies[&(old_leader, follower)].hold_replies(true);
    }
    let stuck_write = {
        let node = cluster.node(old_leader).clone();
        tokio::spawn(async move {
            let command = crate::scenarios::put_command("x");
            node.write(b"t", &command, Duration::from_secs(10)).await
        })
    };
    wait_for(|| last_log_index(old_leader) > before, "L to append X").await;
    let x = last_log_index(old_leader);
    wait_for(
        || [f1, f2].iter().all(|f| last_log_index(*f) >= x),
        &format!("the followers to take entry X (L at {x})"),
    )
    .await;

    // "Pause" L: nothing of it, or to it, moves.
    for follower in [f1, f2] {
        proxies[&(old_leader, follower)].hold_requests(true);
        proxies[&(follower, old_leader)].hold_requests(true);
        proxies[&(follower, old_leader)].hold_replies(true);
    }
    wait_for(
        || {
            let leader = cluster.node(f1).status(b"t").expect("group").leader;
            leader.is_some() && leader != Some(old_leader)
        },
        "the followers to elect a new leader",
    )
    .await;
    let new_leader = cluster
        .node(f1)
        .status(b"t")
        .expect("group")
        .leader
        .expect("leader");
    cluster.must_put(new_leader, "t", "k", "new").await;

    // A read reaches L, which still believes it leads.
    let read = {
        let cluster = &cluster;
        async move { cluster.read_all(old_leader, "t", TIMEOUT).await }
    };
    let replay = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        // F1's old answer: L commits X and sends F2 an entry-less request.
        proxies[&(old_leader, f1)].hold_replies(false);
        tokio::time::sleep(Duration::from_millis(60)).await;
        // F2's old answer, which also covers that entry-less request.
        proxies[&(old_leader, f2)].hold_replies(false);
        tokio::time::sleep(Duration::from_millis(60)).await;
        for (_, proxy) in proxies.iter() {
            proxy.hold_requests(false);
            proxy.hold_replies(false);
        }
    };
    let (read, ()) = tokio::join!(read, replay);
    let pairs = read.expect("the read is answered once the pause is over");
    assert_eq!(
        pairs.get("k").map(String::as_str),
        Some("new"),
        "node {old_leader}, the old leader, served a read older than a write \
         acknowledged through node {new_leader} before the read began"
    );
    let _ = stuck_write.await;
}

async fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
