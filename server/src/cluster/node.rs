//! A node of a cluster: the metadata group, one group per table kept in step
//! with the catalogue, the internal transport, and the write and read paths
//! (forwarding to the leader, read index on any node).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::BasicNode;
use prost::Message;
use regatta_proto::internal::raft::v1::raft_server::RaftServer;
use regatta_proto::mvcc::v1::{Command, CommandResult};
use tokio::sync::{oneshot, watch, Mutex};
use tokio::task::JoinHandle;

use super::catalogue::{self, CATALOGUE_TABLE};
use super::config::RaftSettings;
use super::error::{Error, Result};
use super::raft::group::{Group, GroupError, Groups};
use super::raft::log_store::LogDb;
use super::raft::network::{CallError, GroupNetworkFactory, Method, Peers, MAX_MESSAGE_BYTES};
use super::raft::service::InternalService;
use super::raft::state_machine::GroupStateMachine;
use super::raft::types::{
    GroupId, MetaCommand, NodeId, Raft, Request, Response, RestoreStep, METADATA_GROUP,
};
use super::table_name;
use crate::storage::{Storage, StorageOptions, Table};

/// What the response header needs about a group (behaviour.md §2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupInfo {
    pub shard_id: GroupId,
    pub replica_id: NodeId,
    pub raft_term: u64,
    pub raft_leader_id: NodeId,
}

/// The outcome of a write.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub result: CommandResult,
    pub txn_succeeded: Option<bool>,
}

/// A running node.
pub struct Node {
    settings: RaftSettings,
    config: Arc<openraft::Config>,
    storage: Arc<Storage>,
    log: Arc<LogDb>,
    peers: Arc<Peers>,
    groups: Arc<Groups>,
    /// Table name -> shard id, as last applied from the catalogue.
    tables: watch::Sender<BTreeMap<Vec<u8>, GroupId>>,
    /// Serialises group starts and stops.
    reconcile_lock: Mutex<()>,
    server: std::sync::Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
    reconciler: std::sync::Mutex<Option<JoinHandle<()>>>,
    bound_raft_address: SocketAddr,
}

impl Node {
    /// Opens the node's data, serves the internal transport and starts the
    /// metadata group and every table group of the catalogue.
    pub async fn start(
        settings: RaftSettings,
        storage_options: StorageOptions,
    ) -> Result<Arc<Node>> {
        let listen = settings
            .listen_address
            .clone()
            .unwrap_or_else(|| settings.address.clone());
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|err| Error::Startup(format!("binding the raft address {listen}: {err}")))?;
        Self::start_with_listener(settings, storage_options, listener).await
    }

    /// [`Node::start`] on an already bound raft listener (tests bind port 0
    /// first, so no other socket can take the port in between).
    pub async fn start_with_listener(
        settings: RaftSettings,
        storage_options: StorageOptions,
        listener: tokio::net::TcpListener,
    ) -> Result<Arc<Node>> {
        let config = Arc::new(settings.openraft_config()?);
        if !settings.initial_members.contains_key(&settings.node_id) {
            return Err(Error::Startup(format!(
                "--raft.initial-members does not list this node ({})",
                settings.node_id
            )));
        }
        let storage = Arc::new(
            Storage::open(&settings.state_machine_dir, &storage_options)
                .map_err(|err| Error::Startup(format!("state machine dir: {err}")))?,
        );
        let log_dir = settings
            .wal_dir
            .clone()
            .unwrap_or_else(|| settings.node_host_dir.join("log"));
        std::fs::create_dir_all(&log_dir)
            .map_err(|err| Error::Startup(format!("{}: {err}", log_dir.display())))?;
        let log =
            LogDb::open(&log_dir).map_err(|err| Error::Startup(format!("raft log: {err}")))?;
        let addresses: HashMap<NodeId, String> = settings
            .initial_members
            .iter()
            .map(|(id, addr)| (*id, addr.clone()))
            .collect();
        let peers = Peers::new(settings.node_id, addresses);
        let groups = Arc::new(Groups::default());

        let bound_raft_address = listener
            .local_addr()
            .map_err(|err| Error::Startup(err.to_string()))?;
        let service = RaftServer::new(InternalService {
            self_id: settings.node_id,
            groups: groups.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let incoming = crate::net::incoming(listener);
            let result = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(err) = result {
                tracing::error!(error = %err, "internal raft server stopped");
            }
        });

        let (tables, _) = watch::channel(BTreeMap::new());
        let node = Arc::new(Node {
            settings,
            config,
            storage,
            log,
            peers,
            groups,
            tables,
            reconcile_lock: Mutex::new(()),
            server: std::sync::Mutex::new(Some((stop_tx, server))),
            reconciler: std::sync::Mutex::new(None),
            bound_raft_address,
        });
        let metadata = node.start_group(METADATA_GROUP, CATALOGUE_TABLE).await?;
        node.reconcile().await?;
        let weak = Arc::downgrade(&node);
        let mut applied = metadata.applied.clone();
        let reconciler = tokio::spawn(async move {
            while applied.changed().await.is_ok() {
                let Some(node) = weak.upgrade() else { break };
                if let Err(err) = node.reconcile().await {
                    tracing::warn!(error = %err, "could not bring table groups in line with the catalogue");
                }
            }
        });
        *node.reconciler.lock().unwrap_or_else(|p| p.into_inner()) = Some(reconciler);
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.settings.node_id
    }

    /// The address the internal transport is bound to.
    pub fn raft_address(&self) -> SocketAddr {
        self.bound_raft_address
    }

    /// (appends made durable, WAL syncs) of this node's Raft log so far.
    pub fn log_sync_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.log.stats();
        (stats.appends.load(Relaxed), stats.syncs.load(Relaxed))
    }

    /// The storage layer (for reads).
    /// The Raft log database shared by every group of this node.
    pub(crate) fn log_db(&self) -> &Arc<LogDb> {
        &self.log
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Creates and starts the Raft group `id` over storage table `name`.
    async fn start_group(&self, id: GroupId, name: &[u8]) -> Result<Arc<Group>> {
        if let Some(group) = self.groups.get(id) {
            return Ok(group);
        }
        let (state_machine, applied) = GroupStateMachine::open(self.storage.clone(), name, id)
            .map_err(|err| Error::Startup(format!("group {id}: {err}")))?;
        let table = self.storage.table(name).ok_or(Error::TableNotFound)?;
        // Groups created together would tick in lockstep; spread them.
        let jitter = rand::random::<u64>() % (self.config.heartbeat_interval.max(1));
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        let network = GroupNetworkFactory {
            group: id,
            peers: self.peers.clone(),
        };
        let raft = Raft::new(
            self.id(),
            self.config.clone(),
            network,
            self.log.group(id),
            state_machine,
        )
        .await
        .map_err(|err| Error::Startup(format!("group {id}: {err}")))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|err| Error::Startup(format!("group {id}: {err}")))?;
        if !initialized {
            // Every node initializes with the same static membership.
            let members: BTreeMap<NodeId, BasicNode> = self
                .settings
                .initial_members
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            if let Err(err) = raft.initialize(members).await {
                tracing::debug!(group = id, error = %err, "initialize");
            }
        }
        let group = Arc::new(Group {
            id,
            raft,
            table,
            applied,
            reads: Arc::default(),
            leader_reads: Arc::default(),
        });
        self.groups.insert(group.clone());
        tracing::info!(group = id, table = %String::from_utf8_lossy(name), "raft group started");
        Ok(group)
    }

    /// Stops a table's group and removes its data from this node.
    async fn stop_group(&self, id: GroupId) -> Result<()> {
        let Some(group) = self.groups.remove(id) else {
            return Ok(());
        };
        if let Err(err) = group.raft.shutdown().await {
            tracing::warn!(group = id, error = %err, "raft shutdown");
        }
        self.storage.drop_table(group.table.name())?;
        self.log
            .remove_group(id)
            .map_err(|err| Error::Unavailable(format!("removing the log of group {id}: {err}")))?;
        tracing::info!(group = id, "raft group removed");
        Ok(())
    }

    fn catalogue_table(&self) -> Result<Table> {
        self.storage
            .table(CATALOGUE_TABLE)
            .ok_or(Error::TableNotFound)
    }

    /// Starts and stops table groups to match the applied catalogue.
    async fn reconcile(&self) -> Result<()> {
        let _running = self.reconcile_lock.lock().await;
        let mut wanted = catalogue::tables(&self.catalogue_table()?)?;
        // A catalogue written before reserved names were refused may name
        // one; starting a group over the server's own table would stop this
        // node from ever starting again, so such an entry is left alone.
        wanted.retain(|name, id| {
            let reserved = table_name::is_reserved(name);
            if reserved {
                tracing::error!(table = ?String::from_utf8_lossy(name), group = *id,
                    "the catalogue names a table the server reserves for itself; not starting it");
            }
            !reserved
        });
        let running: Vec<Arc<Group>> = self.groups.all();
        for group in running.iter().filter(|g| g.id != METADATA_GROUP) {
            if wanted.get(group.table.name()) != Some(&group.id) {
                self.stop_group(group.id).await?;
            }
        }
        for (name, id) in &wanted {
            self.start_group(*id, name).await?;
        }
        // Tables with data here that the catalogue no longer names (deleted
        // while this node was down).
        for name in self.storage.table_names() {
            if name.as_slice() != CATALOGUE_TABLE && !wanted.contains_key(&name) {
                self.storage.drop_table(&name)?;
            }
        }
        self.tables.send_replace(wanted);
        Ok(())
    }

    /// Tables and their shard ids, as this node knows them.
    pub fn tables(&self) -> BTreeMap<Vec<u8>, GroupId> {
        self.tables.borrow().clone()
    }

    /// The running group of `table`.
    pub fn table_group(&self, table: &[u8]) -> Result<Arc<Group>> {
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

    /// Whether this node leads `table`'s group.
    pub fn leads_table(&self, table: &[u8]) -> bool {
        self.table_group(table)
            .is_ok_and(|group| group.leader() == Some(self.id()))
    }

    /// Header information of a group.
    pub fn group_info(&self, group: &Group) -> GroupInfo {
        GroupInfo {
            shard_id: group.id,
            replica_id: self.id(),
            raft_term: group.term(),
            raft_leader_id: group.leader().unwrap_or_default(),
        }
    }

    /// Creates a table through the metadata group (a no-op if it exists) and
    /// waits until its group runs here; returns its shard id.
    pub async fn create_table(&self, name: &[u8], timeout: Duration) -> Result<GroupId> {
        table_name::check_user_table(name)?;
        let metadata = self
            .groups
            .get(METADATA_GROUP)
            .ok_or(Error::TableNotFound)?;
        let response = self
            .propose(
                &metadata,
                Request::Meta(MetaCommand::CreateTable {
                    name: name.to_vec(),
                }),
                timeout,
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
        table_name::check_user_table(name)?;
        let metadata = self
            .groups
            .get(METADATA_GROUP)
            .ok_or(Error::TableNotFound)?;
        self.propose(
            &metadata,
            Request::Meta(MetaCommand::DeleteTable {
                name: name.to_vec(),
            }),
            timeout,
        )
        .await?;
        self.wait_table(name, None, timeout).await
    }

    /// Waits until this node runs `name` as shard `id` (or not at all for `None`).
    async fn wait_table(&self, name: &[u8], id: Option<GroupId>, timeout: Duration) -> Result<()> {
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

    /// Writes a command to a table, on whichever node leads its group.
    pub async fn write(
        &self,
        table: &[u8],
        command: &Command,
        timeout: Duration,
    ) -> Result<(Written, GroupInfo)> {
        let group = self.table_group(table)?;
        let response = self
            .propose(&group, Request::Table(command.encode_to_vec()), timeout)
            .await?;
        let result = CommandResult::decode(response.command_result.as_slice())
            .map_err(|err| Error::Unavailable(format!("undecodable result: {err}")))?;
        Ok((
            Written {
                result,
                txn_succeeded: response.txn_succeeded,
            },
            self.group_info(&group),
        ))
    }

    /// Proposes one step of a restore of `table` (see `storage/restore.rs`);
    /// returns whether the restore it names was open when it applied.
    pub async fn restore(
        &self,
        table: &[u8],
        step: RestoreStep,
        timeout: Duration,
    ) -> Result<bool> {
        table_name::check_user_table(table)?;
        let group = self.table_group(table)?;
        let response = self
            .propose(&group, Request::Restore(step), timeout)
            .await?;
        Ok(response.restore_open.unwrap_or(false))
    }

    /// Proposes on the leader: locally, or forwarded once per attempt.
    /// Retries only when the request is known not to have been applied.
    async fn propose(
        &self,
        group: &Group,
        request: Request,
        timeout: Duration,
    ) -> Result<Response> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Unavailable(
                    "no leader accepted the write in time".into(),
                ));
            }
            // A leader that lost its quorum never commits: bound the wait.
            let local = tokio::time::timeout(remaining, group.write_local(request.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(GroupError::Unavailable(
                        "write outcome unknown: not committed in time".into(),
                    ))
                });
            let leader = match local {
                Ok(response) => return Ok(response),
                Err(GroupError::Unavailable(reason) | GroupError::NoQuorum(reason)) => {
                    return Err(Error::Unavailable(reason))
                }
                Err(GroupError::NotLeader(leader)) => leader,
            };
            match leader {
                Some(leader) if leader != self.id() => {
                    let reply: std::result::Result<
                        std::result::Result<Response, GroupError>,
                        CallError,
                    > = self
                        .peers
                        .call(leader, group.id, Method::Forward, &request, remaining)
                        .await;
                    match reply {
                        Ok(Ok(response)) => return Ok(response),
                        Ok(Err(GroupError::Unavailable(reason) | GroupError::NoQuorum(reason))) => {
                            return Err(Error::Unavailable(reason))
                        }
                        // Not applied there: the leader moved, or it was not reachable.
                        Ok(Err(GroupError::NotLeader(_))) | Err(CallError::Unreachable(_)) => {
                            self.pause_for_leader(group, deadline).await;
                        }
                        Err(err) => {
                            return Err(Error::Unavailable(format!(
                                "write outcome unknown: {err}"
                            )));
                        }
                    }
                }
                _ => self.pause_for_leader(group, deadline).await,
            }
        }
    }

    async fn pause_for_leader(&self, group: &Group, deadline: Instant) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let step = Duration::from_millis(self.config.heartbeat_interval).min(remaining);
        tokio::time::sleep(step).await;
        group
            .wait_leader(deadline.saturating_duration_since(Instant::now()))
            .await;
    }

    /// Makes the next local read of `table` linearizable: confirms a read
    /// index with the leader's quorum (asking the leader when this node is
    /// not it) and waits until this replica has applied it. Rounds that fail
    /// for want of a leader or of a quorum are retried until `timeout`.
    pub async fn linearizable_barrier(
        &self,
        table: &[u8],
        timeout: Duration,
    ) -> Result<Arc<Group>> {
        let group = self.table_group(table)?;
        let deadline = Instant::now() + timeout;
        let mut last_failure = String::from("no leader");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Unavailable(format!(
                    "could not confirm a read index in time: {last_failure}"
                )));
            }
            // Concurrent reads share rounds (`raft/read_rounds.rs`).
            let round = {
                let (group, peers, me) = (group.clone(), self.peers.clone(), self.id());
                move || read_index_round(group.clone(), peers.clone(), me)
            };
            let answer = tokio::time::timeout(remaining, group.reads.next_round(round))
                .await
                .unwrap_or_else(|_| Err(GroupError::NoQuorum("read index round timed out".into())));
            if let Err(GroupError::NoQuorum(reason)) = &answer {
                last_failure = reason.clone();
            }
            match answer {
                Ok(index) => {
                    group
                        .wait_applied(index, deadline.saturating_duration_since(Instant::now()))
                        .await
                        .map_err(|err| Error::Unavailable(err.to_string()))?;
                    return Ok(group);
                }
                Err(GroupError::Unavailable(reason)) => return Err(Error::Unavailable(reason)),
                Err(GroupError::NoQuorum(_) | GroupError::NotLeader(_)) => {}
            }
            self.pause_for_leader(&group, deadline).await;
        }
    }

    /// Stops every group and the transport, then makes the data durable.
    pub async fn shutdown(&self) {
        if let Some(reconciler) = self
            .reconciler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            reconciler.abort();
        }
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, server)) = server {
            let _ = stop.send(());
            let _ = server.await;
        }
        let groups = self.groups.all();
        futures::future::join_all(groups.iter().map(|group| group.raft.shutdown())).await;
        for group in groups {
            self.groups.remove(group.id);
        }
        if let Err(err) = self.storage.make_durable() {
            tracing::error!(error = %err, "flushing table data at shutdown");
        }
    }
}

/// One read-index round for `group`: confirmed here when this node leads,
/// otherwise asked of the leader (which serves it from its own rounds).
async fn read_index_round(
    group: Arc<Group>,
    peers: Arc<Peers>,
    me: NodeId,
) -> std::result::Result<u64, GroupError> {
    /// A round that takes longer failed; its readers try the next one.
    const ROUND_TIMEOUT: Duration = Duration::from_secs(5);
    let local = tokio::time::timeout(ROUND_TIMEOUT, group.read_index_local())
        .await
        .unwrap_or_else(|_| Err(GroupError::NoQuorum("read index round timed out".into())));
    match local {
        Err(GroupError::NotLeader(Some(leader))) if leader != me => {
            let reply: std::result::Result<std::result::Result<u64, GroupError>, CallError> = peers
                .call(leader, group.id, Method::ReadIndex, &(), ROUND_TIMEOUT)
                .await;
            match reply {
                Ok(answer) => answer,
                Err(CallError::Unreachable(reason)) => Err(GroupError::NoQuorum(reason)),
                Err(err) => Err(GroupError::Unavailable(err.to_string())),
            }
        }
        answer => answer,
    }
}
