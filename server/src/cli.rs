//! Command line: the entry point of every `regatta` subcommand.

use std::process::ExitCode;

use clap::Parser;

/// Regatta: a distributed, read-optimised key-value store with an etcd-like
/// gRPC API. Tables are Raft groups in a leader cluster; follower clusters copy
/// them asynchronously and serve local reads.
#[derive(Debug, Parser)]
#[command(name = "regatta", version, about, long_about = None)]
pub struct Cli {}

/// Runs the parsed command line.
pub fn run(_cli: Cli) -> ExitCode {
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn version_flag_prints_the_crate_version() {
        let err = Cli::try_parse_from(["regatta", "--version"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(err.to_string().contains(env!("CARGO_PKG_VERSION")));
    }
}
