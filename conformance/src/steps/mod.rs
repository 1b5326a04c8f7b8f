//! The step library: plain-language steps over any [`crate::backend`].
//!
//! Nodes are named in steps as `node 2`, `any node` (round robin over the
//! running nodes, so requests spread over the cluster), `the leader` or
//! `a follower` (of the table in the step), or by a role an earlier step gave
//! them: `the old leader`, `the paused node`, `the cut-off node`, `the
//! stopped node`, `the killed node`; `another node` is a running node with
//! none of those roles.

pub mod acknowledged;
pub mod background;
pub mod backup_tool;
pub mod cluster;
pub mod cluster_api;
pub mod faults;
pub mod follower;
pub mod follower_writes;
pub mod headers;
pub mod iterate;
pub mod kv;
pub mod maintenance;
pub mod membership;
pub mod observe;
pub mod recovery;
pub mod replication;
pub mod request;
pub mod tables_api;
pub mod tls;
pub mod txn;
pub mod wire;
pub mod writers;

use anyhow::{bail, Context, Result};
use regatta_proto::mvcc::v1::KeyValue;

use crate::values;
use crate::world::RegattaWorld;

/// cucumber shows a failed step's error with `Display`, which for anyhow is
/// the outermost context only; this folds the whole chain into the message.
pub fn flatten(err: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!("{err:#}")
}

/// Resolves a node reference (see the module doc) for `table`.
pub async fn node(world: &mut RegattaWorld, text: &str, table: &str) -> Result<usize> {
    let text = text.trim();
    if let Some(number) = text.strip_prefix("node ") {
        let n: usize = number.parse().with_context(|| format!("bad node {text}"))?;
        if n == 0 || n > world.size() {
            bail!("no {text} in a cluster of {}", world.size());
        }
        return Ok(n);
    }
    if let Some(number) = text.strip_prefix("follower node ") {
        let n: usize = number.parse().with_context(|| format!("bad node {text}"))?;
        let size = world.follower.as_ref().map_or(0, |f| f.size());
        if n == 0 || n > size {
            bail!("no {text} in a follower cluster of {size}");
        }
        return Ok(crate::world::FOLLOWER_NODES + n);
    }
    match text {
        "any node" => world.any_node(),
        "any follower node" => {
            let size = world.follower.as_ref().map_or(0, |f| f.size());
            if size == 0 {
                bail!("the scenario has no follower cluster");
            }
            Ok(crate::world::FOLLOWER_NODES + rand::random_range(1..=size))
        }
        "the leader" => world.leader_of(table).await,
        "a follower" => {
            let leader = world.leader_of(table).await?;
            world
                .live_nodes()
                .into_iter()
                .find(|n| *n != leader)
                .context("no running follower")
        }
        "another node" => {
            let marked: Vec<usize> = world.marked.values().copied().collect();
            let candidates: Vec<usize> = world
                .live_nodes()
                .into_iter()
                .filter(|n| !marked.contains(n))
                .collect();
            if candidates.is_empty() {
                bail!("every running node has a role");
            }
            let pick = rand::random_range(0..candidates.len());
            Ok(candidates[pick])
        }
        role => world
            .marked
            .get(role)
            .copied()
            .with_context(|| format!("no node is {role} yet")),
    }
}

/// Pairs as scenarios write them: `a=1, b=2`, or `(none)`.
pub fn parse_pairs(text: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let text = text.trim();
    if text == "(none)" || text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(", ")
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| format!("{pair} is not key=value"))?;
            Ok((values::parse(key)?, values::parse(value)?))
        })
        .collect()
}

/// The inverse of [`parse_pairs`].
pub fn show_pairs(kvs: &[KeyValue]) -> String {
    if kvs.is_empty() {
        return "(none)".into();
    }
    kvs.iter()
        .map(|kv| format!("{}={}", values::show(&kv.key), values::show(&kv.value)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keys as scenarios write them: `a, b`, or `(none)`.
pub fn parse_keys(text: &str) -> Result<Vec<Vec<u8>>> {
    let text = text.trim();
    if text == "(none)" || text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(", ").map(values::parse).collect()
}

pub fn expect_pairs(kvs: &[KeyValue], expected: &str) -> Result<()> {
    let wanted = parse_pairs(expected)?;
    let got: Vec<(Vec<u8>, Vec<u8>)> = kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    if got != wanted {
        bail!("expected pairs {expected}, got {}", show_pairs(kvs));
    }
    Ok(())
}
