//! Node faults: kill, stop, restart, pause, resume, cut off and heal nodes
//! of the leader cluster (and kill or restart a follower-cluster node), and
//! the roles those steps give nodes (`the killed node`, `the old leader`,
//! ...) for later steps to name them by. What the cluster must still
//! promise under these faults is checked in [`super::acknowledged`],
//! [`super::background`] and [`super::writers`].

use std::time::Duration;

use anyhow::{bail, Context, Result};
use cucumber::when;

use super::node;
use crate::world::RegattaWorld;

fn role_of(action: &str) -> &'static str {
    match action {
        "killed" => "the killed node",
        "stopped" => "the stopped node",
        "paused" => "the paused node",
        _ => "the cut-off node",
    }
}

async fn apply(world: &mut RegattaWorld, n: usize, action: &str) -> Result<()> {
    apply_fault(world, n, action).await.map_err(super::flatten)
}

async fn apply_fault(world: &mut RegattaWorld, n: usize, action: &str) -> Result<()> {
    if let Some(reason) = world.cluster()?.fault_support() {
        bail!("cannot inject faults: {reason}");
    }
    let cluster = world.cluster_mut()?;
    match action {
        "killed" => cluster.kill(n).await?,
        "stopped" => cluster.stop(n).await?,
        "paused" => cluster.pause(n).await?,
        "cut off from the others" => cluster.isolate(n).await?,
        other => bail!("unknown fault {other}"),
    }
    if matches!(action, "killed" | "stopped") {
        world.down.insert(n);
    }
    world.forget_client(n);
    world.marked.insert(role_of(action).to_string(), n);
    Ok(())
}

#[when(regex = r"^node (\d+) is (killed|stopped|paused|cut off from the others)$")]
async fn fault_node(world: &mut RegattaWorld, n: usize, action: String) -> Result<()> {
    apply(world, n, &action).await
}

#[when(regex = r#"^the leader of "([^"]*)" is (killed|stopped|paused|cut off from the others)$"#)]
async fn fault_leader(world: &mut RegattaWorld, table: String, action: String) -> Result<()> {
    let leader = world.leader_of(&table).await?;
    world.marked.insert("the old leader".into(), leader);
    apply(world, leader, &action).await
}

/// "Killed" means at once (`Cluster::kill_all`: within milliseconds, not a
/// node after another as the nodes notice the first loss); "stopped" is a
/// graceful stop of each in turn.
#[when(regex = r"^every node is (killed|stopped)$")]
async fn kill_all(world: &mut RegattaWorld, action: String) -> Result<()> {
    if action == "stopped" {
        for n in world.live_nodes() {
            apply(world, n, &action).await?;
        }
        return Ok(());
    }
    if let Some(reason) = world.cluster()?.fault_support() {
        bail!("cannot inject faults: {reason}");
    }
    let nodes = world.live_nodes();
    world
        .cluster_mut()?
        .kill_all(&nodes)
        .await
        .map_err(super::flatten)?;
    for n in nodes {
        world.down.insert(n);
        world.forget_client(n);
        world.marked.insert(role_of(&action).to_string(), n);
    }
    Ok(())
}

async fn restart(world: &mut RegattaWorld, n: usize, flags: &[String]) -> Result<()> {
    world
        .cluster_mut()?
        .start(n, flags)
        .await
        .map_err(super::flatten)?;
    world.down.remove(&n);
    world.forget_client(n);
    Ok(())
}

#[when(regex = r"^(node \d+|the killed node|the stopped node|the old leader) is restarted$")]
async fn restart_node(world: &mut RegattaWorld, which: String) -> Result<()> {
    let n = node(world, &which, "").await?;
    restart(world, n, &[]).await?;
    world.wait_serving(n, Duration::from_secs(60)).await
}

#[when(regex = r#"^node (\d+) is restarted with flags "([^"]*)"$"#)]
async fn restart_with_flags(world: &mut RegattaWorld, n: usize, flags: String) -> Result<()> {
    let flags: Vec<String> = flags.split_whitespace().map(String::from).collect();
    restart(world, n, &flags).await?;
    world.wait_serving(n, Duration::from_secs(60)).await
}

#[when(regex = r"^every node is restarted$")]
async fn restart_all(world: &mut RegattaWorld) -> Result<()> {
    let down: Vec<usize> = (1..=world.size())
        .filter(|n| world.down.contains(n))
        .collect();
    for n in &down {
        restart(world, *n, &[]).await?;
    }
    for n in down {
        world.wait_serving(n, Duration::from_secs(60)).await?;
    }
    Ok(())
}

#[when(regex = r"^(node \d+|the paused node) is resumed$")]
async fn resume(world: &mut RegattaWorld, which: String) -> Result<()> {
    let n = node(world, &which, "").await?;
    world.cluster_mut()?.resume(n).await
}

/// A minority of two (a 3|2 split of five nodes): the leader and another
/// node keep their link and lose every other.
#[when(regex = r#"^the leader of "([^"]*)" and one other node are cut off from the others$"#)]
async fn split_leader_and_one(world: &mut RegattaWorld, table: String) -> Result<()> {
    split(world, &table).await.map_err(super::flatten)
}

async fn split(world: &mut RegattaWorld, table: &str) -> Result<()> {
    if let Some(reason) = world.cluster()?.fault_support() {
        bail!("cannot inject faults: {reason}");
    }
    let leader = world.leader_of(table).await?;
    let other = world
        .live_nodes()
        .into_iter()
        .find(|n| *n != leader)
        .context("no other running node")?;
    world.cluster_mut()?.partition(&[leader, other]).await?;
    for (role, n) in [
        ("the cut-off node", leader),
        ("the second cut-off node", other),
    ] {
        world.forget_client(n);
        world.marked.insert(role.to_string(), n);
    }
    Ok(())
}

#[when("the network is healed")]
async fn heal(world: &mut RegattaWorld) -> Result<()> {
    world.cluster_mut()?.heal().await?;
    for role in ["the cut-off node", "the second cut-off node"] {
        if let Some(n) = world.marked.get(role).copied() {
            world.forget_client(n);
        }
    }
    Ok(())
}

#[when(regex = r"^follower node (\d+) is (killed|restarted)$")]
async fn follower_node_fault(world: &mut RegattaWorld, n: usize, action: String) -> Result<()> {
    let follower = world
        .follower
        .as_mut()
        .context("the scenario has no follower cluster")?;
    if action == "killed" {
        follower.kill(n).await.map_err(super::flatten)?;
    } else {
        follower.start(n, &[]).await.map_err(super::flatten)?;
    }
    world.forget_client(crate::world::FOLLOWER_NODES + n);
    Ok(())
}

/// The role of the follower node left alone by the next step.
pub(crate) const REPLICATING_FOLLOWER: &str = "the replicating follower node";

/// The table's group in the follower cluster loses its quorum: its worker
/// goes on receiving entries it cannot store.
#[when(regex = r#"^every follower node but the one that replicates "([^"]*)" is killed$"#)]
async fn kill_all_but_worker(world: &mut RegattaWorld, table: String) -> Result<()> {
    let holder = super::observe::replicating_node(world, &table).await?;
    world.marked.insert(REPLICATING_FOLLOWER.into(), holder);
    for n in others_than(world, holder)? {
        follower(world)?.kill(n).await.map_err(super::flatten)?;
        world.forget_client(crate::world::FOLLOWER_NODES + n);
    }
    Ok(())
}

#[when("the killed follower nodes are restarted")]
async fn restart_killed_followers(world: &mut RegattaWorld) -> Result<()> {
    let holder = *world
        .marked
        .get(REPLICATING_FOLLOWER)
        .context("no follower nodes were killed")?;
    for n in others_than(world, holder)? {
        follower(world)?
            .start(n, &[])
            .await
            .map_err(super::flatten)?;
        world.forget_client(crate::world::FOLLOWER_NODES + n);
    }
    Ok(())
}

fn follower(world: &mut RegattaWorld) -> Result<&mut Box<dyn crate::backend::Cluster>> {
    world
        .follower
        .as_mut()
        .context("the scenario has no follower cluster")
}

/// The follower nodes other than `n`.
fn others_than(world: &mut RegattaWorld, n: usize) -> Result<Vec<usize>> {
    let size = follower(world)?.size();
    Ok((1..=size).filter(|m| *m != n).collect())
}
