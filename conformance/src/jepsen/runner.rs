//! One recorded run: a leader cluster (3 or 5 nodes) of any backend that
//! injects faults, `clients` concurrent clients doing linearizable reads,
//! writes and compare-and-set on a few keys of one table, and a nemesis that
//! injects a fault and heals it in turns; optionally a follower cluster with
//! readers of its own (see [`super::follower`]). Every operation and every
//! fault goes into the history with its times.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::Rng;
use regatta_proto::mvcc::v1::compare::{CompareResult, CompareTarget, TargetUnion};
use regatta_proto::mvcc::v1::request_op::{self, Request};
use regatta_proto::mvcc::v1::{Compare, RequestOp};
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::{PutRequest, RangeRequest, TxnRequest};
use tonic::transport::{Channel, Endpoint};

use super::checker::{Op, Outcome};
use super::follower::{self, LeaderLog};
use super::history::{Event, Fault, History, Record};
use crate::backend::{Backend, Cluster, ClusterSpec};

pub const TABLE: &str = "jepsen";

/// The faults a run can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nemesis {
    /// SIGKILL a random node, restart it.
    KillRandom,
    KillLeader,
    /// SIGSTOP the leader past the election timeout, resume it.
    PauseLeader,
    /// Cut the leader off from the others (2|1, 4|1), heal.
    IsolateLeader,
    /// Split the cluster into a majority and a minority (2|1, 3|2), the
    /// leader on either side, heal.
    Split,
    /// Kill every node at once, restart them all.
    RestartAll,
    /// Each turn one of the above.
    Mixed,
}

impl Nemesis {
    pub const ALL: [Nemesis; 7] = [
        Nemesis::KillRandom,
        Nemesis::KillLeader,
        Nemesis::PauseLeader,
        Nemesis::IsolateLeader,
        Nemesis::Split,
        Nemesis::RestartAll,
        Nemesis::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Nemesis::KillRandom => "kill-random",
            Nemesis::KillLeader => "kill-leader",
            Nemesis::PauseLeader => "pause-leader",
            Nemesis::IsolateLeader => "isolate-leader",
            Nemesis::Split => "split",
            Nemesis::RestartAll => "restart-all",
            Nemesis::Mixed => "mixed",
        }
    }

    pub fn parse(name: &str) -> Option<Nemesis> {
        Nemesis::ALL.into_iter().find(|n| n.name() == name)
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Nodes of the leader cluster (3 or 5).
    pub nodes: usize,
    /// Nodes of the follower cluster; 0 runs without one.
    pub follower_nodes: usize,
    pub clients: usize,
    pub keys: u64,
    pub time: Duration,
    pub nemesis: Nemesis,
    /// Fault held this long, then healed; then this long without faults.
    pub fault_for: Duration,
    pub quiet_for: Duration,
    /// Per-operation deadline; a later answer counts as unknown.
    pub op_timeout: Duration,
}

/// Shared clock and record of a run.
pub(crate) struct Recorder {
    started: Instant,
    history: Mutex<Vec<Record>>,
}

impl Recorder {
    pub(crate) fn now(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Records `record`; returns its place in the history.
    pub(crate) fn push(&self, record: Record) -> usize {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.push(record);
        history.len() - 1
    }

    /// Turns the successful reads at `places` into failed ones: they were
    /// not answered by the system under test.
    fn retract_reads(&self, places: &[usize], why: &str) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        for place in places {
            if let Some(Record::Op { op, error, .. }) = history.get_mut(*place) {
                if matches!(op, Op::Read(Outcome::Ok(_))) {
                    *op = Op::Read(Outcome::Failed);
                    *error = Some(why.to_string());
                }
            }
        }
    }
}

/// How a follower-cluster node refuses a write ("method Put not implemented
/// for follower", "writable Txn not implemented for follower").
fn refused_as_on_a_follower(error: Option<&str>) -> bool {
    error.is_some_and(|error| error.starts_with("Unimplemented") && error.contains("for follower"))
}

pub(crate) fn channel(endpoint: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(endpoint.to_string())?
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy())
}

/// Runs one recorded run on a fresh cluster of `backend`.
pub async fn run(backend: Arc<dyn Backend>, name: &str, options: &RunOptions) -> Result<History> {
    // Frequent snapshots, so restarts and catch-ups install them; with a
    // follower cluster the run follows the leader's log from its start and
    // must not lose it to compaction while a node restarts.
    let (snapshot_entries, overhead) = if options.follower_nodes > 0 {
        (1000, 500)
    } else {
        (200, 50)
    };
    let spec = ClusterSpec {
        name: name.to_string(),
        nodes: options.nodes,
        tables: vec![TABLE.to_string()],
        extra_args: vec![
            format!("--raft.snapshot-entries={snapshot_entries}"),
            format!("--raft.compaction-overhead={overhead}"),
        ],
        follow: None,
        api_socket: false,
        tls: None,
    };
    let mut cluster = backend.start_cluster(&spec).await?;
    if let Some(reason) = cluster.fault_support() {
        cluster.destroy().await;
        bail!("this backend cannot inject faults: {reason}");
    }
    let mut follower = None;
    if options.follower_nodes > 0 {
        let target = cluster.replication_target(1);
        let started = match target {
            Some(target) => {
                backend
                    .start_cluster(&ClusterSpec {
                        name: format!("{name}f"),
                        nodes: options.follower_nodes,
                        tables: spec.tables.clone(),
                        extra_args: Vec::new(),
                        follow: Some(target),
                        api_socket: false,
                        tls: None,
                    })
                    .await
            }
            None => Err(anyhow::anyhow!(
                "this backend cannot start a follower cluster"
            )),
        };
        match started {
            Ok(started) => follower = Some(started),
            Err(err) => {
                cluster.destroy().await;
                return Err(err);
            }
        }
    }
    let mut outcome = run_on(&mut cluster, follower.as_mut(), options).await;
    if outcome.is_err() {
        // The nodes' output is the evidence of a run that broke; keep it.
        let mut clusters = vec![("leader", &cluster)];
        if let Some(follower) = &follower {
            clusters.push(("follower", follower));
        }
        let mut kept = Vec::new();
        for (role, each) in clusters {
            for n in 1..=each.size() {
                let path = std::env::temp_dir().join(format!("jepsen-{name}-{role}-{n}.log"));
                if std::fs::write(&path, each.logs(n).await).is_ok() {
                    kept.push(path.display().to_string());
                }
            }
        }
        outcome = outcome.with_context(|| format!("node logs: {}", kept.join(" ")));
    }
    if let Some(mut follower) = follower {
        follower.destroy().await;
    }
    cluster.destroy().await;
    outcome
}

fn api_endpoints(cluster: &dyn Cluster) -> Vec<String> {
    (1..=cluster.size())
        .map(|n| cluster.api_endpoint(n))
        .collect()
}

/// One per node, in node order; empty while a node has no address.
fn replication_endpoints(cluster: &dyn Cluster) -> Vec<String> {
    (1..=cluster.size())
        .map(|n| cluster.replication_endpoint(n).unwrap_or_default())
        .collect()
}

/// Where the nodes answer now (a restarted or moved container may have a
/// new address).
struct Current {
    api: Arc<Endpoints>,
    replication: Arc<Endpoints>,
    follower_api: Arc<Endpoints>,
}

impl Current {
    fn refresh(&self, cluster: &dyn Cluster) {
        *self.api.write().unwrap_or_else(|p| p.into_inner()) = api_endpoints(cluster);
        *self.replication.write().unwrap_or_else(|p| p.into_inner()) =
            replication_endpoints(cluster);
    }

    fn refresh_follower(&self, follower: &dyn Cluster) {
        *self.follower_api.write().unwrap_or_else(|p| p.into_inner()) = api_endpoints(follower);
    }
}

async fn run_on(
    cluster: &mut Box<dyn Cluster>,
    mut follower: Option<&mut Box<dyn Cluster>>,
    options: &RunOptions,
) -> Result<History> {
    let endpoints = api_endpoints(cluster.as_ref());
    wait_ready(&endpoints).await?;
    let follower_endpoints = Arc::new(RwLock::new(
        follower
            .as_deref()
            .map(|f| api_endpoints(f.as_ref()))
            .unwrap_or_default(),
    ));
    let followers = follower_endpoints
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for endpoint in &followers {
        wait_follower_ready(endpoint, options.keys).await?;
    }
    let recorder = Arc::new(Recorder {
        started: Instant::now(),
        history: Mutex::new(Vec::new()),
    });
    let deadline = Instant::now() + options.time;
    let next_value = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let current = Current {
        api: Arc::new(RwLock::new(endpoints.clone())),
        replication: Arc::new(RwLock::new(replication_endpoints(cluster.as_ref()))),
        follower_api: follower_endpoints.clone(),
    };
    let leader_log = Arc::new(Mutex::new(LeaderLog::new(options.keys)));
    let stop_observer = Arc::new(AtomicBool::new(false));
    let observer = follower.is_some().then(|| {
        tokio::spawn(follower::observe(
            current.replication.clone(),
            leader_log.clone(),
            stop_observer.clone(),
        ))
    });
    let mut clients = Vec::new();
    let follower_count = follower.as_deref().map_or(0, |f| f.size());
    for node in 0..follower_count {
        let (recorder, endpoints, keys) =
            (recorder.clone(), follower_endpoints.clone(), options.keys);
        clients.push(tokio::spawn(async move {
            follower::reader_loop(100 + node, node, &endpoints, &recorder, keys, deadline).await;
        }));
    }
    for client in 0..options.clients {
        let (recorder, next_value, options) =
            (recorder.clone(), next_value.clone(), options.clone());
        let current = current.api.clone();
        clients.push(tokio::spawn(async move {
            client_loop(client, &current, &recorder, &next_value, &options, deadline).await;
        }));
    }
    nemesis_loop(
        cluster,
        follower.as_deref_mut(),
        &current,
        &recorder,
        options,
        deadline,
    )
    .await?;
    for client in clients {
        let _ = client.await;
    }
    // Heal everything, then read every key on every node: the final state
    // joins the history, and every node must agree.
    cluster.heal().await.ok();
    if let Some(follower) = follower.as_deref_mut() {
        follower.heal().await.ok();
    }
    let endpoints = api_endpoints(cluster.as_ref());
    wait_ready(&endpoints).await?;
    // A write of unknown outcome may still land while the nodes are read
    // one after another (a request held in a cut-off connection's buffers
    // arrives with the heal): then nodes read early and nodes read late
    // differ without diverging. Read every node again until one pass
    // agrees; only a difference that lasts is the checker's to report.
    // Every read joins the history, so each pass is checked too.
    let agreed_by = Instant::now() + Duration::from_secs(15);
    let finals = loop {
        let mut finals = Vec::new();
        for (n, endpoint) in endpoints.iter().enumerate() {
            let mut kv = KvClient::new(channel(endpoint)?);
            let mut values = Vec::new();
            for key in 0..options.keys {
                let invoked = recorder.now();
                let read = read(&mut kv, key, Duration::from_secs(10)).await;
                let (value, answered_by) = match read {
                    Ok(read) => read,
                    Err(err) => bail!("final read of key {key} on node {}: {err}", n + 1),
                };
                recorder.push(Record::Op {
                    client: 1000 + n,
                    key,
                    op: Op::Read(Outcome::Ok(value)),
                    invoked,
                    completed: recorder.now(),
                    revision: None,
                    answered_by,
                    error: None,
                });
                values.push(value);
            }
            finals.push(values);
        }
        let agree = finals.windows(2).all(|pair| pair[0] == pair[1]);
        if agree || Instant::now() > agreed_by {
            break finals;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut follower_finals = Vec::new();
    let mut leader_log_copy = None;
    let mut follower_snapshot_recoveries = None;
    if let Some(observer) = observer {
        let leader = finals.first().cloned().unwrap_or_default();
        // The model catches up with the leader nodes' final state, then
        // every follower node must reach it.
        let caught_up = Instant::now() + Duration::from_secs(20);
        while Instant::now() < caught_up {
            let done = {
                let log = leader_log.lock().unwrap_or_else(|p| p.into_inner());
                log.state == leader
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop_observer.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = observer.await;
        {
            // Behind the leader nodes at the end, and refused by a node
            // that had compacted what it needed: the follower checks would
            // compare against a log with a hole.
            let mut log = leader_log.lock().unwrap_or_else(|p| p.into_inner());
            if log.state != leader {
                if let Some(refused) = log.refusals.first().cloned() {
                    log.lost = Some(format!(
                        "the runner could not follow the leader's log to its end: {refused}"
                    ));
                }
            }
        }
        let endpoints = follower_endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for endpoint in endpoints {
            follower_finals.push(follower_converged(&endpoint, &leader, options.keys).await);
        }
        leader_log_copy = Some(leader_log.lock().unwrap_or_else(|p| p.into_inner()).clone());
        if let Some(follower) = follower {
            follower_snapshot_recoveries = snapshot_recoveries(follower.as_ref()).await;
        }
    }
    let history = recorder
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(History {
        records: history,
        final_values: finals,
        follower_finals,
        follower_snapshot_recoveries,
        clients: options.clients,
        nemesis: options.nemesis.name().to_string(),
        leader_log: leader_log_copy,
    })
}

/// How often the follower cluster's nodes copied the table by snapshot;
/// `None` when a node's `/metrics` cannot be read.
async fn snapshot_recoveries(follower: &dyn Cluster) -> Option<u64> {
    let name = format!("regatta_replication_snapshot_recoveries_total{{table=\"{TABLE}\"}}");
    let mut total = 0;
    for n in 1..=follower.size() {
        let metrics = crate::metrics::get(&follower.rest_address(n)?).await.ok()?;
        total += crate::metrics::sum(&metrics, &name);
    }
    Some(total)
}

/// A follower node's state once it equals `leader`, or its last state
/// after 30 s.
async fn follower_converged(endpoint: &str, leader: &[Option<u64>], keys: u64) -> Vec<Option<u64>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        if let Ok(values) = follower::read_all(endpoint, keys, false, Duration::from_secs(2)).await
        {
            if values == leader {
                return values;
            }
            last = values;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

async fn wait_follower_ready(endpoint: &str, keys: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while follower::read_all(endpoint, keys, false, Duration::from_secs(2))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("follower {endpoint} did not serve {TABLE}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn wait_ready(endpoints: &[String]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    for endpoint in endpoints {
        loop {
            let mut kv = KvClient::new(channel(endpoint)?);
            if read(&mut kv, 0, Duration::from_secs(2)).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("{endpoint} did not serve linearizable reads of {TABLE}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

fn value_of(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A linearizable read of `key`: its value and the node that answered.
async fn read(
    kv: &mut KvClient<Channel>,
    key: u64,
    timeout: Duration,
) -> Result<(Option<u64>, Option<u64>), String> {
    let mut request = tonic::Request::new(RangeRequest {
        table: TABLE.into(),
        key: key.to_string().into_bytes(),
        linearizable: true,
        ..Default::default()
    });
    request.set_timeout(timeout);
    let answer = tokio::time::timeout(timeout, kv.range(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|status| status_text(&status))?
        .into_inner();
    let answered_by = answer.header.map(|h| h.replica_id);
    match answer.kvs.first() {
        None => Ok((None, answered_by)),
        Some(pair) => value_of(&pair.value)
            .map(|value| (Some(value), answered_by))
            .ok_or_else(|| format!("key {key} holds a value nobody wrote: {:?}", pair.value)),
    }
}

/// A failure as the history records it: the code and the message.
fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// What an error means for an operation that may change state.
fn write_outcome<T>(status: &tonic::Status) -> Outcome<T> {
    match status.code() {
        // Refused before anything was proposed.
        tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::Unimplemented => {
            Outcome::Failed
        }
        // The connection never opened: the request never left.
        tonic::Code::Unavailable if never_sent(status) => Outcome::Failed,
        // Anything else may have been applied (a lost reply, a timeout).
        _ => Outcome::Unknown,
    }
}

type Endpoints = RwLock<Vec<String>>;

/// A client of node `client % nodes` at its current address.
fn client_of(client: usize, current: &Endpoints) -> Option<KvClient<Channel>> {
    let endpoints = current.read().unwrap_or_else(|p| p.into_inner());
    let endpoint = endpoints.get(client % endpoints.len().max(1))?;
    channel(endpoint).ok().map(KvClient::new)
}

/// Whether the transport failed before the request could reach a server.
fn never_sent(status: &tonic::Status) -> bool {
    let mut text = status.message().to_ascii_lowercase();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text.push_str(&cause.to_string().to_ascii_lowercase());
        source = cause.source();
    }
    text.contains("connection refused") || text.contains("tcp connect error")
}

/// What the history keeps of an answer besides the operation's outcome.
#[derive(Default)]
struct Answer {
    revision: Option<u64>,
    answered_by: Option<u64>,
    error: Option<String>,
}

impl Answer {
    fn by(answered_by: Option<u64>) -> Answer {
        Answer {
            answered_by,
            ..Answer::default()
        }
    }

    fn from_header(header: Option<regatta_proto::regatta::v1::ResponseHeader>) -> Answer {
        Answer {
            revision: header.as_ref().map(|h| h.revision),
            answered_by: header.map(|h| h.replica_id),
            error: None,
        }
    }

    fn failed(error: String) -> Answer {
        Answer {
            error: Some(error),
            ..Answer::default()
        }
    }
}

async fn client_loop(
    client: usize,
    current: &Endpoints,
    recorder: &Recorder,
    next_value: &std::sync::atomic::AtomicU64,
    options: &RunOptions,
    deadline: Instant,
) {
    let mut last_seen: Vec<Option<u64>> = vec![None; options.keys as usize];
    // Reads answered since a write last proved that this client's address
    // is a node of the leader cluster. In containers an address can pass to
    // a follower-cluster node (seen after a restart-all with a follower
    // cluster); a write refused as on a follower shows it, and the reads
    // since then are not the leader cluster's.
    let mut unconfirmed_reads: Vec<usize> = Vec::new();
    let Some(mut kv) = client_of(client, current) else {
        return;
    };
    while Instant::now() < deadline {
        let (key, choice) = {
            let mut rng = rand::rng();
            (rng.random_range(0..options.keys), rng.random_range(0..10u8))
        };
        let invoked = recorder.now();
        let (op, answer) = match choice {
            0..=3 => match read(&mut kv, key, options.op_timeout).await {
                Ok((value, answered_by)) => {
                    last_seen[key as usize] = value;
                    (Op::Read(Outcome::Ok(value)), Answer::by(answered_by))
                }
                Err(err) => (Op::Read(Outcome::Failed), Answer::failed(err)),
            },
            4..=6 => {
                let value = next_value.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut request = tonic::Request::new(PutRequest {
                    table: TABLE.into(),
                    key: key.to_string().into_bytes(),
                    value: value.to_string().into_bytes(),
                    prev_kv: false,
                });
                request.set_timeout(options.op_timeout);
                match tokio::time::timeout(options.op_timeout, kv.put(request)).await {
                    Ok(Ok(answer)) => (
                        Op::Write(value, Outcome::Ok(())),
                        Answer::from_header(answer.into_inner().header),
                    ),
                    Ok(Err(status)) => (
                        Op::Write(value, write_outcome(&status)),
                        Answer::failed(status_text(&status)),
                    ),
                    Err(_) => (
                        Op::Write(value, Outcome::Unknown),
                        Answer::failed("timed out".into()),
                    ),
                }
            }
            _ => {
                let Some(expected) = last_seen[key as usize] else {
                    continue;
                };
                let new = next_value.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let op = |request| RequestOp {
                    request: Some(request),
                };
                let mut request = tonic::Request::new(TxnRequest {
                    table: TABLE.into(),
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Value as i32,
                        key: key.to_string().into_bytes(),
                        target_union: Some(TargetUnion::Value(expected.to_string().into_bytes())),
                        ..Default::default()
                    }],
                    success: vec![op(Request::RequestPut(request_op::Put {
                        key: key.to_string().into_bytes(),
                        value: new.to_string().into_bytes(),
                        ..Default::default()
                    }))],
                    failure: Vec::new(),
                });
                request.set_timeout(options.op_timeout);
                let (outcome, answer) =
                    match tokio::time::timeout(options.op_timeout, kv.txn(request)).await {
                        Ok(Ok(answer)) => {
                            let answer = answer.into_inner();
                            (
                                Outcome::Ok(answer.succeeded),
                                Answer::from_header(answer.header),
                            )
                        }
                        Ok(Err(status)) => {
                            (write_outcome(&status), Answer::failed(status_text(&status)))
                        }
                        Err(_) => (Outcome::Unknown, Answer::failed("timed out".into())),
                    };
                (
                    Op::Cas {
                        expected,
                        new,
                        outcome,
                    },
                    answer,
                )
            }
        };
        let failed = match &op {
            Op::Read(outcome) => !matches!(outcome, Outcome::Ok(_)),
            Op::Write(_, outcome) => !matches!(outcome, Outcome::Ok(_)),
            Op::Cas { outcome, .. } => !matches!(outcome, Outcome::Ok(_)),
        };
        let read_ok = matches!(op, Op::Read(Outcome::Ok(_)));
        let write_ok = !read_ok && !failed;
        let follower_refusal = refused_as_on_a_follower(answer.error.as_deref());
        let place = recorder.push(Record::Op {
            client,
            key,
            op,
            invoked,
            completed: recorder.now(),
            revision: answer.revision.and_then(|r| i64::try_from(r).ok()),
            answered_by: answer.answered_by,
            error: answer.error,
        });
        if read_ok {
            unconfirmed_reads.push(place);
        } else if write_ok {
            unconfirmed_reads.clear();
        } else if follower_refusal {
            recorder.retract_reads(
                &unconfirmed_reads,
                "answered at an address where a write was then refused as on a follower-cluster node",
            );
            unconfirmed_reads.clear();
        }
        if failed {
            // The node may have moved (a restarted container) or be down.
            if let Some(fresh) = client_of(client, current) {
                kv = fresh;
            }
            // Back off: every retry during a failover is one more operation
            // of unknown outcome for the checker to place.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// The node leading `TABLE`, from a response header.
async fn leader_of(cluster: &dyn Cluster) -> Option<usize> {
    for n in 1..=cluster.size() {
        let Ok(channel) = channel(&cluster.api_endpoint(n)) else {
            continue;
        };
        let mut request = tonic::Request::new(RangeRequest {
            table: TABLE.into(),
            key: b"0".to_vec(),
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(1));
        if let Ok(answer) = KvClient::new(channel).range(request).await {
            let leader = answer.into_inner().header.map_or(0, |h| h.raft_leader_id);
            if (1..=cluster.size() as u64).contains(&leader) {
                return Some(leader as usize);
            }
        }
    }
    None
}

async fn nemesis_loop(
    cluster: &mut Box<dyn Cluster>,
    mut follower: Option<&mut Box<dyn Cluster>>,
    current: &Current,
    recorder: &Recorder,
    options: &RunOptions,
    deadline: Instant,
) -> Result<()> {
    let mut turn = 0usize;
    tokio::time::sleep(options.quiet_for.min(options.time / 4)).await;
    while Instant::now() + options.fault_for < deadline {
        let kind = match options.nemesis {
            // Every other nemesis in turn.
            Nemesis::Mixed => Nemesis::ALL[turn % (Nemesis::ALL.len() - 1)],
            other => other,
        };
        turn += 1;
        let size = cluster.size();
        let leader = leader_of(cluster.as_ref()).await.unwrap_or(1);
        let (fault, nodes) = {
            let mut rng = rand::rng();
            let random = rng.random_range(1..=size);
            match kind {
                Nemesis::KillRandom => (Fault::Kill, vec![random]),
                Nemesis::KillLeader => (Fault::Kill, vec![leader]),
                Nemesis::PauseLeader => (Fault::Pause, vec![leader]),
                Nemesis::IsolateLeader => (Fault::Isolate, vec![leader]),
                Nemesis::Split => (Fault::Isolate, minority(&mut rng, size, leader)),
                Nemesis::RestartAll | Nemesis::Mixed => (Fault::Kill, (1..=size).collect()),
            }
        };
        inject(cluster.as_mut(), fault, &nodes)
            .await
            .with_context(|| format!("{fault:?} nodes {nodes:?}"))?;
        // A container moved to the island network has a new address, and
        // its old one may go to another container: never keep it.
        current.refresh(cluster.as_ref());
        // Recorded once in place (a container's kill or move takes a while),
        // so the write stall counts from a fault that is really there.
        recorder.push(Record::Fault(Event {
            fault,
            nodes: nodes.clone(),
            at: recorder.now(),
        }));
        // With a follower cluster, every other fault also cuts it off.
        let cut = match follower.as_deref_mut() {
            Some(follower) if turn % 2 == 1 => {
                inject(follower.as_mut(), Fault::CutOff, &[])
                    .await
                    .context("cutting off the follower cluster")?;
                current.refresh_follower(follower.as_ref());
                recorder.push(Record::Fault(Event {
                    fault: Fault::CutOff,
                    nodes: Vec::new(),
                    at: recorder.now(),
                }));
                true
            }
            _ => false,
        };
        tokio::time::sleep(options.fault_for).await;
        heal(cluster.as_mut(), fault, &nodes)
            .await
            .with_context(|| format!("healing {fault:?} of nodes {nodes:?}"))?;
        recorder.push(Record::Heal(Event {
            fault,
            nodes,
            at: recorder.now(),
        }));
        if let (true, Some(follower)) = (cut, follower.as_deref_mut()) {
            heal(follower.as_mut(), Fault::CutOff, &[])
                .await
                .context("reconnecting the follower cluster")?;
            current.refresh_follower(follower.as_ref());
            recorder.push(Record::Heal(Event {
                fault: Fault::CutOff,
                nodes: Vec::new(),
                at: recorder.now(),
            }));
        }
        current.refresh(cluster.as_ref());
        tokio::time::sleep(options.quiet_for).await;
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(rest).await;
    Ok(())
}

async fn inject(cluster: &mut dyn Cluster, fault: Fault, nodes: &[usize]) -> Result<()> {
    match fault {
        Fault::Isolate => cluster.partition(nodes).await,
        Fault::Pause => {
            for &n in nodes {
                cluster.pause(n).await?;
            }
            Ok(())
        }
        Fault::Kill => cluster.kill_all(nodes).await,
        Fault::CutOff => cluster.cut_off_cluster().await,
    }
}

async fn heal(cluster: &mut dyn Cluster, fault: Fault, nodes: &[usize]) -> Result<()> {
    match fault {
        Fault::Isolate | Fault::CutOff => cluster.heal().await,
        Fault::Pause => {
            for &n in nodes {
                cluster.resume(n).await?;
            }
            Ok(())
        }
        Fault::Kill => {
            for &n in nodes {
                cluster.start(n, &[]).await?;
            }
            Ok(())
        }
    }
}

/// The smaller side of a split: ⌊(size − 1) / 2⌋ nodes, with the leader
/// among them half of the time.
fn minority(rng: &mut impl Rng, size: usize, leader: usize) -> Vec<usize> {
    let want = (size - 1) / 2;
    let mut others: Vec<usize> = (1..=size).filter(|&n| n != leader).collect();
    let mut side = Vec::new();
    if rng.random_bool(0.5) {
        side.push(leader);
    }
    while side.len() < want && !others.is_empty() {
        side.push(others.swap_remove(rng.random_range(0..others.len())));
    }
    side.sort_unstable();
    side
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_at_an_address_that_turns_out_to_be_a_follower_node_are_retracted() {
        let recorder = Recorder {
            started: Instant::now(),
            history: Mutex::default(),
        };
        let read = |value| Record::Op {
            client: 0,
            key: 0,
            op: Op::Read(Outcome::Ok(Some(value))),
            invoked: 0,
            completed: 1,
            revision: None,
            answered_by: Some(1),
            error: None,
        };
        let places = [recorder.push(read(1)), recorder.push(read(2))];
        assert!(refused_as_on_a_follower(Some(
            "Unimplemented: method Put not implemented for follower"
        )));
        assert!(!refused_as_on_a_follower(Some(
            "Unavailable: tcp connect error"
        )));
        recorder.retract_reads(&places[1..], "a follower node");
        let history = recorder.history.lock().expect("history");
        assert!(matches!(
            &history[0],
            Record::Op {
                op: Op::Read(Outcome::Ok(_)),
                ..
            }
        ));
        assert!(matches!(
            &history[1],
            Record::Op { op: Op::Read(Outcome::Failed), error: Some(why), .. } if why == "a follower node"
        ));
    }

    #[test]
    fn a_split_leaves_a_majority_on_the_other_side() {
        let mut rng = rand::rng();
        let mut with_leader = 0;
        for _ in 0..200 {
            for (size, want) in [(3, 1), (5, 2)] {
                let side = minority(&mut rng, size, 2);
                assert_eq!(side.len(), want, "{side:?}");
                assert!(side.iter().all(|&n| (1..=size).contains(&n)));
                let mut unique = side.clone();
                unique.dedup();
                assert_eq!(unique, side);
                with_leader += usize::from(side.contains(&2));
            }
        }
        assert!(with_leader > 100 && with_leader < 300, "{with_leader}");
    }
}
