//! `bench replication-lag`: how long a write acknowledged by the leader
//! cluster takes to become visible on a follower cluster.
//!
//! Starts a leader node and a follower node of the given server binary on
//! loopback, writes one key at a steady rate (open loop: the writes do not
//! wait for each other), and reads that key on the follower as fast as it
//! can. Each write's value is its sequence number; the first time the
//! follower shows sequence `s` (or a later one: entries apply in order), the
//! lag of `s` is that moment minus the moment the leader acknowledged `s`.
//! Run once with follow mode (the leader pushes entries) and once polling.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::{PutRequest, RangeRequest};
use tonic::transport::Channel;

use crate::systems::{free_address, Process, TABLE};

pub struct Options {
    binary: PathBuf,
    rate: u64,
    duration: Duration,
    modes: Vec<bool>,
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut args = args.iter().cloned();
    let mut options = Options {
        binary: PathBuf::new(),
        rate: 2000,
        duration: Duration::from_secs(20),
        modes: vec![true, false],
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--binary" => options.binary = PathBuf::from(value),
            "--rate" => options.rate = value.parse()?,
            "--duration" => options.duration = Duration::from_secs(value.parse()?),
            "--mode" => {
                options.modes = match value.as_str() {
                    "follow" => vec![true],
                    "poll" => vec![false],
                    "both" => vec![true, false],
                    other => bail!("--mode {other}: follow, poll or both"),
                }
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if options.binary.as_os_str().is_empty() {
        bail!("--binary is required (cargo xtask bench replication-lag passes it)");
    }
    Ok(options)
}

pub(crate) fn spawn(
    binary: &PathBuf,
    role: &str,
    dir: &std::path::Path,
    extra: &[String],
) -> Result<(Process, String)> {
    let api = free_address()?;
    let child = Command::new(binary)
        .arg(role)
        .args(["--log-level", "warn", "--api.address", &api])
        .args([
            "--raft.address",
            &free_address()?,
            "--rest.address",
            &free_address()?,
        ])
        .args(["--maintenance.address", &free_address()?])
        .arg("--raft.node-host-dir")
        .arg(dir.join("raft"))
        .arg("--raft.state-machine-dir")
        .arg(dir.join("sm"))
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok((Process::new(child), api))
}

pub(crate) async fn connect(api: &str) -> Result<KvClient<Channel>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let channel = Channel::from_shared(format!("http://{api}"))?
            .connect()
            .await;
        if let Ok(channel) = channel {
            let mut client = KvClient::new(channel);
            let probe = client
                .range(RangeRequest {
                    table: TABLE.into(),
                    key: b"k".to_vec(),
                    ..Default::default()
                })
                .await;
            if probe.is_ok() {
                return Ok(client);
            }
        }
        if Instant::now() > deadline {
            bail!("{api} does not serve table {TABLE}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Outcome {
    writes: usize,
    elapsed: Duration,
    lags: Vec<Duration>,
}

/// A leader node serving [`TABLE`] and a follower node copying it, with
/// the follower's flags `follower_extra`, under `dir`.
pub(crate) struct Pair {
    pub leader: Process,
    pub leader_api: String,
    pub follower: Process,
    pub follower_api: String,
}

pub(crate) fn leader_and_follower(
    binary: &PathBuf,
    dir: &std::path::Path,
    follower_extra: &[String],
) -> Result<Pair> {
    let replication = free_address()?;
    let (leader, leader_api) = spawn(
        binary,
        "leader",
        &dir.join("leader"),
        &[
            format!("--tables.names={TABLE}"),
            format!("--replication.address={replication}"),
        ],
    )?;
    let mut flags = vec![
        format!("--replication.leader-address={replication}"),
        "--replication.reconcile-interval=200ms".into(),
    ];
    flags.extend_from_slice(follower_extra);
    let (follower, follower_api) = spawn(binary, "follower", &dir.join("follower"), &flags)?;
    Ok(Pair {
        leader,
        leader_api,
        follower,
        follower_api,
    })
}

async fn run(options: &Options, follow: bool) -> Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let pair = leader_and_follower(
        &options.binary,
        dir.path(),
        &[format!("--replication.follow-mode={follow}")],
    )?;
    let (leader_api, follower_api) = (pair.leader_api.clone(), pair.follower_api.clone());
    let leader = connect(&leader_api).await?;
    let mut follower = connect(&follower_api).await?;

    let total = (options.rate * options.duration.as_secs()) as usize;
    let acked: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total + 1]));
    let seen: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total + 1]));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // The follower reader: notes when each sequence number first shows.
    let reader = {
        let (seen, done) = (seen.clone(), done.clone());
        tokio::spawn(async move {
            let mut last = 0usize;
            while last < total && !done.load(std::sync::atomic::Ordering::Relaxed) {
                let read = follower
                    .range(RangeRequest {
                        table: TABLE.into(),
                        key: b"k".to_vec(),
                        ..Default::default()
                    })
                    .await;
                let now = Instant::now();
                let current = read
                    .ok()
                    .and_then(|r| r.into_inner().kvs.first().cloned())
                    .and_then(|kv| String::from_utf8(kv.value).ok())
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if current > last {
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    for s in last + 1..=current.min(total) {
                        seen[s] = Some(now);
                    }
                    last = current;
                }
            }
        })
    };

    // Open-loop writer at the target rate.
    let started = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / options.rate.max(1));
    let mut writes = Vec::with_capacity(total);
    for seq in 1..=total {
        let due = started + interval * seq as u32;
        tokio::time::sleep_until(due.into()).await;
        let mut client = leader.clone();
        let acked = acked.clone();
        writes.push(tokio::spawn(async move {
            let put = client
                .put(PutRequest {
                    table: TABLE.into(),
                    key: b"k".to_vec(),
                    value: seq.to_string().into_bytes(),
                    prev_kv: false,
                })
                .await;
            if put.is_ok() {
                acked.lock().unwrap_or_else(|p| p.into_inner())[seq] = Some(Instant::now());
            }
        }));
    }
    for write in writes {
        write.await?;
    }
    let elapsed = started.elapsed();
    // Give the follower a moment to show the last writes, then stop.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while seen.lock().unwrap_or_else(|p| p.into_inner())[total].is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = reader.await;

    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut lags = Vec::new();
    for seq in 1..=total {
        if let (Some(ack), Some(seen)) = (acked[seq], seen[seq]) {
            // Seen before the client got its ack: visible at once.
            lags.push(seen.saturating_duration_since(ack));
        }
    }
    lags.sort();
    Ok(Outcome {
        writes: acked.iter().filter(|a| a.is_some()).count(),
        elapsed,
        lags,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

pub async fn main(options: Options) -> Result<()> {
    println!(
        "replication lag: leader node and follower node on loopback, {} writes/s for {} s, one key",
        options.rate,
        options.duration.as_secs()
    );
    println!();
    println!(
        "| mode | writes acked | writes/s | lag p50 ms | lag p99 ms | lag max ms | measured |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &follow in &options.modes {
        let outcome = run(&options, follow).await?;
        let rate = outcome.writes as f64 / outcome.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} |",
            if follow {
                "follow (pushed)"
            } else {
                "poll (1 s interval)"
            },
            outcome.writes,
            rate,
            ms(percentile(&outcome.lags, 0.50)),
            ms(percentile(&outcome.lags, 0.99)),
            ms(outcome.lags.last().copied().unwrap_or_default()),
            outcome.lags.len()
        );
    }
    Ok(())
}
