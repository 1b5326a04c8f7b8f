//! One running Raft group (the metadata group or a table's shard) and the
//! registry through which the transport finds groups by id.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{BasicNode, ChangeMembers, ReadPolicy, ServerState};
use regatta_proto::internal::raft::v1::GroupRole;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::failure::DiskHealth;
use super::forward_batch::ForwardBatcher;
use super::log_store::LogDb;
use super::network::{GroupNetworkFactory, Peers};
use super::read_rounds::ReadRounds;
use super::state_machine::GroupStateMachine;
use super::timing::RaftTiming;
use super::types::{GroupId, NodeId, Raft, Request, Response, TypeConfig, METADATA_GROUP};
use crate::storage::{DiskSpace, Space, Storage, Table};

/// Why a group could not serve a request here; travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum GroupError {
    /// This node does not lead the group; the leader if one is known.
    #[error("not the leader (leader: {0:?})")]
    NotLeader(Option<NodeId>),
    /// The group cannot serve now (shutting down, stopped); retryable by the client.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The leader could not confirm its leadership with a quorum this round
    /// (peers down, or slow to answer); a later round may succeed. A write
    /// refused so never reached the Raft core.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The leader's disk is below its reserve (`storage/disk_space.rs`):
    /// refused, nothing appended.
    #[error("{0}")]
    NoSpace(String),
}

/// A running group, seen from outside the cluster layer only through
/// `Node`; openraft stays behind the methods below.
pub struct Group {
    pub id: GroupId,
    pub table: Table,
    pub(super) raft: Raft,
    /// The applied index, published by the state machine.
    pub(in crate::cluster) applied: watch::Receiver<u64>,
    /// Index of the last snapshot installed from a leader (0: none): log
    /// entries at or below it may be stale (`state_machine.rs`).
    pub(in crate::cluster) installed: watch::Receiver<u64>,
    /// Read-index rounds of this node's linearizable reads (local or asked
    /// of the leader).
    pub(in crate::cluster) reads: Arc<ReadRounds>,
    /// Read-index rounds for reads other nodes forward here as leader.
    pub(in crate::cluster) leader_reads: Arc<ReadRounds>,
    /// Writes this node forwards to the group's leader.
    pub(in crate::cluster) forwards: ForwardBatcher,
    /// A leader whose quorum ack is older renews it before a write (half
    /// the leader lease).
    renew_lease_after: Duration,
    /// The static membership a new group is initialized with.
    members: BTreeMap<NodeId, BasicNode>,
    /// The member that initializes the group when it is new.
    initializer: NodeId,
    /// Free space on this node's disks.
    disk: Arc<DiskSpace>,
}

/// One replica's state as the liveness beat and its steering need it.
#[derive(Debug, Clone, Copy)]
pub struct GroupView {
    pub term: u64,
    pub role: GroupRole,
    pub leader: Option<NodeId>,
    /// Whether this node votes in the group.
    pub voter: bool,
    /// How many nodes vote in the group.
    pub voters: usize,
}

/// What a node lends each group it starts.
pub struct GroupParts<'a> {
    pub self_id: NodeId,
    pub timing: &'a RaftTiming,
    pub peers: &'a Arc<Peers>,
    pub log: &'a Arc<LogDb>,
    pub storage: &'a Arc<Storage>,
    /// Every member's id and Raft address (the static membership).
    pub members: &'a BTreeMap<NodeId, String>,
    /// Failures reported to the node; free space on its disks.
    pub health: &'a DiskHealth,
}

impl Group {
    /// Starts group `id` over storage table `name`: its state machine, its
    /// Raft core on the node's shared log, and on its initializer's first
    /// start the static membership.
    pub async fn start(
        parts: GroupParts<'_>,
        id: GroupId,
        name: &[u8],
    ) -> Result<Arc<Group>, String> {
        // Creating a column family rewrites and re-reads RocksDB's OPTIONS
        // file, which names every table: with hundreds of tables that is
        // tens of milliseconds, never to be spent on a runtime worker.
        // The catalogue lives in the server's own table space, out of reach
        // of every name a client can send.
        let space = if id == METADATA_GROUP {
            Space::Server
        } else {
            Space::User
        };
        let (state_machine, published) = {
            let (storage, name) = (parts.storage.clone(), name.to_vec());
            let health = parts.health.clone();
            super::blocking(move || GroupStateMachine::open(storage, space, &name, id, health))
                .await
                .map_err(|err| err.to_string())?
        };
        let table = parts
            .storage
            .table_in(space, name)
            .ok_or_else(|| "its table is missing".to_string())?;
        let network = GroupNetworkFactory {
            group: id,
            peers: parts.peers.clone(),
        };
        let raft = Raft::new(
            parts.self_id,
            parts.timing.openraft(),
            network,
            parts.log.group(id),
            state_machine,
        )
        .await
        .map_err(|err| err.to_string())?;
        let members: BTreeMap<NodeId, BasicNode> = parts
            .members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        let initializer = super::liveness::first_turn(id, members.keys().copied());
        let group = Arc::new(Group {
            id,
            raft,
            table,
            applied: published.applied,
            installed: published.installed,
            reads: Arc::default(),
            leader_reads: Arc::default(),
            forwards: ForwardBatcher::start(id, parts.peers.clone()),
            renew_lease_after: parts.timing.leader_lease() / 2,
            members,
            initializer,
            disk: parts.health.space.clone(),
        });
        // One member initializes a new group, the others learn its
        // membership from the leader it elects: openraft's first log id
        // carries the initializing node's id, so groups initialized on
        // every member were all won by the highest id (the node lost took
        // most leaderships with it). The liveness rounds initialize here
        // instead when that member stays away (`liveness.rs`).
        if initializer == parts.self_id {
            group.initialize_now().await;
        }
        Ok(group)
    }

    /// Initializes the group with the static membership unless it already
    /// holds one.
    pub(super) async fn initialize_now(&self) {
        if self.members.is_empty() {
            return; // A joining node's metadata group: members add it.
        }
        match self.raft.is_initialized().await {
            Ok(false) => {
                if let Err(err) = self.raft.initialize(self.members.clone()).await {
                    tracing::debug!(group = self.id, error = %err, "initialize");
                }
            }
            Ok(true) => {}
            Err(err) => tracing::debug!(group = self.id, error = %err, "initialize"),
        }
    }

    /// The member that initializes the group when it is new.
    pub(super) fn initializer(&self) -> NodeId {
        self.initializer
    }

    /// Stops the group's Raft core (its data stays).
    pub async fn shutdown(&self) {
        if let Err(err) = self.raft.shutdown().await {
            tracing::warn!(group = self.id, error = %err, "raft shutdown");
        }
    }

    /// This replica's term and role, for the liveness beat (`liveness.rs`).
    pub(super) fn view(&self, self_id: NodeId) -> GroupView {
        // Server metrics change only with the vote, state or membership.
        let metrics = self.raft.server_metrics();
        // Copy out of the borrow at once: a held borrow blocks the Raft core.
        let m = metrics.borrow_watched();
        let role = if m.state == ServerState::Leader {
            GroupRole::Leading
        } else if m.current_leader.is_some() {
            GroupRole::Following
        } else {
            GroupRole::Leaderless
        };
        let membership = m.membership_config.membership();
        let view = GroupView {
            term: m.vote.leader_id.term,
            role,
            leader: m.current_leader,
            voter: membership.voter_ids().any(|id| id == self_id),
            voters: membership.voter_ids().count(),
        };
        view
    }

    /// Every member of the group (voters and learners) with its Raft
    /// address, by id.
    pub fn members(&self) -> Vec<(NodeId, String)> {
        let metrics = self.raft.server_metrics();
        let members = metrics
            .borrow_watched()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        members
    }

    /// The voter the group prefers as its leader (`liveness.rs`).
    pub fn preferred_leader(&self) -> NodeId {
        super::liveness::first_turn(self.id, self.voters().into_iter())
    }

    /// The group's voters.
    pub fn voters(&self) -> Vec<NodeId> {
        let metrics = self.raft.server_metrics();
        let voters = metrics
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        voters
    }

    /// Whether the group's members are exactly `voters`: one voter set
    /// (not joint), and no learner besides.
    pub fn has_voters(&self, voters: &BTreeSet<NodeId>) -> bool {
        let metrics = self.raft.server_metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let configs = membership.get_joint_config();
        configs.len() == 1
            && configs[0] == *voters
            && membership.nodes().map(|(id, _)| id).eq(voters.iter())
    }

    /// As leader: makes `wanted` the group's voters (`node/membership.rs`).
    /// A new member is added as a learner first and promoted once it caught
    /// up (by snapshot when the log it lacks was purged); a learner that has
    /// not caught up within `catch_up` leaves the change for a later call,
    /// without adding it again. Joint consensus makes each step safe with a
    /// member down.
    pub async fn change_voters(
        &self,
        wanted: &BTreeMap<NodeId, String>,
        catch_up: Duration,
    ) -> Result<(), String> {
        // Like a write, a member change needs a leader a quorum acked within
        // the lease (`renew_lapsing_lease`).
        self.renew_lapsing_lease()
            .await
            .map_err(|err| format!("confirming leadership: {err}"))?;
        let known: BTreeSet<NodeId> = self.members().into_iter().map(|(id, _)| id).collect();
        for (id, address) in wanted.iter().filter(|(id, _)| !known.contains(id)) {
            self.raft
                .add_learner(*id, BasicNode::new(address), false)
                .await
                .map_err(|err| format!("adding node {id} as a learner: {err}"))?;
        }
        for id in wanted.keys() {
            self.wait_caught_up(*id, catch_up).await?;
        }
        let voters: BTreeSet<NodeId> = wanted.keys().copied().collect();
        self.renew_lapsing_lease()
            .await
            .map_err(|err| format!("confirming leadership: {err}"))?;
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|err| format!("changing voters: {err}"))?;
        // A member removed before it was promoted stays a learner.
        let unwanted: BTreeSet<NodeId> = self
            .members()
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !wanted.contains_key(id))
            .collect();
        if !unwanted.is_empty() {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(unwanted), false)
                .await
                .map_err(|err| format!("removing learners: {err}"))?;
        }
        Ok(())
    }

    /// As leader: waits until `node` holds the log up to this leader's last
    /// entry at the time of the call, less what a heartbeat carries.
    async fn wait_caught_up(&self, node: NodeId, timeout: Duration) -> Result<(), String> {
        const LAG: u64 = 100;
        let mut metrics = self.raft.metrics();
        let target = metrics
            .borrow_watched()
            .last_log_index
            .unwrap_or_default()
            .saturating_sub(LAG);
        if node == self.raft_id() {
            return Ok(());
        }
        let caught_up = tokio::time::timeout(
            timeout,
            metrics.wait_until(|m| {
                m.replication
                    .as_ref()
                    .and_then(|replication| replication.get(&node).copied().flatten())
                    .is_some_and(|matched| matched.index >= target)
            }),
        )
        .await;
        match caught_up {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err("the group stopped".into()),
            Err(_) => Err(format!("node {node} has not caught up yet")),
        }
    }

    fn raft_id(&self) -> NodeId {
        let metrics = self.raft.server_metrics();
        let id = metrics.borrow_watched().id;
        id
    }

    /// Runs or parks the group's Raft timer (heartbeats, election timeout).
    pub(super) fn set_ticking(&self, ticking: bool) {
        self.raft.runtime_config().tick(ticking);
    }

    /// Starts an election here (Pre-Vote first) and returns at once.
    pub(super) fn elect_now(self: &Arc<Self>) {
        let group = self.clone();
        tokio::spawn(async move {
            if let Err(err) = group.raft.trigger().elect(true).await {
                tracing::debug!(group = group.id, error = %err, "election not started");
            }
        });
    }

    /// As leader: replicates to `peer` at once, whatever backoff its
    /// earlier failures started (it is back).
    pub(super) fn reset_backoff_now(self: &Arc<Self>, peer: NodeId) {
        let group = self.clone();
        tokio::spawn(async move {
            if let Err(err) = group.raft.trigger().reset_backoff([peer]).await {
                tracing::debug!(group = group.id, error = %err, "backoff not reset");
            }
        });
    }

    /// Sends the group's heartbeat now (this node leads it) and returns at once.
    pub(super) fn heartbeat_now(self: &Arc<Self>) {
        let group = self.clone();
        tokio::spawn(async move {
            if let Err(err) = group.raft.trigger().heartbeat().await {
                tracing::debug!(group = group.id, error = %err, "heartbeat not sent");
            }
        });
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        // Copy out of the borrow at once: a held borrow blocks the Raft core.
        let metrics = self.raft.server_metrics();
        let leader = metrics.borrow_watched().current_leader;
        leader
    }

    /// The group's current term.
    pub fn term(&self) -> u64 {
        let metrics = self.raft.server_metrics();
        let term = metrics.borrow_watched().vote.leader_id.term;
        term
    }

    /// Index of the last log entry this node purged after a snapshot.
    pub fn last_purged_index(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let purged = metrics.borrow_watched().purged.map(|id| id.index);
        purged
    }

    /// Last log index covered by this node's current snapshot, if any.
    pub fn snapshot_index(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let snapshot = metrics.borrow_watched().snapshot.map(|id| id.index);
        snapshot
    }

    /// Index of the last entry in this node's log of the group.
    pub fn last_log_index(&self) -> u64 {
        let metrics = self.raft.metrics();
        let last = metrics.borrow_watched().last_log_index.unwrap_or_default();
        last
    }

    /// Proposes `request` on this node; fails with `NotLeader` elsewhere.
    pub async fn write_local(&self, request: Request) -> Result<Response, GroupError> {
        self.disk_refusal()?;
        self.renew_lapsing_lease().await?;
        match self.raft.client_write(request).await {
            Ok(written) => Ok(written.data),
            Err(RaftError::APIError(err)) => Err(refusal(err)),
            Err(RaftError::Fatal(fatal)) => Err(GroupError::Unavailable(fatal.to_string())),
        }
    }

    /// Proposes `requests` on this node as consecutive entries, in order,
    /// in one message to the Raft core. Answers exactly one result per
    /// request, in order. openraft accepts or refuses such a message whole:
    /// `NotLeader` for one means none was appended.
    pub async fn write_local_many(
        &self,
        requests: Vec<Request>,
    ) -> Vec<Result<Response, GroupError>> {
        let count = requests.len();
        match self.submit_local_many(requests).await {
            Ok(pending) => pending.answers().await,
            Err(err) => vec![Err(err); count],
        }
    }

    /// Hands `requests` to the Raft core as consecutive entries and returns
    /// once they are handed over, with their answers still to come. Batches
    /// handed over one after another are appended in that order, so a
    /// caller may hand over the next before this one is durable (the
    /// follower cluster's replication worker keeps several in flight). On
    /// `Err` nothing was appended.
    pub async fn submit_local_many(
        &self,
        requests: Vec<Request>,
    ) -> Result<PendingAnswers, GroupError> {
        self.disk_refusal()?;
        self.renew_lapsing_lease().await?;
        let count = requests.len();
        match self.raft.client_write_many(requests).await {
            Ok(results) => Ok(PendingAnswers { results, count }),
            // Never reached the Raft core: nothing was appended.
            Err(fatal) => Err(GroupError::Unavailable(fatal.to_string())),
        }
    }

    /// New entries are refused while this node leads the group and its
    /// disk is below the reserve. A node that does not lead goes on (the
    /// Raft core answers `NotLeader`): the leader's disk decides.
    fn disk_refusal(&self) -> Result<(), GroupError> {
        let Some(reason) = self.disk.refusal() else {
            return Ok(());
        };
        let metrics = self.raft.server_metrics();
        let leads = {
            let metrics = metrics.borrow_watched();
            metrics.current_leader == Some(metrics.id)
        };
        if leads {
            Err(GroupError::NoSpace(reason))
        } else {
            Ok(())
        }
    }

    /// openraft 0.10 takes writes only from a leader that a quorum acked
    /// within the leader lease. A parked leader (`liveness.rs`: no
    /// heartbeats while idle) lets it lapse, and would refuse the first
    /// write after a quiet spell as if it did not lead: confirm leadership
    /// with a ReadIndex round first (one round trip, once per quiet spell).
    async fn renew_lapsing_lease(&self) -> Result<(), GroupError> {
        let lapsing = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            m.state == ServerState::Leader
                && m.membership_config
                    .membership()
                    .voter_ids()
                    .nth(1)
                    .is_some()
                && m.last_quorum_acked.as_ref().is_none_or(|acked| {
                    openraft::Instant::elapsed(&**acked) >= self.renew_lease_after
                })
        };
        if lapsing {
            self.read_index_local().await?;
        }
        Ok(())
    }

    /// A read index for a read another node forwarded: shares a round with
    /// the other forwarded reads waiting here (never forwarded again).
    pub async fn read_index_for_peer(self: &Arc<Self>) -> Result<u64, GroupError> {
        let group = self.clone();
        self.leader_reads
            .next_round(move || {
                let group = group.clone();
                async move { group.read_index_local().await }
            })
            .await
    }

    /// The read index, confirmed with a quorum; only the leader can give one.
    ///
    /// openraft's read log id is max(first entry of the leader's term,
    /// committed index). A leader that restarted without losing leadership
    /// (its vote and its term's entries survive) knows only the committed
    /// index it recovered, which trails what was committed before the crash:
    /// reading there served values older than acknowledged writes (found by
    /// `cargo xtask jepsen`, restart-all; see the bug record in
    /// `conformance/README.md`). Every committed entry is in the leader's log,
    /// so the leader's last log index, taken before leadership is confirmed,
    /// is never stale.
    pub async fn read_index_local(&self) -> Result<u64, GroupError> {
        let last_log_index = {
            let metrics = self.raft.metrics();
            let last = metrics.borrow_watched().last_log_index.unwrap_or(0);
            last
        };
        match self.raft.get_read_log_id(ReadPolicy::ReadIndex).await {
            Ok((read_log_id, _)) => Ok(read_log_id.index().max(last_log_index)),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                Err(GroupError::NotLeader(forward.leader_id))
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(err))) => {
                Err(GroupError::NoQuorum(err.to_string()))
            }
            Err(RaftError::Fatal(fatal)) => Err(GroupError::Unavailable(fatal.to_string())),
        }
    }

    /// Waits until this replica has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), GroupError> {
        let mut applied = self.applied.clone();
        let reached =
            tokio::time::timeout(timeout, applied.wait_for(|applied| *applied >= index)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(GroupError::Unavailable("group stopped".into())),
            Err(_) => Err(GroupError::Unavailable(format!(
                "replica did not reach index {index} in time"
            ))),
        }
    }

    /// Resolves once this node knows a leader other than `leader` (or the
    /// group stops). A write forwarded to `leader` and still unanswered by
    /// then went to a node that was paused or cut off: its answer would
    /// only come at the client's deadline, if at all.
    pub async fn leader_moved_from(&self, leader: NodeId) {
        let mut metrics = self.raft.server_metrics();
        let _ = metrics
            .wait_until(|m| matches!(m.current_leader, Some(now) if now != leader))
            .await;
    }

    /// Waits (bounded) until the group knows a leader; returns it.
    pub async fn wait_leader(&self, timeout: Duration) -> Option<NodeId> {
        let mut metrics = self.raft.server_metrics();
        let found =
            tokio::time::timeout(timeout, metrics.wait_until(|m| m.current_leader.is_some())).await;
        match found {
            Ok(Ok(m)) => m.current_leader,
            _ => None,
        }
    }
}

/// Why openraft refused a write, as a [`GroupError`].
/// The answers of entries handed to the Raft core by `submit_local_many`.
pub struct PendingAnswers {
    results: futures::stream::BoxStream<
        'static,
        Result<openraft::raft::WriteResult<TypeConfig>, openraft::errors::Fatal<TypeConfig>>,
    >,
    count: usize,
}

impl PendingAnswers {
    /// Exactly one result per entry, in order, once each is applied.
    pub async fn answers(mut self) -> Vec<Result<Response, GroupError>> {
        use futures::StreamExt;
        let mut answers = Vec::with_capacity(self.count);
        while let Some(result) = self.results.next().await {
            answers.push(match result {
                Ok(Ok(written)) => Ok(written.response),
                Ok(Err(err)) => Err(refusal(err)),
                Err(fatal) => Err(GroupError::Unavailable(format!(
                    "write outcome unknown: {fatal}"
                ))),
            });
        }
        // The stream ends early only when the group stopped under it.
        answers.resize(
            self.count,
            Err(GroupError::Unavailable(
                "write outcome unknown: the group stopped".into(),
            )),
        );
        answers
    }
}

fn refusal(err: ClientWriteError<TypeConfig>) -> GroupError {
    match err {
        // Refused before its entry was appended: safe to send elsewhere.
        ClientWriteError::ForwardToLeader(forward) => GroupError::NotLeader(forward.leader_id),
        // Appended, then overwritten by a new leader's log: it may still
        // commit there, so it must never be retried as if refused.
        ClientWriteError::LogEntryDiscarded(forward) => GroupError::Unavailable(format!(
            "write outcome unknown: the entry was discarded on a leader change (leader: {:?})",
            forward.leader_id
        )),
        ClientWriteError::ChangeMembershipError(err) => GroupError::Unavailable(err.to_string()),
        ClientWriteError::PreconditionFailed(err) => GroupError::Unavailable(err.to_string()),
    }
}

/// The groups running on this node, by id.
#[derive(Default)]
pub struct Groups {
    map: RwLock<HashMap<GroupId, Arc<Group>>>,
}

impl Groups {
    pub fn get(&self, id: GroupId) -> Option<Arc<Group>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn insert(&self, group: Arc<Group>) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group.id, group);
    }

    pub fn remove(&self, id: GroupId) -> Option<Arc<Group>> {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
    }

    pub fn all(&self) -> Vec<Arc<Group>> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
