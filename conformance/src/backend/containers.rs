//! The containers backend: each node a container of the server image on a
//! private Docker network, driven through testcontainers.
//!
//! Nodes find each other by container name on the scenario's network; the
//! test process reaches them on their bridge IP and container port (native
//! Linux routes to every bridge network). Data lives in a host directory
//! bind-mounted at `/data`, so a node restarted as a new container (with new
//! flags, say) keeps it. Nodes are cut off by moving them to the cluster's
//! "island" network, where they reach each other and the test process only
//! (so two isolated nodes form one minority: a 3|2 split, not 3|1|1).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use testcontainers::bollard::models::{
    EndpointSettings, NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
};
use testcontainers::bollard::Docker;
use testcontainers::core::{Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::{
    Backend, Cluster, ClusterSpec, FollowTarget, NodeAddresses, NodeCommand, ToolRun, API_SOCKET,
    TLS_DIR, TOOL_TIMEOUT,
};
use crate::template::{template, Ports, Tool, ToolVars};

/// Label on every container and network the suite makes, valued with the run
/// id, so leftovers of a killed run can be found and removed.
pub const LABEL: &str = "org.regatta.conformance";

#[derive(Debug)]
pub struct ContainersBackend {
    /// `name:tag` of the image under test.
    pub image: String,
    pub run_id: String,
}

#[async_trait]
impl Backend for ContainersBackend {
    fn name(&self) -> &'static str {
        "containers"
    }

    async fn start_cluster(&self, spec: &ClusterSpec) -> Result<Box<dyn Cluster>> {
        let docker = testcontainers::core::client::docker_client_instance().await?;
        let prefix = format!("rg-{}-{}", self.run_id, spec.name);
        // A follower cluster joins its leader cluster's network.
        let shared = spec.follow.as_ref().and_then(|f| f.network.clone());
        let network = shared.clone().unwrap_or_else(|| prefix.clone());
        let island = format!("{prefix}-island");
        let mut created = vec![&island];
        if shared.is_none() {
            created.push(&network);
        }
        for name in created {
            docker
                .create_network(NetworkCreateRequest {
                    name: name.clone(),
                    labels: Some(HashMap::from([(LABEL.to_string(), self.run_id.clone())])),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("creating network {name}"))?;
        }
        let data = tempfile::Builder::new()
            .prefix(&format!("regatta-{}-", spec.name))
            .tempdir()?;
        let names: Vec<String> = (1..=spec.nodes).map(|n| format!("{prefix}-n{n}")).collect();
        let Ports {
            api,
            rest,
            raft,
            replication,
            maintenance,
        } = template().ports;
        let data_dir = template().data_dir.clone();
        let members: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{}={name}:{raft}", i + 1))
            .collect();
        let (name, tag) = self
            .image
            .rsplit_once(':')
            .unwrap_or((self.image.as_str(), "latest"));
        let mut nodes = Vec::new();
        for (index, container_name) in names.iter().enumerate() {
            let bind = NodeAddresses {
                api: format!("0.0.0.0:{api}"),
                rest: format!("0.0.0.0:{rest}"),
                raft: format!("0.0.0.0:{raft}"),
                raft_advertised: format!("{container_name}:{raft}"),
                replication: format!("0.0.0.0:{replication}"),
                maintenance: format!("0.0.0.0:{maintenance}"),
            };
            let host_dir = data.path().join(format!("n{}", index + 1));
            std::fs::create_dir_all(&host_dir)?;
            if let Some(tls) = &spec.tls {
                super::write_node_tls(&tls.authority, &host_dir, container_name)?;
            }
            nodes.push(ContainerNode {
                name: container_name.clone(),
                command: NodeCommand::new(spec, index + 1, &bind, &members.join(","), &data_dir),
                host_dir: host_dir.to_string_lossy().into_owned(),
                container: None,
                ip: None,
                isolated: false,
                earlier_logs: String::new(),
            });
        }
        let mut cluster = ContainerCluster {
            docker,
            api_socket: spec.api_socket,
            image: (name.to_string(), tag.to_string()),
            run_id: self.run_id.clone(),
            owns_network: shared.is_none(),
            network,
            island,
            nodes,
            _data: data,
        };
        // Start every node concurrently: each waits for its peers anyway.
        let starts = (1..=spec.nodes).map(|n| cluster.create(n, &[]));
        let created = futures::future::join_all(starts).await;
        for (index, result) in created.into_iter().enumerate() {
            let container = result?;
            cluster.nodes[index].ip = Some(container.get_bridge_ip_address().await?);
            cluster.nodes[index].container = Some(container);
        }
        Ok(Box::new(cluster))
    }
}

struct ContainerNode {
    name: String,
    command: NodeCommand,
    host_dir: String,
    container: Option<ContainerAsync<GenericImage>>,
    ip: Option<IpAddr>,
    isolated: bool,
    /// Logs of the node's earlier containers (a restart makes a new one).
    earlier_logs: String,
}

pub struct ContainerCluster {
    docker: Docker,
    /// The KV API is on a Unix socket in each node's data directory, which
    /// the host reaches through the bind mount.
    api_socket: bool,
    image: (String, String),
    run_id: String,
    /// Whether this cluster made its network (a follower cluster borrows its leader's).
    owns_network: bool,
    network: String,
    island: String,
    nodes: Vec<ContainerNode>,
    _data: tempfile::TempDir,
}

impl ContainerCluster {
    fn node(&self, n: usize) -> Result<&ContainerNode> {
        self.nodes
            .get(n.wrapping_sub(1))
            .with_context(|| format!("no node {n} in a cluster of {}", self.nodes.len()))
    }

    fn node_mut(&mut self, n: usize) -> Result<&mut ContainerNode> {
        let size = self.nodes.len();
        self.nodes
            .get_mut(n.wrapping_sub(1))
            .with_context(|| format!("no node {n} in a cluster of {size}"))
    }

    /// Creates and starts node `n`'s container (not yet remembered).
    fn create(
        &self,
        n: usize,
        extra_args: &[String],
    ) -> impl std::future::Future<Output = Result<ContainerAsync<GenericImage>>> + Send + 'static
    {
        let node = &self.nodes[n - 1];
        let args = node.command.args(extra_args);
        let request = args.map(|args| {
            GenericImage::new(self.image.0.clone(), self.image.1.clone())
                .with_wait_for(WaitFor::Nothing)
                .with_cmd(args)
                .with_container_name(node.name.clone())
                .with_network(self.network.clone())
                .with_label(LABEL, self.run_id.clone())
                .with_mount(Mount::bind_mount(
                    node.host_dir.clone(),
                    template().data_dir.clone(),
                ))
                .with_startup_timeout(Duration::from_secs(60))
                .with_host_config_modifier(|host| {
                    // A stopped peer's name is unknown to Docker's DNS, which
                    // would otherwise forward it upstream and wait.
                    host.dns_options = Some(vec!["timeout:1".into(), "attempts:1".into()]);
                })
        });
        let name = node.name.clone();
        async move {
            request?
                .start()
                .await
                .with_context(|| format!("starting container {name}"))
        }
    }

    async fn container_logs(container: &ContainerAsync<GenericImage>) -> String {
        let stdout = container.stdout_to_vec().await.unwrap_or_default();
        let stderr = container.stderr_to_vec().await.unwrap_or_default();
        format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )
    }

    /// The node's current IP, from whichever of our networks it is on.
    async fn current_ip(&self, n: usize) -> Result<IpAddr> {
        let node = self.node(n)?;
        let inspected = self.docker.inspect_container(&node.name, None).await?;
        let networks = inspected
            .network_settings
            .and_then(|settings| settings.networks)
            .unwrap_or_default();
        let wanted = if node.isolated {
            &self.island
        } else {
            &self.network
        };
        let ip = networks
            .get(wanted)
            .and_then(|endpoint| endpoint.ip_address.clone())
            .filter(|ip| !ip.is_empty())
            .with_context(|| format!("{} has no address on {wanted}", node.name))?;
        Ok(ip.parse()?)
    }

    /// Node `n`'s running container, which it no longer has (nor an address).
    fn take_container(&mut self, n: usize) -> Result<ContainerAsync<GenericImage>> {
        let node = self.node_mut(n)?;
        let container = node
            .container
            .take()
            .with_context(|| format!("node {n} is not running"))?;
        node.ip = None;
        Ok(container)
    }

    /// Stops node `n` (SIGTERM, then SIGKILL after `grace_seconds`) and
    /// removes its container, keeping its logs and its data directory.
    async fn halt(&mut self, n: usize, grace_seconds: i32) -> Result<()> {
        let container = self.take_container(n)?;
        container.stop_with_timeout(Some(grace_seconds)).await?;
        let logs = Self::container_logs(&container).await;
        container.rm().await?;
        self.node_mut(n)?.earlier_logs.push_str(&logs);
        Ok(())
    }

    async fn move_node(&mut self, n: usize, to_island: bool) -> Result<()> {
        let name = self.node(n)?.name.clone();
        let (from, to) = if to_island {
            (self.network.clone(), self.island.clone())
        } else {
            (self.island.clone(), self.network.clone())
        };
        self.docker
            .disconnect_network(
                &from,
                NetworkDisconnectRequest {
                    container: name.clone(),
                    force: Some(true),
                },
            )
            .await
            .with_context(|| format!("disconnecting {name} from {from}"))?;
        self.docker
            .connect_network(
                &to,
                NetworkConnectRequest {
                    container: name.clone(),
                    endpoint_config: Some(EndpointSettings::default()),
                },
            )
            .await
            .with_context(|| format!("connecting {name} to {to}"))?;
        self.node_mut(n)?.isolated = to_island;
        let ip = self.current_ip(n).await?;
        self.node_mut(n)?.ip = Some(ip);
        Ok(())
    }
}

#[async_trait]
impl Cluster for ContainerCluster {
    fn size(&self) -> usize {
        self.nodes.len()
    }

    fn api_endpoint(&self, n: usize) -> String {
        if self.api_socket {
            if let Some(node) = self.nodes.get(n.wrapping_sub(1)) {
                return format!("unix://{}/{API_SOCKET}", node.host_dir);
            }
        }
        match self.nodes.get(n.wrapping_sub(1)).and_then(|node| node.ip) {
            Some(ip) => format!("http://{ip}:{}", template().ports.api),
            // A stopped node: an address that refuses, like a dead host.
            None => "http://127.0.0.1:9".into(),
        }
    }

    fn maintenance_endpoint(&self, n: usize) -> Option<String> {
        let ip = self.nodes.get(n.wrapping_sub(1))?.ip?;
        Some(format!("http://{ip}:{}", template().ports.maintenance))
    }

    fn rest_address(&self, n: usize) -> Option<String> {
        let ip = self.nodes.get(n.wrapping_sub(1))?.ip?;
        Some(format!("{ip}:{}", template().ports.rest))
    }

    fn host_data_dir(&self, n: usize) -> Option<std::path::PathBuf> {
        Some(self.nodes.get(n.wrapping_sub(1))?.host_dir.clone().into())
    }

    fn raft_address(&self, n: usize) -> Option<String> {
        let node = self.nodes.get(n.wrapping_sub(1))?;
        Some(node.command.raft_address().to_string())
    }

    fn replication_target(&self, n: usize) -> Option<FollowTarget> {
        Some(FollowTarget {
            leader_address: format!(
                "{}:{}",
                self.nodes.get(n.wrapping_sub(1))?.name,
                template().ports.replication
            ),
            network: Some(self.network.clone()),
        })
    }

    fn replication_endpoint(&self, n: usize) -> Option<String> {
        let ip = self.nodes.get(n.wrapping_sub(1))?.ip?;
        Some(format!("http://{ip}:{}", template().ports.replication))
    }

    fn fault_support(&self) -> Option<String> {
        None
    }

    async fn kill(&mut self, n: usize) -> Result<()> {
        // A zero grace period: SIGKILL at once.
        self.halt(n, 0).await
    }

    async fn kill_all(&mut self, nodes: &[usize]) -> Result<()> {
        // SIGKILL every container first; logs and removal take a while
        // each, and "at once" must mean within milliseconds.
        let mut killed = Vec::new();
        for &n in nodes {
            killed.push((n, self.take_container(n)?));
        }
        let kills = killed.iter().map(|(_, c)| c.stop_with_timeout(Some(0)));
        for result in futures::future::join_all(kills).await {
            result?;
        }
        for (n, container) in killed {
            let logs = Self::container_logs(&container).await;
            container.rm().await?;
            self.node_mut(n)?.earlier_logs.push_str(&logs);
        }
        Ok(())
    }

    async fn stop(&mut self, n: usize) -> Result<()> {
        self.halt(n, 20).await
    }

    async fn start(&mut self, n: usize, extra_args: &[String]) -> Result<()> {
        if self.node(n)?.container.is_some() {
            bail!("node {n} is already running");
        }
        // A node restarts on its home network; a heal would move it anyway.
        self.node_mut(n)?.isolated = false;
        let container = self.create(n, extra_args).await?;
        let ip = container.get_bridge_ip_address().await?;
        let node = self.node_mut(n)?;
        node.container = Some(container);
        node.ip = Some(ip);
        Ok(())
    }

    async fn replace_lost(&mut self, n: usize, new_id: u64) -> Result<()> {
        if self.node(n)?.container.is_some() {
            self.halt(n, 0).await?;
        }
        let node = self.node_mut(n)?;
        node.command.rejoin(new_id);
        super::empty_dir(std::path::Path::new(&node.host_dir))?;
        self.start(n, &[]).await
    }

    /// The tool runs in a container of the image of its own on the
    /// cluster's network, the backup directory mounted at `/backup` (and
    /// the node's TLS files at `/tls`): the image needs no shell, and the
    /// tool reaches the node as the other nodes do.
    async fn run_tool(&self, n: usize, tool: Tool, dir: &std::path::Path) -> Result<ToolRun> {
        let node = self.node(n)?;
        let tls = std::path::Path::new(&node.host_dir).join(TLS_DIR);
        let tls = tls.exists().then_some(tls);
        let vars = ToolVars {
            maintenance: format!("{}:{}", node.name, template().ports.maintenance),
            dir: "/backup".into(),
            ca: tls.as_ref().map(|_| "/tls/ca.crt".into()),
        };
        let args = template().tool_command(tool, &vars)?;
        let mut image = GenericImage::new(self.image.0.clone(), self.image.1.clone())
            .with_wait_for(WaitFor::Nothing);
        if let Some(program) = &template().tools.program {
            image = image.with_entrypoint(program);
        }
        let mut request = image
            .with_cmd(args)
            .with_network(self.network.clone())
            .with_label(LABEL, self.run_id.clone())
            .with_mount(Mount::bind_mount(dir.to_string_lossy(), "/backup"));
        if let Some(tls) = &tls {
            request = request.with_mount(Mount::bind_mount(tls.to_string_lossy(), "/tls"));
        }
        let container = request
            .start()
            .await
            .context("starting the tool's container")?;
        let deadline = tokio::time::Instant::now() + TOOL_TIMEOUT;
        let exit_code = loop {
            let state = self
                .docker
                .inspect_container(container.id(), None)
                .await?
                .state
                .unwrap_or_default();
            if state.running == Some(false) {
                break state.exit_code;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the tool ran past {TOOL_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let output = Self::container_logs(&container).await;
        // Removed when dropped.
        drop(container);
        Ok(ToolRun {
            success: exit_code == Some(0),
            output,
        })
    }

    async fn pause(&mut self, n: usize) -> Result<()> {
        let node = self.node(n)?;
        let container = node
            .container
            .as_ref()
            .with_context(|| format!("node {n} is not running"))?;
        Ok(container.pause().await?)
    }

    async fn resume(&mut self, n: usize) -> Result<()> {
        let node = self.node(n)?;
        let container = node
            .container
            .as_ref()
            .with_context(|| format!("node {n} is not running"))?;
        Ok(container.unpause().await?)
    }

    async fn isolate(&mut self, n: usize) -> Result<()> {
        if self.node(n)?.isolated {
            return Ok(());
        }
        self.move_node(n, true).await
    }

    async fn partition(&mut self, minority: &[usize]) -> Result<()> {
        // Together on the island network the minority still reach each
        // other by name, and nothing else.
        for &n in minority {
            self.isolate(n).await?;
        }
        Ok(())
    }

    async fn cut_off_cluster(&mut self) -> Result<()> {
        // The cluster's island network is its own: together there, the
        // nodes still reach each other by name, and nothing else.
        for n in 1..=self.nodes.len() {
            if !self.nodes[n - 1].isolated && self.nodes[n - 1].container.is_some() {
                self.move_node(n, true).await?;
            }
        }
        Ok(())
    }

    async fn heal(&mut self) -> Result<()> {
        for n in 1..=self.nodes.len() {
            if self.nodes[n - 1].isolated && self.nodes[n - 1].container.is_some() {
                self.move_node(n, false).await?;
            }
        }
        Ok(())
    }

    async fn logs(&self, n: usize) -> String {
        let Some(node) = self.nodes.get(n.wrapping_sub(1)) else {
            return String::new();
        };
        let mut logs = node.earlier_logs.clone();
        if let Some(container) = &node.container {
            logs.push_str(&Self::container_logs(container).await);
        }
        logs
    }

    async fn destroy(&mut self) {
        // All at once: every scenario ends here, and one removal takes a
        // few hundred milliseconds.
        let removals = self
            .nodes
            .iter_mut()
            .filter_map(|node| node.container.take())
            .map(|container| container.rm());
        let _ = futures::future::join_all(removals).await;
        let _ = self.docker.remove_network(&self.island).await;
        if self.owns_network {
            let _ = self.docker.remove_network(&self.network).await;
        }
    }
}

/// Removes containers and networks a killed earlier run left behind.
pub async fn remove_leftovers() -> Result<()> {
    use testcontainers::bollard::query_parameters::{
        ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
    };
    let docker = testcontainers::core::client::docker_client_instance().await?;
    let filters = HashMap::from([("label".to_string(), vec![LABEL.to_string()])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?;
    for container in containers {
        if let Some(id) = container.id {
            docker
                .remove_container(
                    &id,
                    Some(
                        RemoveContainerOptionsBuilder::default()
                            .force(true)
                            .v(true)
                            .build(),
                    ),
                )
                .await?;
        }
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?;
    for network in networks {
        if let Some(name) = network.name {
            docker.remove_network(&name).await?;
        }
    }
    Ok(())
}
