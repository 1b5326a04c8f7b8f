//! Linearizable reads on any node: a read index confirmed by the leader's
//! quorum, then applied here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{GroupInfo, Node};
use crate::cluster::error::{Error, Result};
use crate::cluster::raft::group::{Group, GroupError};
use crate::cluster::raft::network::{CallError, Method, Peers};
use crate::cluster::raft::types::NodeId;
use crate::storage::Table;

/// How current a read must be (`linearizable` of Range and Txn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Sees every write acknowledged before the read began
    /// (`features/kv_range.feature`, `features/kv_txn.feature`).
    Linearizable,
    /// This replica's applied state, whatever it is.
    Serializable,
}

impl Node {
    /// `table` on this node, once the replica is current enough for
    /// `consistency`, with the header information of the table's group. The
    /// caller reads it where it fits: a point read at once, a scan or a
    /// stream on a blocking thread.
    pub async fn read(
        &self,
        table: &[u8],
        consistency: Consistency,
        timeout: Duration,
    ) -> Result<(Table, GroupInfo)> {
        let group = match consistency {
            Consistency::Linearizable => self.linearizable_barrier(table, timeout).await?,
            Consistency::Serializable => self.table_group(table)?,
        };
        Ok((group.table.clone(), self.group_info(&group)))
    }

    /// Makes the next local read of `table` linearizable: confirms a read
    /// index with the leader's quorum (asking the leader when this node is
    /// not it) and waits until this replica has applied it. Rounds that fail
    /// for want of a leader or of a quorum are retried until `timeout`.
    async fn linearizable_barrier(&self, table: &[u8], timeout: Duration) -> Result<Arc<Group>> {
        let group = self.table_group(table)?;
        let deadline = Instant::now() + timeout;
        let mut last_failure = String::from("no leader");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Unavailable(format!(
                    "could not confirm a read index in time: {last_failure}"
                )));
            }
            // Concurrent reads share rounds (`raft/read_rounds.rs`).
            let round = {
                let (group, peers, me) = (group.clone(), self.peers.clone(), self.id());
                move || read_index_round(group.clone(), peers.clone(), me)
            };
            let answer = tokio::time::timeout(remaining, group.reads.next_round(round))
                .await
                .unwrap_or_else(|_| Err(GroupError::NoQuorum("read index round timed out".into())));
            if let Err(GroupError::NoQuorum(reason)) = &answer {
                last_failure = reason.clone();
            }
            match answer {
                Ok(index) => {
                    group
                        .wait_applied(index, deadline.saturating_duration_since(Instant::now()))
                        .await
                        .map_err(|err| Error::Unavailable(err.to_string()))?;
                    return Ok(group);
                }
                // Reads append nothing: never refused for space.
                Err(GroupError::Unavailable(reason) | GroupError::NoSpace(reason)) => {
                    return Err(Error::Unavailable(reason))
                }
                Err(GroupError::NoQuorum(_) | GroupError::NotLeader(_)) => {}
            }
            self.pause_for_leader(&group, deadline).await;
        }
    }
}

/// One read-index round for `group`: confirmed here when this node leads,
/// otherwise asked of the leader (which serves it from its own rounds).
async fn read_index_round(
    group: Arc<Group>,
    peers: Arc<Peers>,
    me: NodeId,
) -> std::result::Result<u64, GroupError> {
    /// A round that takes longer failed; its readers try the next one.
    const ROUND_TIMEOUT: Duration = Duration::from_secs(5);
    let local = tokio::time::timeout(ROUND_TIMEOUT, group.read_index_local())
        .await
        .unwrap_or_else(|_| Err(GroupError::NoQuorum("read index round timed out".into())));
    match local {
        Err(GroupError::NotLeader(Some(leader))) if leader != me => {
            let reply: std::result::Result<std::result::Result<u64, GroupError>, CallError> = peers
                .call(leader, group.id, Method::ReadIndex, &(), ROUND_TIMEOUT)
                .await;
            match reply {
                Ok(answer) => answer,
                // A read index changes nothing: whatever became of the call,
                // ask again in the next round.
                Err(err) => Err(GroupError::NoQuorum(err.to_string())),
            }
        }
        answer => answer,
    }
}

impl Node {
    /// Waits until this node's copy of `table` holds leader-cluster index
    /// `leader_index` (its `L`, `docs/replication.md`): a write forwarded to the
    /// leader cluster is then readable here. The table may not be here yet
    /// (created on the leader cluster since the last reconcile). Returns
    /// whether it got there before `deadline`.
    pub async fn wait_replicated(
        &self,
        table: &[u8],
        leader_index: u64,
        deadline: tokio::time::Instant,
    ) -> bool {
        // A table that comes or goes changes this; the short sleep covers a
        // group listed a moment before it runs.
        let mut tables = self.tables.subscribe();
        loop {
            let waiting = match self.table_group(table) {
                Ok(group) => group.table.replicated_to(leader_index),
                Err(_) => {
                    let changed = async {
                        let pause = Duration::from_millis(50);
                        tokio::select! {
                            changed = tables.changed() => if changed.is_err() {
                                // The node is shutting down.
                                tokio::time::sleep(pause).await;
                            },
                            _ = tokio::time::sleep(pause) => {}
                        }
                    };
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        return false;
                    }
                    continue;
                }
            };
            let Some(reached) = waiting else {
                return true;
            };
            match tokio::time::timeout_at(deadline, reached).await {
                Ok(Ok(())) => return true,
                // The table was dropped under us: look it up again.
                Ok(Err(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}
