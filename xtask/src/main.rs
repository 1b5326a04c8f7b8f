//! The developer's tool belt: `cargo xtask <task>`.

mod codegen;
mod deploy_test;
mod image;

use image::Profile;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  codegen           regenerate codegen/src/generated from proto/
  codegen --check   fail (naming the files) when the checked-in code is stale
  image [--release] build the server image regatta:dev (FROM scratch) with Docker;
                    the binary of `cargo test --workspace` (dev profile, shares
                    the tests' build), or with --release the release binary
  image --if-stale [--release]
                    the same, unless regatta:dev was built from these sources
                    (in release, for --release)
  deploy-test       bring up deploy/compose/docker-compose.yml from regatta:dev (built if
                    stale), write on the leader cluster, read on the follower, kill a
                    leader-cluster container, write and read again; tears it all down
  server-binary [--release]
                    build the server binary and print its path
  bench [--quick]   the KV comparison, the whole-table read and the scan load (below)
  bench kv [--quick] [--duration SECS] [--workload NAME]... [--nodes 1|3|both]
                    KV workloads against regatta-rs and etcd (etcd-server package)
                    side by side; writes BENCHMARKS.md (not with --quick)
  bench iterate [--quick] [--keys N] [--val-size N] [--page N] [--rounds N]
                    100,000 keys of 1 KiB read by IterateRange vs etcd paging Range;
                    its section of BENCHMARKS.md (not with --quick)
  bench scan-load [--quick] [--keys N] [--duration SECS]
                    point reads on one table alone and beside count_only scans of a
                    table of a million keys; its section of BENCHMARKS.md
  bench idle-tables [--quick] [--tables 10,100,1000] [--window SECS]
                    CPU and RSS per node of an idle 3-node cluster with N tables, and
                    the time until every table is led again after a node is killed
  bench snapshot-memory [--quick] [--mib N] [--snapshot-entries N]
                    node memory while 2 GiB are snapshotted, compacted and installed
                    on a third node that joins empty (not in the default run)
  bench replication-lag [--rate N] [--duration SECS] [--mode follow|poll|both]
                    follower visibility lag after the leader's acknowledgement
  bench follower-writes [--quick] [--duration SECS] [--rounds N]
                    64 clients writing through a follower node beside 64 writing to
                    the leader node; its section of BENCHMARKS.md (not with --quick)
  bench resource-limits [--quick] [--connections N] [--streams N] [--duration SECS]
                    point reads' p99 and node RSS beside 10,000 idle connections,
                    1,000 unread IterateRange streams, 4 MiB Txns and count_only over
                    a million keys; fails when a target is not met
  jepsen [--runs N] [--nemesis NAME|all] [--time SECS] [--nodes 3|5] [--follower N]
         [--clients N] [--keys N]
                    linearizability under faults: recorded histories, verdicts,
                    timelines in target/jepsen (backend as for the conformance suite);
                    --follower N adds a follower cluster checked against the leader's log
  fuzz [--seed N] [--messages N] [--quick] [--only INDEX] [--concurrency N]
                    the seeded wire fuzzer: mutated requests to every method of every
                    listener of one node (debug build); 100,000 messages, --quick 5,000;
                    --only replays one message; findings in target/fuzz
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["codegen"] => codegen::write(&workspace_root()),
        ["codegen", "--check"] => codegen::check(&workspace_root()),
        ["image", rest @ ..] => image_task(rest),
        ["deploy-test"] => deploy_test::run(&workspace_root()),
        ["bench", rest @ ..] => bench(&workspace_root(), rest),
        ["jepsen", rest @ ..] => jepsen(&workspace_root(), rest),
        ["fuzz", rest @ ..] => fuzz(&workspace_root(), rest),
        ["server-binary"] => image::build_binary(&workspace_root(), Profile::Dev).map(|path| {
            println!("{}", path.display());
        }),
        ["server-binary", "--release"] => image::build_binary(&workspace_root(), Profile::Release)
            .map(|path| {
                println!("{}", path.display());
            }),
        ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask image [--if-stale] [--release]`, flags in any order.
fn image_task(args: &[&str]) -> anyhow::Result<()> {
    let mut if_stale = false;
    let mut profile = Profile::Dev;
    for arg in args {
        match *arg {
            "--if-stale" => if_stale = true,
            "--release" => profile = Profile::Release,
            other => anyhow::bail!("image: unknown flag {other}\n{USAGE}"),
        }
    }
    image::build(&workspace_root(), if_stale, profile)
}

/// Builds the server and the `bench` crate (release) and runs a benchmark;
/// with no benchmark named, the KV comparison (`kv`), written to
/// BENCHMARKS.md unless `--quick`.
fn bench(root: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let binary = image::build_binary(root, Profile::Release)?;
    let mut args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    // With nothing named: the KV comparison, then the whole-table read and
    // the scan beside point reads (`--quick` alone runs them all quickly).
    let both = args.iter().all(|arg| arg == "--quick");
    if args.first().is_none_or(|first| first.starts_with("--")) {
        args.insert(0, "kv".into());
    }
    run_bench(root, &binary, args.clone())?;
    if both {
        for next in ["iterate", "scan-load"] {
            args[0] = next.into();
            run_bench(root, &binary, args.clone())?;
        }
    }
    Ok(())
}

/// One benchmark of the `bench` crate; a full run is recorded in
/// BENCHMARKS.md, a --quick smoke run only prints.
fn run_bench(
    root: &std::path::Path,
    binary: &std::path::Path,
    mut args: Vec<String>,
) -> anyhow::Result<()> {
    let quick = args.iter().any(|arg| arg == "--quick");
    let recorded = matches!(
        args[0].as_str(),
        "kv" | "iterate"
            | "scan-load"
            | "snapshot-memory"
            | "idle-tables"
            | "follower-writes"
            | "resource-limits"
    );
    if recorded && !quick && !args.iter().any(|arg| arg == "--out") {
        args.push("--out".into());
        args.push(root.join("BENCHMARKS.md").to_string_lossy().into_owned());
    }
    let status = image::cargo()
        .current_dir(root)
        .args(["run", "--quiet", "--release", "--package", "bench", "--"])
        .args(&args)
        .arg("--binary")
        .arg(binary)
        .status()?;
    if !status.success() {
        anyhow::bail!("the benchmark failed ({status})");
    }
    Ok(())
}

/// Runs the recorded runs under faults (`conformance`'s `jepsen` binary).
fn jepsen(root: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    run_conformance_bin(root, "jepsen", args, &[])
        .map_err(|status| anyhow::anyhow!("jepsen found anomalies or failed ({status})"))
}

/// Builds the server (the debug binary of `cargo test --workspace`) and runs
/// the wire fuzzer (`conformance`'s `fuzz` binary) against a node of it.
fn fuzz(root: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
    let binary = image::build_binary(root, Profile::Dev)?;
    let binary = binary.to_string_lossy().into_owned();
    run_conformance_bin(root, "fuzz", args, &["--binary", &binary])
        .map_err(|status| anyhow::anyhow!("the fuzzer found problems or failed ({status})"))
}

/// Runs binary `bin` of the conformance crate with `args`, `--out
/// <target>/<bin>` unless given, and `defaults` (flag, value) pairs unless
/// given; the exit status when it fails.
fn run_conformance_bin(
    root: &std::path::Path,
    bin: &str,
    args: &[&str],
    defaults: &[&str],
) -> Result<(), String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let out = target.join(bin).to_string_lossy().into_owned();
    let mut args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    for pair in [["--out", out.as_str()]]
        .iter()
        .map(|p| &p[..])
        .chain(defaults.chunks(2))
    {
        if let [flag, value] = pair {
            if !args.iter().any(|arg| arg == flag) {
                args.push(flag.to_string());
                args.push(value.to_string());
            }
        }
    }
    let status = image::cargo()
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "--package",
            "conformance",
            "--bin",
            bin,
            "--",
        ])
        .args(&args)
        .status()
        .map_err(|err| err.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(status.to_string())
    }
}

/// The workspace root: xtask lives one level below it. Read at run time
/// (`cargo run` sets it): a binary built in another clone that shares the
/// target directory must still work on this one.
fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}
