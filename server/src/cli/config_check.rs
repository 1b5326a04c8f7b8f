//! `regatta config check leader|follower [flags]`: loads a node's settings
//! as the node would (flags, environment, `--config` file), makes every
//! check it makes before starting, and reports without starting it. For
//! deployments (a Kubernetes ConfigMap, a compose file) checked before they
//! roll out.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::leader::{self, Role};
use super::{follower, Commands};

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a node's settings without starting it: `regatta config check
    /// leader --config regatta.yaml ...` (the node's own command line after
    /// `check`). Exits 0 when the node would start with them, 1 otherwise.
    Check {
        /// `leader` or `follower`, then its flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        node: Vec<OsString>,
    },
}

pub fn run(args: ConfigArgs) -> ExitCode {
    let ConfigCommand::Check { node } = args.command;
    match check(node) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("regatta config check: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The summary of settings a node would start with, or why it would not.
fn check(node: Vec<OsString>) -> Result<String, String> {
    let mut args = vec![OsString::from("regatta")];
    args.extend(node);
    let cli = super::parse(args).map_err(|err| err.render().to_string().trim().to_string())?;
    let (node, role) = match cli.command {
        Some(Commands::Leader(args)) => (*args, Role::Leader),
        Some(Commands::Follower(args)) => follower::node_and_role(*args),
        _ => {
            return Err(
                "check takes a node's command line: leader or follower, then its flags".into(),
            )
        }
    };
    let checked = leader::check(&node, &role)?;
    let raft = &checked.raft;
    let members = raft
        .initial_members
        .iter()
        .map(|(id, address)| format!("{id}={address}"))
        .collect::<Vec<_>>()
        .join(",");
    let kind = match role {
        Role::Leader => "leader".to_string(),
        Role::Follower { leader_address, .. } => format!("follower of {leader_address}"),
    };
    Ok(format!(
        "ok: a {kind} node, id {}{}, raft address {}, initial members {members}, API {}{}",
        raft.node_id,
        if raft.join { " (joining)" } else { "" },
        raft.address,
        node.api_address,
        if checked.tls.is_some() { " (TLS)" } else { "" },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_args(args: &[&str]) -> Result<String, String> {
        check(args.iter().map(OsString::from).collect())
    }

    #[test]
    fn a_good_command_line_is_summarised() {
        let summary = check_args(&[
            "leader",
            "--raft.node-id",
            "2",
            "--raft.initial-members",
            "1=a:5012,2=b:5012,3=c:5012",
            "--raft.address",
            "b:5012",
        ])
        .expect("valid");
        assert!(
            summary.starts_with("ok: a leader node, id 2, raft address b:5012"),
            "{summary}"
        );
    }

    #[test]
    fn what_the_node_would_refuse_is_reported() {
        let unlisted = check_args(&[
            "leader",
            "--raft.node-id",
            "4",
            "--raft.initial-members",
            "1=a:1",
        ]);
        assert!(unlisted
            .unwrap_err()
            .contains("does not list this node (4)"));
        let unknown = check_args(&["leader", "--raft.nodeid", "4"]).unwrap_err();
        assert!(unknown.contains("--raft.nodeid"), "{unknown}");
        let missing_key =
            check_args(&["leader", "--api.cert-filename", "/nonexistent.crt"]).unwrap_err();
        assert!(missing_key.contains("go together"), "{missing_key}");
        let missing_file = check_args(&[
            "leader",
            "--api.cert-filename",
            "/nonexistent.crt",
            "--api.key-filename",
            "/nonexistent.key",
        ])
        .unwrap_err();
        assert!(missing_file.contains("/nonexistent"), "{missing_file}");
        let follower =
            check_args(&["follower", "--replication.leader-address", "ftp://x"]).unwrap_err();
        assert!(
            follower.contains("--replication.leader-address"),
            "{follower}"
        );
        let not_a_node = check_args(&["table", "list"]).unwrap_err();
        assert!(not_a_node.contains("leader or follower"), "{not_a_node}");
    }

    #[test]
    fn a_config_file_is_read_and_its_errors_reported() {
        let dir = tempfile::TempDir::new().expect("dir");
        let good = dir.path().join("good.yaml");
        std::fs::write(
            &good,
            "raft:\n  node-id: 3\n  initial-members: 1=a:5012,2=b:5012,3=c:5012\n  address: c:5012\n",
        )
        .expect("write");
        let summary = check_args(&["leader", "--config", &good.to_string_lossy()]).expect("valid");
        assert!(summary.contains("id 3"), "{summary}");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "raft:\n  rtt: fifty\n").expect("write");
        let err = check_args(&["leader", "--config", &bad.to_string_lossy()]).unwrap_err();
        assert!(err.contains("fifty"), "{err}");
        let unknown = dir.path().join("unknown.yaml");
        std::fs::write(&unknown, "raft:\n  nodeid: 3\n").expect("write");
        let err = check_args(&["leader", "--config", &unknown.to_string_lossy()]).unwrap_err();
        assert!(err.contains("nodeid"), "{err}");
    }
}
