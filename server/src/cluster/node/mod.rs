//! A node of a cluster: its data, the internal transport, start and
//! shutdown. What it does with them lives beside: `groups` (the metadata
//! group and one group per table, kept in step with the catalogue),
//! `writes` (proposing on the leader, forwarding to it) and `reads` (read
//! index on any node).

mod groups;
mod membership;
mod reads;
mod writes;

pub use reads::Consistency;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use regatta_proto::internal::raft::v1::raft_server::RaftServer;
use regatta_proto::mvcc::v1::CommandResult;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

use super::catalogue::{CATALOGUE_TABLE, LEGACY_CATALOGUE_TABLE};
use super::config::RaftSettings;
use super::error::{Error, Result};
use super::raft::failure::DiskHealth;
use super::raft::group::Groups;
use super::raft::liveness::Liveness;
use super::raft::log_store::LogDb;
use super::raft::network::{Peers, MAX_MESSAGE_BYTES};
use super::raft::service::InternalService;
use super::raft::timing::RaftTiming;
use super::raft::types::{GroupId, NodeId, METADATA_GROUP};
use crate::storage::{DiskSpace, Storage, StorageOptions};

/// Resets of not yet accepted streams the internal transport takes per
/// connection (h2's default is 20).
const MAX_PENDING_RESETS: usize = 4096;

/// What the response header needs about a group (`features/headers_and_revisions.feature`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupInfo {
    pub shard_id: GroupId,
    pub replica_id: NodeId,
    pub raft_term: u64,
    pub raft_leader_id: NodeId,
}

/// What a node knows of a table's Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStatus {
    /// Shard, replica, term and leader as the response header gives them.
    pub info: GroupInfo,
    /// The leader this node knows of, if any.
    pub leader: Option<NodeId>,
    /// Index of the last entry in this node's log of the group.
    pub last_log_index: u64,
    /// Last index this node purged from its log after a snapshot.
    pub last_purged_index: Option<u64>,
    /// Last index covered by this node's current snapshot.
    pub snapshot_index: Option<u64>,
    /// Index of the last entry applied to the table here.
    pub applied_index: u64,
    /// Index of the last snapshot this node installed from the group's
    /// leader (0: none).
    pub installed_snapshot_index: u64,
}

/// A node of the cluster as the Cluster API's MemberList shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    /// `--memberlist.node-name`, or the id.
    pub name: String,
    /// Its Raft address.
    pub peer_url: String,
    /// Its `--api.advertise-address`; `None` while it has not been heard from.
    pub client_url: Option<String>,
}

/// Bytes a table takes on this node's disks (the Cluster API's Status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableBytes {
    /// Its Raft log's entries (approximate).
    pub log: u64,
    /// Its data.
    pub data: u64,
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
    timing: RaftTiming,
    storage: Arc<Storage>,
    log: Arc<LogDb>,
    /// Storage failures and free disk space, shared with every group.
    health: DiskHealth,
    peers: Arc<Peers>,
    groups: Arc<Groups>,
    liveness: Arc<Liveness>,
    /// Table name -> shard id, as last applied from the catalogue.
    tables: watch::Sender<BTreeMap<Vec<u8>, GroupId>>,
    /// Serialises group starts and stops.
    reconcile_lock: Mutex<()>,
    /// Turned true at shutdown: ends the transport's open streams, then the
    /// transport (which waits for every call and stream to end).
    server: std::sync::Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
    reconciler: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Steers the groups this node leads towards the wanted voters.
    steering: std::sync::Mutex<Option<JoinHandle<()>>>,
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
        settings.validate()?;
        let timing = settings.raft_timing()?;
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
        let health = DiskHealth {
            failure: log.failure().clone(),
            space: DiskSpace::watch(
                vec![settings.state_machine_dir.clone(), log_dir.clone()],
                storage_options.min_free_space,
            ),
        };
        let mut addresses: HashMap<NodeId, String> = settings
            .initial_members
            .iter()
            .map(|(id, addr)| (*id, addr.clone()))
            .collect();
        addresses.insert(settings.node_id, settings.address.clone());
        let peers = Peers::new(settings.node_id, addresses);
        let groups = Arc::new(Groups::default());

        let bound_raft_address = listener
            .local_addr()
            .map_err(|err| Error::Startup(err.to_string()))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let liveness = Liveness::new(
            settings.node_id,
            groups.clone(),
            peers.clone(),
            timing.liveness(),
            settings.identity.clone(),
        );
        // Ends with the transport, before the groups stop.
        liveness.spawn(stop_rx.clone());
        let service = RaftServer::new(InternalService {
            self_id: settings.node_id,
            groups: groups.clone(),
            liveness: liveness.clone(),
            closing: stop_rx.clone(),
            disk: health.space.clone(),
            peers: peers.clone(),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut stop_rx = stop_rx;
        let server = tokio::spawn(async move {
            let incoming = crate::net::incoming(crate::net::Listener::Tcp(listener));
            let result = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                // A peer resuming from a pause cancels every call it had
                // queued at once; h2's default (20 resets of streams not
                // yet accepted) answers that with GOAWAY and takes the
                // connection's other calls with it. Peers are this
                // cluster's own nodes, not the public.
                .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop_rx.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(err) = result {
                tracing::error!(error = %err, "internal raft server stopped");
            }
        });

        let (tables, _) = watch::channel(BTreeMap::new());
        let node = Arc::new(Node {
            settings,
            timing,
            storage,
            log,
            health,
            peers,
            groups,
            liveness,
            tables,
            reconcile_lock: Mutex::new(()),
            server: std::sync::Mutex::new(Some((stop_tx, server))),
            reconciler: std::sync::Mutex::new(None),
            steering: std::sync::Mutex::new(None),
            bound_raft_address,
        });
        if node
            .storage
            .move_to_server_space(LEGACY_CATALOGUE_TABLE, CATALOGUE_TABLE)
            .map_err(Error::Storage)?
        {
            tracing::info!("moved the table catalogue to the server's own table space");
        }
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
        let steering = node.spawn_membership_steering();
        *node.steering.lock().unwrap_or_else(|p| p.into_inner()) = Some(steering);
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

    /// (writes forwarded to a leader, calls that carried them) so far.
    pub fn forward_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.peers.forward_stats();
        (stats.writes.load(Relaxed), stats.batches.load(Relaxed))
    }

    /// (groups whose Raft timer runs here, elections this node started
    /// because no live node led a group, elections it started to take back
    /// a group it is first to lead) (`raft/liveness.rs`).
    pub fn liveness_stats(&self) -> (usize, u64, u64) {
        (
            self.liveness.timers_running(),
            self.liveness.elections_started(),
            self.liveness.take_backs(),
        )
    }

    /// The node's first storage failure, once there is one: the node can no
    /// longer trust its own state and must stop (`raft/failure.rs`).
    pub fn storage_failure(&self) -> watch::Receiver<Option<String>> {
        self.log.failure().subscribe()
    }

    /// The Raft log database shared by every group of this node.
    pub(crate) fn log_db(&self) -> &Arc<LogDb> {
        &self.log
    }

    /// The storage layer (for reads).
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Stops every group and the transport, then makes the data durable.
    pub async fn shutdown(&self) {
        for task in [&self.reconciler, &self.steering] {
            if let Some(task) = task.lock().unwrap_or_else(|p| p.into_inner()).take() {
                task.abort();
            }
        }
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, server)) = server {
            stop.send_replace(true);
            let _ = server.await;
        }
        let groups = self.groups.all();
        futures::future::join_all(groups.iter().map(|group| group.shutdown())).await;
        for group in groups {
            self.groups.remove(group.id);
        }
        if let Err(err) = self.storage.make_durable() {
            tracing::error!(error = %err, "flushing table data at shutdown");
        }
    }
}
