//! The processes backend: the server binary as local processes on loopback.
//!
//! Each node gets its own data directory and free ports. Raft traffic from
//! node A to node B goes through a [`LinkProxy`] owned by this process, so a
//! partition is a switch here; kill is SIGKILL, pause is SIGSTOP.

use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;

use super::proxy::LinkProxy;
use super::{
    Backend, Cluster, ClusterSpec, FollowTarget, NodeAddresses, NodeCommand, ToolRun, API_SOCKET,
    TLS_DIR, TOOL_TIMEOUT,
};
use crate::template::{template, Tool, ToolVars};

#[derive(Debug)]
pub struct ProcessesBackend {
    pub binary: PathBuf,
}

#[async_trait]
impl Backend for ProcessesBackend {
    fn name(&self) -> &'static str {
        "processes"
    }

    async fn start_cluster(&self, spec: &ClusterSpec) -> Result<Box<dyn Cluster>> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("regatta-{}-", spec.name))
            .tempdir()?;
        // Ports stay bound here until the nodes start, so that the proxies
        // below (and anything else on the machine) cannot be handed them.
        let mut reserved = Vec::new();
        let mut reserve = || -> Result<String> {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let address = listener.local_addr()?.to_string();
            reserved.push(listener);
            Ok(address)
        };
        let addresses: Vec<NodeAddresses> = (0..spec.nodes)
            .map(|_| {
                let raft = reserve()?;
                Ok(NodeAddresses {
                    api: reserve()?,
                    rest: reserve()?,
                    raft_advertised: raft.clone(),
                    raft,
                    replication: reserve()?,
                    maintenance: reserve()?,
                })
            })
            .collect::<Result<_>>()?;
        // links[from][to]: the proxy node `from` dials to reach node `to`.
        let mut links: Vec<Vec<Option<LinkProxy>>> = Vec::new();
        for from in 0..spec.nodes {
            let mut row = Vec::new();
            for (to, target) in addresses.iter().enumerate() {
                row.push(if from == to {
                    None
                } else {
                    Some(LinkProxy::start(target.raft.parse::<SocketAddr>()?).await?)
                });
            }
            links.push(row);
        }
        // A follower cluster reaches its leader cluster through one proxy,
        // so that it can be cut off as a whole.
        let mut spec = spec.clone();
        let uplink = match &mut spec.follow {
            Some(follow) => {
                let proxy = LinkProxy::start(follow.leader_address.parse::<SocketAddr>()?).await?;
                follow.leader_address = proxy.address.to_string();
                Some(proxy)
            }
            None => None,
        };
        let spec = &spec;
        let mut nodes = Vec::new();
        for (index, bind) in addresses.iter().enumerate() {
            let members: Vec<String> = (0..spec.nodes)
                .map(|to| match &links[index][to] {
                    Some(proxy) => format!("{}={}", to + 1, proxy.address),
                    None => format!("{}={}", to + 1, bind.raft),
                })
                .collect();
            let node_dir = dir.path().join(format!("n{}", index + 1));
            std::fs::create_dir_all(node_dir.join("data"))?;
            if let Some(tls) = &spec.tls {
                super::write_node_tls(&tls.authority, &node_dir.join("data"), "127.0.0.1")?;
            }
            let command = NodeCommand::new(
                spec,
                index + 1,
                bind,
                &members.join(","),
                &node_dir.join("data").to_string_lossy(),
            );
            nodes.push(ProcessNode {
                command,
                data: node_dir.join("data"),
                log: node_dir.join("node.log"),
                api: if spec.api_socket {
                    format!("unix://{}/data/{API_SOCKET}", node_dir.display())
                } else {
                    format!("http://{}", bind.api)
                },
                rest: bind.rest.clone(),
                replication: bind.replication.clone(),
                maintenance: bind.maintenance.clone(),
                child: None,
            });
        }
        let mut cluster = ProcessCluster {
            binary: self.binary.clone(),
            tls: spec.tls.is_some(),
            nodes,
            links,
            uplink,
            _dir: dir,
        };
        drop(reserved);
        for n in 1..=spec.nodes {
            cluster.spawn(n, &[])?;
        }
        Ok(Box::new(cluster))
    }
}

struct ProcessNode {
    command: NodeCommand,
    /// The data directory its flags name.
    data: PathBuf,
    log: PathBuf,
    api: String,
    rest: String,
    replication: String,
    maintenance: String,
    child: Option<Child>,
}

pub struct ProcessCluster {
    binary: PathBuf,
    tls: bool,
    nodes: Vec<ProcessNode>,
    links: Vec<Vec<Option<LinkProxy>>>,
    /// A follower cluster's way to its leader cluster.
    uplink: Option<LinkProxy>,
    _dir: tempfile::TempDir,
}

impl ProcessCluster {
    fn node(&mut self, n: usize) -> Result<&mut ProcessNode> {
        let size = self.nodes.len();
        self.nodes
            .get_mut(n.wrapping_sub(1))
            .with_context(|| format!("no node {n} in a cluster of {size}"))
    }

    fn spawn(&mut self, n: usize, extra_args: &[String]) -> Result<()> {
        let binary = self.binary.clone();
        let node = self.node(n)?;
        if node.child.is_some() {
            bail!("node {n} is already running");
        }
        let log = open_log(&node.log)?;
        let child = Command::new(&binary)
            .args(node.command.args(extra_args)?)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        node.child = Some(child);
        Ok(())
    }

    fn signal(&mut self, n: usize, signal: libc::c_int) -> Result<()> {
        let node = self.node(n)?;
        let child = node
            .child
            .as_ref()
            .with_context(|| format!("node {n} is not running"))?;
        let pid = libc::pid_t::try_from(child.id())?;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!(
                "signal {signal} to node {n}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Cuts every link between a node of `side` and a node outside it
    /// (nodes numbered from 1).
    fn cut_across(&self, side: &[usize]) {
        for (from, row) in self.links.iter().enumerate() {
            for (to, proxy) in row.iter().enumerate() {
                if let Some(proxy) = proxy {
                    if side.contains(&(from + 1)) != side.contains(&(to + 1)) {
                        proxy.set_cut(true);
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Cluster for ProcessCluster {
    fn size(&self) -> usize {
        self.nodes.len()
    }

    fn api_endpoint(&self, n: usize) -> String {
        self.nodes[n - 1].api.clone()
    }

    fn maintenance_endpoint(&self, n: usize) -> Option<String> {
        Some(format!(
            "http://{}",
            self.nodes.get(n.wrapping_sub(1))?.maintenance
        ))
    }

    fn rest_address(&self, n: usize) -> Option<String> {
        Some(self.nodes.get(n.wrapping_sub(1))?.rest.clone())
    }

    fn host_data_dir(&self, n: usize) -> Option<PathBuf> {
        Some(self.nodes.get(n.wrapping_sub(1))?.data.clone())
    }

    fn raft_address(&self, n: usize) -> Option<String> {
        let node = self.nodes.get(n.wrapping_sub(1))?;
        Some(node.command.raft_address().to_string())
    }

    fn replication_target(&self, n: usize) -> Option<FollowTarget> {
        Some(FollowTarget {
            leader_address: self.nodes.get(n.wrapping_sub(1))?.replication.clone(),
            network: None,
        })
    }

    fn replication_endpoint(&self, n: usize) -> Option<String> {
        Some(format!(
            "http://{}",
            self.nodes.get(n.wrapping_sub(1))?.replication
        ))
    }

    fn fault_support(&self) -> Option<String> {
        None
    }

    async fn kill(&mut self, n: usize) -> Result<()> {
        let node = self.node(n)?;
        let mut child = node
            .child
            .take()
            .with_context(|| format!("node {n} is not running"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    async fn stop(&mut self, n: usize) -> Result<()> {
        // A paused process cannot handle SIGTERM; wake it first.
        let _ = self.signal(n, libc::SIGCONT);
        self.signal(n, libc::SIGTERM)?;
        let node = self.node(n)?;
        let mut child = node
            .child
            .take()
            .with_context(|| format!("node {n} is not running"))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                bail!("node {n} did not stop within 20 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn start(&mut self, n: usize, extra_args: &[String]) -> Result<()> {
        self.spawn(n, extra_args)
    }

    async fn replace_lost(&mut self, n: usize, new_id: u64) -> Result<()> {
        if self.node(n)?.child.is_some() {
            self.kill(n).await?;
        }
        let node = self.node(n)?;
        node.command.rejoin(new_id);
        super::empty_dir(&node.data)?;
        self.spawn(n, &[])
    }

    async fn run_tool(&self, n: usize, tool: Tool, dir: &Path) -> Result<ToolRun> {
        let node = self
            .nodes
            .get(n.wrapping_sub(1))
            .with_context(|| format!("no node {n}"))?;
        let vars = ToolVars {
            maintenance: node.maintenance.clone(),
            dir: dir.to_string_lossy().into_owned(),
            ca: self.tls.then(|| {
                node.data
                    .join(TLS_DIR)
                    .join("ca.crt")
                    .to_string_lossy()
                    .into_owned()
            }),
        };
        let args = template().tool_command(tool, &vars)?;
        let program = template()
            .tools
            .program
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.binary.clone());
        let run = tokio::process::Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(TOOL_TIMEOUT, run)
            .await
            .with_context(|| format!("{} {args:?} ran past {TOOL_TIMEOUT:?}", program.display()))?
            .with_context(|| format!("running {}", program.display()))?;
        Ok(ToolRun {
            success: output.status.success(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }

    async fn pause(&mut self, n: usize) -> Result<()> {
        self.signal(n, libc::SIGSTOP)
    }

    async fn resume(&mut self, n: usize) -> Result<()> {
        self.signal(n, libc::SIGCONT)
    }

    async fn isolate(&mut self, n: usize) -> Result<()> {
        self.partition(&[n]).await
    }

    async fn partition(&mut self, minority: &[usize]) -> Result<()> {
        for &n in minority {
            self.node(n)?;
        }
        self.cut_across(minority);
        Ok(())
    }

    async fn cut_off_cluster(&mut self) -> Result<()> {
        match &self.uplink {
            Some(uplink) => {
                uplink.set_cut(true);
                Ok(())
            }
            None => bail!("only a follower cluster can be cut off from its leader cluster"),
        }
    }

    async fn heal(&mut self) -> Result<()> {
        for row in &self.links {
            for proxy in row.iter().flatten() {
                proxy.set_cut(false);
            }
        }
        if let Some(uplink) = &self.uplink {
            uplink.set_cut(false);
        }
        Ok(())
    }

    async fn logs(&self, n: usize) -> String {
        match self.nodes.get(n.wrapping_sub(1)) {
            Some(node) => std::fs::read_to_string(&node.log).unwrap_or_default(),
            None => String::new(),
        }
    }

    async fn destroy(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.links.clear();
        self.uplink = None;
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn open_log(path: &Path) -> Result<File> {
    Ok(OpenOptions::new().create(true).append(true).open(path)?)
}
