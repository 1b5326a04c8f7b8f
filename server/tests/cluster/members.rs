//! The Cluster API's MemberList at the cluster layer (`Node::members`): the
//! members come from the Raft membership, each node's name and client
//! address from its liveness beat, and a stopped node stays listed.

use std::time::{Duration, Instant};

use crate::harness::{Cluster, TIMEOUT};

/// (id, name, client address) of a member; its Raft address is checked
/// to be set (in this harness peers dial each other through proxies, so
/// the address in the membership is the initializing node's route).
type Seen = (u64, String, Option<String>);

fn expected(id: u64) -> Seen {
    (
        id,
        format!("node-{id}"),
        Some(format!("http://client-{id}.test:8443")),
    )
}

async fn wait_members(cluster: &Cluster, on: u64, want: &[Seen]) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let listed = cluster.node(on).members();
        assert!(listed.iter().all(|m| !m.peer_url.is_empty()), "{listed:?}");
        let members: Vec<Seen> = listed
            .into_iter()
            .map(|m| (m.id, m.name, m.client_url))
            .collect();
        if members == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members on node {on}: {members:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_lists_every_member_with_its_name_and_addresses() {
    let mut cluster = Cluster::start(3, 0).await;
    let want: Vec<Seen> = (1..=3).map(expected).collect();
    for on in 1..=3 {
        wait_members(&cluster, on, &want).await;
    }
    // A stopped node is still a member, as last heard of.
    cluster.stop(3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for on in 1..=2 {
        wait_members(&cluster, on, &want).await;
    }
}
