//! `regatta follower`: a node of a follower cluster, which copies the tables
//! of a leader cluster and serves them read-only
//! (`features/replication.feature`, `docs/replication.md`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::leader::{self, duration, LeaderArgs, Role};
use crate::replication::FollowerSettings;

/// Flags of `regatta follower`: every node flag of `leader`, and Regatta's
/// follower flags. On a follower, `--replication.cert-filename`,
/// `--replication.key-filename` and `--replication.ca-filename` are the
/// client certificate, key and CA for reaching the leader cluster, and the
/// table flags (`--tables.*`) are ignored: tables come from the leader.
#[derive(Debug, Clone, Args)]
pub struct FollowerArgs {
    #[command(flatten)]
    pub node: LeaderArgs,
    /// The leader cluster's replication API (`host:port`, or an `http(s)://` URL).
    #[arg(
        long = "replication.leader-address",
        env = "REGATTA_REPLICATION_LEADER_ADDRESS",
        required = true
    )]
    pub leader_address: String,
    /// Wait before asking the leader again after a stream ended.
    #[arg(long = "replication.poll-interval", env = "REGATTA_REPLICATION_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    pub poll_interval: Duration,
    /// How often the table list is compared with the leader cluster's.
    #[arg(long = "replication.reconcile-interval", env = "REGATTA_REPLICATION_RECONCILE_INTERVAL", default_value = "30s", value_parser = duration)]
    pub reconcile_interval: Duration,
    /// How often workers follow the tables' Raft leadership.
    #[arg(long = "replication.lease-interval", env = "REGATTA_REPLICATION_LEASE_INTERVAL", default_value = "15s", value_parser = duration)]
    pub lease_interval: Duration,
    /// Longest wait for a Log.Replicate answer or its next message.
    #[arg(long = "replication.log-rpc-timeout", env = "REGATTA_REPLICATION_LOG_RPC_TIMEOUT", default_value = "1m", value_parser = duration)]
    pub log_rpc_timeout: Duration,
    /// Longest recovery by snapshot (the whole Snapshot.Stream and its install).
    #[arg(long = "replication.snapshot-rpc-timeout", env = "REGATTA_REPLICATION_SNAPSHOT_RPC_TIMEOUT", default_value = "1h", value_parser = duration)]
    pub snapshot_rpc_timeout: Duration,
    /// Largest message accepted from the leader.
    #[arg(long = "replication.max-recv-message-size-bytes", env = "REGATTA_REPLICATION_MAX_RECV_MESSAGE_SIZE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_recv_message_size_bytes: usize,
    /// Tables of this node recovering by snapshot at once; others wait their turn.
    #[arg(
        long = "replication.max-recovery-in-flight",
        env = "REGATTA_REPLICATION_MAX_RECOVERY_IN_FLIGHT",
        default_value_t = 1
    )]
    pub max_recovery_in_flight: usize,
    /// Ask the leader to keep the stream open and push entries as they
    /// commit (extension; Regatta leaders ignore it). `false`: poll.
    #[arg(long = "replication.follow-mode", env = "REGATTA_REPLICATION_FOLLOW_MODE", action = clap::ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub follow_mode: bool,
    /// Snapshot download rate limit per node in bytes per second, 0 = none.
    #[arg(
        long = "replication.max-snapshot-recv-bytes-per-second",
        env = "REGATTA_REPLICATION_MAX_SNAPSHOT_RECV_BYTES_PER_SECOND",
        default_value_t = 0
    )]
    pub max_snapshot_recv_bytes_per_second: u64,
    /// Forward Put, DeleteRange and writing Txns to the leader cluster and
    /// answer once this node's copy holds them (Regatta 0.5). `false`:
    /// refuse them with `Unimplemented`, as Regatta 2022 did.
    #[arg(long = "replication.forward-writes", env = "REGATTA_REPLICATION_FORWARD_WRITES", action = clap::ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub forward_writes: bool,
}

/// Runs a follower-cluster node until SIGTERM or SIGINT.
pub fn run(args: FollowerArgs) -> ExitCode {
    let (node, role) = node_and_role(args);
    leader::run_role(node, role)
}

/// The node's own flags, and its role: following the leader cluster.
pub fn node_and_role(args: FollowerArgs) -> (LeaderArgs, Role) {
    let settings = FollowerSettings {
        poll_interval: args.poll_interval,
        reconcile_interval: args.reconcile_interval,
        lease_interval: args.lease_interval,
        log_rpc_timeout: args.log_rpc_timeout,
        max_recv_message_bytes: args.max_recv_message_size_bytes,
        follow_mode: args.follow_mode,
        snapshot_rpc_timeout: args.snapshot_rpc_timeout,
        max_recovery_in_flight: args.max_recovery_in_flight.max(1),
        max_snapshot_recv_bytes_per_second: args.max_snapshot_recv_bytes_per_second,
        forward_writes: args.forward_writes,
    };
    (
        args.node,
        Role::Follower {
            leader_address: args.leader_address,
            settings,
        },
    )
}
