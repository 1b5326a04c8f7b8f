//! The node's Raft groups: the metadata group and one per table of the
//! catalogue, started and stopped to match it; creating and deleting tables.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::writes::Resend;
use super::{GroupInfo, Member, Node, TableBytes, TableStatus};
use crate::cluster::catalogue::{self, CATALOGUE_TABLE};
use crate::cluster::error::{Error, Result};
use crate::cluster::raft::group::{Group, GroupParts};
use crate::cluster::raft::types::{GroupId, MetaCommand, NodeId, Request, METADATA_GROUP};
use crate::cluster::table_name;
use crate::storage::{Space, Table};

/// Groups a node opens at once.
const GROUP_STARTS: usize = 16;

impl Node {
    /// Creates and starts the Raft group `id` over storage table `name`.
    pub(super) async fn start_group(&self, id: GroupId, name: &[u8]) -> Result<Arc<Group>> {
        if let Some(group) = self.groups.get(id) {
            return Ok(group);
        }
        // A new group is initialized with the members of the day, and
        // only where that is safe (`membership.rs`).
        let members = self.initial_members_of(id)?;
        // Groups start with their timers parked (`raft/liveness.rs`), so
        // groups started together do not tick in lockstep.
        let group = Group::start(
            GroupParts {
                self_id: self.id(),
                timing: &self.timing,
                peers: &self.peers,
                log: &self.log,
                storage: &self.storage,
                members: &members,
                health: &self.health,
            },
            id,
            name,
        )
        .await
        .map_err(|err| Error::Startup(format!("group {id}: {err}")))?;
        self.groups.insert(group.clone());
        tracing::info!(group = id, table = %String::from_utf8_lossy(name), "raft group started");
        Ok(group)
    }

    /// Stops a table's group and removes its data from this node.
    pub(super) async fn stop_group(&self, id: GroupId) -> Result<()> {
        let Some(group) = self.groups.remove(id) else {
            return Ok(());
        };
        group.shutdown().await;
        // Dropping a column family rewrites RocksDB's OPTIONS file: off the
        // runtime (`Group::start`).
        let (storage, name) = (self.storage.clone(), group.table.name().to_vec());
        crate::cluster::raft::blocking(move || {
            storage.drop_table(&name).map_err(std::io::Error::other)
        })
        .await
        .map_err(|err| Error::Unavailable(format!("dropping table of group {id}: {err}")))?;
        self.log
            .remove_group(id)
            .map_err(|err| Error::Unavailable(format!("removing the log of group {id}: {err}")))?;
        tracing::info!(group = id, "raft group removed");
        Ok(())
    }

    pub(super) fn catalogue_table(&self) -> Result<Table> {
        self.storage
            .table_in(Space::Server, CATALOGUE_TABLE)
            .ok_or(Error::TableNotFound)
    }

    /// Starts and stops table groups to match the applied catalogue.
    pub(super) async fn reconcile(&self) -> Result<()> {
        let _running = self.reconcile_lock.lock().await;
        let wanted = catalogue::tables(&self.catalogue_table()?)?;
        let running: Vec<Arc<Group>> = self.groups.all();
        for group in running.iter().filter(|g| g.id != METADATA_GROUP) {
            if wanted.get(group.table.name()) != Some(&group.id) {
                self.stop_group(group.id).await?;
            }
        }
        // The tables that run, published before the others start: each
        // table is served (and a creation waiting for it returns) as soon
        // as its own group runs, not after the last of hundreds.
        self.tables.send_replace(
            wanted
                .iter()
                .filter(|(_, id)| self.groups.get(**id).is_some())
                .map(|(name, id)| (name.clone(), *id))
                .collect(),
        );
        // A node restarting with hundreds of tables opens them a few at a
        // time rather than one by one.
        {
            let mut starting = futures::stream::FuturesUnordered::new();
            for (name, id) in wanted
                .iter()
                .filter(|(_, id)| self.groups.get(**id).is_none())
            {
                if starting.len() >= GROUP_STARTS {
                    if let Some(started) = starting.next().await {
                        self.publish_started(started?);
                    }
                }
                starting.push(self.start_group(*id, name));
            }
            while let Some(started) = starting.next().await {
                self.publish_started(started?);
            }
        }
        // Tables with data here that the catalogue no longer names (deleted
        // while this node was down).
        for name in self.storage.table_names() {
            if !wanted.contains_key(&name) {
                self.storage.drop_table(&name)?;
            }
        }
        self.tables.send_replace(wanted);
        Ok(())
    }

    fn publish_started(&self, group: Arc<Group>) {
        self.tables.send_modify(|tables| {
            tables.insert(group.table.name().to_vec(), group.id);
        });
    }

    /// Tables and their shard ids, as this node knows them.
    pub fn tables(&self) -> BTreeMap<Vec<u8>, GroupId> {
        self.tables.borrow().clone()
    }

    /// The data of `table` on this replica, as applied here (no freshness
    /// promise: see [`Node::read`] for reads that need one).
    pub fn table(&self, name: &[u8]) -> Result<Table> {
        Ok(self.table_group(name)?.table.clone())
    }

    /// What this node knows of `table`'s group.
    pub fn status(&self, table: &[u8]) -> Result<TableStatus> {
        let group = self.table_group(table)?;
        let applied_index = *group.applied.borrow();
        let installed_snapshot_index = *group.installed.borrow();
        Ok(TableStatus {
            info: self.group_info(&group),
            leader: group.leader(),
            last_log_index: group.last_log_index(),
            last_purged_index: group.last_purged_index(),
            snapshot_index: group.snapshot_index(),
            applied_index,
            installed_snapshot_index,
        })
    }

    /// Bytes `table` takes on this node's disks.
    pub fn table_bytes(&self, table: &[u8]) -> Result<TableBytes> {
        let group = self.table_group(table)?;
        Ok(TableBytes {
            log: self.log.group_bytes(group.id),
            data: group.table.disk_bytes()?,
        })
    }

    /// The cluster's members (the metadata group's membership), sorted by
    /// id, as the Cluster API lists them.
    pub fn members(&self) -> Vec<Member> {
        let mut members = self
            .groups
            .get(METADATA_GROUP)
            .map(|metadata| metadata.members())
            .filter(|members| !members.is_empty())
            .unwrap_or_else(|| {
                self.settings
                    .initial_members
                    .iter()
                    .map(|(id, address)| (*id, address.clone()))
                    .collect()
            });
        members.sort_unstable_by_key(|(id, _)| *id);
        members
            .into_iter()
            .map(|(id, peer_url)| {
                let identity = self.liveness.identity_of(id);
                let name = identity
                    .as_ref()
                    .map(|identity| identity.name.clone())
                    .filter(|name| !name.is_empty())
                    .unwrap_or_else(|| id.to_string());
                Member {
                    id,
                    name,
                    peer_url,
                    client_url: identity.map(|identity| identity.client_url),
                }
            })
            .collect()
    }

    /// The running group of `table`.
    pub(in crate::cluster) fn table_group(&self, table: &[u8]) -> Result<Arc<Group>> {
        let id = self
            .tables
            .borrow()
            .get(table)
            .copied()
            .ok_or(Error::TableNotFound)?;
        self.groups.get(id).ok_or(Error::TableNotFound)
    }

    /// Whether this node leads the metadata group (one node of the cluster
    /// does at a time: it reconciles the catalogue with a leader cluster's).
    pub fn leads_metadata(&self) -> bool {
        self.groups
            .get(METADATA_GROUP)
            .is_some_and(|group| group.leader() == Some(self.id()))
    }

    /// The node `table`'s group prefers as its leader: it initializes the
    /// group and takes it back when the group is quiet and every voter
    /// beats (`raft/liveness.rs`).
    pub fn preferred_leader(&self, table: &[u8]) -> Result<NodeId> {
        Ok(self.table_group(table)?.preferred_leader())
    }

    /// Whether this node leads `table`'s group.
    pub fn leads_table(&self, table: &[u8]) -> bool {
        self.table_group(table)
            .is_ok_and(|group| group.leader() == Some(self.id()))
    }

    /// Header information of a group.
    pub(super) fn group_info(&self, group: &Group) -> GroupInfo {
        GroupInfo {
            shard_id: group.id,
            replica_id: self.id(),
            raft_term: group.term(),
            raft_leader_id: group.leader().unwrap_or_default(),
        }
    }

    /// The metadata group (the catalogue's), which every node runs.
    pub(super) fn metadata_group(&self) -> Result<Arc<Group>> {
        self.groups.get(METADATA_GROUP).ok_or(Error::TableNotFound)
    }

    /// Creates a table through the metadata group (a no-op if it exists) and
    /// waits until its group runs here; returns its shard id. Being a no-op
    /// when repeated, it is sent again after an attempt of unknown outcome:
    /// a node restarted with the rest of its cluster creates its
    /// `--tables.names` while the group may still change leaders (it
    /// stopped on the first "write outcome unknown" before; seen in
    /// `.ci/run`).
    pub async fn create_table(&self, name: &[u8], timeout: Duration) -> Result<GroupId> {
        table_name::check(name)?;
        let metadata = self.metadata_group()?;
        let response = self
            .propose(
                &metadata,
                Request::Meta(MetaCommand::CreateTable {
                    name: name.to_vec(),
                }),
                timeout,
                Resend::Idempotent,
            )
            .await?;
        let id = response
            .shard_id
            .ok_or_else(|| Error::Unavailable("catalogue did not assign a shard".into()))?;
        self.wait_table(name, Some(id), timeout).await?;
        Ok(id)
    }

    /// Deletes a table through the metadata group (a no-op if it is absent).
    pub async fn delete_table(&self, name: &[u8], timeout: Duration) -> Result<()> {
        table_name::check(name)?;
        let metadata = self.metadata_group()?;
        self.propose(
            &metadata,
            Request::Meta(MetaCommand::DeleteTable {
                name: name.to_vec(),
            }),
            timeout,
            Resend::Idempotent,
        )
        .await?;
        self.wait_table(name, None, timeout).await
    }

    /// On a follower cluster: creates `name` (a no-op when it exists) as
    /// the copy of the leader cluster's shard `origin`.
    pub async fn create_copy(
        &self,
        name: &[u8],
        origin: u64,
        timeout: Duration,
    ) -> Result<GroupId> {
        table_name::check(name)?;
        let metadata = self.metadata_group()?;
        let request = Request::Meta(MetaCommand::CreateCopy {
            name: name.to_vec(),
            origin,
        });
        let response = self
            .propose(&metadata, request, timeout, Resend::Idempotent)
            .await?;
        let id = response
            .shard_id
            .ok_or_else(|| Error::Unavailable("catalogue did not assign a shard".into()))?;
        self.wait_table(name, Some(id), timeout).await?;
        Ok(id)
    }

    /// On a follower cluster: records that the existing table `name` copies
    /// the leader cluster's shard `origin`.
    pub async fn record_origin(&self, name: &[u8], origin: u64, timeout: Duration) -> Result<()> {
        let metadata = self.metadata_group()?;
        let request = Request::Meta(MetaCommand::RecordOrigin {
            name: name.to_vec(),
            origin,
        });
        self.propose(&metadata, request, timeout, Resend::Idempotent)
            .await?;
        Ok(())
    }

    /// On a follower cluster: the leader cluster's shard id each table
    /// copies, where known (as applied on this node).
    pub fn table_origins(&self) -> Result<BTreeMap<Vec<u8>, u64>> {
        Ok(catalogue::origins(&self.catalogue_table()?)?)
    }

    /// Creates a table that must not exist yet (the Tables API): its shard
    /// id once its group runs here; `TableExists` when the name is taken.
    /// Sent again only when provably not applied, so the answer is exact.
    pub async fn create_new_table(&self, name: &[u8], timeout: Duration) -> Result<GroupId> {
        table_name::check(name)?;
        let metadata = self.metadata_group()?;
        let request = Request::Meta(MetaCommand::CreateNewTable {
            name: name.to_vec(),
        });
        let response = self
            .propose(&metadata, request, timeout, Resend::IfNotApplied)
            .await?;
        let id = response.shard_id.ok_or(Error::TableExists)?;
        self.wait_table(name, Some(id), timeout).await?;
        Ok(id)
    }

    /// Deletes a table that must exist (the Tables API); `TableNotFound`
    /// when it does not. Returns once this node dropped its data.
    pub async fn delete_existing_table(&self, name: &[u8], timeout: Duration) -> Result<()> {
        table_name::check(name)?;
        let metadata = self.metadata_group()?;
        let request = Request::Meta(MetaCommand::DeleteExistingTable {
            name: name.to_vec(),
        });
        let response = self
            .propose(&metadata, request, timeout, Resend::IfNotApplied)
            .await?;
        response.shard_id.ok_or(Error::TableNotFound)?;
        self.wait_table(name, None, timeout).await
    }

    /// Waits until this node runs `name` as shard `id` (or not at all for `None`).
    pub(super) async fn wait_table(
        &self,
        name: &[u8],
        id: Option<GroupId>,
        timeout: Duration,
    ) -> Result<()> {
        let mut tables = self.tables.subscribe();
        let done = tokio::time::timeout(
            timeout,
            tables.wait_for(|tables| tables.get(name).copied() == id),
        )
        .await;
        match done {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::Unavailable(
                "table change not applied in time".into(),
            )),
        }
    }
}
