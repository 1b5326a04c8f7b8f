//! The follower-cluster variant: a follower cluster copies the run's table
//! while the leader side suffers the nemesis and the link between the
//! clusters is cut from time to time.
//!
//! To know which states the leader went through, the run follows the
//! leader cluster's own replication log (`Log.Replicate`, the stream the
//! followers copy) and replays it on a model of the keys: every follower
//! read, which reads every key at once, must equal one of those states, and
//! one client's reads must never go back to an earlier one. The same log is
//! checked against the clients: every acknowledged write is at the index
//! its response named as revision, and the log ends in the leader nodes'
//! final state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::compare::{CompareResult, CompareTarget, TargetUnion};
use regatta_proto::mvcc::v1::request_op::Request;
use regatta_proto::mvcc::v1::Command;
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::RangeRequest;
use regatta_proto::replication::v1::log_client::LogClient;
use regatta_proto::replication::v1::replicate_response::Response;
use regatta_proto::replication::v1::{ReplicateError, ReplicateRequest};

use super::checker::{Op, Outcome};
use super::history::{History, Record};
use super::recorder::Recorder;
use super::runner::{channel, TABLE};

/// One entry of the leader's log as the model sees it: the key it changed
/// and the value it set, or `None` (a failed compare, a no-op).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub change: Option<(u64, u64)>,
}

/// The leader's replication log followed from index 1, replayed on the keys.
#[derive(Debug, Clone, Default)]
pub struct LeaderLog {
    pub entries: Vec<Applied>,
    pub state: Vec<Option<u64>>,
    /// What the stream itself did wrong (gaps, commands nobody sent).
    pub anomalies: Vec<String>,
    /// Why the log could not be followed to its end, if so (the run is
    /// then not checked).
    pub lost: Option<String>,
    /// Streams a node refused because it had compacted past the model.
    pub refusals: Vec<String>,
}

impl LeaderLog {
    pub fn new(keys: u64) -> LeaderLog {
        LeaderLog {
            state: vec![None; keys as usize],
            ..LeaderLog::default()
        }
    }

    fn next_index(&self) -> u64 {
        self.entries.last().map_or(1, |e| e.index + 1)
    }

    /// Replays one command; the model is a register per key.
    fn apply(&mut self, index: u64, command: &Command) {
        let change = match CommandType::try_from(command.r#type) {
            Ok(CommandType::Dummy) => None,
            Ok(CommandType::Put) => {
                match command.kv.as_ref().and_then(|kv| pair(&kv.key, &kv.value)) {
                    Some(change) => Some(change),
                    None => {
                        self.anomalies
                            .push(format!("entry {index}: a put of a pair nobody wrote"));
                        None
                    }
                }
            }
            Ok(CommandType::Txn) => match command.txn.as_ref().and_then(|txn| {
                let compare = txn.compare.first()?;
                let key = number(&compare.key)?;
                let expected = match &compare.target_union {
                    Some(TargetUnion::Value(value)) => number(value)?,
                    _ => return None,
                };
                let holds = compare.result == CompareResult::Equal as i32
                    && compare.target == CompareTarget::Value as i32
                    && self.state.get(key as usize).copied().flatten() == Some(expected);
                let ops = if holds { &txn.success } else { &txn.failure };
                Some(match ops.first().and_then(|op| op.request.as_ref()) {
                    Some(Request::RequestPut(put)) => pair(&put.key, &put.value),
                    _ => None,
                })
            }) {
                Some(change) => change,
                None => {
                    self.anomalies
                        .push(format!("entry {index}: a transaction nobody sent"));
                    None
                }
            },
            _ => {
                self.anomalies.push(format!(
                    "entry {index}: a command of type {} nobody sent",
                    command.r#type
                ));
                None
            }
        };
        if let Some((key, value)) = change {
            if let Some(slot) = self.state.get_mut(key as usize) {
                *slot = Some(value);
            }
        }
        self.entries.push(Applied { index, change });
    }
}

fn number(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn pair(key: &[u8], value: &[u8]) -> Option<(u64, u64)> {
    Some((number(key)?, number(value)?))
}

/// Follows the leader cluster's log of [`TABLE`] from index 1 into `log`
/// until `stop`, from every node at once (follow mode keeps each stream
/// open): the model advances with the most advanced live node, so a node
/// that dies, stalls or sits in a minority never holds it back long enough
/// for the others to compact what it still needs.
pub async fn observe(
    endpoints: Arc<RwLock<Vec<String>>>,
    log: Arc<Mutex<LeaderLog>>,
    stop: Arc<AtomicBool>,
) {
    let nodes = endpoints.read().unwrap_or_else(|p| p.into_inner()).len();
    let streams = (0..nodes).map(|node| {
        let (endpoints, log, stop) = (endpoints.clone(), log.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let endpoint = endpoints
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(node)
                    .cloned()
                    .unwrap_or_default();
                if let Err(refused) = follow_one(&endpoint, &log, &stop).await {
                    lock(&log).refusals.push(refused);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    futures::future::join_all(streams).await;
}

fn lock(log: &Mutex<LeaderLog>) -> std::sync::MutexGuard<'_, LeaderLog> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// One stream from one node; `Err` when that node compacted its log past
/// what the model has.
async fn follow_one(
    endpoint: &str,
    log: &Mutex<LeaderLog>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let Ok(channel) = channel(endpoint) else {
        return Ok(());
    };
    let from = lock(log).next_index();
    let mut request = tonic::Request::new(ReplicateRequest {
        table: TABLE.as_bytes().to_vec(),
        leader_index: from,
    });
    request
        .metadata_mut()
        .insert("regatta-replicate-mode", "follow".parse().expect("ascii"));
    let Ok(Ok(answer)) = tokio::time::timeout(
        Duration::from_secs(2),
        LogClient::new(channel).replicate(request),
    )
    .await
    else {
        return Ok(());
    };
    let mut stream = answer.into_inner();
    // A paused node keeps the stream open and silent; an idle leader sends
    // a heartbeat every 5 s, but this workload never idles that long.
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok(Some(message))) =
            tokio::time::timeout(Duration::from_secs(2), stream.message()).await
        else {
            return Ok(());
        };
        match message.response {
            Some(Response::CommandsResponse(commands)) => {
                let mut log = lock(log);
                for command in commands.commands {
                    let expected = log.next_index();
                    if command.leader_index < expected {
                        continue;
                    }
                    if command.leader_index > expected {
                        let gap = format!(
                            "{endpoint} sent entry {} when {expected} was next",
                            command.leader_index
                        );
                        log.anomalies.push(gap);
                        return Ok(());
                    }
                    match &command.command {
                        Some(inner) => log.apply(command.leader_index, inner),
                        None => {
                            log.anomalies
                                .push(format!("entry {expected} came without a command"));
                            return Ok(());
                        }
                    }
                }
            }
            Some(Response::ErrorResponse(error))
                if error.error == ReplicateError::UseSnapshot as i32 =>
            {
                return Err(format!("{endpoint} compacted its log past entry {from}"));
            }
            // LEADER_BEHIND: that node has not applied what the model has.
            Some(Response::ErrorResponse(_)) => return Ok(()),
            None => {}
        }
    }
    Ok(())
}

/// Reads every key of [`TABLE`] at once on the follower node `node`
/// (0-based) of `endpoints`, until `deadline`.
pub(crate) async fn reader_loop(
    client: usize,
    node: usize,
    endpoints: &RwLock<Vec<String>>,
    recorder: &Recorder,
    keys: u64,
    deadline: Instant,
) {
    while Instant::now() < deadline {
        let endpoint = {
            let endpoints = endpoints.read().unwrap_or_else(|p| p.into_inner());
            endpoints.get(node).cloned()
        };
        let Some(endpoint) = endpoint else { return };
        let linearizable = rand::rng().random_bool(0.5);
        let invoked = recorder.now();
        let values = read_all(&endpoint, keys, linearizable, Duration::from_secs(2)).await;
        let failed = values.is_err();
        recorder.push(Record::FollowerRead {
            client,
            node: node + 1,
            linearizable,
            values: values.ok(),
            invoked,
            completed: recorder.now(),
        });
        let pause = if failed {
            300
        } else {
            rand::rng().random_range(5..25)
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Every key's value in one range read (one state of the node).
pub async fn read_all(
    endpoint: &str,
    keys: u64,
    linearizable: bool,
    timeout: Duration,
) -> Result<Vec<Option<u64>>, String> {
    let channel = channel(endpoint).map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(RangeRequest {
        table: TABLE.into(),
        // Keys are decimal numbers; ':' follows '9'.
        key: b"0".to_vec(),
        range_end: b":".to_vec(),
        linearizable,
        ..Default::default()
    });
    request.set_timeout(timeout);
    let answer = tokio::time::timeout(timeout, KvClient::new(channel).range(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
        .into_inner();
    let mut values = vec![None; keys as usize];
    for kv in answer.kvs {
        match pair(&kv.key, &kv.value) {
            Some((key, value)) if (key as usize) < values.len() => {
                values[key as usize] = Some(value)
            }
            _ => return Err(format!("a pair nobody wrote: {kv:?}")),
        }
    }
    Ok(values)
}

/// Every check of the follower variant.
pub fn check(history: &History, log: &LeaderLog) -> Vec<String> {
    let mut anomalies = log.anomalies.clone();
    anomalies.extend(acknowledged_in_log(history, log));
    if let Some(leader) = history.final_values.first() {
        if &log.state != leader {
            anomalies.push(format!(
                "the leader's replication log ends in {:?}, its nodes in {leader:?}",
                log.state
            ));
        }
        for (n, values) in history.follower_finals.iter().enumerate() {
            if values != leader {
                anomalies.push(format!(
                    "follower node {} did not converge: it holds {values:?}, the leader {leader:?}",
                    n + 1
                ));
            }
        }
    }
    anomalies.extend(follower_reads(history, log));
    anomalies
}

/// Each acknowledged write is the entry at the revision it was answered with.
fn acknowledged_in_log(history: &History, log: &LeaderLog) -> Vec<String> {
    let by_index: HashMap<u64, Option<(u64, u64)>> =
        log.entries.iter().map(|e| (e.index, e.change)).collect();
    let mut anomalies = Vec::new();
    for record in &history.records {
        let Record::Op {
            key,
            op,
            revision: Some(revision),
            ..
        } = record
        else {
            continue;
        };
        let expected = match op {
            Op::Write(value, Outcome::Ok(())) => Some((*key, *value)),
            Op::Cas {
                new,
                outcome: Outcome::Ok(true),
                ..
            } => Some((*key, *new)),
            Op::Cas {
                outcome: Outcome::Ok(false),
                ..
            } => None,
            _ => continue,
        };
        match by_index.get(&(*revision as u64)) {
            Some(change) if *change == expected => {}
            found => anomalies.push(format!(
                "{op:?} on key {key} was answered with revision {revision}, but that entry of the log is {found:?}"
            )),
        }
    }
    anomalies
}

/// Each follower read is a state of the leader's log, never earlier than
/// the one the same client read before.
fn follower_reads(history: &History, log: &LeaderLog) -> Vec<String> {
    let mut states: HashMap<Vec<Option<u64>>, usize> = HashMap::new();
    let mut state = vec![None; log.state.len()];
    states.insert(state.clone(), 0);
    for (position, entry) in log.entries.iter().enumerate() {
        if let Some((key, value)) = entry.change {
            if let Some(slot) = state.get_mut(key as usize) {
                *slot = Some(value);
            }
            // Values are unique, so each state occurs once.
            states.insert(state.clone(), position + 1);
        }
    }
    let mut last: HashMap<usize, (usize, u64)> = HashMap::new();
    let mut anomalies = Vec::new();
    for record in &history.records {
        let Record::FollowerRead {
            client,
            values: Some(values),
            completed,
            ..
        } = record
        else {
            continue;
        };
        match states.get(values) {
            None => anomalies.push(format!(
                "follower client {client} read {values:?} at {completed} µs: the leader never held that state"
            )),
            Some(&position) => {
                if let Some(&(before, at)) = last.get(client) {
                    if position < before {
                        anomalies.push(format!(
                            "follower client {client} read the state after entry {} at {completed} µs, older than the state after entry {} it read at {at} µs",
                            index_of(log, position),
                            index_of(log, before)
                        ));
                    }
                }
                let newest = last.get(client).map_or(position, |&(b, _)| b.max(position));
                last.insert(*client, (newest, *completed));
            }
        }
    }
    anomalies
}

fn index_of(log: &LeaderLog, position: usize) -> u64 {
    position
        .checked_sub(1)
        .and_then(|p| log.entries.get(p))
        .map_or(0, |e| e.index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regatta_proto::mvcc::v1::KeyValue;

    fn put(key: u64, value: u64) -> Command {
        Command {
            table: TABLE.into(),
            r#type: CommandType::Put as i32,
            kv: Some(KeyValue {
                key: key.to_string().into_bytes(),
                value: value.to_string().into_bytes(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn follower_read(client: usize, values: Vec<Option<u64>>, at: u64) -> Record {
        Record::FollowerRead {
            client,
            node: 1,
            linearizable: false,
            values: Some(values),
            invoked: at,
            completed: at + 1,
        }
    }

    fn history(records: Vec<Record>, finals: Vec<Option<u64>>) -> History {
        History {
            records,
            final_values: vec![finals.clone()],
            follower_finals: vec![finals],
            follower_snapshot_recoveries: None,
            clients: 1,
            nemesis: "test".into(),
            leader_log: None,
        }
    }

    fn log_of(changes: &[(u64, u64)]) -> LeaderLog {
        let mut log = LeaderLog::new(2);
        log.apply(1, &dummy());
        for (i, &(key, value)) in changes.iter().enumerate() {
            log.apply(i as u64 + 2, &put(key, value));
        }
        log
    }

    fn dummy() -> Command {
        Command {
            r#type: CommandType::Dummy as i32,
            ..Default::default()
        }
    }

    #[test]
    fn follower_reads_must_be_leader_states_in_order() {
        let log = log_of(&[(0, 1), (1, 2), (0, 3)]);
        let good = history(
            vec![
                follower_read(7, vec![None, None], 0),
                follower_read(7, vec![Some(1), Some(2)], 10),
                follower_read(8, vec![Some(1), None], 10),
                follower_read(7, vec![Some(3), Some(2)], 20),
            ],
            vec![Some(3), Some(2)],
        );
        assert_eq!(check(&good, &log), Vec::<String>::new());
        // Never a leader state: key 1 written before key 0's second write.
        let torn = history(
            vec![follower_read(7, vec![Some(3), None], 0)],
            vec![Some(3), Some(2)],
        );
        assert!(check(&torn, &log)[0].contains("never held"));
        let backwards = history(
            vec![
                follower_read(7, vec![Some(1), Some(2)], 0),
                follower_read(7, vec![Some(1), None], 10),
            ],
            vec![Some(3), Some(2)],
        );
        assert!(check(&backwards, &log)[0].contains("older than"));
    }

    #[test]
    fn acknowledged_writes_are_at_their_revision_and_followers_converge() {
        let log = log_of(&[(0, 1), (1, 2)]);
        let write = |value, revision| Record::Op {
            client: 0,
            key: 0,
            op: Op::Write(value, Outcome::Ok(())),
            invoked: 0,
            completed: 1,
            revision: Some(revision),
            answered_by: None,
            error: None,
        };
        let h = history(vec![write(1, 2)], vec![Some(1), Some(2)]);
        assert!(check(&h, &log).is_empty());
        let wrong = history(vec![write(1, 3)], vec![Some(1), Some(2)]);
        assert!(check(&wrong, &log)[0].contains("revision 3"));
        let mut diverged = history(Vec::new(), vec![Some(1), Some(2)]);
        diverged.follower_finals = vec![vec![Some(1), None]];
        assert!(check(&diverged, &log)[0].contains("did not converge"));
    }

    #[test]
    fn a_compare_and_set_is_replayed_against_the_model() {
        use regatta_proto::mvcc::v1::request_op::Put;
        use regatta_proto::mvcc::v1::{Compare, RequestOp, Txn};
        let cas = |expected: u64, new: u64| Command {
            r#type: CommandType::Txn as i32,
            txn: Some(Txn {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: b"0".to_vec(),
                    target_union: Some(TargetUnion::Value(expected.to_string().into_bytes())),
                    ..Default::default()
                }],
                success: vec![RequestOp {
                    request: Some(Request::RequestPut(Put {
                        key: b"0".to_vec(),
                        value: new.to_string().into_bytes(),
                        ..Default::default()
                    })),
                }],
                failure: Vec::new(),
            }),
            ..Default::default()
        };
        let mut log = LeaderLog::new(1);
        log.apply(1, &put(0, 5));
        log.apply(2, &cas(4, 6));
        log.apply(3, &cas(5, 7));
        assert_eq!(log.state, vec![Some(7)]);
        assert_eq!(log.entries[1].change, None);
        assert!(log.anomalies.is_empty());
    }
}
