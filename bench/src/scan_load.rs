//! `bench scan-load`: whether a long scan on one table stalls point reads
//! on another. One node serves two tables: `bench-1` holds a million keys
//! and `bench` 10,000. Point reads on `bench` (16 clients over 4
//! connections, serializable) run alone, then beside 2 clients that loop a
//! `count_only` Range over all of `bench-1`; the report is the point
//! reads' p50 and p99 in each phase, and the scans' own latency.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use regatta_proto::mvcc::v1::request_op::{Put, Request};
use regatta_proto::mvcc::v1::RequestOp;
use regatta_proto::regatta::v1 as regatta;
use regatta_proto::regatta::v1::kv_client::KvClient;
use tonic::transport::Channel;

use crate::load::{self, Report, Stop};
use crate::systems::{self, table_name};

#[derive(Debug, Clone)]
pub struct Options {
    pub binary: PathBuf,
    pub out: Option<PathBuf>,
    pub keys: u64,
    pub duration: Duration,
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        binary: PathBuf::new(),
        out: None,
        keys: 1_000_000,
        duration: Duration::from_secs(5),
    };
    crate::parse_flags(args, |flag, value| {
        match flag {
            "--binary" => options.binary = PathBuf::from(value()?),
            "--out" => options.out = Some(PathBuf::from(value()?)),
            "--keys" => options.keys = value()?.parse()?,
            "--duration" => options.duration = Duration::from_secs_f64(value()?.parse()?),
            "--quick" => {
                options.keys = 100_000;
                options.duration = Duration::from_secs(2);
            }
            other => bail!("unknown flag {other} (bench scan-load --binary PATH [--out FILE] [--keys N] [--duration SECS] [--quick])"),
        }
        Ok(())
    })?;
    if options.binary.as_os_str().is_empty() {
        bail!("--binary is required (cargo xtask bench passes it)");
    }
    Ok(options)
}

const PUTS_PER_TXN: u64 = 1000;
pub(crate) const POINT_KEYS: u64 = 10_000;

/// Writes keys `0..count` of `table`, `PUTS_PER_TXN` to a Txn, 8 Txns at a time.
pub(crate) async fn fill(channel: &Channel, table: &str, count: u64) -> Result<()> {
    let batches: Vec<u64> = (0..count.div_ceil(PUTS_PER_TXN)).collect();
    for group in batches.chunks(8) {
        let mut sent = Vec::new();
        for &batch in group {
            let mut kv = KvClient::new(channel.clone());
            let table = table.to_string();
            let first = batch * PUTS_PER_TXN;
            let ops = (first..(first + PUTS_PER_TXN).min(count))
                .map(|i| RequestOp {
                    request: Some(Request::RequestPut(Put {
                        key: format!("key/{i:08}").into_bytes(),
                        value: format!("value-{i:010}").into_bytes(),
                        ..Put::default()
                    })),
                })
                .collect();
            sent.push(tokio::spawn(async move {
                kv.txn(regatta::TxnRequest {
                    table: table.into_bytes(),
                    success: ops,
                    ..Default::default()
                })
                .await
            }));
        }
        for txn in sent {
            txn.await??;
        }
    }
    Ok(())
}

async fn point_reads(channels: &[Channel], duration: Duration) -> Report {
    let channels = channels.to_vec();
    load::run(
        16,
        channels.len(),
        Stop::Duration(duration),
        move |conn, _, sequence| {
            let mut kv = KvClient::new(channels[conn].clone());
            async move {
                let key = format!("key/{:08}", sequence % POINT_KEYS).into_bytes();
                kv.range(regatta::RangeRequest {
                    table: table_name(0).into_bytes(),
                    key,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|e| e.to_string())
            }
        },
    )
    .await
}

/// `clients` looping a `count_only` Range over all of table 1, which holds
/// `keys` keys.
pub(crate) async fn scans(
    channel: Channel,
    duration: Duration,
    clients: usize,
    keys: u64,
) -> Report {
    load::run(clients, 1, Stop::Duration(duration), move |_, _, _| {
        let mut kv = KvClient::new(channel.clone());
        async move {
            let answer = kv
                .range(regatta::RangeRequest {
                    table: table_name(1).into_bytes(),
                    key: vec![0],
                    range_end: vec![0],
                    count_only: true,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            match answer.into_inner().count as u64 {
                n if n == keys => Ok(()),
                n => Err(format!("counted {n} keys of {keys}")),
            }
        }
    })
    .await
}

fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1e3)
}

pub async fn main(options: Options) -> Result<()> {
    let running = systems::start_regatta(&options.binary, 1, 2).await?;
    let api = running.clients[0].clone();
    let loader = systems::connect(&api).await?;
    fill(&loader, &table_name(1), options.keys)
        .await
        .context("writing the scanned table")?;
    fill(&loader, &table_name(0), POINT_KEYS)
        .await
        .context("writing the point-read table")?;
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(systems::connect(&api).await?);
    }
    let alone = point_reads(&channels, options.duration).await;
    let scanner = systems::connect(&api).await?;
    let (beside, scanned) = tokio::join!(
        point_reads(&channels, options.duration),
        scans(scanner, options.duration, 2, options.keys)
    );
    for (what, report) in [
        ("alone", &alone),
        ("beside scans", &beside),
        ("scans", &scanned),
    ] {
        if let Some(err) = &report.first_error {
            bail!("{what}: {err}");
        }
    }
    let mut section = format!(
        "## scan-load\n\nProduced by `cargo xtask bench scan-load`: one node, point reads (16 clients, 4 connections, serializable) on a table of {POINT_KEYS} keys for {:?}, alone and beside 2 clients looping a `count_only` Range over a table of {} keys.\n\n\
         | point reads | req/s | p50 ms | p99 ms |\n|---|---|---|---|\n",
        options.duration, options.keys
    );
    for (what, report) in [("alone", &alone), ("beside the scans", &beside)] {
        let _ = writeln!(
            section,
            "| {what} | {:.0} | {} | {} |",
            report.per_second(),
            ms(report.percentile(50.0)),
            ms(report.percentile(99.0))
        );
    }
    let _ = writeln!(
        section,
        "\nThe scans: {} completed, p50 {} ms, p99 {} ms.",
        scanned.requests,
        ms(scanned.percentile(50.0)),
        ms(scanned.percentile(99.0))
    );
    println!("{section}");
    if let Some(out) = &options.out {
        crate::record::record_section(out, "## scan-load", &section)?;
        println!("written to {}", out.display());
    }
    Ok(())
}
