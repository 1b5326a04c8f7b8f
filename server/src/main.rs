//! The `regatta` binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    match regatta::cli::parse(std::env::args_os().collect()) {
        Ok(cli) => regatta::cli::run(cli),
        Err(err) => {
            let _ = err.print();
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
        }
    }
}
