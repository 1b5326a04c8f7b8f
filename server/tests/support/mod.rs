//! Helpers shared by the integration tests that start the real binary.

use std::sync::atomic::{AtomicU16, Ordering};

/// Ports below the kernel's ephemeral range (Linux: 32768-60999). A port
/// that the kernel handed out with `bind(0)` and this test released can be
/// taken again at once by any outgoing connection of a concurrent test,
/// before the server process binds it ("Address already in use" seen in
/// CI); ports below the range are only ever taken on purpose.
const FIRST_PORT: u16 = 20_000;
const PORTS: u16 = 12_000;

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
