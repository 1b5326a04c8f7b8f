//! Benchmarks of Regatta-rs, driven by `cargo xtask bench`:
//! - `kv`: the KV workloads against Regatta and etcd side by side
//!   (`kv.rs`, with etcd's `benchmark` semantics: `load.rs`);
//! - `iterate`: a whole table read by IterateRange vs etcd's paged Range
//!   (`iterate.rs`);
//! - `scan-load`: point reads beside long scans of another table
//!   (`scan_load.rs`);
//! - `snapshot-memory`: node memory through snapshots of a large table
//!   (`snapshot_memory.rs`);
//! - `idle-tables`: CPU and memory of idle tables, and failover
//!   (`idle_tables.rs`);
//! - `replication-lag`: follower visibility lag (`lag.rs`);
//! - `follower-writes`: writes through a follower cluster beside writes to
//!   the leader cluster (`follower_writes.rs`);
//! - `resource-limits`: point reads beside idle connections, unread
//!   streams, 4 MiB Txns and full-table counts (`resource_limits.rs`);
//! - `noop-server`: the no-op RPC server the `kv` run starts for the
//!   transport ceiling.

mod follower_writes;
mod idle_tables;
mod iterate;
mod kv;
mod lag;
mod load;
mod procfs;
mod record;
mod resource_limits;
mod scan_load;
mod snapshot_memory;
mod systems;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

const USAGE: &str = "\
usage:
  bench kv --binary PATH [--out FILE] [--quick] [--duration SECS | --total N]
           [--key-size N] [--val-size N] [--key-space-size N] [--sequential-keys]
           [--workload NAME]... [--nodes 1|3|both] [--rounds N]
  bench iterate --binary PATH [--out FILE] [--keys N] [--val-size N] [--page N] [--rounds N] [--quick]
  bench scan-load --binary PATH [--out FILE] [--keys N] [--duration SECS] [--quick]
  bench snapshot-memory --binary PATH [--out FILE] [--mib N] [--val-size N] [--snapshot-entries N] [--quick]
  bench idle-tables --binary PATH [--out FILE] [--tables 10,100,1000] [--window SECS] [--quick]
  bench replication-lag --binary PATH [--rate N] [--duration SECS] [--mode follow|poll|both]
  bench follower-writes --binary PATH [--out FILE] [--duration SECS] [--rounds N] [--quick]
  bench resource-limits --binary PATH [--out FILE] [--keys N] [--connections N] [--streams N]
           [--duration SECS] [--quick]
  bench noop-server --address HOST:PORT
environment: BENCH_LOG_LEVEL (regatta nodes' --log-level, default warn),
  BENCH_KEEP_LOGS=DIR (copy each regatta node's log there when it stops),
  BENCH_SERVER_METRICS (bench kv: print the servers' metrics)";

/// Walks `--flag [value]` arguments: `each` gets every flag and a way to
/// take its value (an error names the flag when the value is missing).
pub fn parse_flags(
    args: &[String],
    mut each: impl FnMut(&str, &mut dyn FnMut() -> Result<String>) -> Result<()>,
) -> Result<()> {
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        each(flag, &mut value)?;
    }
    Ok(())
}

fn parse_kv(args: &[String]) -> Result<kv::Options> {
    let mut options = kv::Options {
        binary: PathBuf::new(),
        out: None,
        duration: Duration::from_secs(10),
        total: None,
        key_size: 8,
        val_size: 256,
        key_space_size: 10_000,
        sequential_keys: false,
        quick: false,
        only: Vec::new(),
        sizes: vec![1, 3],
        rounds: 3,
    };
    crate::parse_flags(args, |flag, value| {
        match flag {
            "--binary" => options.binary = PathBuf::from(value()?),
            "--out" => options.out = Some(PathBuf::from(value()?)),
            "--duration" => options.duration = Duration::from_secs_f64(value()?.parse()?),
            "--total" => options.total = Some(value()?.parse()?),
            "--key-size" => options.key_size = value()?.parse()?,
            "--val-size" => options.val_size = value()?.parse()?,
            "--key-space-size" => options.key_space_size = value()?.parse()?,
            "--sequential-keys" => options.sequential_keys = true,
            "--workload" => options.only.push(value()?),
            "--rounds" => options.rounds = value()?.parse::<usize>()?.max(1),
            "--nodes" => {
                options.sizes = match value()?.as_str() {
                    "1" => vec![1],
                    "3" => vec![3],
                    "both" => vec![1, 3],
                    other => bail!("--nodes {other}: 1, 3 or both"),
                }
            }
            // About a minute: every workload, one node and three, 2 s each.
            "--quick" => {
                options.quick = true;
                options.duration = Duration::from_secs(2);
                options.key_space_size = 2_000;
                options.rounds = 1;
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
        Ok(())
    })?;
    if options.binary.as_os_str().is_empty() {
        bail!("--binary is required (cargo xtask bench passes it)\n{USAGE}");
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("kv") => kv::main(parse_kv(&args[1..])?).await,
        Some("iterate") => iterate::main(iterate::parse(&args[1..])?).await,
        Some("idle-tables") => idle_tables::main(idle_tables::parse(&args[1..])?).await,
        Some("scan-load") => scan_load::main(scan_load::parse(&args[1..])?).await,
        Some("snapshot-memory") => snapshot_memory::main(snapshot_memory::parse(&args[1..])?).await,
        Some("replication-lag") => lag::main(lag::parse(&args[1..])?).await,
        Some("follower-writes") => follower_writes::main(follower_writes::parse(&args[1..])?).await,
        Some("resource-limits") => resource_limits::main(resource_limits::parse(&args[1..])?).await,
        Some("noop-server") => match args.get(1..) {
            Some([flag, address]) if flag == "--address" => systems::serve_noop(address).await,
            _ => bail!("{USAGE}"),
        },
        _ => bail!("{USAGE}"),
    }
}
