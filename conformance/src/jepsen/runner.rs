//! One recorded run: a leader cluster (3 or 5 nodes) of any backend that
//! injects faults, `clients` concurrent clients doing linearizable reads,
//! writes and compare-and-set on a few keys of one table, and a nemesis that
//! injects a fault and heals it in turns; optionally a follower cluster with
//! readers of its own (see [`super::follower`]). Every operation and every
//! fault goes into the history with its times.
//!
//! This file holds the run itself: its options, starting and destroying the
//! clusters, and the order of a run. The parts live beside it: the clients
//! in [`super::client`], the faults in [`super::nemesis`], the shared record
//! in [`super::recorder`] and the final reads in [`super::convergence`].

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tonic::transport::{Channel, Endpoint};

use super::client::client_loop;
use super::convergence::{final_reads, follower_end, wait_follower_ready, wait_ready};
use super::follower::{self, LeaderLog};
use super::history::History;
use super::nemesis::nemesis_loop;
pub use super::nemesis::Nemesis;
use super::recorder::Recorder;
use crate::backend::{Backend, Cluster, ClusterSpec};

pub const TABLE: &str = "jepsen";

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

pub(super) fn api_endpoints(cluster: &dyn Cluster) -> Vec<String> {
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

/// Addresses of a cluster's nodes, in node order, shared with the tasks
/// that use them.
pub(super) type Endpoints = RwLock<Vec<String>>;

/// Where the nodes answer now (a restarted or moved container may have a
/// new address).
pub(super) struct Current {
    api: Arc<Endpoints>,
    replication: Arc<Endpoints>,
    follower_api: Arc<Endpoints>,
}

impl Current {
    pub(super) fn refresh(&self, cluster: &dyn Cluster) {
        *self.api.write().unwrap_or_else(|p| p.into_inner()) = api_endpoints(cluster);
        *self.replication.write().unwrap_or_else(|p| p.into_inner()) =
            replication_endpoints(cluster);
    }

    pub(super) fn refresh_follower(&self, follower: &dyn Cluster) {
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
    let finals = final_reads(cluster, follower.as_deref_mut(), &recorder, options.keys).await?;
    let (follower_finals, leader_log_copy, follower_snapshot_recoveries) = match observer {
        Some(observer) => {
            let (reads, log, recoveries) = follower_end(
                observer,
                &stop_observer,
                &leader_log,
                &finals,
                &follower_endpoints,
                follower,
                options.keys,
            )
            .await;
            (reads, Some(log), recoveries)
        }
        None => (Vec::new(), None, None),
    };
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
