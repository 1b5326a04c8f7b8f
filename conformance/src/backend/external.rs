//! The external backend: a cluster someone else already runs
//! (`REGATTA_ENDPOINTS`), reached only over its KV API.
//!
//! The suite cannot start, stop or cut off these nodes, so scenarios that
//! need that are skipped with the reason. Each scenario begins by emptying
//! the tables it names, which must exist (see `conformance/README.md`).

use anyhow::{bail, Result};
use async_trait::async_trait;

use super::{Backend, Cluster, ClusterSpec, FollowTarget};

#[derive(Debug)]
pub struct ExternalBackend {
    /// `http://host:port` of each node's API, in node-id order.
    pub endpoints: Vec<String>,
    /// The same for the replication API (`REGATTA_REPLICATION_ENDPOINTS`).
    pub replication: Vec<String>,
    /// The same for the maintenance API (`REGATTA_MAINTENANCE_ENDPOINTS`).
    pub maintenance: Vec<String>,
}

impl ExternalBackend {
    /// Parses `REGATTA_ENDPOINTS` (`host:port` or URLs, comma-separated).
    pub fn from_list(
        list: &str,
        replication: Option<&str>,
        maintenance: Option<&str>,
    ) -> Result<ExternalBackend> {
        let endpoints = parse_list(list);
        if endpoints.is_empty() {
            bail!("REGATTA_ENDPOINTS is empty");
        }
        Ok(ExternalBackend {
            endpoints,
            replication: replication.map(parse_list).unwrap_or_default(),
            maintenance: maintenance.map(parse_list).unwrap_or_default(),
        })
    }
}

fn parse_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            if e.contains("://") {
                e.to_string()
            } else {
                format!("http://{e}")
            }
        })
        .collect()
}

pub const NO_FAULTS: &str =
    "an external cluster (REGATTA_ENDPOINTS) cannot be killed, restarted, paused or cut off by the suite";

#[async_trait]
impl Backend for ExternalBackend {
    fn name(&self) -> &'static str {
        "external endpoints"
    }

    async fn start_cluster(&self, spec: &ClusterSpec) -> Result<Box<dyn Cluster>> {
        if spec.nodes > self.endpoints.len() {
            bail!(
                "the scenario needs {} nodes; REGATTA_ENDPOINTS names {}",
                spec.nodes,
                self.endpoints.len()
            );
        }
        if spec.follow.is_some() {
            bail!("the scenario needs a follower cluster; {NO_FAULTS}");
        }
        if spec.api_socket {
            bail!("the scenario needs a cluster serving its KV API on a Unix socket; an external cluster (REGATTA_ENDPOINTS) is reached over TCP");
        }
        if !spec.extra_args.is_empty() {
            bail!(
                "the scenario needs server flags {:?}; {NO_FAULTS}",
                spec.extra_args
            );
        }
        Ok(Box::new(ExternalCluster {
            endpoints: self.endpoints[..spec.nodes].to_vec(),
            replication: self.replication.clone(),
            maintenance: self.maintenance.clone(),
        }))
    }
}

pub struct ExternalCluster {
    endpoints: Vec<String>,
    replication: Vec<String>,
    maintenance: Vec<String>,
}

#[async_trait]
impl Cluster for ExternalCluster {
    fn size(&self) -> usize {
        self.endpoints.len()
    }

    fn api_endpoint(&self, n: usize) -> String {
        self.endpoints[n - 1].clone()
    }

    fn replication_endpoint(&self, n: usize) -> Option<String> {
        self.replication.get(n.wrapping_sub(1)).cloned()
    }

    fn host_data_dir(&self, _n: usize) -> Option<std::path::PathBuf> {
        None
    }

    fn raft_address(&self, _n: usize) -> Option<String> {
        None
    }

    fn replication_target(&self, _n: usize) -> Option<FollowTarget> {
        None
    }

    fn fault_support(&self) -> Option<String> {
        Some(NO_FAULTS.into())
    }

    async fn kill(&mut self, _n: usize) -> Result<()> {
        bail!(NO_FAULTS)
    }

    async fn stop(&mut self, _n: usize) -> Result<()> {
        bail!(NO_FAULTS)
    }

    async fn start(&mut self, _n: usize, _extra_args: &[String]) -> Result<()> {
        bail!(NO_FAULTS)
    }

    async fn replace_lost(&mut self, _n: usize, _new_id: u64) -> Result<()> {
        bail!(NO_FAULTS)
    }

    async fn pause(&mut self, _n: usize) -> Result<()> {
        bail!(NO_FAULTS)
    }

    async fn resume(&mut self, _n: usize) -> Result<()> {
        bail!(NO_FAULTS)
    }

    async fn isolate(&mut self, _n: usize) -> Result<()> {
        bail!(NO_FAULTS)
    }

    async fn partition(&mut self, _minority: &[usize]) -> Result<()> {
        bail!(NO_FAULTS)
    }

    fn maintenance_endpoint(&self, n: usize) -> Option<String> {
        self.maintenance.get(n.wrapping_sub(1)).cloned()
    }

    fn rest_address(&self, _n: usize) -> Option<String> {
        None
    }

    async fn cut_off_cluster(&mut self) -> Result<()> {
        bail!(NO_FAULTS)
    }

    async fn heal(&mut self) -> Result<()> {
        bail!(NO_FAULTS)
    }

    async fn logs(&self, _n: usize) -> String {
        String::new()
    }

    async fn destroy(&mut self) {}
}
