//! Tables created and deleted at run time (the Tables API's cluster calls,
//! `Node::create_new_table` / `Node::delete_existing_table`) on a 3-node
//! cluster: every node follows, a node that was down converges, and of two
//! racing creations of one name exactly one wins.

use regatta::cluster::Error;

use crate::harness::{Cluster, TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_created_on_one_node_serves_on_all_and_deleted_is_gone_from_all() {
    let cluster = Cluster::start(3, 0).await;
    let shard = cluster
        .node(2)
        .create_new_table(b"live", TIMEOUT)
        .await
        .expect("create");
    for id in 1..=3 {
        cluster.wait_table(id, "live", Some(shard)).await;
    }
    cluster.wait_leader("live").await;
    cluster.must_put(3, "live", "k", "v").await;

    cluster
        .node(1)
        .delete_existing_table(b"live", TIMEOUT)
        .await
        .expect("delete");
    for id in 1..=3 {
        cluster.wait_table(id, "live", None).await;
        // Its data is gone from every node's storage, not only unlisted.
        assert!(
            cluster.node(id).table(b"live").is_err(),
            "node {id} still has the table"
        );
    }
    let again = cluster
        .node(3)
        .delete_existing_table(b"live", TIMEOUT)
        .await;
    assert!(matches!(again, Err(Error::TableNotFound)), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_racing_creations_of_one_name_exactly_one_wins() {
    let cluster = Cluster::start(3, 0).await;
    for round in 0..5 {
        let name = format!("race-{round}");
        let (a, b) = tokio::join!(
            cluster.node(1).create_new_table(name.as_bytes(), TIMEOUT),
            cluster.node(3).create_new_table(name.as_bytes(), TIMEOUT)
        );
        let outcomes = [&a, &b];
        let won: Vec<u64> = outcomes
            .iter()
            .filter_map(|outcome| outcome.as_ref().ok().copied())
            .collect();
        let lost = outcomes
            .iter()
            .filter(|outcome| matches!(outcome, Err(Error::TableExists)))
            .count();
        assert_eq!((won.len(), lost), (1, 1), "{name}: {a:?} {b:?}");
        for id in 1..=3 {
            cluster.wait_table(id, &name, Some(won[0])).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_down_during_create_and_delete_converges_when_it_returns() {
    let mut cluster = Cluster::start(3, 0).await;
    let doomed = cluster
        .node(1)
        .create_new_table(b"doomed", TIMEOUT)
        .await
        .expect("create doomed");
    cluster.wait_table(3, "doomed", Some(doomed)).await;
    cluster.stop(3).await;
    // Node 3 may have led the catalogue: a creation forwarded to it as it
    // stopped has an unknown outcome, which `create_new_table` reports
    // rather than guesses (seen once in CI). Wait for the next leader.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !(cluster.node(1).leads_metadata() || cluster.node(2).leads_metadata()) {
        assert!(
            std::time::Instant::now() < deadline,
            "no new catalogue leader"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let late = cluster
        .node(1)
        .create_new_table(b"late", TIMEOUT)
        .await
        .expect("create late");
    cluster
        .node(2)
        .delete_existing_table(b"doomed", TIMEOUT)
        .await
        .expect("delete doomed");
    // The name again, while node 3 is still away: a new, empty table.
    let reborn = cluster
        .node(2)
        .create_new_table(b"doomed", TIMEOUT)
        .await
        .expect("create doomed again");
    assert!(reborn > doomed);
    cluster.restart(3).await;
    cluster.wait_table(3, "late", Some(late)).await;
    cluster.wait_table(3, "doomed", Some(reborn)).await;
    cluster.wait_leader("doomed").await;
    assert!(cluster.must_read_all(3, "doomed").await.is_empty());
}
