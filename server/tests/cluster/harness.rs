//! A cluster of in-process nodes with `must_*` helpers that panic with
//! context and `wait_*` helpers that poll with a deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regatta::cluster::{Consistency, Error, Node, RaftSettings, Written};
use regatta::storage::{RangeQuery, StorageOptions};
use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::{Command, KeyValue};
use tempfile::TempDir;

use crate::reply_proxy::ReplyProxy;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Multi-node scenarios run one at a time: several 3-node clusters at once
/// on 2 cores would turn timing into flakiness.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct Cluster {
    _serial: std::sync::MutexGuard<'static, ()>,
    pub dirs: Vec<TempDir>,
    pub settings: Vec<RaftSettings>,
    pub nodes: Vec<Option<Arc<Node>>>,
}

/// Binds the raft address of a node: port 0 the first time, then the same
/// address again on restart (retrying while the old socket lingers).
fn bind(address: &str) -> std::net::TcpListener {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match std::net::TcpListener::bind(address) {
            Ok(listener) => {
                listener.set_nonblocking(true).expect("non-blocking");
                return listener;
            }
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(err) => panic!("binding {address}: {err}"),
        }
    }
}

impl Cluster {
    /// Starts `size` nodes with fast timings; `snapshot_entries` small values
    /// exercise snapshots.
    pub async fn start(size: u64, snapshot_entries: u64) -> Cluster {
        Self::start_with_routes(size, snapshot_entries, |_, _, address| address.to_string()).await
    }

    /// Like `start`, but node `from` dials node `to` at
    /// `route(from, to, to's address)` (a proxy of the test, say).
    pub async fn start_with_routes(
        size: u64,
        snapshot_entries: u64,
        mut route: impl FnMut(u64, u64, &str) -> String,
    ) -> Cluster {
        let mut listeners: Vec<std::net::TcpListener> =
            (0..size).map(|_| bind("127.0.0.1:0")).collect();
        let members: BTreeMap<u64, String> = (1..=size)
            .zip(&listeners)
            .map(|(id, listener)| (id, listener.local_addr().expect("bound").to_string()))
            .collect();
        let serial = SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut cluster = Cluster {
            _serial: serial,
            dirs: Vec::new(),
            settings: Vec::new(),
            nodes: Vec::new(),
        };
        for id in 1..=size {
            let dir = TempDir::new().expect("temp dir");
            let mut settings =
                RaftSettings::single_node(dir.path().to_path_buf(), members[&id].clone());
            settings.node_id = id;
            settings.initial_members = members
                .iter()
                .map(|(to, address)| {
                    let dialed = if *to == id {
                        address.clone()
                    } else {
                        route(id, *to, address)
                    };
                    (*to, dialed)
                })
                .collect();
            // Node names and client addresses for the Cluster API's
            // MemberList (`members.rs`).
            settings.identity.name = format!("node-{id}");
            settings.identity.client_url = format!("http://client-{id}.test:8443");
            settings.rtt = Duration::from_millis(20);
            settings.heartbeat_rtt = 2;
            settings.election_rtt = 20;
            settings.snapshot_entries = snapshot_entries;
            settings.compaction_overhead = snapshot_entries / 4;
            cluster.dirs.push(dir);
            cluster.settings.push(settings);
            cluster.nodes.push(None);
        }
        let starts: Vec<_> = (1..=size)
            .zip(listeners.drain(..))
            .map(|(id, listener)| cluster.spawn_start(id, listener))
            .collect();
        for (i, start) in starts.into_iter().enumerate() {
            cluster.nodes[i] = Some(start.await.expect("join").expect("node starts"));
        }
        cluster
    }

    fn spawn_start(
        &self,
        id: u64,
        listener: std::net::TcpListener,
    ) -> tokio::task::JoinHandle<Result<Arc<Node>, Error>> {
        let settings = self.settings[(id - 1) as usize].clone();
        tokio::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            Node::start_with_listener(settings, StorageOptions::default(), listener).await
        })
    }

    pub fn node(&self, id: u64) -> &Arc<Node> {
        self.nodes[(id - 1) as usize]
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is stopped"))
    }

    pub fn running(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64)
            .filter(|id| self.nodes[(id - 1) as usize].is_some())
            .collect()
    }

    pub async fn stop(&mut self, id: u64) {
        if let Some(node) = self.nodes[(id - 1) as usize].take() {
            node.shutdown().await;
            wait_until_dropped(node).await;
        }
    }

    pub async fn restart(&mut self, id: u64) {
        self.stop(id).await;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let listener = bind(&self.settings[(id - 1) as usize].address);
            match self.spawn_start(id, listener).await.expect("join") {
                Ok(node) => {
                    self.nodes[(id - 1) as usize] = Some(node);
                    return;
                }
                // Background tasks of the stopped node may still hold its database lock briefly.
                Err(err) if err.to_string().contains("lock") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("node {id} restarts: {err}"),
            }
        }
    }

    pub async fn stop_all(&mut self) {
        for id in self.running() {
            self.stop(id).await;
        }
    }

    /// Creates a table through node `via` and waits until every running node runs it.
    pub async fn must_create_table(&self, via: u64, name: &str) -> u64 {
        let shard = self
            .node(via)
            .create_table(name.as_bytes(), TIMEOUT)
            .await
            .unwrap_or_else(|err| panic!("create table {name} via node {via}: {err}"));
        for id in self.running() {
            self.wait_table(id, name, Some(shard)).await;
        }
        shard
    }

    pub async fn wait_table(&self, id: u64, name: &str, shard: Option<u64>) {
        let deadline = Instant::now() + TIMEOUT;
        while self.node(id).tables().get(name.as_bytes()).copied() != shard {
            assert!(
                Instant::now() < deadline,
                "node {id}: table {name} not at shard {shard:?} in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn must_put(&self, via: u64, table: &str, key: &str, value: &str) -> Written {
        self.put(via, table, key, value)
            .await
            .unwrap_or_else(|err| panic!("put {key} via node {via}: {err}"))
    }

    pub async fn put(
        &self,
        via: u64,
        table: &str,
        key: &str,
        value: &str,
    ) -> Result<Written, Error> {
        let command = Command {
            table: table.as_bytes().to_vec(),
            r#type: CommandType::Put as i32,
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                ..KeyValue::default()
            }),
            ..Command::default()
        };
        self.node(via)
            .write(table.as_bytes(), &command, TIMEOUT)
            .await
            .map(|(written, _)| written)
    }

    /// A linearizable read of every pair of `table` on node `via`.
    pub async fn must_read_all(&self, via: u64, table: &str) -> BTreeMap<String, String> {
        self.read_all(via, table, TIMEOUT)
            .await
            .unwrap_or_else(|err| panic!("linearizable read via node {via}: {err}"))
    }

    pub async fn read_all(
        &self,
        via: u64,
        table: &str,
        timeout: Duration,
    ) -> Result<BTreeMap<String, String>, Error> {
        let (all, _) = self
            .node(via)
            .read(table.as_bytes(), Consistency::Linearizable, timeout)
            .await?;
        let all = all
            .range(&RangeQuery {
                key: vec![0],
                range_end: vec![0],
                ..RangeQuery::default()
            })
            .map_err(Error::Storage)?;
        Ok(all
            .value
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect())
    }

    /// The leader of `table` that every running node agrees on.
    pub async fn wait_leader(&self, table: &str) -> u64 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let leaders: Vec<Option<u64>> = self
                .running()
                .iter()
                .map(|id| {
                    self.node(*id)
                        .status(table.as_bytes())
                        .ok()
                        .and_then(|status| status.leader)
                })
                .collect();
            if let Some(Some(leader)) = leaders.first() {
                if leaders.iter().all(|l| l == &Some(*leader)) && self.running().contains(leader) {
                    return *leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader of {table}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until nothing else holds the node, so its databases are closed.
async fn wait_until_dropped(node: Arc<Node>) {
    let deadline = Instant::now() + TIMEOUT;
    let mut node = Some(node);
    while let Some(held) = node.take() {
        match Arc::try_unwrap(held) {
            Ok(node) => drop(node),
            Err(held) => {
                assert!(
                    Instant::now() < deadline,
                    "node still referenced after shutdown"
                );
                node = Some(held);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The proxies (bound first, so dropped after the cluster), three nodes
/// whose every link runs through one of them, table "t",
/// its leader, and a follower `via` whose connection to the leader is open.
pub async fn proxied_cluster() -> (BTreeMap<(u64, u64), ReplyProxy>, Cluster, u64, u64) {
    proxied_cluster_with(10_000).await
}

/// [`proxied_cluster`] snapshotting every `snapshot_entries` entries.
pub async fn proxied_cluster_with(
    snapshot_entries: u64,
) -> (BTreeMap<(u64, u64), ReplyProxy>, Cluster, u64, u64) {
    let mut proxies: BTreeMap<(u64, u64), ReplyProxy> = BTreeMap::new();
    let cluster = Cluster::start_with_routes(3, snapshot_entries, |from, to, target| {
        let proxy = ReplyProxy::start(target);
        let address = proxy.address.clone();
        proxies.insert((from, to), proxy);
        address
    })
    .await;
    cluster.must_create_table(1, "t").await;
    let leader = cluster.wait_leader("t").await;
    let via = (1..=3).find(|id| *id != leader).expect("a follower");
    // Opens `via`'s connection to the leader, through the proxy.
    cluster.must_put(via, "t", "warm", "up").await;
    (proxies, cluster, leader, via)
}
