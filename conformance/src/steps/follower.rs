//! Follower clusters (`features/replication.feature`, `docs/replication.md`): a second cluster that
//! copies the scenario's leader cluster. Its nodes are `follower node N` and
//! `any follower node` in the other steps.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use cucumber::{given, then};
use regatta_proto::regatta::v1::RangeRequest;

use super::kv::wait_for_value;
use crate::backend::{ClusterSpec, ClusterTls, START_TIMEOUT};
use crate::values;
use crate::world::{backend, RegattaWorld, FOLLOWER_NODES};

#[given(regex = r"^a follower cluster of (\d+) nodes? following it$")]
async fn follower_cluster(world: &mut RegattaWorld, nodes: usize) -> Result<()> {
    start(world, nodes, "", None).await.map_err(super::flatten)
}

/// TLS on the follower's own listeners and to the leader cluster, whose
/// replication listener asks for a client certificate of the scenario's
/// authority. Without one, the follower waits only for its own API: it
/// gets no table.
#[given(
    regex = r"^a follower cluster of (\d+) nodes? serving TLS following it, (with|without) a client certificate$"
)]
async fn follower_cluster_tls(world: &mut RegattaWorld, nodes: usize, how: String) -> Result<()> {
    let authority = world
        .authority
        .clone()
        .context("the leader cluster does not serve TLS")?;
    let tls = ClusterTls {
        authority,
        client_certificate: how == "with",
    };
    start(world, nodes, "", Some(tls))
        .await
        .map_err(super::flatten)
}

/// With server flags of the follower nodes' own, e.g.
/// `--replication.forward-writes=false`.
#[given(regex = r#"^a follower cluster of (\d+) nodes? with flags "([^"]*)" following it$"#)]
async fn follower_cluster_with_flags(
    world: &mut RegattaWorld,
    nodes: usize,
    flags: String,
) -> Result<()> {
    start(world, nodes, &flags, None)
        .await
        .map_err(super::flatten)
}

async fn start(
    world: &mut RegattaWorld,
    nodes: usize,
    flags: &str,
    mut tls: Option<ClusterTls>,
) -> Result<()> {
    if tls.is_none() && crate::template::template().tls.serve {
        // [tls] serve of the server template: as the leader cluster does.
        tls = Some(ClusterTls {
            authority: world
                .authority
                .clone()
                .context("the leader cluster does not serve TLS")?,
            client_certificate: true,
        });
    }
    let refused = tls.as_ref().is_some_and(|tls| !tls.client_certificate);
    let leader_spec = world.spec.clone().context("no leader cluster yet")?;
    let target = world
        .cluster()?
        .replication_target(1)
        .context("this backend cannot start a follower cluster")?;
    let spec = ClusterSpec {
        name: format!("{}f", RegattaWorld::scenario_name()),
        nodes,
        tables: leader_spec.tables.clone(),
        extra_args: flags.split_whitespace().map(String::from).collect(),
        follow: Some(target),
        api_socket: false,
        tls,
    };
    let cluster = tokio::time::timeout(START_TIMEOUT, backend()?.start_cluster(&spec))
        .await
        .context("starting the follower cluster timed out")??;
    world.follower = Some(cluster);
    for n in 1..=nodes {
        if refused {
            world
                .wait_serving(FOLLOWER_NODES + n, START_TIMEOUT)
                .await?;
            continue;
        }
        for table in &spec.tables {
            world
                .wait_table(FOLLOWER_NODES + n, table, START_TIMEOUT, false, false)
                .await?;
        }
    }
    if !refused {
        // Every follower node's copy current: a node whose containers
        // started late runs its groups seconds after the others, and a
        // write through it would wait for its copy to catch up first
        // (bug record, 2026-12-06).
        let leader_node = world
            .live_nodes()
            .into_iter()
            .find(|n| *n <= FOLLOWER_NODES)
            .context("no node of the leader cluster runs")?;
        for table in &spec.tables {
            super::recovery::followers_hold_pairs_of(world, table, leader_node, START_TIMEOUT)
                .await?;
        }
    }
    Ok(())
}

/// The step node numbers of the follower cluster's nodes.
pub(crate) fn follower_nodes(world: &RegattaWorld) -> Vec<usize> {
    let size = world.follower.as_ref().map_or(0, |f| f.size());
    (1..=size).map(|n| FOLLOWER_NODES + n).collect()
}

#[then(regex = r#"^every follower node eventually holds "(.*)" = "(.*)" in "([^"]*)"$"#)]
async fn follower_holds(
    world: &mut RegattaWorld,
    key: String,
    value: String,
    table: String,
) -> Result<()> {
    let (key, value) = (values::parse(&key)?, values::parse(&value)?);
    for n in follower_nodes(world) {
        wait_for_value(
            world,
            n,
            &table,
            &key,
            Some(&value),
            Duration::from_secs(30),
        )
        .await?;
    }
    Ok(())
}

#[then(regex = r#"^no follower node holds "(.*)" in "([^"]*)"$"#)]
async fn follower_lacks(world: &mut RegattaWorld, key: String, table: String) -> Result<()> {
    let key = values::parse(&key)?;
    for n in follower_nodes(world) {
        wait_for_value(world, n, &table, &key, None, Duration::from_secs(30)).await?;
    }
    Ok(())
}

#[then(regex = r#"^within (\d+) seconds every follower node serves table "([^"]*)"$"#)]
async fn follower_serves(world: &mut RegattaWorld, secs: u64, table: String) -> Result<()> {
    for n in follower_nodes(world) {
        world
            .wait_table(n, &table, Duration::from_secs(secs), false, false)
            .await?;
    }
    Ok(())
}

#[then(regex = r#"^within (\d+) seconds no follower node serves table "([^"]*)"$"#)]
async fn follower_dropped(world: &mut RegattaWorld, secs: u64, table: String) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    for n in follower_nodes(world) {
        loop {
            let request = RangeRequest {
                table: table.as_bytes().to_vec(),
                key: vec![0],
                ..Default::default()
            };
            match world.range(n, request).await {
                Err(status) if status.code() == tonic::Code::NotFound => break,
                other if tokio::time::Instant::now() > deadline => {
                    bail!(
                        "follower node {} still serves {table}: {other:?}",
                        n - FOLLOWER_NODES
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}
