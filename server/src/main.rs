//! The `regatta` binary.

use std::process::ExitCode;

use clap::Parser;
use regatta::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    regatta::cli::run(cli)
}
