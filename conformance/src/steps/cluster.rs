//! Steps that bring up a cluster and look at its shape.

use anyhow::{bail, Context, Result};
use cucumber::given;
use regatta_proto::regatta::v1::DeleteRangeRequest;

use std::sync::Arc;

use super::flatten;
use crate::backend::{ClusterSpec, ClusterTls, START_TIMEOUT};
use crate::tls::{Authority, ClientTls};
use crate::world::{backend, RegattaWorld};

#[given(regex = r#"^a leader cluster of (\d+) nodes? with tables? "([^"]*)"$"#)]
async fn leader_cluster(world: &mut RegattaWorld, nodes: usize, tables: String) -> Result<()> {
    start(world, nodes, &tables, "").await.map_err(flatten)
}

#[given(regex = r#"^a leader cluster of (\d+) nodes? with tables? "([^"]*)" and flags "([^"]*)"$"#)]
async fn leader_cluster_with_flags(
    world: &mut RegattaWorld,
    nodes: usize,
    tables: String,
    flags: String,
) -> Result<()> {
    start(world, nodes, &tables, &flags).await.map_err(flatten)
}

#[given(
    regex = r#"^a leader cluster of (\d+) nodes? with tables? "([^"]*)" serving its KV API on a Unix socket$"#
)]
async fn leader_cluster_on_a_socket(
    world: &mut RegattaWorld,
    nodes: usize,
    tables: String,
) -> Result<()> {
    let spec = ClusterSpec {
        api_socket: true,
        ..spec(nodes, &tables, "")
    };
    start_spec(world, spec).await.map_err(flatten)
}

#[given(regex = r#"^a fresh leader cluster of (\d+) nodes? with tables? "([^"]*)" replacing it$"#)]
async fn fresh_leader_cluster(
    world: &mut RegattaWorld,
    nodes: usize,
    tables: String,
) -> Result<()> {
    if let Some(mut follower) = world.follower.take() {
        follower.destroy().await;
    }
    if let Some(mut cluster) = world.cluster.take() {
        cluster.destroy().await;
    }
    world.forget_all_clients();
    world.down.clear();
    world.marked.clear();
    start(world, nodes, &tables, "").await.map_err(flatten)
}

#[given(
    regex = r#"^a leader cluster of (\d+) nodes? with tables? "([^"]*)" serving TLS on every listener$"#
)]
async fn leader_cluster_tls(world: &mut RegattaWorld, nodes: usize, tables: String) -> Result<()> {
    let spec = ClusterSpec {
        tls: Some(serve_tls(world)?),
        ..spec(nodes, &tables, "")
    };
    start_spec(world, spec).await.map_err(flatten)
}

/// TLS on every listener of a leader cluster: a new authority for the
/// scenario, and the suite's client certificate of it (the replication
/// listener asks for one; the others do not, and accept it).
fn serve_tls(world: &mut RegattaWorld) -> Result<ClusterTls> {
    let authority = Arc::new(Authority::new()?);
    let identity = authority.issue(&["conformance-client".to_string()])?;
    world.tls = Some(ClientTls::of_authority(&authority, Some(identity)));
    world.authority = Some(authority.clone());
    Ok(ClusterTls {
        authority,
        client_certificate: true,
    })
}

fn spec(nodes: usize, tables: &str, flags: &str) -> ClusterSpec {
    ClusterSpec {
        name: RegattaWorld::scenario_name(),
        nodes,
        tables: tables.split(',').map(|t| t.trim().to_string()).collect(),
        extra_args: flags.split_whitespace().map(String::from).collect(),
        follow: None,
        api_socket: false,
        tls: None,
    }
}

async fn start(world: &mut RegattaWorld, nodes: usize, tables: &str, flags: &str) -> Result<()> {
    start_spec(world, spec(nodes, tables, flags)).await
}

async fn start_spec(world: &mut RegattaWorld, mut spec: ClusterSpec) -> Result<()> {
    if spec.tls.is_none() && crate::template::template().tls.serve {
        // A server that only serves TLS ([tls] serve of the server template).
        spec.tls = Some(serve_tls(world)?);
    }
    let nodes = spec.nodes;
    let backend = backend()?;
    let cluster = tokio::time::timeout(START_TIMEOUT, backend.start_cluster(&spec))
        .await
        .context("starting the cluster timed out")??;
    let external = cluster.fault_support().is_some();
    world.cluster = Some(cluster);
    world.spec = Some(spec.clone());
    for n in 1..=nodes {
        world.wait_serving(n, START_TIMEOUT).await?;
    }
    for n in 1..=nodes {
        world.wait_linearizable(n, START_TIMEOUT).await?;
    }
    // The report names the server's version (once per run).
    crate::report::note_version(world.api_channel(1)?).await;
    if external {
        // Someone else's cluster: start every scenario from empty tables.
        for table in &spec.tables {
            let mut client = world.client(1)?;
            client
                .delete_range(DeleteRangeRequest {
                    table: table.clone().into_bytes(),
                    key: vec![0],
                    range_end: vec![0],
                    ..DeleteRangeRequest::default()
                })
                .await
                .with_context(|| format!("emptying table {table}"))?;
        }
    }
    Ok(())
}

#[cucumber::then(regex = r#"^every node names the same leader and term for "([^"]*)"$"#)]
async fn same_leader(world: &mut RegattaWorld, table: String) -> Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut seen = Vec::new();
        for n in world.live_nodes() {
            let request = regatta_proto::regatta::v1::RangeRequest {
                table: table.clone().into_bytes(),
                key: vec![0],
                ..Default::default()
            };
            let header = world
                .range(n, request)
                .await
                .map_err(|s| anyhow::anyhow!("node {n}: {s}"))?
                .header
                .context("no header")?;
            seen.push((header.raft_leader_id, header.raft_term));
        }
        if seen.windows(2).all(|w| w[0] == w[1]) && seen[0].0 != 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("nodes disagree on (leader, term): {seen:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[cucumber::then(regex = r#"^within (\d+) seconds every node serves table "([^"]*)"$"#)]
async fn serves_table(world: &mut RegattaWorld, secs: u64, table: String) -> Result<()> {
    let within = std::time::Duration::from_secs(secs);
    for n in world.live_nodes() {
        world.wait_table(n, &table, within, true, false).await?;
    }
    Ok(())
}

#[cucumber::then(
    regex = r#"^within (\d+) seconds a range over "([^"]*)" on every node fails with (\w+) "(.*)"$"#
)]
async fn range_fails_everywhere(
    world: &mut RegattaWorld,
    secs: u64,
    table: String,
    code: String,
    message: String,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    for n in world.live_nodes() {
        loop {
            let request = regatta_proto::regatta::v1::RangeRequest {
                table: table.clone().into_bytes(),
                key: vec![0],
                ..Default::default()
            };
            let outcome = world.range(n, request).await;
            let last = match outcome {
                Err(status)
                    if format!("{:?}", status.code()) == code && status.message() == message =>
                {
                    break
                }
                other => other,
            };
            if tokio::time::Instant::now() > deadline {
                bail!("node {n}: expected {code} {message:?}, got {last:?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
