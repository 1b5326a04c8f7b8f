//! The state one scenario carries from step to step.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::{
    CreateTableResponse, DeleteRangeResponse, DeleteTableResponse, ListTablesResponse,
    MemberListResponse, PutResponse, RangeRequest, RangeResponse, ResponseHeader, StatusResponse,
    TxnResponse,
};
use regatta_proto::replication::v1::{ReplicateResponse, SnapshotChunk};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::backend::{Backend, Cluster, ClusterSpec};

static BACKEND: OnceLock<Arc<dyn Backend>> = OnceLock::new();
static SCENARIOS: AtomicUsize = AtomicUsize::new(0);

/// Chooses the backend every scenario of this run uses.
pub fn set_backend(backend: Arc<dyn Backend>) {
    let _ = BACKEND.set(backend);
}

pub fn backend() -> Result<Arc<dyn Backend>> {
    BACKEND.get().cloned().context("no cluster backend chosen")
}

/// Node numbers above this are the follower cluster's nodes.
pub const FOLLOWER_NODES: usize = 100;

/// Per-call deadline of the suite's requests.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger than the server's 4 MiB so that oversized requests reach it.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The answer to the last request a scenario sent.
#[derive(Debug, Clone)]
pub enum Answer {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    /// Every message of a server stream (IterateRange), in order.
    Stream(Vec<RangeResponse>),
    /// Regatta 0.5's Tables API (`steps::tables_api`).
    CreateTable(CreateTableResponse),
    DeleteTable(DeleteTableResponse),
    ListTables(ListTablesResponse),
    /// Regatta 0.5's Cluster API (`steps::cluster_api`).
    MemberList(MemberListResponse),
    Status(StatusResponse),
}

impl Answer {
    pub fn header(&self) -> Option<&ResponseHeader> {
        match self {
            Answer::Range(r) => r.header.as_ref(),
            Answer::Put(r) => r.header.as_ref(),
            Answer::DeleteRange(r) => r.header.as_ref(),
            Answer::Txn(r) => r.header.as_ref(),
            Answer::Stream(messages) => messages.first().and_then(|m| m.header.as_ref()),
            Answer::CreateTable(_)
            | Answer::DeleteTable(_)
            | Answer::ListTables(_)
            | Answer::MemberList(_)
            | Answer::Status(_) => None,
        }
    }
}

/// A request sent in the background (say, to a paused node).
pub type Pending = tokio::task::JoinHandle<Result<Answer, Status>>;

#[derive(cucumber::World)]
#[world(init = Self::new)]
pub struct RegattaWorld {
    pub cluster: Option<Box<dyn Cluster>>,
    /// A follower cluster of `cluster`; its nodes are numbered from
    /// [`FOLLOWER_NODES`] + 1 in steps' node references.
    pub follower: Option<Box<dyn Cluster>>,
    pub spec: Option<ClusterSpec>,
    clients: HashMap<usize, (String, KvClient<Channel>)>,
    /// Nodes stopped or killed by the scenario.
    pub down: HashSet<usize>,
    /// A node the scenario refers to as "the old leader", "the paused node"…
    pub marked: HashMap<String, usize>,
    /// The answer to the last request, and which node answered.
    pub last: Option<Result<Answer, Status>>,
    pub last_node: usize,
    /// Revisions and shard ids remembered under a name.
    pub remembered: HashMap<String, i64>,
    /// Every write acknowledged so far, per table: key -> value.
    pub acknowledged: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    pub background_writers: Option<crate::steps::writers::BackgroundWriters>,
    /// Readers counting pairs on the follower nodes in the background.
    pub counters: Option<crate::steps::recovery::Counters>,
    /// An IterateRange stream the scenario is reading: its node, the stream
    /// and the messages read so far.
    pub open_stream: Option<(usize, tonic::Streaming<RangeResponse>, Vec<RangeResponse>)>,
    /// Backups taken in the scenario, by name: the streamed bytes.
    pub backups: HashMap<String, Vec<u8>>,
    /// Whole tables read earlier, by name: key -> value, ascending.
    pub pair_sets: HashMap<String, Pairs>,
    /// The outcome of the last maintenance call.
    pub maintenance: Option<Result<(), Status>>,
    pub pending: HashMap<String, Pending>,
    pub finished: HashMap<String, Result<Answer, Status>>,
    /// The value every node agreed on in the last agreement check.
    pub agreed: Option<Vec<u8>>,
    /// The messages of the last Log.Replicate call, in order.
    pub replication: Option<Result<Vec<ReplicateResponse>, Status>>,
    /// The node and table of the last Log.Replicate call.
    pub replicated_at: Option<(usize, String)>,
    /// The chunks of the last Snapshot.Stream call.
    pub snapshot: Option<Result<Vec<SnapshotChunk>, Status>>,
    /// A follow-mode Log.Replicate stream kept open.
    pub followed: Option<tonic::Streaming<ReplicateResponse>>,
    /// The scenario's turn on the machine (see [`crate::gate`]).
    pub pass: Option<crate::gate::Pass>,
    /// How the suite reaches listeners that serve TLS; `None`: plaintext.
    pub tls: Option<crate::tls::ClientTls>,
    /// The scenario's certificate authority, when its clusters serve TLS.
    pub authority: Option<std::sync::Arc<crate::tls::Authority>>,
    /// The authority whose certificates the nodes had before a renewal.
    pub replaced_authority: Option<std::sync::Arc<crate::tls::Authority>>,
    /// Backup directories of the server's backup tool, and its last run.
    pub tool_dirs: Option<crate::steps::backup_tool::ToolDirs>,
    next_node: usize,
}

/// A table's pairs, ascending by key.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

impl fmt::Debug for RegattaWorld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegattaWorld")
            .field("spec", &self.spec)
            .field("down", &self.down)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl RegattaWorld {
    fn new() -> RegattaWorld {
        RegattaWorld {
            cluster: None,
            follower: None,
            spec: None,
            clients: HashMap::new(),
            down: HashSet::new(),
            marked: HashMap::new(),
            last: None,
            last_node: 0,
            remembered: HashMap::new(),
            acknowledged: BTreeMap::new(),
            background_writers: None,
            counters: None,
            open_stream: None,
            backups: HashMap::new(),
            pair_sets: HashMap::new(),
            maintenance: None,
            pending: HashMap::new(),
            finished: HashMap::new(),
            agreed: None,
            replication: None,
            replicated_at: None,
            snapshot: None,
            followed: None,
            pass: None,
            // Servers someone else runs may serve TLS ([tls] of the template).
            tls: crate::template::template().client_tls.clone(),
            authority: None,
            replaced_authority: None,
            tool_dirs: None,
            next_node: 0,
        }
    }

    /// A name unique in this run, for containers and directories.
    pub fn scenario_name() -> String {
        format!("s{}", SCENARIOS.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub fn cluster(&self) -> Result<&dyn Cluster> {
        self.cluster
            .as_deref()
            .context("the scenario has no cluster yet")
    }

    pub fn cluster_mut(&mut self) -> Result<&mut Box<dyn Cluster>> {
        self.cluster
            .as_mut()
            .context("the scenario has no cluster yet")
    }

    pub fn size(&self) -> usize {
        self.cluster.as_ref().map_or(0, |c| c.size())
    }

    pub fn live_nodes(&self) -> Vec<usize> {
        (1..=self.size())
            .filter(|n| !self.down.contains(n))
            .collect()
    }

    /// The next live node, round robin: requests spread over the cluster.
    pub fn any_node(&mut self) -> Result<usize> {
        let live = self.live_nodes();
        if live.is_empty() {
            bail!("no node is running");
        }
        self.next_node = (self.next_node + 1) % live.len();
        Ok(live[self.next_node])
    }

    /// `http://host:port` of node `n`'s KV API (`n` > [`FOLLOWER_NODES`]:
    /// a follower node's).
    fn api_endpoint(&self, n: usize) -> Result<String> {
        Ok(if n > FOLLOWER_NODES {
            self.follower
                .as_deref()
                .context("the scenario has no follower cluster")?
                .api_endpoint(n - FOLLOWER_NODES)
        } else {
            self.cluster()?.api_endpoint(n)
        })
    }

    /// An endpoint for `url` (`http://...`), over TLS when the scenario's
    /// listeners serve it.
    pub fn endpoint(&self, url: String) -> Result<Endpoint> {
        match &self.tls {
            None => Ok(Endpoint::from_shared(url)?),
            Some(tls) => {
                let url = url.replacen("http://", "https://", 1);
                Ok(Endpoint::from_shared(url)?.tls_config(tls.tonic())?)
            }
        }
    }

    /// A fresh channel to node `n`'s KV API, for steps that send raw
    /// encodings rather than our generated messages.
    pub fn api_channel(&self, n: usize) -> Result<Channel> {
        Ok(self
            .endpoint(self.api_endpoint(n)?)?
            .connect_timeout(Duration::from_secs(2))
            .timeout(RPC_TIMEOUT)
            .connect_lazy())
    }

    /// A KV client for node `n`, rebuilt when its address changed.
    pub fn client(&mut self, n: usize) -> Result<KvClient<Channel>> {
        let endpoint = self.api_endpoint(n)?;
        if let Some((known, client)) = self.clients.get(&n) {
            if *known == endpoint {
                return Ok(client.clone());
            }
        }
        let channel = self
            .endpoint(endpoint.clone())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(RPC_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let client = KvClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        self.clients.insert(n, (endpoint, client.clone()));
        Ok(client)
    }

    /// A channel to node `n`'s replication API.
    pub fn replication_channel(&self, n: usize) -> Result<Channel> {
        let endpoint = self.cluster()?.replication_endpoint(n).context(
            "the backend does not know the replication endpoints (REGATTA_REPLICATION_ENDPOINTS)",
        )?;
        Ok(self
            .endpoint(endpoint)?
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy())
    }

    /// A channel to node `n`'s maintenance API (`n` > [`FOLLOWER_NODES`]: a
    /// follower node's).
    pub fn maintenance_channel(&self, n: usize) -> Result<Channel> {
        let endpoint = if n > FOLLOWER_NODES {
            self.follower
                .as_deref()
                .context("the scenario has no follower cluster")?
                .maintenance_endpoint(n - FOLLOWER_NODES)
        } else {
            self.cluster()?.maintenance_endpoint(n)
        }
        .context(
            "the backend does not know the maintenance endpoints (REGATTA_MAINTENANCE_ENDPOINTS)",
        )?;
        Ok(self
            .endpoint(endpoint)?
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy())
    }

    /// Forgets every connection (the cluster was replaced).
    pub fn forget_all_clients(&mut self) {
        self.clients.clear();
    }

    /// Forgets node `n`'s connection (after a restart or a move).
    pub fn forget_client(&mut self, n: usize) {
        self.clients.remove(&n);
    }

    pub fn set_last(&mut self, node: usize, answer: Result<Answer, Status>) {
        self.last_node = node;
        self.last = Some(answer);
    }

    /// The last answer, which must be a success.
    pub fn last_ok(&self) -> Result<&Answer> {
        match &self.last {
            None => bail!("no request was sent"),
            Some(Err(status)) => bail!(
                "the request failed: {:?} {:?}",
                status.code(),
                status.message()
            ),
            Some(Ok(answer)) => Ok(answer),
        }
    }

    pub fn last_range(&self) -> Result<&RangeResponse> {
        match self.last_ok()? {
            Answer::Range(r) => Ok(r),
            other => bail!("the last answer is not a Range: {other:?}"),
        }
    }

    pub fn last_txn(&self) -> Result<&TxnResponse> {
        match self.last_ok()? {
            Answer::Txn(r) => Ok(r),
            other => bail!("the last answer is not a Txn: {other:?}"),
        }
    }

    /// A serializable or linearizable range on node `n`.
    pub async fn range(
        &mut self,
        n: usize,
        request: RangeRequest,
    ) -> Result<RangeResponse, Status> {
        let mut client = self
            .client(n)
            .map_err(|e| Status::internal(e.to_string()))?;
        client.range(request).await.map(|r| r.into_inner())
    }

    pub fn acknowledge(&mut self, table: &str, key: Vec<u8>, value: Vec<u8>) {
        self.acknowledged
            .entry(table.to_string())
            .or_default()
            .insert(key, value);
    }

    /// Waits until node `n` answers a serializable range on every table
    /// (NotFound counts as an answer: the table may be gone).
    pub async fn wait_serving(&mut self, n: usize, within: Duration) -> Result<()> {
        self.wait_reads(n, within, false).await
    }

    /// Waits until a linearizable range of every table succeeds on node `n`
    /// (the table has a leader that a quorum follows).
    pub async fn wait_linearizable(&mut self, n: usize, within: Duration) -> Result<()> {
        self.wait_reads(n, within, true).await
    }

    async fn wait_reads(&mut self, n: usize, within: Duration, linearizable: bool) -> Result<()> {
        let tables = self
            .spec
            .as_ref()
            .map(|s| s.tables.clone())
            .unwrap_or_default();
        for table in tables {
            self.wait_table(n, &table, within, linearizable, !linearizable)
                .await?;
        }
        Ok(())
    }

    /// Waits until node `n` answers a range over `table` (linearizable or
    /// not); with `not_found_answers`, NotFound counts as an answer.
    pub async fn wait_table(
        &mut self,
        n: usize,
        table: &str,
        within: Duration,
        linearizable: bool,
        not_found_answers: bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let request = RangeRequest {
                table: table.as_bytes().to_vec(),
                key: vec![0],
                linearizable,
                ..Default::default()
            };
            match self.range(n, request).await {
                Ok(_) => return Ok(()),
                Err(status) if not_found_answers && status.code() == tonic::Code::NotFound => {
                    return Ok(())
                }
                Err(status) if tokio::time::Instant::now() > deadline => bail!(
                    "node {n} does not serve table {table} (linearizable: {linearizable}) within {within:?}: {:?} {}",
                    status.code(),
                    status.message()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The node id of `table`'s current leader, as node `asked` reports it.
    pub async fn leader_of(&mut self, table: &str) -> Result<usize> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            for n in self.live_nodes() {
                let request = RangeRequest {
                    table: table.as_bytes().to_vec(),
                    key: vec![0],
                    linearizable: true,
                    ..Default::default()
                };
                if let Ok(response) = self.range(n, request).await {
                    let leader = response.header.map_or(0, |h| h.raft_leader_id) as usize;
                    if (1..=self.size()).contains(&leader) {
                        return Ok(leader);
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no node names a leader of {table} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
