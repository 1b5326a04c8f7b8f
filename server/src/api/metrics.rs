//! Prometheus text metrics: API requests by method and code with latency
//! histograms, per-table Raft and storage state, group-commit counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::cluster::Node;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters of the API, shared by the services that serve it.
#[derive(Default)]
pub struct ApiMetrics {
    requests: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// More series rendered by other parts of the node (replication).
    sources: Mutex<Vec<MetricsSource>>,
}

/// Renders a block of Prometheus text.
pub type MetricsSource = Box<dyn Fn() -> String + Send + Sync>;

impl ApiMetrics {
    /// Adds series that another part of the node renders.
    pub fn add_source(&self, source: MetricsSource) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(source);
    }

    /// Records one finished call.
    pub fn observe(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        let code = format!("{code:?}");
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((method, code))
            .or_default() += 1;
        let seconds = elapsed.as_secs_f64();
        let mut latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let histogram = latency.entry(method).or_default();
        for (bucket, bound) in histogram.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// Everything in Prometheus text format.
    pub fn render(&self, node: &Node) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP regatta_grpc_requests_total KV API calls by method and gRPC code."
        );
        let _ = writeln!(out, "# TYPE regatta_grpc_requests_total counter");
        for ((method, code), count) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "regatta_grpc_requests_total{{method=\"{method}\",code=\"{code}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP regatta_grpc_request_duration_seconds KV API call latency."
        );
        let _ = writeln!(
            out,
            "# TYPE regatta_grpc_request_duration_seconds histogram"
        );
        for (method, histogram) in self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
                let _ = writeln!(out, "regatta_grpc_request_duration_seconds_bucket{{method=\"{method}\",le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "regatta_grpc_request_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {}", histogram.count);
            let _ = writeln!(
                out,
                "regatta_grpc_request_duration_seconds_sum{{method=\"{method}\"}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "regatta_grpc_request_duration_seconds_count{{method=\"{method}\"}} {}",
                histogram.count
            );
        }
        render_tables(&mut out, node);
        for (name, help, value) in node.storage().rocksdb_stats() {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        for source in self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            out.push_str(&source());
        }
        render_process(&mut out);
        out
    }
}

fn render_tables(out: &mut String, node: &Node) {
    let gauges = [
        ("regatta_table_revision", "The table's revision."),
        (
            "regatta_table_applied_index",
            "Index of the last Raft entry applied to the table.",
        ),
        (
            "regatta_table_raft_term",
            "Current Raft term of the table's group.",
        ),
        (
            "regatta_table_raft_leader_id",
            "Node id of the table's Raft leader (0: none).",
        ),
        (
            "regatta_table_raft_log_last_index",
            "Index of the last entry in the table's Raft log.",
        ),
        (
            "regatta_table_snapshot_installed_index",
            "Index of the last snapshot this node installed from the table's Raft leader (0: none); a member that replaced a lost node catches up this way.",
        ),
    ];
    let mut rows: Vec<[String; 6]> = Vec::new();
    let mut names = Vec::new();
    for (name, _) in node.tables() {
        let (Ok(data), Ok(status)) = (node.table(&name), node.status(&name)) else {
            continue;
        };
        let state = data.state();
        rows.push([
            state.revision.to_string(),
            state.applied_index.to_string(),
            status.info.raft_term.to_string(),
            status.info.raft_leader_id.to_string(),
            status.last_log_index.to_string(),
            status.installed_snapshot_index.to_string(),
        ]);
        names.push(String::from_utf8_lossy(&name).replace(['"', '\\', '\n'], "_"));
    }
    for (i, (metric, help)) in gauges.iter().enumerate() {
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} gauge");
        for (name, row) in names.iter().zip(&rows) {
            let _ = writeln!(out, "{metric}{{table=\"{name}\"}} {}", row[i]);
        }
    }
    let (appends, syncs) = node.log_sync_stats();
    let (writes, batches) = node.forward_stats();
    let (timers_running, elections_started, take_backs) = node.liveness_stats();
    let _ = writeln!(
        out,
        "# HELP regatta_raft_timers_running Raft groups whose own timer runs on this node (a lone voter, or a group without a leader for three election timeouts; the node's liveness beat steers the others)."
    );
    let _ = writeln!(out, "# TYPE regatta_raft_timers_running gauge");
    let _ = writeln!(out, "regatta_raft_timers_running {timers_running}");
    for (name, help, value) in [
        (
            "regatta_raft_elections_started_total",
            "Elections this node started because no live node led a group.",
            elections_started,
        ),
        (
            "regatta_raft_take_backs_total",
            "Elections this node started to lead a group it is first to lead (leadership balance).",
            take_backs,
        ),
        (
            "regatta_raft_log_appends_total",
            "Raft log appends made durable.",
            appends,
        ),
        (
            "regatta_raft_log_syncs_total",
            "WAL syncs of the Raft log (group commit shares them).",
            syncs,
        ),
        (
            "regatta_forwarded_writes_total",
            "Writes this node forwarded to a table's leader.",
            writes,
        ),
        (
            "regatta_forward_batches_total",
            "Calls that carried the forwarded writes (batched per table).",
            batches,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {value}");
    }
}

/// The usual `process_*` metrics, read from `/proc` (Linux); absent elsewhere.
fn render_process(out: &mut String) {
    const PAGE_BYTES: u64 = 4096;
    const TICKS_PER_SECOND: f64 = 100.0;
    if let Some(rss_pages) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
    {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes."
        );
        let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
        let _ = writeln!(
            out,
            "process_resident_memory_bytes {}",
            rss_pages * PAGE_BYTES
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Number of open file descriptors."
        );
        let _ = writeln!(out, "# TYPE process_open_fds gauge");
        let _ = writeln!(out, "process_open_fds {}", fds.count());
    }
    if let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
    {
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total User and system CPU time spent."
        );
        let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter");
        let _ = writeln!(
            out,
            "process_cpu_seconds_total {}",
            ticks as f64 / TICKS_PER_SECOND
        );
    }
}
