//! Per-table replication state of a follower node, in Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What one table's worker reports.
#[derive(Debug, Default)]
pub struct TableReplication {
    /// The leader cluster's applied index, as its last message said.
    leader_index: AtomicU64,
    /// The stored leader index `L`.
    stored: AtomicU64,
    /// Whether this node's worker replicates the table now.
    leased: AtomicBool,
    /// USE_SNAPSHOT answers received.
    snapshot_needed: AtomicU64,
    /// Workers restarted because they made no progress.
    restarts: AtomicU64,
    /// Whether a recovery by snapshot runs now.
    recovering: AtomicBool,
    /// Whether the worker waits for its turn to recover (not a stall).
    waiting_for_recovery: AtomicBool,
    /// Recoveries by snapshot completed.
    recoveries: AtomicU64,
    /// Snapshot bytes downloaded.
    snapshot_bytes: AtomicU64,
    /// When the stored index last moved (or a worker started).
    progress_at: Mutex<Option<Instant>>,
}

impl TableReplication {
    pub fn observe_leader(&self, index: u64) {
        self.leader_index.store(index, Ordering::Relaxed);
    }

    pub fn observe_stored(&self, index: u64) {
        self.stored.store(index, Ordering::Relaxed);
        self.mark_progress();
    }

    pub fn set_leased(&self, leased: bool) {
        self.leased.store(leased, Ordering::Relaxed);
        self.mark_progress();
    }

    pub fn set_recovering(&self, recovering: bool) {
        self.recovering.store(recovering, Ordering::Relaxed);
        self.mark_progress();
    }

    pub fn set_waiting_for_recovery(&self, waiting: bool) {
        self.waiting_for_recovery.store(waiting, Ordering::Relaxed);
        self.mark_progress();
    }

    pub fn recovered(&self) {
        self.recoveries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_snapshot_bytes(&self, bytes: u64) {
        self.snapshot_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Something moved (an entry stored, a snapshot batch applied): the
    /// worker is not stalled.
    pub fn mark_progress(&self) {
        *self.progress_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether the leader has entries this follower lacks and the stored
    /// index has not moved for `patience`.
    pub fn stalled(&self, patience: std::time::Duration) -> bool {
        let since = *self.progress_at.lock().unwrap_or_else(|p| p.into_inner());
        self.lag() > 0
            && !self.waiting_for_recovery.load(Ordering::Relaxed)
            && since.is_some_and(|since| since.elapsed() > patience)
    }

    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.mark_progress();
    }

    pub fn snapshot_needed(&self) {
        self.snapshot_needed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn lag(&self) -> u64 {
        self.leader_index
            .load(Ordering::Relaxed)
            .saturating_sub(self.stored.load(Ordering::Relaxed))
    }
}

/// One exported series: name, type, help and how to read it.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TableReplication) -> u64,
);

/// Every table's replication state on this node.
#[derive(Debug, Default)]
pub struct ReplicationMetrics {
    tables: Mutex<BTreeMap<Vec<u8>, Arc<TableReplication>>>,
}

impl ReplicationMetrics {
    pub fn table(&self, table: &[u8]) -> Arc<TableReplication> {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(table.to_vec())
            .or_default()
            .clone()
    }

    /// The follower's replication gauges and counters.
    pub fn render(&self) -> String {
        let tables = self
            .tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = String::new();
        let series: [Series; 8] = [
            (
                "regatta_replication_index",
                "gauge",
                "Stored leader index L of the table (role=follower).",
                |t| t.stored.load(Ordering::Relaxed),
            ),
            (
                "regatta_replication_lag",
                "gauge",
                "Leader index minus stored index: entries the follower lacks.",
                TableReplication::lag,
            ),
            (
                "regatta_replication_leased",
                "gauge",
                "1 when this node's worker replicates the table.",
                |t| u64::from(t.leased.load(Ordering::Relaxed)),
            ),
            (
                "regatta_replication_worker_restarts_total",
                "counter",
                "Workers restarted after making no progress while the leader had newer entries.",
                |t| t.restarts.load(Ordering::Relaxed),
            ),
            (
                "regatta_replication_snapshot_needed_total",
                "counter",
                "USE_SNAPSHOT answers received.",
                |t| t.snapshot_needed.load(Ordering::Relaxed),
            ),
            (
                "regatta_replication_recovering",
                "gauge",
                "1 while the table is being copied from the leader's snapshot.",
                |t| u64::from(t.recovering.load(Ordering::Relaxed)),
            ),
            (
                "regatta_replication_snapshot_recoveries_total",
                "counter",
                "Recoveries by snapshot completed.",
                |t| t.recoveries.load(Ordering::Relaxed),
            ),
            (
                "regatta_replication_snapshot_received_bytes_total",
                "counter",
                "Snapshot bytes downloaded from the leader cluster.",
                |t| t.snapshot_bytes.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (table, stats) in &tables {
                let table = String::from_utf8_lossy(table).replace(['"', '\\', '\n'], "_");
                let role = if name == "regatta_replication_index" {
                    "role=\"follower\","
                } else {
                    ""
                };
                let _ = writeln!(out, "{name}{{{role}table=\"{table}\"}} {}", value(stats));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_worker_is_stalled_only_while_behind_without_progress() {
        let stats = TableReplication::default();
        stats.set_leased(true);
        stats.observe_leader(10);
        stats.observe_stored(4);
        assert!(
            !stats.stalled(Duration::from_millis(30)),
            "it just progressed"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(stats.stalled(Duration::from_millis(30)), "behind and idle");
        stats.observe_stored(10);
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            !stats.stalled(Duration::from_millis(30)),
            "caught up: idle is fine"
        );
        stats.observe_leader(11);
        stats.restarted();
        assert!(
            !stats.stalled(Duration::from_millis(30)),
            "a restart counts as progress"
        );
        assert_eq!(stats.restarts.load(Ordering::Relaxed), 1);
    }
}
