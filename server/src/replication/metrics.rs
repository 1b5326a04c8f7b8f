//! Per-table replication state of a follower node, in Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
}

impl TableReplication {
    pub fn observe_leader(&self, index: u64) {
        self.leader_index.store(index, Ordering::Relaxed);
    }

    pub fn observe_stored(&self, index: u64) {
        self.stored.store(index, Ordering::Relaxed);
    }

    pub fn set_leased(&self, leased: bool) {
        self.leased.store(leased, Ordering::Relaxed);
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
        let series: [Series; 4] = [
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
                "regatta_replication_snapshot_needed_total",
                "counter",
                "USE_SNAPSHOT answers received.",
                |t| t.snapshot_needed.load(Ordering::Relaxed),
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
