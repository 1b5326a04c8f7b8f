//! Replacing a node whose disk is lost: the node is started anew under a
//! new id, joining the cluster, and an operator removes the old id and adds
//! the new one through `membership.v1.Membership` on the maintenance API
//! (this implementation's extension; Regatta has no member changes).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use cucumber::{then, when};
use regatta_proto::membership::v1::membership_client::MembershipClient;
use regatta_proto::membership::v1::{AddMemberRequest, RemoveMemberRequest};

use crate::metrics;
use crate::world::RegattaWorld;

/// How long a member change may wait for every group of the answering node.
const CHANGE_DEADLINE: Duration = Duration::from_secs(90);

#[when(
    regex = r"^node (\d+)'s disk is lost and it starts again empty as node (\d+), joining the cluster$"
)]
async fn replace_lost(world: &mut RegattaWorld, n: usize, new_id: u64) -> Result<()> {
    if let Some(reason) = world.cluster()?.fault_support() {
        bail!("cannot replace a node: {reason}");
    }
    world
        .cluster_mut()?
        .replace_lost(n, new_id)
        .await
        .map_err(super::flatten)?;
    world.down.remove(&n);
    world.forget_client(n);
    Ok(())
}

#[when(regex = r"^I remove member (\d+) through the maintenance API of node (\d+)$")]
async fn remove_member(world: &mut RegattaWorld, id: u64, at: usize) -> Result<()> {
    let mut client = MembershipClient::new(world.maintenance_channel(at)?);
    let mut request = tonic::Request::new(RemoveMemberRequest { id, wait: true });
    request.set_timeout(CHANGE_DEADLINE);
    world.maintenance = Some(client.remove_member(request).await.map(|_| ()));
    Ok(())
}

#[when(
    regex = r"^I add member (\d+) at the raft address of node (\d+) through the maintenance API of node (\d+)$"
)]
async fn add_member(world: &mut RegattaWorld, id: u64, slot: usize, at: usize) -> Result<()> {
    let address = world
        .cluster()?
        .raft_address(slot)
        .context("the backend does not know the nodes' raft addresses")?;
    let mut client = MembershipClient::new(world.maintenance_channel(at)?);
    let mut request = tonic::Request::new(AddMemberRequest {
        id,
        address,
        wait: true,
    });
    request.set_timeout(CHANGE_DEADLINE);
    world.maintenance = Some(client.add_member(request).await.map(|_| ()));
    Ok(())
}

#[then(regex = r#"^node (\d+) caught up on "([^"]*)" by installing a snapshot$"#)]
async fn installed_snapshot(world: &mut RegattaWorld, n: usize, table: String) -> Result<()> {
    let address = world
        .cluster()?
        .rest_address(n)
        .context("the backend does not know the REST addresses")?;
    let series = format!("regatta_table_snapshot_installed_index{{table=\"{table}\"}}");
    let body = metrics::get(&address, world.tls.as_ref()).await?;
    if !body.lines().any(|line| line.starts_with(&series)) {
        bail!("node {n} reports no {series}");
    }
    let index = metrics::sum(&body, &series);
    if index == 0 {
        bail!("node {n} installed no snapshot of {table:?} ({series} is 0)");
    }
    Ok(())
}
