//! Waiting for the clusters to serve and to agree: every node must answer
//! before the run starts, and after it, with every fault healed, every node
//! is read until they agree (those reads join the history as the final
//! state); with a follower cluster, the model of the leader's log and every
//! follower node must reach that state too.

use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use regatta_proto::regatta::v1::kv_client::KvClient;

use super::checker::{Op, Outcome};
use super::client::read;
use super::follower::{self, LeaderLog};
use super::history::Record;
use super::recorder::Recorder;
use super::runner::{api_endpoints, channel, Endpoints, TABLE};
use crate::backend::Cluster;

/// Heals both clusters, then reads every key on every node of the leader
/// cluster until one pass agrees (15 s at most): the last pass, one row per
/// node.
pub(super) async fn final_reads(
    cluster: &mut Box<dyn Cluster>,
    follower: Option<&mut Box<dyn Cluster>>,
    recorder: &Recorder,
    keys: u64,
) -> Result<Vec<Vec<Option<u64>>>> {
    // Heal everything, then read every key on every node: the final state
    // joins the history, and every node must agree.
    cluster.heal().await.ok();
    if let Some(follower) = follower {
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
            for key in 0..keys {
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
    Ok(finals)
}

/// The follower cluster's end of a run, once the leader nodes' final reads
/// are `finals`: the follower nodes' final reads, the leader's log as the
/// run followed it, and how often the follower nodes copied the table by
/// snapshot.
pub(super) async fn follower_end(
    observer: tokio::task::JoinHandle<()>,
    stop_observer: &AtomicBool,
    leader_log: &Mutex<LeaderLog>,
    finals: &[Vec<Option<u64>>],
    follower_endpoints: &Endpoints,
    follower: Option<&mut Box<dyn Cluster>>,
    keys: u64,
) -> (Vec<Vec<Option<u64>>>, LeaderLog, Option<u64>) {
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
    let mut follower_finals = Vec::new();
    for endpoint in endpoints {
        follower_finals.push(follower_converged(&endpoint, &leader, keys).await);
    }
    let leader_log_copy = leader_log.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut follower_snapshot_recoveries = None;
    if let Some(follower) = follower {
        follower_snapshot_recoveries = snapshot_recoveries(follower.as_ref()).await;
    }
    (
        follower_finals,
        leader_log_copy,
        follower_snapshot_recoveries,
    )
}

/// How often the follower cluster's nodes copied the table by snapshot;
/// `None` when a node's `/metrics` cannot be read.
async fn snapshot_recoveries(follower: &dyn Cluster) -> Option<u64> {
    let name = format!("regatta_replication_snapshot_recoveries_total{{table=\"{TABLE}\"}}");
    let mut total = 0;
    for n in 1..=follower.size() {
        let metrics = crate::metrics::get(&follower.rest_address(n)?, None)
            .await
            .ok()?;
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

pub(super) async fn wait_follower_ready(endpoint: &str, keys: u64) -> Result<()> {
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

pub(super) async fn wait_ready(endpoints: &[String]) -> Result<()> {
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
