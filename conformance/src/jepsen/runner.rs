//! One recorded run: a 3-node leader cluster of any backend that injects
//! faults, `clients` concurrent clients doing linearizable reads, writes and
//! compare-and-set on a few keys of one table, and a nemesis that injects a
//! fault and heals it in turns. Every operation and every fault goes into the
//! history with its times.

use std::sync::{Arc, Mutex};
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
    /// Cut the leader off from the others (a 2|1 split), heal.
    IsolateLeader,
    /// Kill every node at once, restart them all.
    RestartAll,
    /// Each turn one of the above.
    Mixed,
}

impl Nemesis {
    pub const ALL: [Nemesis; 6] = [
        Nemesis::KillRandom,
        Nemesis::KillLeader,
        Nemesis::PauseLeader,
        Nemesis::IsolateLeader,
        Nemesis::RestartAll,
        Nemesis::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Nemesis::KillRandom => "kill-random",
            Nemesis::KillLeader => "kill-leader",
            Nemesis::PauseLeader => "pause-leader",
            Nemesis::IsolateLeader => "isolate-leader",
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
struct Recorder {
    started: Instant,
    history: Mutex<Vec<Record>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn push(&self, record: Record) {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
    }
}

fn channel(endpoint: &str) -> Result<Channel> {
    Ok(Endpoint::from_shared(endpoint.to_string())?
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy())
}

/// Runs one recorded run on a fresh cluster of `backend`.
pub async fn run(backend: Arc<dyn Backend>, name: &str, options: &RunOptions) -> Result<History> {
    let spec = ClusterSpec {
        name: name.to_string(),
        nodes: 3,
        tables: vec![TABLE.to_string()],
        extra_args: vec![
            "--raft.snapshot-entries=200".into(),
            "--raft.compaction-overhead=50".into(),
        ],
        follow: None,
    };
    let mut cluster = backend.start_cluster(&spec).await?;
    if let Some(reason) = cluster.fault_support() {
        cluster.destroy().await;
        bail!("this backend cannot inject faults: {reason}");
    }
    let outcome = run_on(&mut cluster, options).await;
    cluster.destroy().await;
    outcome
}

async fn run_on(cluster: &mut Box<dyn Cluster>, options: &RunOptions) -> Result<History> {
    let endpoints: Vec<String> = (1..=3).map(|n| cluster.api_endpoint(n)).collect();
    wait_ready(&endpoints).await?;
    let recorder = Arc::new(Recorder {
        started: Instant::now(),
        history: Mutex::new(Vec::new()),
    });
    let deadline = Instant::now() + options.time;
    let next_value = Arc::new(std::sync::atomic::AtomicU64::new(1));
    // Where each node answers now (a restarted container may move).
    let current = Arc::new(std::sync::RwLock::new(endpoints.clone()));
    let mut clients = Vec::new();
    for client in 0..options.clients {
        let (recorder, next_value, options) =
            (recorder.clone(), next_value.clone(), options.clone());
        let current = current.clone();
        clients.push(tokio::spawn(async move {
            client_loop(client, &current, &recorder, &next_value, &options, deadline).await;
        }));
    }
    nemesis_loop(cluster, &current, &recorder, options, deadline).await?;
    for client in clients {
        let _ = client.await;
    }
    // Heal everything, then read every key on every node: the final state
    // joins the history, and every node must agree.
    cluster.heal().await.ok();
    let endpoints: Vec<String> = (1..=3).map(|n| cluster.api_endpoint(n)).collect();
    wait_ready(&endpoints).await?;
    let mut finals = Vec::new();
    for (n, endpoint) in endpoints.iter().enumerate() {
        let mut kv = KvClient::new(channel(endpoint)?);
        let mut values = Vec::new();
        for key in 0..options.keys {
            let invoked = recorder.now();
            let read = read(&mut kv, key, Duration::from_secs(10)).await;
            let value = match read {
                Ok(value) => value,
                Err(err) => bail!("final read of key {key} on node {}: {err}", n + 1),
            };
            recorder.push(Record::Op {
                client: 1000 + n,
                key,
                op: Op::Read(Outcome::Ok(value)),
                invoked,
                completed: recorder.now(),
                revision: None,
            });
            values.push(value);
        }
        finals.push(values);
    }
    let history = recorder
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(History {
        records: history,
        final_values: finals,
        clients: options.clients,
        nemesis: options.nemesis.name().to_string(),
    })
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

async fn read(
    kv: &mut KvClient<Channel>,
    key: u64,
    timeout: Duration,
) -> Result<Option<u64>, String> {
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
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
        .into_inner();
    match answer.kvs.first() {
        None => Ok(None),
        Some(pair) => value_of(&pair.value)
            .map(Some)
            .ok_or_else(|| format!("key {key} holds a value nobody wrote: {:?}", pair.value)),
    }
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

type Endpoints = std::sync::RwLock<Vec<String>>;

/// A client of node `client % 3` at its current address.
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

async fn client_loop(
    client: usize,
    current: &Endpoints,
    recorder: &Recorder,
    next_value: &std::sync::atomic::AtomicU64,
    options: &RunOptions,
    deadline: Instant,
) {
    let mut last_seen: Vec<Option<u64>> = vec![None; options.keys as usize];
    let Some(mut kv) = client_of(client, current) else {
        return;
    };
    while Instant::now() < deadline {
        let (key, choice) = {
            let mut rng = rand::rng();
            (rng.random_range(0..options.keys), rng.random_range(0..10u8))
        };
        let invoked = recorder.now();
        let (op, revision) = match choice {
            0..=3 => {
                let outcome = match read(&mut kv, key, options.op_timeout).await {
                    Ok(value) => {
                        last_seen[key as usize] = value;
                        Outcome::Ok(value)
                    }
                    Err(_) => Outcome::Failed,
                };
                (Op::Read(outcome), None)
            }
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
                        answer.into_inner().header.map(|h| h.revision),
                    ),
                    Ok(Err(status)) => (Op::Write(value, write_outcome(&status)), None),
                    Err(_) => (Op::Write(value, Outcome::Unknown), None),
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
                let outcome = match tokio::time::timeout(options.op_timeout, kv.txn(request)).await
                {
                    Ok(Ok(answer)) => {
                        let answer = answer.into_inner();
                        (
                            Outcome::Ok(answer.succeeded),
                            answer.header.map(|h| h.revision),
                        )
                    }
                    Ok(Err(status)) => (write_outcome(&status), None),
                    Err(_) => (Outcome::Unknown, None),
                };
                (
                    Op::Cas {
                        expected,
                        new,
                        outcome: outcome.0,
                    },
                    outcome.1,
                )
            }
        };
        let failed = match &op {
            Op::Read(outcome) => !matches!(outcome, Outcome::Ok(_)),
            Op::Write(_, outcome) => !matches!(outcome, Outcome::Ok(_)),
            Op::Cas { outcome, .. } => !matches!(outcome, Outcome::Ok(_)),
        };
        recorder.push(Record::Op {
            client,
            key,
            op,
            invoked,
            completed: recorder.now(),
            revision: revision.and_then(|r| i64::try_from(r).ok()),
        });
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
    current: &Endpoints,
    recorder: &Recorder,
    options: &RunOptions,
    deadline: Instant,
) -> Result<()> {
    let mut turn = 0usize;
    tokio::time::sleep(options.quiet_for.min(options.time / 4)).await;
    while Instant::now() + options.fault_for < deadline {
        let kind = match options.nemesis {
            Nemesis::Mixed => Nemesis::ALL[turn % 5],
            other => other,
        };
        turn += 1;
        let leader = leader_of(cluster.as_ref()).await.unwrap_or(1);
        let random = rand::rng().random_range(1..=cluster.size());
        let (fault, nodes) = match kind {
            Nemesis::KillRandom => (Fault::Kill, vec![random]),
            Nemesis::KillLeader => (Fault::Kill, vec![leader]),
            Nemesis::PauseLeader => (Fault::Pause, vec![leader]),
            Nemesis::IsolateLeader => (Fault::Isolate, vec![leader]),
            Nemesis::RestartAll | Nemesis::Mixed => (Fault::Kill, (1..=cluster.size()).collect()),
        };
        let started = recorder.now();
        for &n in &nodes {
            match fault {
                Fault::Kill => cluster.kill(n).await,
                Fault::Pause => cluster.pause(n).await,
                Fault::Isolate => cluster.isolate(n).await,
            }
            .with_context(|| format!("{fault:?} node {n}"))?;
        }
        recorder.push(Record::Fault(Event {
            fault,
            nodes: nodes.clone(),
            at: started,
        }));
        tokio::time::sleep(options.fault_for).await;
        for &n in &nodes {
            match fault {
                Fault::Kill => cluster.start(n, &[]).await,
                Fault::Pause => cluster.resume(n).await,
                Fault::Isolate => cluster.heal().await,
            }
            .with_context(|| format!("healing {fault:?} of node {n}"))?;
        }
        recorder.push(Record::Heal(Event {
            fault,
            nodes,
            at: recorder.now(),
        }));
        *current.write().unwrap_or_else(|p| p.into_inner()) = (1..=cluster.size())
            .map(|n| cluster.api_endpoint(n))
            .collect();
        tokio::time::sleep(options.quiet_for).await;
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(rest).await;
    Ok(())
}
