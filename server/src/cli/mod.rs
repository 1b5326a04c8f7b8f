//! Command line: the entry point of every `regatta` subcommand.

mod admin;
mod backup;
mod client;
mod config_check;
mod config_file;
mod follower;
mod health;
mod kv;
mod leader;
mod listener_flags;
mod listeners;
mod node_id;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use leader::LeaderArgs;

/// Regatta: a distributed, read-optimised key-value store with an etcd-like
/// gRPC API. Tables are Raft groups in a leader cluster; follower clusters copy
/// them asynchronously and serve local reads.
#[derive(Debug, Parser)]
#[command(name = "regatta", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Commands>,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run a node of the leader cluster (takes writes). With no flags: a
    /// single node on 127.0.0.1 with its data under ./regatta-data.
    Leader(Box<LeaderArgs>),
    /// Run a node of a follower cluster: copies the tables of the leader
    /// cluster at --replication.leader-address and serves them read-only.
    Follower(Box<follower::FollowerArgs>),
    /// Talk to a running server: put, get, delete, txn.
    Kv(kv::KvArgs),
    /// Back up every table of a leader cluster into a directory
    /// (`<table>.bak` files and `manifest.json`), through its maintenance API.
    Backup(backup::BackupArgs),
    /// Restore a backup directory into a leader cluster, table by table,
    /// after checking every file against the manifest.
    Restore(backup::RestoreArgs),
    /// Create, delete and list tables (the Tables API).
    Table(admin::TableArgs),
    /// The cluster's members and a node's status (the Cluster API).
    Cluster(admin::ClusterArgs),
    /// Check a node's settings (flags, environment, config file) without
    /// starting it.
    Config(config_check::ConfigArgs),
    /// Ask a node's REST listener for /healthz: exit 0 when it answers 200
    /// (every table has a leader), 1 otherwise (container health checks).
    Health(health::HealthArgs),
}

/// Parses the command line, layering a `--config` YAML file under flags and
/// environment variables (precedence: flag > env > file > default).
pub fn parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    // A first look only for --config: flags required of a subcommand may
    // come from the file, so nothing is required yet.
    let matches = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(&args)?;
    let file_args = match matches.subcommand() {
        Some((name, sub)) => match sub.try_get_one::<String>("config").ok().flatten() {
            Some(path) => config_file::as_args(name, path, sub)?,
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    // File values go in as flags only where neither a flag nor the
    // environment gave one, so they rank above defaults only.
    let mut layered = args;
    layered.extend(file_args);
    let matches = Cli::command().try_get_matches_from(&layered)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Some((name, sub)) = matches.subcommand() {
        let settings = settings_of(name, sub);
        match &mut cli.command {
            Some(Commands::Leader(args)) => args.settings = settings,
            Some(Commands::Follower(args)) => args.node.settings = settings,
            _ => {}
        }
    }
    Ok(cli)
}

/// Shown in place of a token's value.
const MASKED: &str = "**********";

/// Every setting of `subcommand` by its flag name without dashes, with the
/// value it ended up with (`None`: unset); tokens masked.
fn settings_of(
    subcommand: &str,
    matches: &clap::ArgMatches,
) -> std::collections::BTreeMap<String, Option<String>> {
    let command = Cli::command();
    let Some(sub) = command.find_subcommand(subcommand) else {
        return Default::default();
    };
    sub.get_arguments()
        .filter_map(|arg| {
            let flag = arg.get_long()?;
            let value = matches
                .try_get_raw(arg.get_id().as_str())
                .ok()
                .flatten()
                .map(|values| {
                    values
                        .map(|value| value.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(",")
                });
            let secret = flag.ends_with(".token");
            Some((
                flag.to_string(),
                value.map(|value| if secret { MASKED.to_string() } else { value }),
            ))
        })
        .collect()
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    // Test builds only: `FAILPOINTS=name=action;...` configures failpoints
    // from the start (the REST listener changes them at run time).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    match cli.command {
        None => {
            let _ = Cli::command().print_help();
            ExitCode::SUCCESS
        }
        Some(Commands::Leader(args)) => leader::run(*args),
        Some(Commands::Follower(args)) => follower::run(*args),
        Some(Commands::Kv(args)) => kv::run(args),
        Some(Commands::Backup(args)) => backup::run_backup(args),
        Some(Commands::Restore(args)) => backup::run_restore(args),
        Some(Commands::Table(args)) => admin::run_table(args),
        Some(Commands::Cluster(args)) => admin::run_cluster(args),
        Some(Commands::Config(args)) => config_check::run(args),
        Some(Commands::Health(args)) => health::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Cli, clap::Error> {
        parse(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn version_flag_prints_the_crate_version() {
        let err = parse_args(&["regatta", "--version"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(err.to_string().contains(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn leader_defaults_suit_a_laptop() {
        let Some(Commands::Leader(args)) =
            parse_args(&["regatta", "leader"]).expect("parses").command
        else {
            panic!("leader subcommand");
        };
        assert_eq!(args.api_address, "127.0.0.1:8443");
        assert_eq!(args.raft_address, "127.0.0.1:5012");
        assert_eq!(args.rest_address, "127.0.0.1:8079");
        assert_eq!(args.tables_names, vec!["regatta".to_string()]);
        assert_eq!(args.raft_node_id, 1);
    }

    #[test]
    fn config_file_ranks_below_env_and_flags() {
        let dir = tempfile::TempDir::new().expect("dir");
        let path = dir.path().join("regatta.yaml");
        std::fs::write(
            &path,
            "api:\n  address: 127.0.0.1:1111\nraft.rtt: 70ms\ntables:\n  names: a,b\nrest.address: 127.0.0.1:2222\n",
        )
        .expect("write");
        let config = path.to_string_lossy().to_string();
        let leader = |args: &[&str]| match parse_args(args).expect("parses").command {
            Some(Commands::Leader(args)) => args,
            _ => panic!("leader"),
        };
        let from_file = leader(&["regatta", "leader", "--config", &config]);
        assert_eq!(from_file.api_address, "127.0.0.1:1111");
        assert_eq!(from_file.raft_rtt, std::time::Duration::from_millis(70));
        assert_eq!(
            from_file.tables_names,
            vec!["a".to_string(), "b".to_string()]
        );
        let flag_wins = leader(&[
            "regatta",
            "leader",
            "--config",
            &config,
            "--api.address",
            "127.0.0.1:3333",
        ]);
        assert_eq!(flag_wins.api_address, "127.0.0.1:3333");
        assert_eq!(flag_wins.rest_address, "127.0.0.1:2222");
    }

    #[test]
    fn a_required_flag_may_come_from_the_config_file() {
        let dir = tempfile::TempDir::new().expect("dir");
        let path = dir.path().join("follower.yaml");
        std::fs::write(&path, "replication:\n  leader-address: leader:8444\n").expect("write");
        let config = path.to_string_lossy().to_string();
        let Some(Commands::Follower(args)) =
            parse_args(&["regatta", "follower", "--config", &config])
                .expect("parses")
                .command
        else {
            panic!("follower");
        };
        assert_eq!(args.leader_address, "leader:8444");
        let missing = parse_args(&["regatta", "follower"]).unwrap_err();
        assert!(
            missing.to_string().contains("--replication.leader-address"),
            "{missing}"
        );
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let dir = tempfile::TempDir::new().expect("dir");
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "api.adress: x\n").expect("write");
        let err =
            parse_args(&["regatta", "leader", "--config", &path.to_string_lossy()]).unwrap_err();
        assert!(err.to_string().contains("api.adress"), "{err}");
    }
}
