//! `jepsen`: recorded runs under faults and their verdicts (see
//! `conformance/src/jepsen/`). `cargo xtask jepsen --runs N --nemesis NAME|all --time S`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use conformance::jepsen::history::Analysis;
use conformance::jepsen::runner::{self, Nemesis, RunOptions};
use conformance::jepsen::svg;

const USAGE: &str = "usage: jepsen [--runs N] [--nemesis NAME|all] [--time SECS] [--clients N] [--keys N] [--out DIR]
nemeses: kill-random kill-leader pause-leader isolate-leader restart-all mixed";

struct Args {
    runs: usize,
    nemeses: Vec<Nemesis>,
    time: Duration,
    clients: usize,
    keys: u64,
    out: PathBuf,
}

fn parse() -> Result<Args> {
    let mut args = Args {
        runs: 1,
        nemeses: Nemesis::ALL.to_vec(),
        time: Duration::from_secs(60),
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

fn row(run: &str, nemesis: &str, analysis: &Analysis) -> String {
    let mut recoveries = analysis.recoveries.clone();
    recoveries.sort_unstable();
    let ms = |us: u64| format!("{:.0}", us as f64 / 1000.0);
    format!(
        "| {run} | {nemesis} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        analysis.operations,
        analysis.ok,
        analysis.failed,
        analysis.unknown,
        if analysis.linearizable { "yes" } else { "NO" },
        analysis.anomalies.len(),
        ms(percentile(&recoveries, 50.0)),
        ms(percentile(&recoveries, 99.0)),
        ms(recoveries.last().copied().unwrap_or(0)),
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse()?;
    let backend = conformance::setup::choose_backend().await?;
    std::fs::create_dir_all(&args.out)?;
    let mut table = vec![
        "| run | nemesis | ops | ok | failed | unknown | linearizable | anomalies | recovery p50 ms | p99 ms | max ms |".to_string(),
        "|---|---|---|---|---|---|---|---|---|---|---|".to_string(),
    ];
    let mut anomalies = 0;
    let mut number = 0;
    for _ in 0..args.runs {
        for &nemesis in &args.nemeses {
            number += 1;
            let name = format!("j{}-{number}", std::process::id());
            let options = RunOptions {
                clients: args.clients,
                keys: args.keys,
                time: args.time,
                nemesis,
                fault_for: Duration::from_secs(5),
                quiet_for: Duration::from_secs(5),
                op_timeout: Duration::from_secs(3),
            };
            println!("run {number}: {} for {:?} ...", nemesis.name(), args.time);
            let history = runner::run(backend.clone(), &name, &options).await?;
            let analysis = history.analyse(5_000_000);
            let dir = args.out.join(format!("run-{number:03}-{}", nemesis.name()));
            std::fs::create_dir_all(&dir)?;
            let mut jsonl = std::fs::File::create(dir.join("history.jsonl"))?;
            history.write_jsonl(&mut jsonl)?;
            let title = format!(
                "run {number}: {} — {} ops, linearizable: {}",
                nemesis.name(),
                analysis.operations,
                analysis.linearizable
            );
            std::fs::write(dir.join("timeline.svg"), svg::timeline(&history, &title))?;
            let verdict = format!(
                "linearizable: {}\nanomalies:\n{}\n",
                analysis.linearizable,
                analysis
                    .anomalies
                    .iter()
                    .map(|a| format!("- {a}\n"))
                    .collect::<String>()
            );
            std::fs::write(dir.join("verdict.txt"), &verdict)?;
            anomalies += analysis.anomalies.len();
            let line = row(&number.to_string(), nemesis.name(), &analysis);
            println!("{line}\n  {}", dir.display());
            for anomaly in &analysis.anomalies {
                println!("  ANOMALY: {anomaly}");
            }
            table.push(line);
        }
    }
    let summary = table.join("\n");
    println!("\n{summary}");
    std::fs::write(args.out.join("runs.md"), format!("{summary}\n"))?;
    if anomalies > 0 {
        bail!(
            "{anomalies} anomalies; see the histories in {}",
            args.out.display()
        );
    }
    Ok(())
}
