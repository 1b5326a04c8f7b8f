//! `fuzz`: the seeded wire fuzzer (see `conformance/src/fuzz/`).
//! `cargo xtask fuzz [--seed N] [--messages N] [--quick]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use conformance::fuzz::node::Endpoints;
use conformance::fuzz::{self, Options, DEFAULT_MESSAGES, QUICK_MESSAGES};

const USAGE: &str =
    "usage: fuzz [--seed N] [--messages N] [--quick] [--only INDEX] [--concurrency N]
            [--binary PATH] [--api HOST:PORT --replication HOST:PORT --maintenance HOST:PORT]
            [--timeout SECS] [--strict-internal] [--out DIR]
  --seed N          the run's seed (default: from the clock; printed)
  --messages N      messages to send (default 100,000; --quick: 5,000)
  --only INDEX      send message INDEX of the seed alone (a reproducer)
  --binary PATH     server binary (default: $REGATTA_BINARY, else `cargo xtask server-binary`)
  --api/--replication/--maintenance
                    fuzz a running node instead (it gets tables fuzz and fuzz-data)
  --strict-internal report gRPC's own INTERNAL answers to malformed requests too
  --out DIR         write findings-seed-N.txt (every finding with its full hex) there";

fn parse() -> Result<Options> {
    let mut seed = None;
    let mut messages = None;
    let mut quick = false;
    let mut options = Options::new(0);
    let (mut api, mut replication, mut maintenance) = (None, None, None);
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let mut value = || {
            raw.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--seed" => seed = Some(value()?.parse().context("--seed")?),
            "--messages" => messages = Some(value()?.parse().context("--messages")?),
            "--quick" => quick = true,
            "--only" => options.only = Some(value()?.parse().context("--only")?),
            "--concurrency" => options.concurrency = value()?.parse().context("--concurrency")?,
            "--binary" => options.binary = Some(PathBuf::from(value()?)),
            "--api" => api = Some(address(&value()?)?),
            "--replication" => replication = Some(address(&value()?)?),
            "--maintenance" => maintenance = Some(address(&value()?)?),
            "--timeout" => {
                options.call_timeout = Duration::from_secs(value()?.parse().context("--timeout")?)
            }
            "--strict-internal" => options.strict_internal = true,
            "--out" => options.out = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    options.seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    options.messages = messages.unwrap_or(if quick {
        QUICK_MESSAGES
    } else {
        DEFAULT_MESSAGES
    });
    options.endpoints = match (api, replication, maintenance) {
        (None, None, None) => None,
        (Some(api), Some(replication), Some(maintenance)) => Some(Endpoints {
            api,
            replication,
            maintenance,
        }),
        _ => bail!("--api, --replication and --maintenance go together\n{USAGE}"),
    };
    Ok(options)
}

fn address(text: &str) -> Result<SocketAddr> {
    let text = text.trim_start_matches("http://");
    use std::net::ToSocketAddrs;
    text.to_socket_addrs()
        .with_context(|| format!("address {text}"))?
        .next()
        .with_context(|| format!("address {text} resolves to nothing"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("fuzz: {err:#}");
            return ExitCode::from(2);
        }
    };
    println!(
        "fuzz: seed {}, {} messages{}",
        options.seed,
        options.messages,
        options
            .only
            .map(|i| format!(" (only message {i})"))
            .unwrap_or_default()
    );
    match fuzz::run(options).await {
        Ok(summary) => {
            print!("{}", summary.render());
            if summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("fuzz: {err:#}");
            ExitCode::FAILURE
        }
    }
}
