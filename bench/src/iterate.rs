//! `bench iterate`: a whole table read by one client. Regatta streams it
//! with IterateRange; etcd has no stream, so its client pages Range with
//! `limit` (1,000 keys a page), the first page linearizable and the rest
//! pinned to that page's revision, as an etcd client reads a consistent
//! view. Reported: MB/s of keys and values, time to the first message, and
//! the server's resident memory while the stream runs over a table many
//! times its block cache.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use regatta_proto::bench::etcd;
use regatta_proto::bench::etcd::kv_client::KvClient as EtcdKvClient;
use regatta_proto::regatta::v1 as regatta;
use regatta_proto::regatta::v1::kv_client::KvClient;

use crate::procfs::{mib, rss};
use crate::systems::{self, Running, TABLE};

#[derive(Debug, Clone)]
pub struct Options {
    pub binary: PathBuf,
    pub out: Option<PathBuf>,
    pub keys: u64,
    pub value_size: usize,
    /// etcd's page size.
    pub page: i64,
    pub rounds: usize,
    /// Regatta's `--storage.block-cache-size`: small, so the table is many
    /// times the cache and a stream that buffered would show in RSS.
    pub block_cache: usize,
    pub quick: bool,
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        binary: PathBuf::new(),
        out: None,
        keys: 100_000,
        value_size: 1024,
        page: 1000,
        rounds: 3,
        block_cache: 8 * 1024 * 1024,
        quick: false,
    };
    crate::parse_flags(args, |flag, value| {
        match flag {
            "--binary" => options.binary = PathBuf::from(value()?),
            "--out" => options.out = Some(PathBuf::from(value()?)),
            "--keys" => options.keys = value()?.parse()?,
            "--val-size" => options.value_size = value()?.parse()?,
            "--page" => options.page = value()?.parse()?,
            "--rounds" => options.rounds = value()?.parse::<usize>()?.max(1),
            "--quick" => {
                options.quick = true;
                options.keys = 20_000;
                options.rounds = 1;
            }
            other => bail!("unknown flag {other} (bench iterate --binary PATH [--out FILE] [--keys N] [--val-size N] [--page N] [--rounds N] [--quick])"),
        }
        Ok(())
    })?;
    if options.binary.as_os_str().is_empty() {
        bail!("--binary is required (cargo xtask bench passes it)");
    }
    Ok(options)
}

/// The keys: `iter/00000042`, all under one prefix.
const PREFIX: &[u8] = b"iter/";

fn key(index: u64) -> Vec<u8> {
    format!("iter/{index:08}").into_bytes()
}

fn prefix_end() -> Vec<u8> {
    b"iter0".to_vec()
}

/// One full read.
#[derive(Debug, Clone, Copy)]
struct Read {
    pairs: u64,
    bytes: u64,
    first: Duration,
    total: Duration,
    messages: u64,
    /// The server's resident set before the read and at its peak during it.
    rss_before: u64,
    rss_peak: u64,
}

impl Read {
    fn megabytes_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.total.as_secs_f64()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Regatta,
    Etcd,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            System::Regatta => "regatta-rs IterateRange",
            System::Etcd => "etcd Range, pages of limit",
        }
    }
}

/// Writes the keys with 64 concurrent writers over 8 connections.
async fn populate(options: &Options, running: &Running, system: System) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..64 {
        let channel = systems::connect(&running.clients[0]).await?;
        let next = next.clone();
        let keys = options.keys;
        let value = vec![b'v'; options.value_size];
        writers.push(tokio::spawn(async move {
            let mut regatta = KvClient::new(channel.clone());
            let mut etcd = EtcdKvClient::new(channel);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= keys {
                    return Ok::<(), anyhow::Error>(());
                }
                // Values differ per key so that nothing compresses to nothing.
                let mut value = value.clone();
                value[..8].copy_from_slice(&index.to_le_bytes());
                match system {
                    System::Regatta => {
                        regatta
                            .put(regatta::PutRequest {
                                table: TABLE.into(),
                                key: key(index),
                                value,
                                prev_kv: false,
                            })
                            .await?;
                    }
                    System::Etcd => {
                        etcd.put(etcd::PutRequest {
                            key: key(index),
                            value,
                            ..Default::default()
                        })
                        .await?;
                    }
                }
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    Ok(())
}

/// Samples the resident set of `pid` every 10 ms until dropped; keeps the peak.
struct RssSampler {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let kept = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                kept.fetch_max(rss(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        RssSampler { peak, task }
    }

    fn stop(self, pid: u32) -> u64 {
        self.task.abort();
        self.peak.fetch_max(rss(pid), Ordering::Relaxed);
        self.peak.load(Ordering::Relaxed)
    }
}

async fn read_regatta(running: &Running) -> Result<Read> {
    let channel = systems::connect(&running.clients[0]).await?;
    let mut kv = KvClient::new(channel).max_decoding_message_size(8 * 1024 * 1024);
    let pid = running.pids()[0];
    let rss_before = rss(pid);
    let sampler = RssSampler::start(pid);
    let started = Instant::now();
    let mut stream = kv
        .iterate_range(regatta::RangeRequest {
            table: TABLE.into(),
            key: PREFIX.to_vec(),
            range_end: prefix_end(),
            linearizable: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let (mut pairs, mut bytes, mut messages, mut first) = (0, 0, 0, None);
    while let Some(message) = stream.message().await? {
        first.get_or_insert_with(|| started.elapsed());
        messages += 1;
        pairs += message.kvs.len() as u64;
        bytes += message
            .kvs
            .iter()
            .map(|kv| (kv.key.len() + kv.value.len()) as u64)
            .sum::<u64>();
    }
    let total = started.elapsed();
    Ok(Read {
        pairs,
        bytes,
        first: first.unwrap_or(total),
        total,
        messages,
        rss_before,
        rss_peak: sampler.stop(pid),
    })
}

async fn read_etcd(running: &Running, page: i64) -> Result<Read> {
    let channel = systems::connect(&running.clients[0]).await?;
    let mut kv = EtcdKvClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let pid = running.pids()[0];
    let rss_before = rss(pid);
    let sampler = RssSampler::start(pid);
    let started = Instant::now();
    let (mut pairs, mut bytes, mut messages, mut first) = (0, 0, 0, None);
    let mut from = PREFIX.to_vec();
    let mut revision = 0;
    loop {
        let answer = kv
            .range(etcd::RangeRequest {
                key: from.clone(),
                range_end: prefix_end(),
                limit: page,
                revision,
                serializable: revision != 0,
                ..Default::default()
            })
            .await?
            .into_inner();
        first.get_or_insert_with(|| started.elapsed());
        messages += 1;
        if revision == 0 {
            revision = answer.header.as_ref().map_or(0, |h| h.revision);
        }
        pairs += answer.kvs.len() as u64;
        bytes += answer
            .kvs
            .iter()
            .map(|kv| (kv.key.len() + kv.value.len()) as u64)
            .sum::<u64>();
        match (answer.more, answer.kvs.last()) {
            (true, Some(last)) => {
                from = last.key.clone();
                from.push(0);
            }
            _ => break,
        }
    }
    let total = started.elapsed();
    Ok(Read {
        pairs,
        bytes,
        first: first.unwrap_or(total),
        total,
        messages,
        rss_before,
        rss_peak: sampler.stop(pid),
    })
}

fn median(mut reads: Vec<Read>) -> Read {
    reads.sort_by(|a, b| {
        a.megabytes_per_second()
            .total_cmp(&b.megabytes_per_second())
    });
    reads.swap_remove((reads.len() - 1) / 2)
}

fn summary(system: System, read: &Read) -> String {
    format!(
        "{}: {} pairs, {:.1} MB in {:.3} s = {:.1} MB/s, {} messages, first after {:.2} ms, RSS {} MiB before, peak {} MiB",
        system.label(),
        read.pairs,
        read.bytes as f64 / 1e6,
        read.total.as_secs_f64(),
        read.megabytes_per_second(),
        read.messages,
        read.first.as_secs_f64() * 1e3,
        mib(read.rss_before),
        mib(read.rss_peak)
    )
}

pub async fn main(options: Options) -> Result<()> {
    let etcd_binary = systems::etcd_binary();
    if let Err(missing) = &etcd_binary {
        eprintln!("bench: {missing}; measuring regatta-rs alone, with no ratios");
    }
    let mut systems_run = vec![System::Regatta];
    if etcd_binary.is_ok() {
        systems_run.push(System::Etcd);
    }
    let cache = options.block_cache.to_string();
    // One system of each, populated once; the reads run `rounds` times,
    // alternating which system goes first.
    let regatta = systems::start_regatta_with(
        &options.binary,
        1,
        1,
        &["--storage.block-cache-size", &cache],
    )
    .await?;
    populate(&options, &regatta, System::Regatta)
        .await
        .context("populating regatta-rs")?;
    let etcd = match &etcd_binary {
        Ok(binary) => {
            let etcd = systems::start_etcd(binary, 1).await?;
            populate(&options, &etcd, System::Etcd)
                .await
                .context("populating etcd")?;
            Some(etcd)
        }
        Err(_) => None,
    };
    let mut runs = Vec::new();
    let mut reads: Vec<(System, Vec<Read>)> =
        systems_run.iter().map(|&s| (s, Vec::new())).collect();
    for round in 0..options.rounds {
        let mut order = systems_run.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for system in order {
            let read = match (system, &etcd) {
                (System::Regatta, _) => read_regatta(&regatta).await?,
                (System::Etcd, Some(etcd)) => read_etcd(etcd, options.page).await?,
                (System::Etcd, None) => continue,
            };
            if read.pairs != options.keys {
                bail!(
                    "{} read {} pairs of {}",
                    system.label(),
                    read.pairs,
                    options.keys
                );
            }
            let line = summary(system, &read);
            println!("{line}");
            runs.push(line);
            if let Some((_, kept)) = reads.iter_mut().find(|(s, _)| *s == system) {
                kept.push(read);
            }
        }
    }
    let medians: Vec<(System, Read)> = reads
        .into_iter()
        .filter(|(_, r)| !r.is_empty())
        .map(|(s, r)| (s, median(r)))
        .collect();
    let section = section(&options, &medians, &runs);
    println!("\n{section}");
    if let Some(out) = &options.out {
        crate::record::record_section(out, HEADING, &section)?;
        println!("written to {}", out.display());
    }
    Ok(())
}

/// The heading of this benchmark's section in BENCHMARKS.md.
const HEADING: &str = "## iterate-100k";

fn section(options: &Options, medians: &[(System, Read)], runs: &[String]) -> String {
    let mut out = format!(
        "{HEADING}\n\nProduced by `cargo xtask bench iterate{}`: {} keys of {} bytes read in full by one client, {} rounds (the median row), \
         one node each; regatta-rs with a block cache of {} MiB, so the table is about {:.0}× the cache. \
         etcd pages Range with limit {} (it has no stream), the first page linearizable and the others pinned to its revision.\n\n\
         | system | MB/s | first message ms | messages | server RSS before MiB | server RSS peak MiB | ours/etcd MB/s |\n|---|---|---|---|---|---|---|\n",
        if options.quick { " --quick" } else { "" },
        options.keys,
        options.value_size,
        options.rounds,
        options.block_cache / (1024 * 1024),
        (options.keys as f64 * (options.value_size + 13) as f64) / options.block_cache as f64,
        options.page,
    );
    let etcd = medians
        .iter()
        .find(|(s, _)| *s == System::Etcd)
        .map(|(_, r)| *r);
    for (system, read) in medians {
        let ratio = match (system, etcd) {
            (System::Regatta, Some(etcd)) => {
                format!(
                    "{:.2}",
                    read.megabytes_per_second() / etcd.megabytes_per_second()
                )
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.2} | {} | {} | {} | {} |",
            system.label(),
            read.megabytes_per_second(),
            read.first.as_secs_f64() * 1e3,
            read.messages,
            mib(read.rss_before),
            mib(read.rss_peak),
            ratio
        );
    }
    out.push_str("\nEvery read, in the order they ran:\n\n```\n");
    for run in runs {
        out.push_str(run);
        out.push('\n');
    }
    out.push_str("```\n");
    out
}
