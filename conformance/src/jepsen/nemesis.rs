//! The nemesis: which faults a run can inject, and the loop that injects
//! one, holds it, heals it and waits in turns until the deadline, recording
//! each fault and heal in the history. With a follower cluster every other
//! fault also cuts the follower cluster off.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::Rng;
use regatta_proto::regatta::v1::kv_client::KvClient;
use regatta_proto::regatta::v1::RangeRequest;

use super::history::{Event, Fault, Record};
use super::recorder::Recorder;
use super::runner::{channel, Current, RunOptions, TABLE};
use crate::backend::Cluster;

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

pub(super) async fn nemesis_loop(
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
