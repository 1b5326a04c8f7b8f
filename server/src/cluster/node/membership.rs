//! Replacing a member whose disk is lost: an operator records members added
//! and removed in the catalogue (through the metadata group, so every node
//! sees the same records in the same order), and each node steers every
//! group it leads towards the voters the records give. Declarative, so a
//! change survives leader changes and nodes that were down, and a new table
//! created meanwhile is initialized with the members of the day.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::writes::Resend;
use super::Node;
use crate::cluster::catalogue::{self, MemberRecords};
use crate::cluster::error::{Error, MembershipError, Result};
use crate::cluster::raft::types::{GroupId, MetaCommand, NodeId, Request, METADATA_GROUP};

/// How often a node looks for groups it leads whose voters differ from
/// the wanted ones.
const STEER_EVERY: Duration = Duration::from_millis(500);
/// How long one change waits for a new member to catch up before it leaves
/// the group for the next round.
const CATCH_UP: Duration = Duration::from_secs(20);
/// Groups a node changes at once (each may send a snapshot).
const CHANGES_AT_ONCE: usize = 8;

impl Node {
    /// The member records of the catalogue as applied here (none before
    /// the metadata group first opened its table).
    fn member_records(&self) -> Result<MemberRecords> {
        match self.catalogue_table() {
            Ok(table) => Ok(catalogue::members(&table)?),
            Err(Error::TableNotFound) => Ok(MemberRecords::default()),
            Err(err) => Err(err),
        }
    }

    /// The voters every group is to have, with their Raft addresses: the
    /// metadata group's voters and the members added, less those removed.
    /// Before this node knows the metadata group's membership: the flags'
    /// (none for a joining node, which must never initialize a group).
    pub(super) fn wanted_voters(&self) -> Result<BTreeMap<NodeId, String>> {
        Ok(self.voters_wanted_by(&self.member_records()?))
    }

    /// [`Node::wanted_voters`] for records already read.
    fn voters_wanted_by(&self, records: &MemberRecords) -> BTreeMap<NodeId, String> {
        let metadata = self.groups.get(METADATA_GROUP);
        let voters: Vec<NodeId> = metadata.as_ref().map(|g| g.voters()).unwrap_or_default();
        let mut wanted: BTreeMap<NodeId, String> = if voters.is_empty() {
            if self.settings.join {
                BTreeMap::new()
            } else {
                self.settings.initial_members.clone()
            }
        } else {
            let addresses: HashMap<NodeId, String> = metadata
                .map(|group| group.members().into_iter().collect())
                .unwrap_or_default();
            voters
                .into_iter()
                .filter_map(|id| {
                    let address = addresses
                        .get(&id)
                        .or_else(|| self.settings.initial_members.get(&id))?;
                    Some((id, address.clone()))
                })
                .collect()
        };
        if !wanted.is_empty() {
            wanted.extend(records.added.iter().map(|(id, m)| (*id, m.address.clone())));
        }
        wanted.retain(|id, _| !records.removed.contains(id));
        wanted
    }

    /// The members group `id` is initialized with should it be new here,
    /// or none when this node must not initialize it: the metadata group
    /// and the tables that existed before this node was added exist on the
    /// other members already, and a second initialization with other
    /// members would split the group. A joining node not yet added
    /// initializes nothing.
    pub(super) fn initial_members_of(&self, id: GroupId) -> Result<BTreeMap<NodeId, String>> {
        let records = self.member_records()?;
        let allowed = match records.added.get(&self.id()) {
            Some(added) => id != METADATA_GROUP && id >= added.first_shard,
            None => !self.settings.join,
        };
        if !allowed {
            return Ok(BTreeMap::new());
        }
        if id == METADATA_GROUP {
            return Ok(self.settings.initial_members.clone());
        }
        Ok(self.voters_wanted_by(&records))
    }

    /// The ids of [`Node::wanted_voters`], ascending.
    pub fn wanted_voters_ids(&self) -> Result<Vec<NodeId>> {
        Ok(self.wanted_voters()?.into_keys().collect())
    }

    /// Adds node `id`, reached at Raft address `address`, to the cluster:
    /// recorded at once, then every group promotes it once it caught up.
    /// Repeating an addition is a no-op; an id removed before is refused.
    pub async fn add_member(&self, id: NodeId, address: &str, timeout: Duration) -> Result<()> {
        if id == 0 {
            return Err(MembershipError::ZeroId.into());
        }
        if address.trim().is_empty() {
            return Err(MembershipError::NoAddress.into());
        }
        let records = self.member_records()?;
        if records.removed.contains(&id) {
            return Err(MembershipError::Removed(id).into());
        }
        if let Some(known) = self.wanted_voters()?.get(&id) {
            if known != address {
                return Err(MembershipError::AlreadyMember {
                    id,
                    address: known.clone(),
                }
                .into());
            }
        }
        let request = Request::Meta(MetaCommand::AddMember {
            id,
            address: address.to_string(),
        });
        let metadata = self.metadata_group()?;
        let response = self
            .propose(&metadata, request, timeout, Resend::Idempotent)
            .await?;
        match response.shard_id {
            Some(_) => Ok(()),
            None => Err(MembershipError::Removed(id).into()),
        }
    }

    /// Removes node `id` from the cluster for good: recorded at once, then
    /// every group stops counting it. Repeating a removal is a no-op.
    pub async fn remove_member(&self, id: NodeId, timeout: Duration) -> Result<()> {
        let records = self.member_records()?;
        if !records.removed.contains(&id) {
            let wanted = self.wanted_voters()?;
            if !wanted.contains_key(&id) {
                return Err(MembershipError::NotMember(id).into());
            }
            if wanted.len() == 1 {
                return Err(MembershipError::LastMember(id).into());
            }
        }
        let metadata = self.metadata_group()?;
        self.propose(
            &metadata,
            Request::Meta(MetaCommand::RemoveMember { id }),
            timeout,
            Resend::Idempotent,
        )
        .await?;
        Ok(())
    }

    /// Groups running here whose members are not yet the wanted voters
    /// (as this node sees them; it sees every group's membership).
    pub fn groups_changing_members(&self) -> Result<Vec<GroupId>> {
        let wanted: BTreeSet<NodeId> = self.wanted_voters()?.into_keys().collect();
        let mut changing: Vec<GroupId> = self
            .groups
            .all()
            .iter()
            .filter(|group| !group.has_voters(&wanted))
            .map(|group| group.id)
            .collect();
        changing.sort_unstable();
        Ok(changing)
    }

    /// Waits until every group running here has the wanted voters; on
    /// timeout, the groups still changing.
    pub async fn wait_members_settled(&self, timeout: Duration) -> Result<(), Vec<GroupId>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changing = self.groups_changing_members().unwrap_or_default();
            if changing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(changing);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The transport dials the members of the records and the flags, and
    /// refuses the removed ones.
    fn refresh_peers(&self, records: &MemberRecords) {
        let mut addresses: HashMap<NodeId, String> = HashMap::new();
        if let Some(metadata) = self.groups.get(METADATA_GROUP) {
            addresses.extend(metadata.members());
        }
        addresses.extend(records.added.iter().map(|(id, m)| (*id, m.address.clone())));
        // This node's own flags win: they may name a peer by another route
        // (a proxy, another network) than the one the records hold.
        addresses.extend(
            self.settings
                .initial_members
                .iter()
                .map(|(id, address)| (*id, address.clone())),
        );
        addresses.insert(self.id(), self.settings.address.clone());
        addresses.retain(|id, _| !records.removed.contains(id));
        let removed: HashSet<NodeId> = records.removed.iter().copied().collect();
        self.peers.set_members(addresses, removed);
    }

    /// Steers the groups this node leads towards the wanted voters, until
    /// the node is dropped.
    pub(super) fn spawn_membership_steering(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let changing: Arc<Mutex<HashSet<GroupId>>> = Arc::default();
        let turns = Arc::new(tokio::sync::Semaphore::new(CHANGES_AT_ONCE));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(STEER_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(node) = weak.upgrade() else { break };
                if let Err(err) = node.steer_members(&changing, &turns) {
                    tracing::debug!(error = %err, "membership steering round");
                }
            }
        })
    }

    /// One round: starts a change for each group led here whose members
    /// differ from the wanted voters and that is not changing already.
    fn steer_members(
        self: &Arc<Self>,
        changing: &Arc<Mutex<HashSet<GroupId>>>,
        turns: &Arc<tokio::sync::Semaphore>,
    ) -> Result<()> {
        // One read of the records a round, for the transport and the groups.
        let records = self.member_records()?;
        self.refresh_peers(&records);
        let wanted = self.voters_wanted_by(&records);
        if wanted.is_empty() {
            return Ok(());
        }
        let ids: BTreeSet<NodeId> = wanted.keys().copied().collect();
        for group in self.groups.all() {
            if group.leader() != Some(self.id()) || group.has_voters(&ids) {
                continue;
            }
            if !changing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(group.id)
            {
                continue;
            }
            let (changing, turns, wanted) = (changing.clone(), turns.clone(), wanted.clone());
            tokio::spawn(async move {
                if let Ok(_turn) = turns.acquire().await {
                    tracing::info!(group = group.id, voters = ?wanted.keys().collect::<Vec<_>>(), "changing the group's voters");
                    match group.change_voters(&wanted, CATCH_UP).await {
                        Ok(()) => tracing::info!(group = group.id, "voters changed"),
                        Err(reason) => {
                            tracing::info!(group = group.id, %reason, "voters not changed yet")
                        }
                    }
                }
                changing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&group.id);
            });
        }
        Ok(())
    }
}
