//! `bench idle-tables`: what tables cost when nothing happens. A 3-node
//! cluster serves N tables and is left idle; each node's CPU (user +
//! system, from `/proc/<pid>/stat`) over 10 s is reported as a share of one
//! core, with its RSS. Then node 1 is killed and the run waits until both
//! other nodes agree on a live leader for every table: failover must not
//! get slower as idle tables get cheaper.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::procfs::{self, clock_ticks_per_second, cpu_ticks};
use crate::systems;

#[derive(Debug, Clone)]
pub struct Options {
    pub binary: PathBuf,
    pub out: Option<PathBuf>,
    pub counts: Vec<usize>,
    pub window: Duration,
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        binary: PathBuf::new(),
        out: None,
        counts: vec![10, 100, 1000],
        window: Duration::from_secs(10),
    };
    crate::parse_flags(args, |flag, value| {
        match flag {
            "--binary" => options.binary = PathBuf::from(value()?),
            "--out" => options.out = Some(PathBuf::from(value()?)),
            "--tables" => {
                options.counts = value()?
                    .split(',')
                    .map(|n| n.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--window" => options.window = Duration::from_secs_f64(value()?.parse()?),
            "--quick" => {
                options.counts = vec![10, 100];
                options.window = Duration::from_secs(3);
            }
            other => bail!("unknown flag {other} (bench idle-tables --binary PATH [--out FILE] [--tables 10,100,1000] [--window SECS] [--quick])"),
        }
        Ok(())
    })?;
    if options.binary.as_os_str().is_empty() {
        bail!("--binary is required (cargo xtask bench passes it)");
    }
    Ok(options)
}

/// Node `rest`'s `/metrics` text (empty when it does not answer).
async fn metrics(rest: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut body = String::new();
    let Ok(mut socket) = tokio::net::TcpStream::connect(rest).await else {
        return body;
    };
    let _ = socket
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await;
    let _ = socket.read_to_string(&mut body).await;
    body
}

/// Elections node `rest` started, for a lost leader or to take a table
/// back (`regatta_raft_elections_started_total`, `..._take_backs_total`).
async fn elections(rest: &str) -> u64 {
    metrics(rest)
        .await
        .lines()
        .filter(|line| {
            line.starts_with("regatta_raft_elections_started_total ")
                || line.starts_with("regatta_raft_take_backs_total ")
        })
        .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Waits until no node has started an election for `quiet` (at most
/// `patience`): leaderships settle after a start (each table goes to its
/// first choice), and "idle" begins after that. Returns the time it took.
async fn settle(rest: &[String], quiet: Duration, patience: Duration) -> Duration {
    let began = Instant::now();
    let mut last = (u64::MAX, Instant::now());
    loop {
        let mut total = 0;
        for node in rest {
            total += elections(node).await;
        }
        if total != last.0 {
            last = (total, Instant::now());
        } else if last.1.elapsed() >= quiet || began.elapsed() >= patience {
            return began.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each table's leader as node `rest` reports it (`/metrics`).
async fn leaders(rest: &str) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    let body = metrics(rest).await;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("regatta_table_raft_leader_id{table=\"") else {
            continue;
        };
        if let Some((table, value)) = rest.split_once("\"} ") {
            if let Ok(leader) = value.trim().parse() {
                found.insert(table.to_string(), leader);
            }
        }
    }
    found
}

struct Row {
    tables: usize,
    /// From the start of the processes until every node served every table.
    started_in: Duration,
    /// From then until no node had started an election for 3 s.
    settled_in: Duration,
    cpu: Vec<f64>,
    rss: Vec<f64>,
    /// The node killed (1-based) and how many tables it led.
    victim: u64,
    led_by_victim: usize,
    failover: Duration,
}

async fn measure(options: &Options, tables: usize) -> Result<Row> {
    let starting = Instant::now();
    let mut running = systems::start_regatta(&options.binary, 3, tables).await?;
    let started_in = starting.elapsed();
    // Idle begins once leaderships have settled: no election anywhere for
    // 3 s (each table led by its first choice).
    let settled_in = settle(
        &running.rest,
        Duration::from_secs(3),
        Duration::from_secs(120),
    )
    .await;
    let pids = running.pids();
    let before: Vec<u64> = pids.iter().map(|&pid| cpu_ticks(pid)).collect();
    let started = Instant::now();
    tokio::time::sleep(options.window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let ticks = clock_ticks_per_second();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(&pid, &was)| 100.0 * (cpu_ticks(pid) - was) as f64 / ticks / elapsed)
        .collect();
    let rss: Vec<f64> = pids
        .iter()
        .map(|&pid| procfs::rss(pid) as f64 / (1024.0 * 1024.0))
        .collect();

    // Failover: kill the node that leads the most tables, wait until the
    // two others agree on a live leader for every table.
    let led = leaders(&running.rest[0]).await;
    let victim = (1..=3u64)
        .max_by_key(|node| led.values().filter(|leader| *leader == node).count())
        .unwrap_or(1);
    let led_by_victim = led.values().filter(|leader| **leader == victim).count();
    let survivors: Vec<usize> = (0..3).filter(|&i| i as u64 + 1 != victim).collect();
    running.kill(victim as usize - 1);
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(120);
    loop {
        let (a, b) = tokio::join!(
            leaders(&running.rest[survivors[0]]),
            leaders(&running.rest[survivors[1]])
        );
        let settled = a.len() == tables
            && a.iter().all(|(table, leader)| {
                *leader != victim && *leader != 0 && b.get(table) == Some(leader)
            });
        if settled {
            break;
        }
        if Instant::now() > deadline {
            bail!("{tables} tables: no live leader for every table within 120 s of the kill");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Row {
        tables,
        started_in,
        settled_in,
        cpu,
        rss,
        victim,
        led_by_victim,
        failover: killed.elapsed(),
    })
}

pub async fn main(options: Options) -> Result<()> {
    // A count that fails is a finding too: it is reported, not dropped.
    let mut rows: Vec<std::result::Result<Row, (usize, String)>> = Vec::new();
    for &tables in &options.counts {
        match measure(&options, tables).await {
            Ok(row) => {
                println!(
                    "{} tables: served in {:.1} s, settled {:.1} s later, CPU {:.1}% / {:.1}% / {:.1}% of a core, RSS {:.0} / {:.0} / {:.0} MiB, every table led again {:.2} s after node {} (leader of {}) was killed",
                    row.tables, row.started_in.as_secs_f64(), row.settled_in.as_secs_f64(), row.cpu[0], row.cpu[1], row.cpu[2],
                    row.rss[0], row.rss[1], row.rss[2], row.failover.as_secs_f64(), row.victim,
                    row.led_by_victim
                );
                rows.push(Ok(row));
            }
            Err(err) => {
                let first = format!("{err:#}")
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                println!("{tables} tables: failed: {first}");
                rows.push(Err((tables, first)));
            }
        }
    }
    let mut section = format!(
        "## idle-tables\n\nProduced by `cargo xtask bench idle-tables`: a 3-node cluster serving N tables, idle (measured once no node has started an election for 3 s: leaderships settle on each table's first choice after a start); each node's CPU (user + system) over {:?} as a share of one core, its RSS, and the time from killing the node that leads the most tables until the two others agree on a live leader for every table.\n\n\
         | tables | every table served after, s | settled after, s | CPU % node 1 / 2 / 3 | RSS MiB node 1 / 2 / 3 | node killed (tables it led) | every table led again after the kill, s |\n|---|---|---|---|---|---|---|\n",
        options.window
    );
    for row in &rows {
        let _ = match row {
            Ok(row) => writeln!(
                section,
                "| {} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} | {:.0} / {:.0} / {:.0} | {} ({}) | {:.2} |",
                row.tables,
                row.started_in.as_secs_f64(),
                row.settled_in.as_secs_f64(),
                row.cpu[0],
                row.cpu[1],
                row.cpu[2],
                row.rss[0],
                row.rss[1],
                row.rss[2],
                row.victim,
                row.led_by_victim,
                row.failover.as_secs_f64()
            ),
            Err((tables, reason)) => writeln!(section, "| {tables} | failed: {reason} | | | | | |"),
        };
    }
    println!("\n{section}");
    if let Some(out) = &options.out {
        crate::record::record_section(out, "## idle-tables", &section)?;
        println!("written to {}", out.display());
    }
    Ok(())
}
