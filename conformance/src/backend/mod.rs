//! Cluster backends: where the nodes of a scenario run.
//!
//! Every scenario talks to its cluster through [`Cluster`], so the same steps
//! run on Docker containers, on local processes and against someone else's
//! servers. A backend that cannot inject a fault says why
//! ([`Cluster::fault_support`]); scenarios that need faults are then reported
//! as skipped with that reason, never as passed.

pub mod containers;
pub mod docker_shim;
pub mod external;
pub mod processes;
pub mod proxy;

use std::fmt;
use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;

use crate::template::{NodeVars, Tool};

/// The cluster a scenario asks for.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Scenario-unique name, used in container and network names.
    pub name: String,
    pub nodes: usize,
    pub tables: Vec<String>,
    /// Extra server flags for every node (e.g. `--raft.snapshot-entries=20`).
    pub extra_args: Vec<String>,
    /// For a follower cluster: where its nodes reach the leader cluster's
    /// replication API, and (containers) the Docker network they share.
    pub follow: Option<FollowTarget>,
    /// Serve each node's KV API on a Unix socket, [`API_SOCKET`] in its data
    /// directory, instead of TCP (Regatta 0.3+ `unix://` addresses).
    pub api_socket: bool,
    /// TLS on every listener; `None`: plaintext.
    pub tls: Option<ClusterTls>,
}

/// TLS of a cluster: every node gets a certificate of the scenario's
/// authority in [`TLS_DIR`] of its data directory, and serves TLS on its
/// API, REST, maintenance and (leader cluster) replication listeners; a
/// leader cluster's replication listener asks for client certificates of
/// that authority (mutual TLS), as Regatta's does with a CA configured.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    pub authority: std::sync::Arc<crate::tls::Authority>,
    /// A follower cluster: whether its nodes present their certificate to
    /// the leader cluster as a client certificate.
    pub client_certificate: bool,
}

/// Where a node's TLS files are, in its data directory: `ca.crt`,
/// `node.crt`, `node.key`.
pub const TLS_DIR: &str = "tls";

/// Writes node `host`'s TLS files into `host_dir` (its data directory as
/// the test process sees it), signed by `authority`. The key goes first:
/// a server that reads the pair between the two writes sees a mismatch
/// and keeps the pair it has.
pub fn write_node_tls(
    authority: &crate::tls::Authority,
    host_dir: &std::path::Path,
    host: &str,
) -> Result<()> {
    let dir = host_dir.join(TLS_DIR);
    std::fs::create_dir_all(&dir)?;
    let names = [crate::tls::SERVER_NAME, "127.0.0.1", host]
        .iter()
        .map(|name| name.to_string())
        .collect::<Vec<_>>();
    let pair = authority.issue(&names)?;
    std::fs::write(dir.join("ca.crt"), authority.cert_pem())?;
    std::fs::write(dir.join("node.key"), pair.key)?;
    std::fs::write(dir.join("node.crt"), pair.cert)?;
    Ok(())
}

/// The KV API's socket file in a node's data directory, for
/// [`ClusterSpec::api_socket`].
pub const API_SOCKET: &str = "api.sock";

/// The leader cluster a follower cluster copies.
#[derive(Debug, Clone)]
pub struct FollowTarget {
    /// The replication API address as the follower's nodes dial it.
    pub leader_address: String,
    /// Containers: the leader cluster's network, which the followers join.
    pub network: Option<String>,
}

/// How a backend starts one node: the template of the run
/// ([`crate::template`]) filled in for this node. Kept per node, since a
/// replaced node starts again under a new id and joins.
#[derive(Debug, Clone)]
pub struct NodeCommand {
    follower: bool,
    /// `Some(whether it presents a client certificate)` when it serves TLS.
    tls: Option<bool>,
    joining: bool,
    scenario_flags: Vec<String>,
    pub vars: NodeVars,
}

impl NodeCommand {
    /// Node `id` (1-based) of `spec`, given the addresses it binds and every
    /// member as this node dials them.
    pub fn new(
        spec: &ClusterSpec,
        id: usize,
        bind: &NodeAddresses,
        members: &str,
        data_dir: &str,
    ) -> NodeCommand {
        let vars = NodeVars {
            id: id as u64,
            members: members.to_string(),
            raft_address: bind.raft_advertised.clone(),
            raft_listen: bind.raft.clone(),
            api_address: if spec.api_socket {
                format!("unix://{data_dir}/{API_SOCKET}")
            } else {
                bind.api.clone()
            },
            rest_address: bind.rest.clone(),
            replication_address: bind.replication.clone(),
            maintenance_address: bind.maintenance.clone(),
            data_dir: data_dir.to_string(),
            tables: spec.tables.join(","),
            leader_address: spec
                .follow
                .as_ref()
                .map(|target| target.leader_address.clone())
                .unwrap_or_default(),
            tls_dir: format!("{data_dir}/{TLS_DIR}"),
        };
        NodeCommand {
            follower: spec.follow.is_some(),
            tls: spec
                .tls
                .as_ref()
                .map(|tls| spec.follow.is_none() || tls.client_certificate),
            joining: false,
            scenario_flags: spec.extra_args.clone(),
            vars,
        }
    }

    /// The arguments of a start with `extra_flags` (Regatta's names) added.
    pub fn args(&self, extra_flags: &[String]) -> Result<Vec<String>> {
        let mut flags = self.scenario_flags.clone();
        flags.extend(extra_flags.iter().cloned());
        crate::template::template().node_command(
            self.follower,
            self.tls,
            self.joining,
            &self.vars,
            &flags,
        )
    }

    /// The node starts anew under `new_id`, joining its cluster.
    pub fn rejoin(&mut self, new_id: u64) {
        self.vars.id = new_id;
        self.joining = true;
    }

    /// Its `--raft.address`, as the other nodes dial it.
    pub fn raft_address(&self) -> &str {
        &self.vars.raft_address
    }
}

/// Empties `dir` (a node's data directory) without removing it: a bind
/// mount keeps pointing at it.
pub fn empty_dir(dir: &std::path::Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Addresses one node binds (and, for Raft, advertises).
#[derive(Debug, Clone)]
pub struct NodeAddresses {
    pub api: String,
    pub rest: String,
    pub raft: String,
    pub raft_advertised: String,
    pub replication: String,
    pub maintenance: String,
}

/// A running cluster of nodes numbered from 1.
#[async_trait]
pub trait Cluster: Send + Sync {
    fn size(&self) -> usize;
    /// `http://host:port` of node `n`'s KV API, as the test process reaches it.
    fn api_endpoint(&self, n: usize) -> String;
    /// `http://host:port` of node `n`'s replication API (leader clusters);
    /// `None` when the backend does not know it.
    fn replication_endpoint(&self, n: usize) -> Option<String>;
    /// `http://host:port` of node `n`'s maintenance API; `None` when the
    /// backend does not know it.
    fn maintenance_endpoint(&self, n: usize) -> Option<String>;
    /// `host:port` of node `n`'s REST listener (`/metrics`), as the test
    /// process reaches it; `None` when the backend does not know it.
    fn rest_address(&self, n: usize) -> Option<String>;
    /// Node `n`'s data directory as the test process sees it; `None` when
    /// the backend does not know it.
    fn host_data_dir(&self, n: usize) -> Option<std::path::PathBuf>;
    /// Node `n`'s `--raft.address`, as the other nodes dial it; `None`
    /// when the backend does not know it.
    fn raft_address(&self, n: usize) -> Option<String>;
    /// Where another cluster of this backend (a follower cluster) reaches
    /// node `n`'s replication API.
    fn replication_target(&self, n: usize) -> Option<FollowTarget>;
    /// `None` when kill, restart, pause and partitions work; otherwise why not.
    fn fault_support(&self) -> Option<String>;
    /// Kills node `n` at once (SIGKILL): no shutdown, unsynced data lost.
    async fn kill(&mut self, n: usize) -> Result<()>;
    /// Kills several nodes at once; by default one after another, which a
    /// backend whose kill is slow (a container's) should do better.
    async fn kill_all(&mut self, nodes: &[usize]) -> Result<()> {
        for &n in nodes {
            self.kill(n).await?;
        }
        Ok(())
    }
    /// Stops node `n` gracefully (SIGTERM).
    async fn stop(&mut self, n: usize) -> Result<()>;
    /// Starts a stopped or killed node `n` again on its old data, with
    /// `extra_args` added to its flags for this run.
    async fn start(&mut self, n: usize, extra_args: &[String]) -> Result<()>;
    /// Node `n`'s disk is lost: stops it at once if it runs, deletes its
    /// data, and starts a fresh node in its place (same addresses) under
    /// the new id `new_id`, joining the cluster (`--raft.join`) as an
    /// operator replacing it would. Later restarts keep the new id.
    async fn replace_lost(&mut self, n: usize, new_id: u64) -> Result<()>;
    /// Freezes node `n` (SIGSTOP or the cgroup freezer); connections stay open.
    async fn pause(&mut self, n: usize) -> Result<()>;
    async fn resume(&mut self, n: usize) -> Result<()>;
    /// Cuts node `n` off from every other node (the test process still
    /// reaches its API).
    async fn isolate(&mut self, n: usize) -> Result<()>;
    /// Splits the cluster in two: the nodes of `minority` keep their links
    /// among themselves and lose every link to the other nodes (a 2|1 or
    /// 3|2 split). The test process still reaches every node.
    async fn partition(&mut self, minority: &[usize]) -> Result<()>;
    /// Cuts the whole cluster off from every other cluster (a follower
    /// cluster from its leader cluster), keeping the links among its nodes.
    async fn cut_off_cluster(&mut self) -> Result<()>;
    /// Undoes every [`Cluster::isolate`], [`Cluster::partition`] and
    /// [`Cluster::cut_off_cluster`].
    async fn heal(&mut self) -> Result<()>;
    /// Runs the server's backup `tool` (`[tools]` of the template) against
    /// node `n`'s maintenance API, with the host directory `dir` as its
    /// backup directory.
    async fn run_tool(&self, _n: usize, _tool: Tool, _dir: &std::path::Path) -> Result<ToolRun> {
        anyhow::bail!("this backend does not run the server's tools")
    }
    /// Whatever node `n` wrote to stdout and stderr, for failure reports.
    async fn logs(&self, n: usize) -> String;
    /// Removes every node and everything they stored.
    async fn destroy(&mut self);
}

/// How a run of one of the server's tools ended.
#[derive(Debug, Clone)]
pub struct ToolRun {
    pub success: bool,
    /// What it printed, stdout then stderr.
    pub output: String,
}

/// How long a tool may run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Makes clusters.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    async fn start_cluster(&self, spec: &ClusterSpec) -> Result<Box<dyn Cluster>>;
}

/// How long a node may take to start serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
