//! `bench kv`: the same workloads against Regatta and etcd, back to back in
//! one run, on one node and on a 3-node cluster, plus the no-op RPC ceiling;
//! a markdown table with ratios ours/etcd, printed and written to
//! `BENCHMARKS.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use regatta_proto::bench::etcd;
use regatta_proto::bench::etcd::kv_client::KvClient as EtcdKvClient;
use regatta_proto::bench::noop::noop_client::NoopClient;
use regatta_proto::mvcc::v1 as mvcc;
use regatta_proto::regatta::v1 as regatta;
use regatta_proto::regatta::v1::kv_client::KvClient;
use tonic::transport::Channel;

use crate::load::{self, Report, Stop};
use crate::systems::{self, Running, TABLE};

/// Options, named as etcd's `benchmark` tool names them.
#[derive(Debug, Clone)]
pub struct Options {
    pub binary: PathBuf,
    pub out: Option<PathBuf>,
    pub duration: Duration,
    pub total: Option<u64>,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space_size: u64,
    pub sequential_keys: bool,
    pub quick: bool,
    /// Workloads to run (all when empty).
    pub only: Vec<String>,
    /// Cluster sizes to run.
    pub sizes: Vec<usize>,
    /// How many times each workload runs on each system (the median counts).
    pub rounds: usize,
}

/// What a workload does per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put,
    Get {
        linearizable: bool,
    },
    /// Compare-and-swap Txns, half of the requests plain reads.
    TxnMixed,
    Scan,
    Noop,
}

#[derive(Debug, Clone, Copy)]
struct Workload {
    name: &'static str,
    clients: usize,
    conns: usize,
    kind: Kind,
    /// Regatta tables the clients spread over, client `c` on table
    /// `c % tables`. etcd has one keyspace: a workload over several tables
    /// runs on Regatta only and is compared with etcd's `etcd_peer`.
    tables: usize,
    etcd_peer: &'static str,
}

impl Workload {
    const fn new(name: &'static str, clients: usize, conns: usize, kind: Kind) -> Workload {
        Workload {
            name,
            clients,
            conns,
            kind,
            tables: 1,
            etcd_peer: name,
        }
    }

    fn runs_on(&self, system: System) -> bool {
        self.tables == 1 || system == System::Regatta
    }
}

const WORKLOADS: [Workload; 7] = [
    Workload::new("put-1", 1, 1, Kind::Put),
    Workload::new("put-64", 64, 8, Kind::Put),
    // Throughput that grows with tables: every table is its own Raft group.
    Workload {
        tables: 8,
        etcd_peer: "put-64",
        ..Workload::new("put-64-tables-8", 64, 8, Kind::Put)
    },
    Workload::new(
        "range-s-64",
        64,
        8,
        Kind::Get {
            linearizable: false,
        },
    ),
    Workload::new("range-l-64", 64, 8, Kind::Get { linearizable: true }),
    Workload::new("txn-mixed", 64, 8, Kind::TxnMixed),
    Workload::new("scan-100", 64, 8, Kind::Scan),
];

/// A connection to one of the systems.
#[derive(Clone)]
enum Client {
    Regatta(KvClient<Channel>),
    Etcd(EtcdKvClient<Channel>),
    Noop(NoopClient<Channel>),
}

fn status(err: tonic::Status) -> String {
    format!("{:?}: {}", err.code(), err.message())
}

impl Client {
    async fn put(&mut self, table: &str, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        match self {
            Client::Regatta(kv) => kv
                .put(regatta::PutRequest {
                    table: table.into(),
                    key,
                    value,
                    prev_kv: false,
                })
                .await
                .map(drop)
                .map_err(status),
            Client::Etcd(kv) => kv
                .put(etcd::PutRequest {
                    key,
                    value,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(status),
            Client::Noop(_) => Err("no puts on the no-op server".into()),
        }
    }

    async fn get(
        &mut self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        linearizable: bool,
    ) -> Result<(), String> {
        match self {
            Client::Regatta(kv) => kv
                .range(regatta::RangeRequest {
                    table: TABLE.into(),
                    key,
                    range_end,
                    linearizable,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(status),
            Client::Etcd(kv) => kv
                .range(etcd::RangeRequest {
                    key,
                    range_end,
                    serializable: !linearizable,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(status),
            Client::Noop(noop) => noop
                .call(regatta_proto::bench::noop::Empty {})
                .await
                .map(drop)
                .map_err(status),
        }
    }

    /// If `key` holds `expected`, put `value`; else read it.
    async fn cas(&mut self, key: Vec<u8>, expected: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        match self {
            Client::Regatta(kv) => {
                use mvcc::compare::{CompareResult, CompareTarget, TargetUnion};
                use mvcc::request_op::{self, Request};
                let op = |request| mvcc::RequestOp {
                    request: Some(request),
                };
                kv.txn(regatta::TxnRequest {
                    table: TABLE.into(),
                    compare: vec![mvcc::Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Value as i32,
                        key: key.clone(),
                        target_union: Some(TargetUnion::Value(expected)),
                        ..Default::default()
                    }],
                    success: vec![op(Request::RequestPut(request_op::Put {
                        key: key.clone(),
                        value,
                        ..Default::default()
                    }))],
                    failure: vec![op(Request::RequestRange(request_op::Range {
                        key,
                        ..Default::default()
                    }))],
                })
                .await
                .map(drop)
                .map_err(status)
            }
            Client::Etcd(kv) => {
                use etcd::compare::{CompareResult, CompareTarget, TargetUnion};
                use etcd::request_op::Request;
                let op = |request| etcd::RequestOp {
                    request: Some(request),
                };
                kv.txn(etcd::TxnRequest {
                    compare: vec![etcd::Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Value as i32,
                        key: key.clone(),
                        target_union: Some(TargetUnion::Value(expected)),
                        ..Default::default()
                    }],
                    success: vec![op(Request::RequestPut(etcd::PutRequest {
                        key: key.clone(),
                        value,
                        ..Default::default()
                    }))],
                    failure: vec![op(Request::RequestRange(etcd::RangeRequest {
                        key,
                        ..Default::default()
                    }))],
                })
                .await
                .map(drop)
                .map_err(status)
            }
            Client::Noop(_) => Err("no Txns on the no-op server".into()),
        }
    }
}

/// The system a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Regatta,
    Etcd,
    Noop,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            System::Regatta => "regatta-rs",
            System::Etcd => "etcd",
            System::Noop => "no-op RPC",
        }
    }
}

struct Row {
    workload: &'static str,
    nodes: usize,
    system: System,
    report: Report,
}

/// Keys as etcd's tool makes them: `key_size` bytes, a number in the key space.
fn key(options: &Options, index: u64) -> Vec<u8> {
    let mut key = format!("{index:0width$}", width = options.key_size).into_bytes();
    key.truncate(options.key_size.max(1));
    key
}

async fn clients_of(running: &Running, system: System, conns: usize) -> Result<Vec<Client>> {
    let mut clients = Vec::new();
    for i in 0..conns {
        // Connections spread over the nodes, as a client library would.
        let address = &running.clients[i % running.clients.len()];
        let channel = systems::connect(address).await?;
        clients.push(match system {
            System::Regatta => {
                Client::Regatta(KvClient::new(channel).max_decoding_message_size(64 << 20))
            }
            System::Etcd => {
                Client::Etcd(EtcdKvClient::new(channel).max_decoding_message_size(64 << 20))
            }
            System::Noop => Client::Noop(NoopClient::new(channel)),
        });
    }
    Ok(clients)
}

/// Writes the key space once so reads find their keys.
async fn populate(options: &Options, running: &Running, system: System) -> Result<()> {
    let clients = Arc::new(clients_of(running, system, 8).await?);
    let value = vec![b'v'; options.val_size];
    let space = options.key_space_size;
    let options = Arc::new(options.clone());
    let report = load::run(64, 8, Stop::Total(space), move |conn, _, sequence| {
        let mut client = clients[conn].clone();
        let (key, value) = (key(&options, sequence), value.clone());
        async move { client.put(TABLE, key, value).await }
    })
    .await;
    if report.errors > 0 {
        bail!(
            "populating {} keys: {} errors, first: {}",
            space,
            report.errors,
            report.first_error.unwrap_or_default()
        );
    }
    Ok(())
}

async fn measure(
    options: &Options,
    running: &Running,
    system: System,
    workload: Workload,
) -> Result<Report> {
    let clients = Arc::new(clients_of(running, system, workload.conns).await?);
    let stop = match options.total {
        Some(total) => Stop::Total(total),
        None => Stop::Duration(options.duration),
    };
    let value = vec![b'v'; options.val_size];
    let other = vec![b'w'; options.val_size];
    let space = options.key_space_size.max(1);
    let sequential = options.sequential_keys;
    let options = Arc::new(options.clone());
    let report = load::run(
        workload.clients,
        workload.conns,
        stop,
        move |conn, client, sequence| {
            let mut connection = clients[conn].clone();
            let index = if sequential {
                sequence % space
            } else {
                // A cheap, well-spread pseudo-random key per request.
                (sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ client as u64) % space
            };
            let options = options.clone();
            let (value, other) = (value.clone(), other.clone());
            async move {
                match workload.kind {
                    Kind::Put => {
                        let table = systems::table_name(client % workload.tables.max(1));
                        connection.put(&table, key(&options, index), value).await
                    }
                    Kind::Get { linearizable } => {
                        connection
                            .get(key(&options, index), Vec::new(), linearizable)
                            .await
                    }
                    Kind::Noop => connection.get(Vec::new(), Vec::new(), false).await,
                    Kind::TxnMixed => {
                        if sequence % 2 == 0 {
                            connection.get(key(&options, index), Vec::new(), true).await
                        } else if sequence % 4 == 1 {
                            connection.cas(key(&options, index), value, other).await
                        } else {
                            connection.cas(key(&options, index), other, value).await
                        }
                    }
                    Kind::Scan => {
                        let start = index.min(space.saturating_sub(100));
                        let end = (start + 100).min(space);
                        connection
                            .get(key(&options, start), key(&options, end), false)
                            .await
                    }
                }
            }
        },
    )
    .await;
    if report.requests == 0 {
        bail!(
            "{} on {}: no request succeeded; first error: {}",
            workload.name,
            system.label(),
            report.first_error.unwrap_or_default()
        );
    }
    Ok(report)
}

fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

/// The summary etcd's tool prints, for one run.
fn summary(row: &Row) -> String {
    let r = &row.report;
    let mut out = format!(
        "{} on {} ({} node{}): {} requests in {:.1} s, {:.0} req/s, {} errors\n  latency ms:",
        row.workload,
        row.system.label(),
        row.nodes,
        if row.nodes == 1 { "" } else { "s" },
        r.requests,
        r.elapsed.as_secs_f64(),
        r.per_second(),
        r.errors,
    );
    for p in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9] {
        let _ = write!(out, " p{p}={}", ms(r.percentile(p)));
    }
    let _ = write!(
        out,
        " fastest={} slowest={}",
        ms(r.fastest()),
        ms(r.slowest())
    );
    out
}

fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = read("/proc/meminfo")
        .lines()
        .find(|line| line.starts_with("MemTotal:"))
        .map(|line| line.trim_start_matches("MemTotal:").trim().to_string())
        .unwrap_or_default();
    let model = read("/proc/cpuinfo")
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':').map(|(_, v)| v.trim().to_string()))
        .unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let disk = std::process::Command::new("df")
        .args(["-hT", &std::env::temp_dir().to_string_lossy()])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.lines().nth(1).map(str::to_string))
        .unwrap_or_default();
    format!(
        "- cores: {cores} ({model})\n- memory: {memory}\n- kernel: Linux {kernel}\n- disk (temporary data directories): `{disk}`\n"
    )
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| workload | nodes | system | req/s | p50 ms | p99 ms | ours/etcd req/s | ours/etcd p99 |\n|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let etcd_peer = WORKLOADS
            .iter()
            .find(|w| w.name == row.workload)
            .map_or(row.workload, |w| w.etcd_peer);
        let peer = rows.iter().find(|other| {
            other.workload == etcd_peer && other.nodes == row.nodes && other.system == System::Etcd
        });
        let (ratio, p99_ratio) = match (row.system, peer) {
            (System::Regatta, Some(etcd)) => (
                format!("{:.2}", row.report.per_second() / etcd.report.per_second()),
                format!(
                    "{:.2}",
                    row.report.percentile(99.0).as_secs_f64()
                        / etcd.report.percentile(99.0).as_secs_f64().max(1e-9)
                ),
            ),
            _ => (String::new(), String::new()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            row.workload,
            row.nodes,
            row.system.label(),
            row.report.per_second(),
            ms(row.report.percentile(50.0)),
            ms(row.report.percentile(99.0)),
            ratio,
            p99_ratio
        );
    }
    for workload in WORKLOADS.iter().filter(|w| w.etcd_peer != w.name) {
        if rows.iter().any(|r| r.workload == workload.name) {
            let _ = writeln!(
                out,
                "\n{} runs on regatta-rs only ({} tables, {} clients each); its ratios are against etcd's {} (etcd has one keyspace).",
                workload.name,
                workload.tables,
                workload.clients / workload.tables,
                workload.etcd_peer
            );
        }
    }
    // The ceiling: how close a serializable read comes to the bare RPC.
    for nodes in [1, 3] {
        let ours = rows.iter().find(|r| {
            r.workload == "range-s-64" && r.nodes == nodes && r.system == System::Regatta
        });
        let noop = rows.iter().find(|r| r.system == System::Noop);
        if let (Some(ours), Some(noop)) = (ours, noop) {
            let _ = writeln!(
                out,
                "\nrange-s-64 on {nodes} node(s) reaches {:.0}% of the no-op RPC ceiling ({:.0} req/s).",
                100.0 * ours.report.per_second() / noop.report.per_second(),
                noop.report.per_second()
            );
        }
    }
    out
}

/// One measurement on a fresh system, so one workload's data and
/// compaction debt do not weigh on the next.
async fn run_once(
    options: &Options,
    etcd: std::result::Result<&PathBuf, &String>,
    system: System,
    nodes: usize,
    workload: Workload,
) -> Result<Report> {
    let running = match system {
        System::Regatta => systems::start_regatta(&options.binary, nodes, workload.tables).await?,
        _ => {
            let binary = etcd.map_err(|e| anyhow::anyhow!("{e}"))?;
            systems::start_etcd(binary, nodes).await?
        }
    };
    if !matches!(workload.kind, Kind::Put) {
        populate(options, &running, system)
            .await
            .with_context(|| format!("populating {}", system.label()))?;
    }
    let report = measure(options, &running, system, workload)
        .await
        .with_context(|| format!("{} on {}", workload.name, system.label()))?;
    if std::env::var_os("BENCH_SERVER_METRICS").is_some() {
        print!("{}", running.raft_metrics().await);
    }
    Ok(report)
}

/// The report of median throughput (the lower middle one of an even count).
fn median(mut reports: Vec<Report>) -> Report {
    reports.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
    reports.swap_remove((reports.len() - 1) / 2)
}

pub async fn main(options: Options) -> Result<()> {
    let etcd = systems::etcd_binary();
    if let Err(missing) = &etcd {
        eprintln!("bench: {missing}; measuring regatta-rs alone, with no ratios");
    }
    let workloads: Vec<Workload> = WORKLOADS
        .iter()
        .copied()
        .filter(|w| options.only.is_empty() || options.only.iter().any(|name| name == w.name))
        .collect();
    if workloads.is_empty() {
        bail!("no workload matches {:?}", options.only);
    }
    // Each workload runs on both systems back to back, `rounds` times, the
    // order alternating; a row is the round of median throughput. Pairs
    // close in time see the same machine: on shared 2-core machines the
    // same binary's throughput moved by a third between minutes.
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    for &nodes in &options.sizes {
        for workload in &workloads {
            let mut systems = vec![System::Regatta];
            if etcd.is_ok() && workload.runs_on(System::Etcd) {
                systems.push(System::Etcd);
            }
            let mut reports: Vec<(System, Vec<Report>)> =
                systems.iter().map(|&system| (system, Vec::new())).collect();
            for round in 0..options.rounds {
                for i in 0..systems.len() {
                    let system = systems[if round % 2 == 0 {
                        i
                    } else {
                        systems.len() - 1 - i
                    }];
                    let report =
                        run_once(&options, etcd.as_ref(), system, nodes, *workload).await?;
                    let row = Row {
                        workload: workload.name,
                        nodes,
                        system,
                        report,
                    };
                    println!("{}", summary(&row));
                    runs.push(summary(&row));
                    if let Some((_, kept)) = reports.iter_mut().find(|(s, _)| *s == system) {
                        kept.push(row.report);
                    }
                }
            }
            for (system, reports) in reports {
                rows.push(Row {
                    workload: workload.name,
                    nodes,
                    system,
                    report: median(reports),
                });
            }
        }
    }
    let noop = systems::start_noop().await?;
    let ceiling = Workload::new("no-op-64", 64, 8, Kind::Noop);
    let mut ceilings = Vec::new();
    for _ in 0..options.rounds {
        let report = measure(&options, &noop, System::Noop, ceiling).await?;
        let row = Row {
            workload: ceiling.name,
            nodes: 1,
            system: System::Noop,
            report,
        };
        println!("{}", summary(&row));
        runs.push(summary(&row));
        ceilings.push(row.report);
    }
    rows.push(Row {
        workload: ceiling.name,
        nodes: 1,
        system: System::Noop,
        report: median(ceilings),
    });

    let command = recorded_arguments(std::env::args().skip(1));
    let mut document = String::from("# Benchmarks\n\n");
    let _ = write!(
        document,
        "Produced by `cargo xtask bench kv{}` (arguments: `{}`), regatta-rs vs etcd {} on the same machine, \
         client and servers on loopback, fsync on for both. \
         Each workload runs {} times on each system, on a fresh system each time, the two systems back to back \
         and their order alternating; a row is the run of median throughput. Reads run over a pre-written key space of {} keys; \
         keys of {} bytes, values of {} bytes; {} per workload.\n\nMachine:\n{}\n",
        if options.quick { " --quick" } else { "" },
        command,
        etcd_version(etcd.as_ref().ok()),
        options.rounds,
        options.key_space_size,
        options.key_size,
        options.val_size,
        match options.total {
            Some(total) => format!("{total} requests"),
            None => format!("{:?}", options.duration),
        },
        machine()
    );
    document.push_str(&table(&rows));
    document.push_str("\nEvery run, in the order they ran (latency percentiles in ms):\n\n```\n");
    for run in &runs {
        document.push_str(run);
        document.push('\n');
    }
    document.push_str("```\n");
    println!("\n{}", table(&rows));
    if let Some(out) = &options.out {
        // The other benchmarks' sections stay, after this one.
        crate::record::record_head(out, &document)?;
        println!("written to {}", out.display());
    }
    Ok(())
}

fn etcd_version(binary: Option<&PathBuf>) -> String {
    binary
        .and_then(|binary| {
            std::process::Command::new(binary)
                .arg("--version")
                .output()
                .ok()
        })
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.lines().next().map(|line| line.trim().to_string()))
        .unwrap_or_else(|| "(not installed)".into())
}

/// The benchmark's arguments as the record shows them: without the paths of
/// this machine (`--out`, `--binary`), which say nothing about the run.
fn recorded_arguments(args: impl Iterator<Item = String>) -> String {
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if skip_value {
            skip_value = false;
        } else if arg == "--out" || arg == "--binary" {
            skip_value = true;
        } else if !(arg.starts_with("--out=") || arg.starts_with("--binary=")) {
            kept.push(arg);
        }
    }
    kept.join(" ")
}
