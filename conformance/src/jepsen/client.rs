//! The clients of the leader cluster: each one loops over random reads
//! (linearizable), writes and compare-and-sets on the run's keys until the
//! deadline, and records every operation with what its answer or its error
//! means for the checker (done, failed, or of unknown outcome).

use std::time::{Duration, Instant};

use rand::Rng;
use regatta_proto::mvcc::v1::compare::{CompareResult, CompareTarget, TargetUnion};
use regatta_proto::mvcc::v1::request_op::{self, Request};
use regatta_proto::mvcc::v1::{Compare, RequestOp};
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::{PutRequest, RangeRequest, TxnRequest};
use tonic::transport::Channel;

use super::checker::{Op, Outcome};
use super::history::Record;
use super::recorder::{refused_as_on_a_follower, Recorder};
use super::runner::{channel, Endpoints, RunOptions, TABLE};

fn value_of(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A linearizable read of `key`: its value and the node that answered.
pub(super) async fn read(
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

pub(super) async fn client_loop(
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
