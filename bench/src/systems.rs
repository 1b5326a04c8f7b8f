//! The systems under test, started on loopback with temporary data
//! directories: Regatta (our release binary) and etcd (Debian's
//! `etcd-server`), each as one node or a 3-node cluster, and the no-op
//! server (this binary's `noop-server`) for the transport ceiling. Every
//! process is killed when its handle drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use regatta_proto::bench::etcd::kv_client::KvClient as EtcdKvClient;
use regatta_proto::bench::noop::noop_client::NoopClient;
use regatta_proto::regatta::v1::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};

/// The table Regatta serves the benchmarks from.
pub const TABLE: &str = "bench";

pub fn free_address() -> Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string())
}

/// A process, killed on drop.
pub struct Process(Child);

impl Process {
    pub fn new(child: Child) -> Process {
        Process(child)
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running system: its processes, its client addresses, its data.
pub struct Running {
    processes: Vec<Process>,
    /// Nodes configured but not started yet ([`start_regatta_holding`]).
    held: Vec<Command>,
    pub clients: Vec<String>,
    /// Where each node serves `/metrics` (Regatta's REST address, etcd's
    /// client address), for `BENCH_SERVER_METRICS`.
    pub rest: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    /// With `BENCH_KEEP_LOGS=<dir>`, the nodes' logs outlive the run:
    /// copied there as `n<i>.log` (the data directory itself is removed).
    fn drop(&mut self) {
        let Some(keep) = std::env::var_os("BENCH_KEEP_LOGS") else {
            return;
        };
        let keep = PathBuf::from(keep);
        let _ = std::fs::create_dir_all(&keep);
        for i in 1..=self.clients.len() {
            let name = format!("n{i}.log");
            let _ = std::fs::copy(self._dir.path().join(&name), keep.join(&name));
        }
    }
}

impl Running {
    /// The process ids of the nodes started, in node order.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(|p| p.0.id()).collect()
    }

    /// Kills node `index` (0-based) at once, as a crash would.
    pub fn kill(&mut self, index: usize) {
        if let Some(process) = self.processes.get_mut(index) {
            let _ = process.0.kill();
            let _ = process.0.wait();
        }
    }

    /// Starts the nodes held back, with empty data directories.
    pub fn start_held(&mut self) -> Result<()> {
        for mut command in self.held.drain(..) {
            self.processes
                .push(Process(command.spawn().context("starting a held node")?));
        }
        Ok(())
    }

    /// The Raft log, forwarding and table lines of each node's `/metrics`,
    /// and whether an etcd node leads (which node a single client's writes
    /// reach first matters: a follower forwards).
    pub async fn raft_metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut out = String::new();
        for address in &self.rest {
            let Ok(mut socket) = tokio::net::TcpStream::connect(address).await else {
                continue;
            };
            let _ = socket
                .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                .await;
            let mut body = String::new();
            let _ = socket.read_to_string(&mut body).await;
            for line in body.lines().filter(|line| {
                line.starts_with("regatta_raft_log_")
                    || line.starts_with("regatta_forward")
                    || line.starts_with("regatta_table_applied_index")
                    || line.starts_with("etcd_server_is_leader")
            }) {
                out.push_str(&format!("  {address} {line}\n"));
            }
        }
        out
    }
}

/// Where etcd is, or the line that installs it.
pub fn etcd_binary() -> Result<PathBuf, String> {
    let found = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("etcd"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_default();
    found.ok_or_else(|| {
        "etcd is not installed: `sudo apt-get install etcd-server` (Debian/Ubuntu) puts it on PATH"
            .to_string()
    })
}

/// The name of table `i` of a run with several: `bench`, `bench-1`, ...
pub fn table_name(i: usize) -> String {
    if i == 0 {
        TABLE.to_string()
    } else {
        format!("{TABLE}-{i}")
    }
}

/// Starts Regatta with `nodes` nodes serving `tables` tables
/// ([`table_name`] 0 to `tables - 1`).
pub async fn start_regatta(binary: &Path, nodes: usize, tables: usize) -> Result<Running> {
    start_regatta_with(binary, nodes, tables, &[]).await
}

/// As [`start_regatta`], every node with the flags `extra` too.
pub async fn start_regatta_with(
    binary: &Path,
    nodes: usize,
    tables: usize,
    extra: &[&str],
) -> Result<Running> {
    start_regatta_holding(binary, nodes, tables, extra, 0).await
}

/// As [`start_regatta_with`], the last `held` nodes configured (members of
/// the cluster) but not started until [`Running::start_held`].
pub async fn start_regatta_holding(
    binary: &Path,
    nodes: usize,
    tables: usize,
    extra: &[&str],
    held: usize,
) -> Result<Running> {
    let names: Vec<String> = (0..tables.max(1)).map(table_name).collect();
    let dir = tempfile::tempdir()?;
    let raft: Vec<String> = (0..nodes).map(|_| free_address()).collect::<Result<_>>()?;
    let members: Vec<String> = raft
        .iter()
        .enumerate()
        .map(|(i, address)| format!("{}={address}", i + 1))
        .collect();
    let log_level = std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
    let mut processes = Vec::new();
    let mut held_back = Vec::new();
    let mut clients = Vec::new();
    let mut rests = Vec::new();
    for (i, raft_address) in raft.iter().enumerate() {
        let api = free_address()?;
        let rest = free_address()?;
        let node_dir = dir.path().join(format!("n{}", i + 1));
        // Warnings and errors go to a file beside the data, so a node that
        // does not come up can say why (`BENCH_LOG_LEVEL`, `BENCH_KEEP_LOGS`
        // to see more of it).
        let log = std::fs::File::create(dir.path().join(format!("n{}.log", i + 1)))?;
        let mut command = Command::new(binary);
        command
            .arg("leader")
            .args(["--log-level", &log_level, "--api.address", &api])
            .args(["--raft.node-id", &(i + 1).to_string()])
            .args(["--raft.address", raft_address])
            .args(["--raft.initial-members", &members.join(",")])
            .args(["--rest.address", &rest])
            .args(["--replication.address", &free_address()?])
            .args(["--maintenance.address", &free_address()?])
            .args(["--tables.names", &names.join(",")])
            .arg("--raft.node-host-dir")
            .arg(node_dir.join("raft"))
            .arg("--raft.state-machine-dir")
            .arg(node_dir.join("sm"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log);
        if i + held < nodes {
            let child = command
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            processes.push(Process(child));
        } else {
            held_back.push(command);
        }
        clients.push(api);
        rests.push(rest);
    }
    for (i, api) in clients.iter().enumerate().take(nodes - held) {
        for table in &names {
            // A node creates its tables one by one before it serves.
            let patience = Duration::from_secs(60 + names.len() as u64 / 2);
            if let Err(err) = wait_regatta(api, table, patience).await {
                let log = std::fs::read_to_string(dir.path().join(format!("n{}.log", i + 1)))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "{err}; node {}'s last log lines:\n{}",
                    i + 1,
                    tail.join("\n")
                );
            }
        }
    }
    Ok(Running {
        processes,
        held: held_back,
        clients,
        rest: rests,
        _dir: dir,
    })
}

async fn wait_regatta(api: &str, table: &str, patience: Duration) -> Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        if let Ok(channel) = connect(api).await {
            let probe = KvClient::new(channel)
                .range(regatta_proto::regatta::v1::RangeRequest {
                    table: table.into(),
                    key: b"probe".to_vec(),
                    linearizable: true,
                    ..Default::default()
                })
                .await;
            if probe.is_ok() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("Regatta at {api} did not serve table {table} within {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts etcd with `members` members (fsync on, as shipped).
pub async fn start_etcd(binary: &Path, members: usize) -> Result<Running> {
    let dir = tempfile::tempdir()?;
    let peers: Vec<String> = (0..members)
        .map(|_| free_address())
        .collect::<Result<_>>()?;
    let cluster: Vec<String> = peers
        .iter()
        .enumerate()
        .map(|(i, peer)| format!("m{}=http://{peer}", i + 1))
        .collect();
    let mut processes = Vec::new();
    let mut clients = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let client = free_address()?;
        let child = Command::new(binary)
            .args(["--name", &format!("m{}", i + 1)])
            .arg("--data-dir")
            .arg(dir.path().join(format!("m{}", i + 1)))
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        processes.push(Process(child));
        clients.push(client);
    }
    for client in &clients {
        wait_etcd(client).await?;
    }
    Ok(Running {
        processes,
        held: Vec::new(),
        // etcd serves /metrics on its client address.
        rest: clients.clone(),
        clients,
        _dir: dir,
    })
}

async fn wait_etcd(address: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(channel) = connect(address).await {
            let probe = EtcdKvClient::new(channel)
                .range(regatta_proto::bench::etcd::RangeRequest {
                    key: b"probe".to_vec(),
                    ..Default::default()
                })
                .await;
            if probe.is_ok() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("etcd at {address} did not answer within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the no-op server (this binary's `noop-server`).
pub async fn start_noop() -> Result<Running> {
    let dir = tempfile::tempdir()?;
    let address = free_address()?;
    let child = Command::new(std::env::current_exe()?)
        .args(["noop-server", "--address", &address])
        .stdout(Stdio::null())
        .spawn()
        .context("starting the no-op server")?;
    let running = Running {
        processes: vec![Process(child)],
        held: Vec::new(),
        clients: vec![address.clone()],
        rest: Vec::new(),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(channel) = connect(&address).await {
            let call = NoopClient::new(channel)
                .call(regatta_proto::bench::noop::Empty {})
                .await;
            if call.is_ok() {
                return Ok(running);
            }
        }
        if Instant::now() > deadline {
            bail!("the no-op server did not answer");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/2 connection to `address`.
pub async fn connect(address: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?)
}

/// Serves the no-op service until killed (`bench noop-server --address A`).
pub async fn serve_noop(address: &str) -> Result<()> {
    use regatta_proto::bench::noop::noop_server::{Noop, NoopServer};
    use regatta_proto::bench::noop::Empty;
    struct Nothing;
    #[tonic::async_trait]
    impl Noop for Nothing {
        async fn call(
            &self,
            _request: tonic::Request<Empty>,
        ) -> Result<tonic::Response<Empty>, tonic::Status> {
            Ok(tonic::Response::new(Empty {}))
        }
    }
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(NoopServer::new(Nothing))
        .serve(address.parse()?)
        .await?;
    Ok(())
}
