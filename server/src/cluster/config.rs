//! The Raft settings of a node, with Regatta's flag names and defaults
//! (`raft/timing.rs` maps the timings onto openraft's configuration).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{Error, Result};
use super::raft::timing::RaftTiming;
use super::raft::types::NodeId;

/// Raft settings of one node (`--raft.*`).
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// `--raft.node-id`.
    pub node_id: NodeId,
    /// `--raft.address`: what peers dial.
    pub address: String,
    /// `--raft.listen-address`: what this node binds (default: `address`).
    pub listen_address: Option<String>,
    /// `--raft.initial-members`: every member's id and address.
    pub initial_members: BTreeMap<NodeId, String>,
    /// `--raft.join`: a new member of a running cluster, which initializes
    /// no group (`node/membership.rs`).
    pub join: bool,
    /// `--raft.node-host-dir`: the Raft log and vote.
    pub node_host_dir: PathBuf,
    /// `--raft.wal-dir`: the Raft log instead of `node_host_dir`, when set.
    pub wal_dir: Option<PathBuf>,
    /// `--raft.state-machine-dir`: table data.
    pub state_machine_dir: PathBuf,
    /// `--raft.rtt`: the unit of the timings below.
    pub rtt: Duration,
    /// `--raft.heartbeat-rtt`.
    pub heartbeat_rtt: u64,
    /// `--raft.election-rtt`.
    pub election_rtt: u64,
    /// `--raft.snapshot-entries` (0: never).
    pub snapshot_entries: u64,
    /// `--raft.compaction-overhead`.
    pub compaction_overhead: u64,
    /// How the Cluster API names this node to clients.
    pub identity: MemberIdentity,
}

/// What the Cluster API's MemberList says of a node beside its id and Raft
/// address; each node tells its peers its own in the liveness beat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberIdentity {
    /// `--memberlist.node-name` (empty: the node id).
    pub name: String,
    /// `--api.advertise-address`.
    pub client_url: String,
}

impl RaftSettings {
    /// Defaults of Regatta for a single node with its data under `dir`.
    pub fn single_node(dir: PathBuf, address: String) -> Self {
        RaftSettings {
            node_id: 1,
            address: address.clone(),
            listen_address: None,
            initial_members: BTreeMap::from([(1, address)]),
            join: false,
            node_host_dir: dir.join("raft"),
            wal_dir: None,
            state_machine_dir: dir.join("state-machine"),
            rtt: Duration::from_millis(50),
            heartbeat_rtt: 1,
            election_rtt: 20,
            snapshot_entries: 10_000,
            compaction_overhead: 5_000,
            identity: MemberIdentity {
                name: String::new(),
                client_url: "http://127.0.0.1:8443".into(),
            },
        }
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        self.rtt * self.heartbeat_rtt.max(1) as u32
    }

    /// Regatta's election timeout E = rtt × election-rtt.
    pub fn election_timeout(&self) -> Duration {
        self.rtt * self.election_rtt.max(2) as u32
    }

    /// What a node refuses to start with, found before it opens anything.
    pub fn validate(&self) -> Result<()> {
        if self.node_id == 0 {
            return Err(Error::Startup("node id must be greater than 0".into()));
        }
        if !self.join && !self.initial_members.contains_key(&self.node_id) {
            return Err(Error::Startup(format!(
                "--raft.initial-members does not list this node ({}); a node that joins a running cluster takes --raft.join",
                self.node_id
            )));
        }
        self.raft_timing().map(|_| ())
    }

    /// The configuration of this node's Raft groups.
    pub fn raft_timing(&self) -> Result<RaftTiming> {
        RaftTiming::new(
            self.heartbeat(),
            self.election_timeout(),
            self.snapshot_entries,
            self.compaction_overhead,
        )
        .map_err(|err| Error::Startup(format!("raft timing: {err}")))
    }
}

/// Parses `--raft.initial-members` (`1=host:port,2=host:port`, Regatta's format).
pub fn parse_members(spec: &str) -> Result<BTreeMap<NodeId, String>> {
    let mut members = BTreeMap::new();
    for item in spec
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let (id, address) = item.split_once('=').ok_or_else(|| {
            Error::Startup(format!("initial member {item:?} is not id=host:port"))
        })?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| Error::Startup(format!("initial member id {id:?} is not a number")))?;
        if members.insert(id, address.trim().to_string()).is_some() {
            return Err(Error::Startup(format!("initial member {id} listed twice")));
        }
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_in_regattas_format() {
        let members = parse_members("1=a:5012, 2=b:5012,3=c:5012").expect("parses");
        assert_eq!(members.get(&2).map(String::as_str), Some("b:5012"));
        assert_eq!(members.len(), 3);
        assert!(parse_members("1=a,1=b").is_err());
        assert!(parse_members("x=a").is_err());
        assert!(parse_members("1:a").is_err());
    }

    #[test]
    fn default_timings_follow_regatta() {
        let settings = RaftSettings::single_node(PathBuf::from("/tmp/x"), "127.0.0.1:5012".into());
        assert_eq!(settings.heartbeat(), Duration::from_millis(50));
        assert_eq!(settings.election_timeout(), Duration::from_secs(1));
        assert!(settings.raft_timing().is_ok());
    }
}
