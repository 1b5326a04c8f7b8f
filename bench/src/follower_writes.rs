//! `bench follower-writes`: writes sent to a follower cluster (forwarded to
//! the leader cluster, answered once the follower holds them) beside the
//! same writes sent to the leader cluster, in one run on the same pair.
//!
//! Starts a leader node and a follower node of the given binary on loopback
//! and alternates two closed-loop workloads of 64 clients over 8
//! connections: `put-64` against the leader, `follower-put-64` against the
//! follower. Each runs `--rounds` times; the median round counts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::PutRequest;
use tonic::transport::Channel;

use crate::lag::connect;
use crate::load::{self, Report, Stop};
use crate::systems::TABLE;

pub struct Options {
    binary: PathBuf,
    out: Option<PathBuf>,
    duration: Duration,
    rounds: usize,
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        binary: PathBuf::new(),
        out: None,
        duration: Duration::from_secs(10),
        rounds: 3,
    };
    crate::parse_flags(args, |flag, value| {
        match flag {
            "--binary" => options.binary = PathBuf::from(value()?),
            "--out" => options.out = Some(PathBuf::from(value()?)),
            "--duration" => options.duration = Duration::from_secs(value()?.parse()?),
            "--rounds" => options.rounds = value()?.parse::<usize>()?.max(1),
            "--quick" => {
                options.duration = Duration::from_secs(2);
                options.rounds = 1;
            }
            other => bail!("unknown flag {other}"),
        }
        Ok(())
    })?;
    if options.binary.as_os_str().is_empty() {
        bail!("--binary is required (cargo xtask bench follower-writes passes it)");
    }
    Ok(options)
}

const CLIENTS: usize = 64;
const CONNS: usize = 8;
/// Distinct keys the clients write (etcd's `benchmark put` default).
const KEY_SPACE: u64 = 10_000;

/// 64 clients putting 8-byte keys and values into `api` for `duration`.
async fn put_64(api: &str, duration: Duration) -> Result<Report> {
    let mut conns: Vec<KvClient<Channel>> = Vec::new();
    for _ in 0..CONNS {
        conns.push(connect(api).await?);
    }
    let report = load::run(
        CLIENTS,
        CONNS,
        Stop::Duration(duration),
        move |conn, _, seq| {
            let mut kv = conns[conn].clone();
            async move {
                kv.put(PutRequest {
                    table: TABLE.into(),
                    key: format!("{:08}", seq % KEY_SPACE).into_bytes(),
                    value: seq.to_le_bytes().to_vec(),
                    prev_kv: false,
                })
                .await
                .map(drop)
                .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
            }
        },
    )
    .await;
    if let Some(err) = &report.first_error {
        bail!(
            "{} of the writes to {api} failed, the first: {err}",
            report.errors
        );
    }
    Ok(report)
}

/// One round of a workload: the load's report and the CPU seconds each
/// node spent on it.
struct Round {
    report: Report,
    leader_cpu: f64,
    follower_cpu: f64,
}

impl Round {
    /// CPU milliseconds per 1,000 writes of a node.
    fn per_thousand(&self, cpu: f64) -> f64 {
        cpu * 1000.0 * 1000.0 / self.report.requests.max(1) as f64
    }
}

/// Runs `put_64` against `api`, timing both nodes' CPU.
async fn measured(api: &str, duration: Duration, pids: (u32, u32)) -> Result<Round> {
    let ticks = crate::procfs::clock_ticks_per_second();
    let before = (
        crate::procfs::cpu_ticks(pids.0),
        crate::procfs::cpu_ticks(pids.1),
    );
    let report = put_64(api, duration).await?;
    let seconds =
        |pid: u32, then: u64| crate::procfs::cpu_ticks(pid).saturating_sub(then) as f64 / ticks;
    Ok(Round {
        leader_cpu: seconds(pids.0, before.0),
        follower_cpu: seconds(pids.1, before.1),
        report,
    })
}

fn median(mut rounds: Vec<Round>) -> Round {
    rounds.sort_by(|a, b| a.report.per_second().total_cmp(&b.report.per_second()));
    rounds.swap_remove(rounds.len() / 2)
}

fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

pub async fn main(options: Options) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pair = crate::lag::leader_and_follower(&options.binary, dir.path(), &[])?;
    let (leader_api, follower_api) = (pair.leader_api.clone(), pair.follower_api.clone());
    connect(&leader_api).await?;
    connect(&follower_api).await?;
    // Warm both paths (connections, the follower's worker) before measuring.
    put_64(&leader_api, Duration::from_secs(1)).await?;
    put_64(&follower_api, Duration::from_secs(1)).await?;
    let pids = (pair.leader.id(), pair.follower.id());
    let (mut on_leader, mut on_follower) = (Vec::new(), Vec::new());
    for round in 1..=options.rounds {
        let leader = measured(&leader_api, options.duration, pids).await?;
        let follower = measured(&follower_api, options.duration, pids).await?;
        println!(
            "round {round}: put-64 {:.0}/s, follower-put-64 {:.0}/s",
            leader.report.per_second(),
            follower.report.per_second()
        );
        on_leader.push(leader);
        on_follower.push(follower);
    }
    // Each round's pair ran back to back: their ratio is the least
    // disturbed by what else the machine did between rounds.
    let mut ratios: Vec<f64> = on_leader
        .iter()
        .zip(&on_follower)
        .map(|(l, f)| f.report.per_second() / l.report.per_second())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let ratio_median = ratios[ratios.len() / 2];
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    let (leader, follower) = (median(on_leader), median(on_follower));
    let mut section = String::from("## follower-writes\n\n");
    section.push_str(&format!(
        "`cargo xtask bench follower-writes`: one leader node and one follower node on \
         loopback (one machine, {} cores), {CLIENTS} clients over {CONNS} connections, \
         8-byte keys over {KEY_SPACE} keys, {} s per round, median of {} rounds (by \
         req/s), workloads alternating. A follower write is forwarded to the leader \
         cluster and answered once the follower's copy holds it; in both workloads the \
         follower node copies every write. CPU: milliseconds of each node's CPU per \
         1,000 writes.\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.duration.as_secs(),
        options.rounds,
    ));
    section.push_str(
        "| workload | req/s | p50 ms | p99 ms | errors | leader node CPU | follower node CPU |\n|---|---|---|---|---|---|---|\n",
    );
    for (name, round) in [("put-64 (leader)", &leader), ("follower-put-64", &follower)] {
        let report = &round.report;
        section.push_str(&format!(
            "| {name} | {:.0} | {} | {} | {} | {:.0} | {:.0} |\n",
            report.per_second(),
            ms(report.percentile(50.0)),
            ms(report.percentile(99.0)),
            report.errors,
            round.per_thousand(round.leader_cpu),
            round.per_thousand(round.follower_cpu),
        ));
    }
    let (leader, follower) = (&leader.report, &follower.report);
    section.push_str(&format!(
        "\nfollower-put-64 / put-64: throughput {:.3}x (medians), {ratio_median:.3}x (median of the rounds' ratios; each round: {}), p50 {:+.2} ms, p99 {:+.2} ms.\n",
        follower.per_second() / leader.per_second(),
        shown.join(", "),
        (follower.percentile(50.0).as_secs_f64() - leader.percentile(50.0).as_secs_f64()) * 1000.0,
        (follower.percentile(99.0).as_secs_f64() - leader.percentile(99.0).as_secs_f64()) * 1000.0,
    ));
    println!("{section}");
    if let Some(out) = &options.out {
        crate::record::record_section(out, "## follower-writes", &section)?;
        println!("written to {}", out.display());
    }
    Ok(())
}
