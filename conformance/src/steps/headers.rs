//! Response headers and revisions.

use anyhow::{bail, Context, Result};
use cucumber::then;
use regatta_proto::regatta::v1::ResponseHeader;

use crate::values;
use crate::world::RegattaWorld;

fn header(world: &RegattaWorld) -> Result<ResponseHeader> {
    world
        .last_ok()?
        .header()
        .cloned()
        .context("the answer has no header")
}

fn remembered(world: &RegattaWorld, name: &str) -> Result<i64> {
    world
        .remembered
        .get(name)
        .copied()
        .with_context(|| format!("nothing remembered as {name}"))
}

#[then(regex = r#"^the revision is remembered as "(\w+)"$"#)]
fn remember_revision(world: &mut RegattaWorld, name: String) -> Result<()> {
    let revision = header(world)?.revision as i64;
    world.remembered.insert(name, revision);
    Ok(())
}

#[then(regex = r#"^the revision is (greater than|equal to|less than) "(\w+)"$"#)]
fn compare_revision(world: &mut RegattaWorld, relation: String, name: String) -> Result<()> {
    let revision = header(world)?.revision as i64;
    let other = remembered(world, &name)?;
    let holds = match relation.as_str() {
        "greater than" => revision > other,
        "less than" => revision < other,
        _ => revision == other,
    };
    if !holds {
        bail!("revision {revision} is not {relation} {name} ({other})");
    }
    Ok(())
}

#[then(regex = r#"^the pair "(.*)" was created at "(\w+)" and modified at "(\w+)"$"#)]
fn pair_revisions(
    world: &mut RegattaWorld,
    key: String,
    created: String,
    modified: String,
) -> Result<()> {
    let key = values::parse(&key)?;
    let (created_at, modified_at) = (remembered(world, &created)?, remembered(world, &modified)?);
    let response = world.last_range()?;
    let kv = response
        .kvs
        .iter()
        .find(|kv| kv.key == key)
        .with_context(|| format!("no pair {}", values::show(&key)))?;
    if kv.create_revision != created_at || kv.mod_revision != modified_at {
        bail!(
            "{}: create_revision {} mod_revision {}, expected {created} ({created_at}) and {modified} ({modified_at})",
            values::show(&key),
            kv.create_revision,
            kv.mod_revision
        );
    }
    Ok(())
}

/// shard_id, replica_id, raft_term and raft_leader_id are all filled, on
/// any node, leader or not.
#[then(regex = r"^the header is complete and names the answering node as replica$")]
fn header_complete(world: &mut RegattaWorld) -> Result<()> {
    let header = header(world)?;
    // Follower-cluster nodes are numbered from FOLLOWER_NODES + 1 in steps.
    let node = (world.last_node % crate::world::FOLLOWER_NODES) as u64;
    if header.shard_id < 10_001 {
        bail!(
            "shard_id {} (shards are numbered from 10001)",
            header.shard_id
        );
    }
    if header.replica_id != node {
        bail!("replica_id {} from node {node}", header.replica_id);
    }
    if header.raft_term == 0 {
        bail!("raft_term is 0");
    }
    if header.raft_leader_id == 0 || header.raft_leader_id > world.size() as u64 {
        bail!(
            "raft_leader_id {} in a cluster of {}",
            header.raft_leader_id,
            world.size()
        );
    }
    Ok(())
}

#[then(regex = r#"^the shard id is remembered as "(\w+)"$"#)]
fn remember_shard(world: &mut RegattaWorld, name: String) -> Result<()> {
    let shard = header(world)?.shard_id as i64;
    world.remembered.insert(name, shard);
    Ok(())
}

#[then(regex = r#"^the shard id (equals|differs from|is greater than) "(\w+)"$"#)]
fn compare_shard(world: &mut RegattaWorld, relation: String, name: String) -> Result<()> {
    let shard = header(world)?.shard_id as i64;
    let other = remembered(world, &name)?;
    let holds = match relation.as_str() {
        "equals" => shard == other,
        "differs from" => shard != other,
        _ => shard > other,
    };
    if !holds {
        bail!("shard id {shard} {relation} {name} ({other}) does not hold");
    }
    Ok(())
}
