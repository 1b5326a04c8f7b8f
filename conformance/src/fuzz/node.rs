//! The node under test: a single-node leader cluster of the server binary on
//! free loopback ports with a temporary data directory, or someone else's
//! node given by its addresses.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::{bail, Context, Result};

use super::requests::{DATA_TABLE, TARGET_TABLE};

/// Where the fuzzer reaches the node's three gRPC listeners.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    pub api: SocketAddr,
    pub replication: SocketAddr,
    pub maintenance: SocketAddr,
}

/// A node process the fuzzer started; killed when dropped.
pub struct NodeProcess {
    child: Child,
    pub endpoints: Endpoints,
    pub log: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl NodeProcess {
    /// Starts `binary` as a single-node leader cluster with tables
    /// [`TARGET_TABLE`] and [`DATA_TABLE`] and every listener on.
    pub fn start(binary: &Path) -> Result<NodeProcess> {
        if !binary.is_file() {
            bail!("no server binary at {}", binary.display());
        }
        let dir = tempfile::Builder::new().prefix("regatta-fuzz-").tempdir()?;
        // Held until the node starts, so nothing else is handed these ports.
        let mut reserved = Vec::new();
        let mut reserve = || -> Result<SocketAddr> {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let address = listener.local_addr()?;
            reserved.push(listener);
            Ok(address)
        };
        let (api, rest, raft, replication, maintenance) =
            (reserve()?, reserve()?, reserve()?, reserve()?, reserve()?);
        let data = dir.path().join("data");
        let log = dir.path().join("node.log");
        let args = vec![
            "leader".to_string(),
            "--raft.node-id=1".to_string(),
            format!("--raft.address={raft}"),
            format!("--raft.initial-members=1={raft}"),
            format!("--raft.node-host-dir={}", data.join("raft").display()),
            format!(
                "--raft.state-machine-dir={}",
                data.join("state-machine").display()
            ),
            format!("--api.address={api}"),
            format!("--rest.address={rest}"),
            format!("--replication.address={replication}"),
            format!("--maintenance.address={maintenance}"),
            "--maintenance.enabled=true".to_string(),
            format!("--tables.names={TARGET_TABLE},{DATA_TABLE}"),
            "--log-level=info".to_string(),
        ];
        let out = File::create(&log)?;
        drop(reserved);
        let child = Command::new(binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(NodeProcess {
            child,
            endpoints: Endpoints {
                api,
                replication,
                maintenance,
            },
            log,
            dir: Some(dir),
        })
    }

    /// The exit status, once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Keeps the data directory and the log after the run (for a failed
    /// run); returns where they are.
    pub fn keep(&mut self) -> Option<PathBuf> {
        self.dir.take().map(tempfile::TempDir::keep)
    }

    /// The node's log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary: `--binary`, else `REGATTA_BINARY`, else the
/// workspace's debug build (`cargo xtask server-binary`).
pub fn server_binary(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    if let Some(path) = std::env::var_os("REGATTA_BINARY") {
        return Ok(PathBuf::from(path));
    }
    crate::setup::server_binary()
}
