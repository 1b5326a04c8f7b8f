//! Recovery by snapshot (`features/snapshot.feature`): when the leader cluster has
//! compacted the entries a follower needs (`USE_SNAPSHOT`), the table's
//! worker copies the leader's Snapshot.Stream into the follower cluster as a
//! restore carried by the follower's own Raft log (`cluster/restore.rs`),
//! committed with the snapshot's leader index. Every replica ends with the
//! same content; readers see the old content until the commit; memory stays
//! bounded whatever the size.

use std::time::Duration;

use regatta_proto::replication::v1::snapshot_client::SnapshotClient;
use regatta_proto::replication::v1::SnapshotRequest;
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio::time::Instant;

use super::worker::{TableWorker, PROPOSE_TIMEOUT};
use crate::cluster::TableRestore;

/// What a node's recoveries share: how many may run, and the download rate.
pub struct Recoveries {
    permits: Semaphore,
    rate: RateLimit,
}

impl Recoveries {
    pub fn new(max_in_flight: usize, bytes_per_second: u64) -> Recoveries {
        Recoveries {
            permits: Semaphore::new(max_in_flight.max(1)),
            rate: RateLimit {
                bytes_per_second,
                next_free: Mutex::new(Instant::now()),
            },
        }
    }
}

/// Spaces downloads so that they average at most `bytes_per_second`.
struct RateLimit {
    bytes_per_second: u64,
    next_free: Mutex<Instant>,
}

impl RateLimit {
    /// Waits for the turn of `bytes` more bytes.
    async fn take(&self, bytes: usize) {
        if self.bytes_per_second == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        let start = {
            let mut next_free = self.next_free.lock().await;
            let start = (*next_free).max(Instant::now());
            *next_free = start + cost;
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// Replaces the table's content on the follower cluster with the leader's
/// snapshot; returns the leader index the new content reflects.
pub(super) async fn recover(worker: &TableWorker) -> Result<u64, String> {
    let stats = worker.metrics.table(&worker.table);
    stats.set_waiting_for_recovery(true);
    let permit = worker.recoveries.permits.acquire().await;
    stats.set_waiting_for_recovery(false);
    let _permit = permit.map_err(|_| "recoveries closed".to_string())?;
    stats.set_recovering(true);
    let restore = worker
        .node
        .begin_restore(&worker.table, PROPOSE_TIMEOUT)
        .await
        .map_err(|err| format!("beginning the restore: {err}"))?;
    let copied = tokio::time::timeout(worker.settings.snapshot_rpc_timeout, copy(worker, &restore))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "recovery took longer than --replication.snapshot-rpc-timeout ({:?})",
                worker.settings.snapshot_rpc_timeout
            ))
        });
    let outcome = match copied {
        Ok(leader_index) => restore
            .commit(Some(leader_index))
            .await
            .map(|()| leader_index)
            .map_err(|err| format!("committing the restore: {err}")),
        Err(err) => {
            restore.abort().await;
            Err(err)
        }
    };
    stats.set_recovering(false);
    if let Ok(leader_index) = outcome {
        stats.recovered();
        stats.observe_stored(leader_index);
    }
    outcome
}

/// Streams the leader's snapshot into `restore`; returns its leader index.
async fn copy(worker: &TableWorker, restore: &TableRestore<'_>) -> Result<u64, String> {
    let stats = worker.metrics.table(&worker.table);
    let mut client = SnapshotClient::new(worker.leader.clone())
        .max_decoding_message_size(worker.settings.max_recv_message_bytes);
    let mut stream = client
        .stream(SnapshotRequest {
            table: worker.table.clone(),
        })
        .await
        .map_err(|status| format!("Snapshot.Stream: {status}"))?
        .into_inner();
    let (chunk_tx, chunk_rx) = mpsc::channel::<Vec<u8>>(4);
    let download = async move {
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|status| format!("Snapshot.Stream: {status}"))?
        {
            worker.recoveries.rate.take(chunk.data.len()).await;
            stats.add_snapshot_bytes(chunk.data.len() as u64);
            if chunk_tx.send(chunk.data).await.is_err() {
                break; // The restore stopped reading; it says why.
            }
        }
        Ok::<(), String>(())
    };
    let progress = || worker.metrics.table(&worker.table).mark_progress();
    let (downloaded, filled) = tokio::join!(download, restore.fill(chunk_rx, progress));
    // A broken download looks like a short stream to the decoder: its error
    // is the one that counts.
    downloaded?;
    let filled = filled.map_err(|err| format!("copying the snapshot: {err}"))?;
    filled
        .leader_index
        .ok_or_else(|| "the snapshot does not end with a DUMMY carrying the leader index".into())
}
