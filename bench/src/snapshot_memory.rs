//! `bench snapshot-memory`: whether a node's memory follows a table's size
//! through Raft snapshots. A 3-node cluster starts with node 3 held back
//! (a member that is down). Incompressible values are written through node
//! 1 while nodes 1 and 2 build snapshots and compact their logs; then node 3
//! starts with no data and can catch up only by receiving and installing a
//! snapshot of the whole table. Every node's resident memory is sampled
//! every 50 ms from `/proc`; the report gives each node's peaks and the
//! time node 3 took to hold every key.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use regatta_proto::regatta::v1 as regatta;
use regatta_proto::regatta::v1::kv_client::KvClient;

use crate::procfs::{mib, rss};
use crate::systems::{self, TABLE};

#[derive(Debug, Clone)]
pub struct Options {
    pub binary: PathBuf,
    pub out: Option<PathBuf>,
    pub bytes: u64,
    pub value_size: usize,
    pub snapshot_entries: u64,
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        binary: PathBuf::new(),
        out: None,
        bytes: 2 << 30,
        value_size: 256 * 1024,
        snapshot_entries: 2000,
    };
    crate::parse_flags(args, |flag, value| {
        match flag {
            "--binary" => options.binary = PathBuf::from(value()?),
            "--out" => options.out = Some(PathBuf::from(value()?)),
            "--mib" => options.bytes = value()?.parse::<u64>()? << 20,
            "--val-size" => options.value_size = value()?.parse()?,
            "--snapshot-entries" => options.snapshot_entries = value()?.parse()?,
            "--quick" => {
                options.bytes = 256 << 20;
                options.snapshot_entries = 200;
            }
            other => bail!("unknown flag {other} (bench snapshot-memory --binary PATH [--out FILE] [--mib N] [--val-size N] [--snapshot-entries N] [--quick])"),
        }
        Ok(())
    })?;
    if options.binary.as_os_str().is_empty() {
        bail!("--binary is required (cargo xtask bench passes it)");
    }
    Ok(options)
}

/// Peak RSS per node since the last `take`, sampled every 50 ms.
#[derive(Clone, Default)]
struct Peaks(Arc<Mutex<Vec<(u32, u64)>>>);

impl Peaks {
    fn watch(&self, pids: &[u32]) {
        let mut peaks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for &pid in pids {
            if !peaks.iter().any(|(p, _)| *p == pid) {
                peaks.push((pid, rss(pid)));
            }
        }
    }

    fn sample(&self) {
        let mut peaks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (pid, peak) in peaks.iter_mut() {
            *peak = (*peak).max(rss(*pid));
        }
    }

    /// Each node's peak since the last call (in node order), and a new start.
    fn take(&self) -> Vec<u64> {
        let mut peaks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let taken = peaks.iter().map(|(_, peak)| *peak).collect();
        for (pid, peak) in peaks.iter_mut() {
            *peak = rss(*pid);
        }
        taken
    }
}

/// A value of `size` bytes that does not compress (xorshift output).
fn incompressible(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut value = Vec::with_capacity(size + 8);
    while value.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        value.extend_from_slice(&state.to_le_bytes());
    }
    value.truncate(size);
    value
}

async fn count_on(api: &str) -> Result<i64> {
    let mut kv = KvClient::new(systems::connect(api).await?);
    Ok(kv
        .range(regatta::RangeRequest {
            table: TABLE.into(),
            key: vec![0],
            range_end: vec![0],
            count_only: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .count)
}

pub async fn main(options: Options) -> Result<()> {
    let entries = options.snapshot_entries.to_string();
    let overhead = (options.snapshot_entries / 10).max(10).to_string();
    let mut running = systems::start_regatta_holding(
        &options.binary,
        3,
        1,
        &[
            "--raft.snapshot-entries",
            &entries,
            "--raft.compaction-overhead",
            &overhead,
        ],
        1,
    )
    .await?;
    let peaks = Peaks::default();
    peaks.watch(&running.pids());
    let at_start = peaks.take();
    let sampler = {
        let peaks = peaks.clone();
        tokio::spawn(async move {
            loop {
                peaks.sample();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let keys = options.bytes.div_ceil(options.value_size as u64);
    let started = Instant::now();
    let channel = systems::connect(&running.clients[0]).await?;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (mut kv, next, size) = (
            KvClient::new(channel.clone()),
            next.clone(),
            options.value_size,
        );
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= keys {
                    return Ok::<(), anyhow::Error>(());
                }
                kv.put(regatta::PutRequest {
                    table: TABLE.into(),
                    key: format!("snap/{i:08}").into_bytes(),
                    value: incompressible(i, size),
                    prev_kv: false,
                })
                .await
                .with_context(|| format!("writing key {i}"))?;
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let wrote = started.elapsed();
    // Let the last snapshot build and the log compact.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let writing = peaks.take();

    let joined = Instant::now();
    running.start_held()?;
    peaks.watch(&running.pids());
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if let Ok(count) = count_on(&running.clients[2]).await {
            if count as u64 == keys {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("node 3 did not catch up within 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let caught_up = joined.elapsed();
    let joining = peaks.take();
    tokio::time::sleep(Duration::from_secs(5)).await;
    peaks.sample();
    let idle: Vec<u64> = running.pids().iter().map(|&pid| rss(pid)).collect();
    sampler.abort();

    let mut section = format!(
        "## snapshot-memory\n\nProduced by `cargo xtask bench snapshot-memory`: a 3-node cluster, node 3 held back; {} MiB in {keys} incompressible values of {} KiB written through node 1 in {:.1} s (`--raft.snapshot-entries {entries}`, `--raft.compaction-overhead {overhead}`), then node 3 started with no data and caught up by snapshot in {:.1} s. Resident memory of each node, MiB:\n\n\
         | node | at start | peak while writing and snapshotting | peak while node 3 joins | idle after |\n|---|---|---|---|---|\n",
        options.bytes >> 20,
        options.value_size / 1024,
        wrote.as_secs_f64(),
        caught_up.as_secs_f64(),
    );
    for node in 0..3 {
        let cell = |values: &[u64]| values.get(node).map_or("-".to_string(), |v| mib(*v));
        let _ = writeln!(
            section,
            "| {} | {} | {} | {} | {} |",
            node + 1,
            if node < 2 {
                cell(&at_start)
            } else {
                "(not started)".into()
            },
            if node < 2 {
                cell(&writing)
            } else {
                "(not started)".into()
            },
            cell(&joining),
            cell(&idle)
        );
    }
    println!("{section}");
    if let Some(out) = &options.out {
        crate::record::record_section(out, "## snapshot-memory", &section)?;
        println!("written to {}", out.display());
    }
    Ok(())
}
