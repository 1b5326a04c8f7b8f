//! Helpers shared by the integration tests that start the real binary.

use std::sync::atomic::{AtomicU16, Ordering};

/// Ports below the kernel's ephemeral range (Linux: 32768-60999). A port
/// that the kernel handed out with `bind(0)` and this test released can be
/// taken again at once by any outgoing connection of a concurrent test,
/// before the server process binds it ("Address already in use" seen in
/// CI); ports below the range are only ever taken on purpose.
const FIRST_PORT: u16 = 20_000;
const PORTS: u16 = 12_000;

/// Runs `regatta <args>` (a CLI command) to its end: (success, stdout,
/// stderr).
#[allow(dead_code)] // not every test binary runs the CLI
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_regatta"))
        .args(args)
        .output()
        .expect("run regatta");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A loopback port that was free a moment ago, outside the ephemeral range.
#[allow(dead_code)] // not every test binary uses both helpers
pub fn free_port() -> u16 {
    // Test binaries run one after another; each starts at its own offset.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % u32::from(PORTS)) as u16;
    for _ in 0..PORTS {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % PORTS;
        let port = FIRST_PORT + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST_PORT}..{}", FIRST_PORT + PORTS)
}

/// A loopback address with a port that was free a moment ago.
#[allow(dead_code)]
pub fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// One real `regatta leader` process and what the tests do with it.
#[allow(dead_code, clippy::new_without_default)]
pub mod node {
    use std::path::Path;
    use std::process::{Child, Command as Process, Stdio};
    use std::time::{Duration, Instant};

    use regatta_proto::regatta::v1::kv_client::KvClient;
    use regatta_proto::regatta::v1::RangeRequest;
    use tonic::transport::Channel;

    use super::free_address;

    /// The addresses of one node; kept across restarts like its data directory.
    pub struct NodeConfig {
        pub api: String,
        pub maintenance: String,
        pub raft: String,
        pub rest: String,
        pub replication: String,
    }

    impl NodeConfig {
        pub fn new() -> NodeConfig {
            NodeConfig {
                api: free_address(),
                maintenance: free_address(),
                raft: free_address(),
                rest: free_address(),
                replication: free_address(),
            }
        }

        /// `regatta leader --dev-mode` (the README's quick start) on these
        /// addresses and `dir`, plus `extra`.
        pub fn command(&self, dir: &Path, extra: &[&str]) -> Process {
            let mut command = Process::new(env!("CARGO_BIN_EXE_regatta"));
            command
                .args(["leader", "--dev-mode", "--log-level", "warn"])
                .args(["--api.address", &self.api])
                .args(["--maintenance.address", &self.maintenance])
                .args(["--raft.address", &self.raft])
                .args(["--rest.address", &self.rest])
                .args(["--replication.address", &self.replication])
                .arg("--raft.node-host-dir")
                .arg(dir.join("raft"))
                .arg("--raft.state-machine-dir")
                .arg(dir.join("sm"))
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            command
        }

        pub fn start(&self, dir: &Path) -> Running {
            self.start_with(dir, &[])
        }

        pub fn start_with(&self, dir: &Path, extra: &[&str]) -> Running {
            Running(
                self.command(dir, extra)
                    .spawn()
                    .expect("spawn regatta leader"),
            )
        }
    }

    pub struct Running(Child);

    impl Running {
        /// The process id.
        pub fn id(&self) -> u32 {
            self.0.id()
        }

        /// Waits up to `timeout` for the process to exit on its own; its
        /// status and what it wrote to stderr.
        pub fn wait_exit(
            &mut self,
            timeout: Duration,
        ) -> Option<(std::process::ExitStatus, String)> {
            let deadline = Instant::now() + timeout;
            loop {
                if let Some(status) = self.0.try_wait().expect("try_wait") {
                    let mut stderr = String::new();
                    if let Some(mut pipe) = self.0.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                    }
                    return Some((status, stderr));
                }
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Any `regatta` process the test started (a follower, say).
    impl From<Child> for Running {
        fn from(child: Child) -> Running {
            Running(child)
        }
    }

    impl Running {
        /// Fails the test with the node's output if it exited.
        pub fn assert_running(&mut self, when: &str) {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.0.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!("the node exited {when} ({status}):\n{stderr}");
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A KV client once the node serves the default table `regatta`.
    pub async fn serving(config: &NodeConfig, node: &mut Running) -> KvClient<Channel> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            node.assert_running("before it served");
            if let Ok(channel) = Channel::from_shared(format!("http://{}", config.api))
                .expect("uri")
                .connect()
                .await
            {
                let mut client = KvClient::new(channel);
                if client.range(range(b"probe")).await.is_ok() {
                    return client;
                }
            }
            assert!(Instant::now() < deadline, "the node never served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn range(key: &[u8]) -> RangeRequest {
        RangeRequest {
            table: b"regatta".to_vec(),
            key: key.to_vec(),
            linearizable: true,
            ..RangeRequest::default()
        }
    }
}

/// Several `regatta leader` processes forming one cluster, each with its
/// own addresses and data directory kept across restarts.
#[allow(dead_code)]
pub mod cluster {
    use std::time::{Duration, Instant};

    use regatta_proto::regatta::v1::cluster_client::ClusterClient;
    use regatta_proto::regatta::v1::kv_client::KvClient;
    use regatta_proto::regatta::v1::StatusRequest;
    use tonic::transport::Channel;

    use super::node::{NodeConfig, Running};

    pub struct Member {
        pub config: NodeConfig,
        pub dir: tempfile::TempDir,
        pub process: Option<Running>,
    }

    pub struct Cluster {
        pub members: Vec<Member>,
        initial_members: String,
        flags: Vec<String>,
    }

    impl Cluster {
        /// `size` nodes (ids 1..=size), not started; `flags` go to every node.
        pub fn new(size: usize, flags: &[&str]) -> Cluster {
            let members: Vec<Member> = (0..size)
                .map(|_| Member {
                    config: NodeConfig::new(),
                    dir: tempfile::TempDir::new().expect("temp dir"),
                    process: None,
                })
                .collect();
            let initial_members = members
                .iter()
                .enumerate()
                .map(|(i, m)| format!("{}={}", i + 1, m.config.raft))
                .collect::<Vec<_>>()
                .join(",");
            Cluster {
                members,
                initial_members,
                flags: flags.iter().map(|f| f.to_string()).collect(),
            }
        }

        /// Starts node `id` (1-based) with `env` set.
        pub fn start(&mut self, id: usize, env: &[(&str, &str)]) {
            let id_text = id.to_string();
            let mut extra: Vec<&str> = vec![
                "--raft.node-id",
                &id_text,
                "--raft.initial-members",
                &self.initial_members,
            ];
            extra.extend(self.flags.iter().map(String::as_str));
            let member = &mut self.members[id - 1];
            let mut command = member.config.command(member.dir.path(), &extra);
            command.envs(env.iter().copied());
            // A file, not a pipe: a pipe nobody reads fills up, and the node
            // blocks on its next log line.
            let log =
                std::fs::File::create(member.dir.path().join("stderr.log")).expect("node log file");
            command.stderr(log);
            member.process = Some(command.spawn().expect("spawn regatta leader").into());
        }

        pub fn start_all(&mut self) {
            for id in 1..=self.members.len() {
                self.start(id, &[]);
            }
        }

        /// Kills node `id` (SIGKILL).
        pub fn kill(&mut self, id: usize) {
            self.members[id - 1].process.take();
        }

        pub fn process(&mut self, id: usize) -> &mut Running {
            self.members[id - 1]
                .process
                .as_mut()
                .expect("the node was started")
        }

        /// What node `id` logged since it was last started.
        pub fn log(&self, id: usize) -> String {
            std::fs::read_to_string(self.members[id - 1].dir.path().join("stderr.log"))
                .unwrap_or_default()
        }

        pub fn api(&self, id: usize) -> &str {
            &self.members[id - 1].config.api
        }

        pub fn rest(&self, id: usize) -> &str {
            &self.members[id - 1].config.rest
        }

        async fn channel(&self, id: usize) -> Option<Channel> {
            Channel::from_shared(format!("http://{}", self.api(id)))
                .expect("uri")
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(5))
                .connect()
                .await
                .ok()
        }

        pub async fn kv(&self, id: usize) -> KvClient<Channel> {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(channel) = self.channel(id).await {
                    return KvClient::new(channel);
                }
                assert!(
                    Instant::now() < deadline,
                    "node {id} never took connections"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        /// The leader of `table` as node `id` sees it (0: none known).
        pub async fn leader_seen_by(&self, id: usize, table: &str) -> u64 {
            let Some(channel) = self.channel(id).await else {
                return 0;
            };
            let Ok(status) = ClusterClient::new(channel)
                .status(StatusRequest::default())
                .await
            else {
                return 0;
            };
            status
                .into_inner()
                .tables
                .get(table)
                .and_then(|t| t.leader.parse().ok())
                .unwrap_or(0)
        }

        /// Waits until every running node names the same leader of `table`.
        pub async fn agreed_leader(&self, table: &str) -> usize {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let mut seen = Vec::new();
                for (i, member) in self.members.iter().enumerate() {
                    if member.process.is_some() {
                        seen.push(self.leader_seen_by(i + 1, table).await);
                    }
                }
                if seen[0] != 0 && seen.iter().all(|l| *l == seen[0]) {
                    return seen[0] as usize;
                }
                assert!(
                    Instant::now() < deadline,
                    "no agreed leader of {table}: {seen:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// `PUT /failpoints/<name>` on a node's REST listener (test builds).
    pub fn set_failpoint(rest: &str, name: &str, actions: &str) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(rest).expect("connect to REST");
        write!(
            stream,
            "PUT /failpoints/{name} HTTP/1.1\r\nHost: {rest}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{actions}",
            actions.len()
        )
        .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "failpoint {name}: {answer}"
        );
    }
}
