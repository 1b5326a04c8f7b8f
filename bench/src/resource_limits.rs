//! `bench resource-limits`: one node under every pressure of a hostile or
//! careless client population at once, while a reference client does point
//! reads. The pressures: 10,000 idle connections (HTTP/2 preface sent,
//! nothing else), 1,000 IterateRange streams over a million keys whose
//! clients never read, a client looping a Txn of the most puts that fit in
//! 4 MiB, and one looping `count_only` over the million keys.
//!
//! Pass: the reference client's p99 under load stays under 50 ms, and the
//! node's resident memory stays under the bound stated in the report. The
//! reference is also measured alone first, in the same run.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use prost::Message;
use regatta_proto::mvcc::v1::request_op::{Put, Request};
use regatta_proto::mvcc::v1::RequestOp;
use regatta_proto::regatta::v1 as regatta;
use regatta_proto::regatta::v1::kv_client::KvClient;
use tonic::transport::Channel;

use crate::load::{self, Report, Stop};
use crate::systems::{self, table_name};

pub struct Options {
    binary: PathBuf,
    out: Option<PathBuf>,
    keys: u64,
    connections: usize,
    streams: usize,
    duration: Duration,
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        binary: PathBuf::new(),
        out: None,
        keys: 1_000_000,
        connections: 10_000,
        streams: 1_000,
        duration: Duration::from_secs(10),
    };
    crate::parse_flags(args, |flag, value| {
        match flag {
            "--binary" => options.binary = PathBuf::from(value()?),
            "--out" => options.out = Some(PathBuf::from(value()?)),
            "--keys" => options.keys = value()?.parse()?,
            "--connections" => options.connections = value()?.parse()?,
            "--streams" => options.streams = value()?.parse()?,
            "--duration" => options.duration = Duration::from_secs_f64(value()?.parse()?),
            "--quick" => {
                options.keys = 100_000;
                options.connections = 1_000;
                options.streams = 100;
                options.duration = Duration::from_secs(3);
            }
            other => bail!("unknown flag {other} (bench resource-limits --binary PATH [--out FILE] [--keys N] [--connections N] [--streams N] [--duration SECS] [--quick])"),
        }
        Ok(())
    })?;
    if options.binary.as_os_str().is_empty() {
        bail!("--binary is required (cargo xtask bench passes it)");
    }
    Ok(options)
}

/// The reference client's p99 under load must stay below this.
const P99_TARGET: Duration = Duration::from_millis(50);
/// The node's resident memory must stay below this under every pressure.
const RSS_BOUND: u64 = 1024 * 1024 * 1024;
/// Largest encoded Txn request the server takes.
const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// Point reads of the reference client: 4 workers on one connection,
/// serializable, over the 10,000 keys of table 0.
async fn reference(channel: Channel, duration: Duration) -> Report {
    load::run(4, 1, Stop::Duration(duration), move |_, _, sequence| {
        let mut kv = KvClient::new(channel.clone());
        async move {
            kv.range(regatta::RangeRequest {
                table: table_name(0).into_bytes(),
                key: format!("key/{:08}", sequence % crate::scan_load::POINT_KEYS).into_bytes(),
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(|e| e.to_string())
        }
    })
    .await
}

/// TCP connections that send the HTTP/2 preface and an empty SETTINGS
/// frame, then nothing; kept open until dropped.
fn idle_connections(address: &str, count: usize) -> Result<Vec<std::net::TcpStream>> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let mut connections = Vec::with_capacity(count);
    for i in 0..count {
        let mut stream = std::net::TcpStream::connect(address)
            .with_context(|| format!("idle connection {i} of {count}"))?;
        stream.write_all(PREFACE)?;
        connections.push(stream);
    }
    Ok(connections)
}

/// What happened to the unread IterateRange streams.
#[derive(Default, Debug)]
struct Streams {
    opened: usize,
    refused: usize,
    first_refusal: Option<String>,
}

/// Opens `count` IterateRange calls over all of table 1 on `channels` and
/// keeps them without reading a message.
async fn unread_streams(
    channels: &[Channel],
    count: usize,
) -> (Vec<tonic::Streaming<regatta::RangeResponse>>, Streams) {
    let mut calls = Vec::new();
    for i in 0..count {
        let mut kv = KvClient::new(channels[i % channels.len()].clone());
        calls.push(tokio::spawn(async move {
            kv.iterate_range(regatta::RangeRequest {
                table: table_name(1).into_bytes(),
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            })
            .await
        }));
    }
    let mut held = Vec::new();
    let mut streams = Streams::default();
    for call in calls {
        match call.await {
            Ok(Ok(response)) => {
                streams.opened += 1;
                held.push(response.into_inner());
            }
            Ok(Err(status)) => {
                streams.refused += 1;
                streams
                    .first_refusal
                    .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
            }
            Err(err) => {
                streams.refused += 1;
                streams.first_refusal.get_or_insert_with(|| err.to_string());
            }
        }
    }
    (held, streams)
}

/// A Txn of as many small puts as fit in one 4 MiB request.
fn largest_txn() -> regatta::TxnRequest {
    let mut txn = regatta::TxnRequest {
        table: table_name(0).into_bytes(),
        ..Default::default()
    };
    let mut size = txn.encoded_len();
    for i in 0u64.. {
        let op = RequestOp {
            request: Some(Request::RequestPut(Put {
                key: format!("txn/{i:08}").into_bytes(),
                value: i.to_le_bytes().to_vec(),
                ..Put::default()
            })),
        };
        // The op's own bytes, its tag and its length prefix.
        let op_bytes = op.encoded_len() + 1 + prost::length_delimiter_len(op.encoded_len());
        // Room for gRPC's framing and the headers within the limit.
        if size + op_bytes > MAX_REQUEST - 1024 {
            break;
        }
        size += op_bytes;
        txn.success.push(op);
    }
    txn
}

async fn big_txns(channel: Channel, duration: Duration) -> Report {
    let txn = largest_txn();
    load::run(1, 1, Stop::Duration(duration), move |_, _, _| {
        let mut kv = KvClient::new(channel.clone())
            .max_encoding_message_size(MAX_REQUEST)
            .max_decoding_message_size(64 * 1024 * 1024);
        let txn = txn.clone();
        async move { kv.txn(txn).await.map(drop).map_err(|e| e.to_string()) }
    })
    .await
}

/// Samples `pid`'s resident memory every 100 ms until `stop`; the peak.
async fn peak_rss(pid: u32, stop: tokio::sync::watch::Receiver<bool>) -> u64 {
    let mut peak = 0;
    while !*stop.borrow() {
        peak = peak.max(crate::procfs::rss(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peak
}

fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1e3)
}

pub async fn main(options: Options) -> Result<()> {
    let running = systems::start_regatta(&options.binary, 1, 2).await?;
    let api = running.clients[0].clone();
    let pid = running.pids()[0];
    let loader = systems::connect(&api).await?;
    crate::scan_load::fill(&loader, &table_name(1), options.keys)
        .await
        .context("writing the scanned table")?;
    crate::scan_load::fill(&loader, &table_name(0), crate::scan_load::POINT_KEYS)
        .await
        .context("writing the point-read table")?;
    let rss_loaded = crate::procfs::rss(pid);
    let alone = reference(systems::connect(&api).await?, options.duration).await;

    // Every pressure at once.
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(peak_rss(pid, stop_rx));
    let idle = idle_connections(&api, options.connections)?;
    let idle_opened = started.elapsed();
    let mut stream_channels = Vec::new();
    for _ in 0..10 {
        stream_channels.push(systems::connect(&api).await?);
    }
    let (held, streams) = unread_streams(&stream_channels, options.streams).await;
    let (loaded, txns, counted) = tokio::join!(
        reference(systems::connect(&api).await?, options.duration),
        big_txns(systems::connect(&api).await?, options.duration),
        crate::scan_load::scans(
            systems::connect(&api).await?,
            options.duration,
            1,
            options.keys
        ),
    );
    stop_tx.send_replace(true);
    let peak = sampler.await.unwrap_or(0);
    let rss_after = crate::procfs::rss(pid);
    drop(held);
    drop(idle);
    for (what, report) in [
        ("reference alone", &alone),
        ("reference under load", &loaded),
    ] {
        if let Some(err) = &report.first_error {
            bail!("{what}: {err}");
        }
    }

    let txn_ops = largest_txn().success.len();
    let p99 = loaded.percentile(99.0);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut section = format!(
        "## resource-limits\n\n`cargo xtask bench resource-limits`: one node (release build), every pressure at once for {:?}: {} idle connections (HTTP/2 preface, then silence; opened in {:.1} s), {} IterateRange streams over {} keys whose clients never read, one client looping a Txn of {txn_ops} puts (the most that fit in 4 MiB), one looping `count_only` over the {} keys. A reference client (4 workers, one connection, serializable point reads over 10,000 keys) runs alone first, then beside them.\n\n\
         | reference point reads | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|\n",
        options.duration,
        options.connections,
        idle_opened.as_secs_f64(),
        options.streams,
        options.keys,
        options.keys,
    );
    for (what, report) in [("alone", &alone), ("under every pressure", &loaded)] {
        let _ = writeln!(
            section,
            "| {what} | {:.0} | {} | {} | {} |",
            report.per_second(),
            ms(report.percentile(50.0)),
            ms(report.percentile(99.0)),
            report.errors,
        );
    }
    let _ = writeln!(
        section,
        "\n| pressure | outcome |\n|---|---|\n\
         | unread IterateRange streams | {} opened and held; {} refused ({}) |\n\
         | 4 MiB Txns | {} committed, p50 {} ms, {} errors{} |\n\
         | `count_only` scans | {} completed, p50 {} ms, {} errors{} |\n",
        streams.opened,
        streams.refused,
        streams.first_refusal.as_deref().unwrap_or("none"),
        txns.requests,
        ms(txns.percentile(50.0)),
        txns.errors,
        txns.first_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default(),
        counted.requests,
        ms(counted.percentile(50.0)),
        counted.errors,
        counted
            .first_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default(),
    );
    let _ = writeln!(
        section,
        "Node RSS: {} MiB with the data loaded, peak {} MiB under the pressures, {} MiB after them.\n\n\
         Targets: reference p99 under load < {} ms: {} ({} ms, {:.1}x its p99 alone); peak RSS < {} MiB: {}.",
        crate::procfs::mib(rss_loaded),
        crate::procfs::mib(peak),
        crate::procfs::mib(rss_after),
        P99_TARGET.as_millis(),
        verdict(p99 < P99_TARGET),
        ms(p99),
        p99.as_secs_f64() / alone.percentile(99.0).as_secs_f64().max(1e-9),
        crate::procfs::mib(RSS_BOUND),
        verdict(peak < RSS_BOUND),
    );
    println!("{section}");
    if let Some(out) = &options.out {
        crate::record::record_section(out, "## resource-limits", &section)?;
        println!("written to {}", out.display());
    }
    if p99 >= P99_TARGET || peak >= RSS_BOUND {
        bail!("a target was not met (see above)");
    }
    Ok(())
}
