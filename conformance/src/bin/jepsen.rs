//! `jepsen`: recorded runs under faults and their verdicts (see
//! `conformance/src/jepsen/`). `cargo xtask jepsen --runs N --nemesis NAME|all --time S`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use conformance::jepsen::history::Analysis;
use conformance::jepsen::runner::{self, Nemesis, RunOptions};
use conformance::jepsen::svg;

const USAGE: &str = "usage: jepsen [--runs N] [--nemesis NAME|all] [--time SECS] [--nodes 3|5] [--follower N] [--clients N] [--keys N] [--out DIR]
nemeses: kill-random kill-leader pause-leader isolate-leader split restart-all mixed
--follower N adds a follower cluster of N nodes, cut off from the leader cluster at every other fault";

struct Args {
    runs: usize,
    nemeses: Vec<Nemesis>,
    time: Duration,
    nodes: usize,
    follower_nodes: usize,
    clients: usize,
    keys: u64,
    out: PathBuf,
}

fn parse() -> Result<Args> {
    let mut args = Args {
        runs: 1,
        nemeses: Nemesis::ALL.to_vec(),
        time: Duration::from_secs(60),
        nodes: 3,
        follower_nodes: 0,
        clients: 10,
        keys: 8,
        out: PathBuf::from("target/jepsen"),
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let value = raw
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--runs" => args.runs = value.parse()?,
            "--nemesis" if value == "all" => args.nemeses = Nemesis::ALL.to_vec(),
            "--nemesis" => {
                args.nemeses = vec![Nemesis::parse(&value)
                    .with_context(|| format!("unknown nemesis {value}\n{USAGE}"))?]
            }
            "--time" => args.time = Duration::from_secs(value.parse()?),
            "--nodes" => {
                args.nodes = value.parse()?;
                if args.nodes < 3 {
                    bail!("--nodes must be at least 3: the nemeses need a majority to survive a fault");
                }
            }
            "--follower" => args.follower_nodes = value.parse()?,
            "--clients" => args.clients = value.parse()?,
            "--keys" => args.keys = value.parse()?,
            "--out" => args.out = PathBuf::from(value),
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    Ok(args)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn row(run: &str, nemesis: &str, cluster: &str, analysis: &Analysis) -> String {
    let mut recoveries = analysis.recoveries.clone();
    recoveries.sort_unstable();
    let mut failovers = analysis.failovers.clone();
    failovers.sort_unstable();
    let ms = |us: u64| format!("{:.0}", us as f64 / 1000.0);
    let verdict = match (&analysis.unchecked, analysis.linearizable) {
        (Some(_), _) => "UNCHECKED",
        (None, true) => "yes",
        (None, false) => "NO",
    };
    let follower = if analysis.follower_reads > 0 {
        let recoveries = analysis
            .follower_snapshot_recoveries
            .map_or("?".to_string(), |n| n.to_string());
        format!(
            "{}/{}, {recoveries}",
            analysis.follower_reads_ok, analysis.follower_reads
        )
    } else {
        "-".to_string()
    };
    format!(
        "| {run} | {nemesis} | {cluster} | {} | {} | {} | {} | {follower} | {verdict} | {} | {} | {} | {} | {} | {} |",
        analysis.operations,
        analysis.ok,
        analysis.failed,
        analysis.unknown,
        analysis.anomalies.len(),
        ms(percentile(&recoveries, 50.0)),
        ms(percentile(&recoveries, 99.0)),
        ms(recoveries.last().copied().unwrap_or(0)),
        ms(percentile(&failovers, 50.0)),
        ms(failovers.last().copied().unwrap_or(0)),
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse()?;
    let backend = conformance::setup::choose_backend().await?;
    std::fs::create_dir_all(&args.out)?;
    let mut table = vec![
        "| run | nemesis | cluster | ops | ok | failed | unknown | follower reads ok/all, snapshot copies | linearizable | anomalies | recovery p50 ms | p99 ms | max ms | write stall p50 ms | max ms |".to_string(),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    let cluster = if args.follower_nodes > 0 {
        format!("{} + follower {}", args.nodes, args.follower_nodes)
    } else {
        args.nodes.to_string()
    };
    let (mut anomalies, mut broken) = (0, 0);
    let mut number = 0;
    for _ in 0..args.runs {
        for &nemesis in &args.nemeses {
            number += 1;
            let name = format!("j{}-{number}", std::process::id());
            let options = RunOptions {
                nodes: args.nodes,
                follower_nodes: args.follower_nodes,
                clients: args.clients,
                keys: args.keys,
                time: args.time,
                nemesis,
                fault_for: Duration::from_secs(5),
                quiet_for: Duration::from_secs(5),
                op_timeout: Duration::from_secs(3),
            };
            println!(
                "run {number}: {} on {cluster} for {:?} ...",
                nemesis.name(),
                args.time
            );
            let dir = args.out.join(format!("run-{number:03}-{}", nemesis.name()));
            std::fs::create_dir_all(&dir)?;
            let history = match runner::run(backend.clone(), &name, &options).await {
                Ok(history) => history,
                Err(err) => {
                    // A run that could not finish is reported, never
                    // counted as clean.
                    broken += 1;
                    let line = format!(
                        "| {number} | {} | {cluster} | run failed: {err:#} |",
                        nemesis.name()
                    );
                    std::fs::write(dir.join("verdict.txt"), format!("run failed: {err:#}\n"))?;
                    println!("{line}");
                    table.push(line);
                    std::fs::write(args.out.join("runs.md"), format!("{}\n", table.join("\n")))?;
                    continue;
                }
            };
            let analysis = history.analyse(5_000_000);
            let mut jsonl = std::fs::File::create(dir.join("history.jsonl"))?;
            history.write_jsonl(&mut jsonl)?;
            let title = format!(
                "run {number}: {} on {cluster} — {} ops, linearizable: {}",
                nemesis.name(),
                analysis.operations,
                analysis.linearizable
            );
            std::fs::write(dir.join("timeline.svg"), svg::timeline(&history, &title))?;
            let verdict = format!(
                "linearizable: {}\nunchecked: {}\nanomalies:\n{}\n",
                analysis.linearizable,
                analysis.unchecked.as_deref().unwrap_or("no"),
                analysis
                    .anomalies
                    .iter()
                    .map(|a| format!("- {a}\n"))
                    .collect::<String>()
            );
            std::fs::write(dir.join("verdict.txt"), &verdict)?;
            anomalies += analysis.anomalies.len();
            broken += usize::from(analysis.unchecked.is_some());
            let line = row(&number.to_string(), nemesis.name(), &cluster, &analysis);
            println!("{line}\n  {}", dir.display());
            for anomaly in &analysis.anomalies {
                println!("  ANOMALY: {anomaly}");
            }
            if let Some(reason) = &analysis.unchecked {
                println!("  UNCHECKED: {reason}");
            }
            table.push(line);
            std::fs::write(args.out.join("runs.md"), format!("{}\n", table.join("\n")))?;
        }
    }
    println!("\n{}", table.join("\n"));
    if anomalies > 0 || broken > 0 {
        bail!(
            "{anomalies} anomalies, {broken} runs not finished or not checked; see {}",
            args.out.display()
        );
    }
    Ok(())
}
