//! The follower side of cross-cluster replication
//! (`features/replication.feature`, `docs/replication.md`): a follower
//! cluster copies the leader cluster's tables.
//!
//! Every node runs a [`Follower`]. The node leading the metadata group keeps
//! the table catalogue equal to the leader cluster's (`Metadata.Get`); the
//! node leading a table's group runs that table's [`worker::TableWorker`], so
//! exactly one node per follower cluster replicates a table at a time, and
//! the work moves with Raft leadership. Sits above `cluster`; the gRPC
//! clients it uses come from `regatta-proto`.

pub mod forward;
mod forward_stream;
pub mod metrics;
pub mod recovery;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use regatta_proto::replication::v1::metadata_client::MetadataClient;
use regatta_proto::replication::v1::MetadataRequest;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::cluster::{table_name, Node};
use metrics::ReplicationMetrics;
use recovery::Recoveries;
use worker::TableWorker;

/// Follower flags (Regatta's names), resolved.
#[derive(Debug, Clone)]
pub struct FollowerSettings {
    /// How long to wait before asking again after a plain-mode stream ended.
    pub poll_interval: Duration,
    /// How often the catalogue is compared with the leader's.
    pub reconcile_interval: Duration,
    /// How often workers are started or stopped as leadership moves.
    pub lease_interval: Duration,
    /// Longest wait for a Log.Replicate answer or its next message.
    pub log_rpc_timeout: Duration,
    pub max_recv_message_bytes: usize,
    /// Ask the leader to keep streams open and push entries (extension);
    /// a leader that does not know it ends streams as usual.
    pub follow_mode: bool,
    /// Longest recovery by snapshot, stream and install together.
    pub snapshot_rpc_timeout: Duration,
    /// Tables of this node recovering by snapshot at once.
    pub max_recovery_in_flight: usize,
    /// Snapshot download rate limit of this node (bytes/s), 0 = none.
    pub max_snapshot_recv_bytes_per_second: u64,
    /// Forward writes to the leader cluster; `false` refuses them as 2022
    /// did (both in `features/follower_writes.feature`).
    pub forward_writes: bool,
}

impl Default for FollowerSettings {
    fn default() -> Self {
        FollowerSettings {
            poll_interval: Duration::from_secs(1),
            reconcile_interval: Duration::from_secs(30),
            lease_interval: Duration::from_secs(15),
            log_rpc_timeout: Duration::from_secs(60),
            max_recv_message_bytes: 8 * 1024 * 1024,
            follow_mode: true,
            snapshot_rpc_timeout: Duration::from_secs(3600),
            max_recovery_in_flight: 1,
            max_snapshot_recv_bytes_per_second: 0,
            forward_writes: true,
        }
    }
}

/// The follower machinery of one node.
pub struct Follower {
    node: Arc<Node>,
    leader: Channel,
    settings: Arc<FollowerSettings>,
    metrics: Arc<ReplicationMetrics>,
    recoveries: Arc<Recoveries>,
}

/// How often leadership changes are checked, at most (leases are Raft
/// leadership, so this only bounds how fast a new leader takes over).
const SUPERVISE_TICK: Duration = Duration::from_millis(200);
/// A worker with nothing stored for this long (or five poll intervals, if
/// longer) while the leader has newer entries is restarted.
const STALL_PATIENCE: Duration = Duration::from_secs(10);

impl Follower {
    pub fn new(
        node: Arc<Node>,
        leader: Channel,
        settings: FollowerSettings,
        metrics: Arc<ReplicationMetrics>,
    ) -> Follower {
        let recoveries = Arc::new(Recoveries::new(
            settings.max_recovery_in_flight,
            settings.max_snapshot_recv_bytes_per_second,
        ));
        Follower {
            node,
            leader,
            settings: Arc::new(settings),
            metrics,
            recoveries,
        }
    }

    /// Runs reconciliation and the workers until the task is aborted.
    pub fn start(self) -> JoinHandle<()> {
        tokio::spawn(self.supervise())
    }

    async fn supervise(self) {
        let mut workers: HashMap<Vec<u8>, (watch::Sender<bool>, JoinHandle<()>)> = HashMap::new();
        // Workers told to stop whose tasks have not ended yet: a table's
        // next worker starts once its last one has ended, so that one
        // worker at a time replicates it here (and the last one's cleanup,
        // `leased` 0 among it, cannot land after the next one started).
        let mut stopping: HashMap<Vec<u8>, JoinHandle<()>> = HashMap::new();
        let mut next_reconcile = tokio::time::Instant::now();
        let tick = SUPERVISE_TICK.min(self.settings.lease_interval);
        loop {
            if tokio::time::Instant::now() >= next_reconcile && self.node.leads_metadata() {
                match self.reconcile().await {
                    Ok(()) => {
                        next_reconcile =
                            tokio::time::Instant::now() + self.settings.reconcile_interval
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "reconciling tables with the leader cluster");
                        next_reconcile = tokio::time::Instant::now() + self.settings.poll_interval;
                    }
                }
            }
            // A worker runs exactly where the table's group is led.
            let led: BTreeSet<Vec<u8>> = self
                .node
                .tables()
                .into_keys()
                .filter(|table| self.node.leads_table(table))
                .collect();
            let patience = (self.settings.poll_interval * 5).max(STALL_PATIENCE);
            let mut stopped = Vec::new();
            for (table, (stop, handle)) in &workers {
                let stats = self.metrics.table(table);
                let stalled = stats.stalled(patience);
                if stalled {
                    stats.restarted();
                    tracing::warn!(
                        table = %String::from_utf8_lossy(table),
                        lag = stats.lag(),
                        "replication worker made no progress for {patience:?} while the leader has newer entries: restarting it"
                    );
                }
                if !led.contains(table) || handle.is_finished() || stalled {
                    stop.send_replace(true);
                    stopped.push(table.clone());
                }
            }
            for table in stopped {
                if let Some((_, handle)) = workers.remove(&table) {
                    stopping.insert(table, handle);
                }
            }
            stopping.retain(|_, handle| !handle.is_finished());
            for table in led {
                if workers.contains_key(&table) || stopping.contains_key(&table) {
                    continue;
                }
                let (stop, stopped) = watch::channel(false);
                let worker = TableWorker {
                    node: self.node.clone(),
                    table: table.clone(),
                    leader: self.leader.clone(),
                    settings: self.settings.clone(),
                    metrics: self.metrics.clone(),
                    recoveries: self.recoveries.clone(),
                };
                tracing::info!(table = %String::from_utf8_lossy(&table), "replicating table");
                workers.insert(table, (stop, tokio::spawn(worker.run(stopped))));
            }
            tokio::time::sleep(tick).await;
        }
    }

    /// Creates and deletes tables so the catalogue matches the leader's.
    async fn reconcile(&self) -> Result<(), String> {
        let mut client = MetadataClient::new(self.leader.clone());
        let answer = tokio::time::timeout(
            self.settings.log_rpc_timeout,
            client.get(MetadataRequest {}),
        )
        .await
        .map_err(|_| "Metadata.Get did not answer in time".to_string())?
        .map_err(|status| format!("Metadata.Get: {status}"))?
        .into_inner();
        // Name -> the leader's shard id (0 from a leader that does not say).
        let wanted: BTreeMap<Vec<u8>, u64> = answer
            .tables
            .into_iter()
            .map(|table| (table.name.into_bytes(), table.shard_id))
            .filter(|(name, _)| match table_name::check(name) {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(table = ?String::from_utf8_lossy(name), error = %err,
                        "the leader cluster lists a table name this server refuses; not copying it");
                    false
                }
            })
            .collect();
        let have: BTreeSet<Vec<u8>> = self.node.tables().into_keys().collect();
        let origins = self
            .node
            .table_origins()
            .map_err(|err| format!("reading the tables' origins: {err}"))?;
        let timeout = Duration::from_secs(30);
        for (table, &origin) in &wanted {
            let shown = String::from_utf8_lossy(table);
            let copied = origins.get(table).copied();
            if have.contains(table) {
                match copied {
                    // Deleted and created again on the leader cluster since
                    // it was copied: what is here belongs to the old table.
                    Some(copied) if origin != 0 && copied != origin => {
                        tracing::info!(table = %shown, copied, origin,
                            "the leader cluster created this table anew: copying it from scratch");
                        self.node
                            .delete_table(table, timeout)
                            .await
                            .map_err(|err| format!("deleting {shown}: {err}"))?;
                    }
                    // Copied before origins were kept: from now on.
                    None if origin != 0 => {
                        self.node
                            .record_origin(table, origin, timeout)
                            .await
                            .map_err(|err| format!("recording the origin of {shown}: {err}"))?;
                        continue;
                    }
                    _ => continue,
                }
            }
            tracing::info!(table = %shown, "creating table the leader cluster has");
            let created = match origin {
                0 => self.node.create_table(table, timeout).await,
                origin => self.node.create_copy(table, origin, timeout).await,
            };
            created.map_err(|err| format!("creating {shown}: {err}"))?;
        }
        let wanted: BTreeSet<Vec<u8>> = wanted.into_keys().collect();
        for table in have.difference(&wanted) {
            tracing::info!(table = %String::from_utf8_lossy(table), "deleting table the leader cluster deleted");
            self.node
                .delete_table(table, timeout)
                .await
                .map_err(|err| format!("deleting {}: {err}", String::from_utf8_lossy(table)))?;
        }
        Ok(())
    }
}
