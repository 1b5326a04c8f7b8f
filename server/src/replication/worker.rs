//! One table's replication worker on a follower cluster (behaviour.md §4.2,
//! §4.4): asks the leader cluster for entries after the stored leader index
//! `L` and proposes them, in order, to the table's own Raft group.
//!
//! `L` is stored with the data by the state machine, which applies a
//! replicated command only as the next after `L`; a retried or late proposal
//! therefore changes nothing, and after any error the worker simply asks
//! again from the stored `L`.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use regatta_proto::replication::v1::log_client::LogClient;
use regatta_proto::replication::v1::{
    replicate_response::Response as Reply, ReplicateError, ReplicateRequest,
};
use tokio::sync::watch;
use tonic::transport::Channel;

use super::metrics::{ReplicationMetrics, TableReplication};
use super::recovery::{self, Recoveries};
use super::FollowerSettings;
use crate::cluster::Node;

/// How a replication round ended.
#[derive(Debug, PartialEq, Eq)]
enum RoundEnd {
    /// The leader ended the stream with everything sent (plain mode).
    CaughtUp,
    UseSnapshot,
    LeaderBehind,
}

/// Proposals of replicated commands wait at most this long for the group.
pub(super) const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Messages of the leader taken together into one batch of proposals.
const MAX_MESSAGES_PER_BATCH: usize = 64;

pub struct TableWorker {
    pub node: Arc<Node>,
    pub table: Vec<u8>,
    pub leader: Channel,
    pub settings: Arc<FollowerSettings>,
    pub metrics: Arc<ReplicationMetrics>,
    pub recoveries: Arc<Recoveries>,
}

impl TableWorker {
    fn stats(&self) -> Arc<TableReplication> {
        self.metrics.table(&self.table)
    }

    /// The stored leader index `L` of the table on this replica.
    fn stored_index(&self) -> Option<u64> {
        let data = self.node.table(&self.table).ok()?;
        Some(data.state().leader_index.unwrap_or(0))
    }

    /// Whether the table has had any write (its revision is past 0).
    fn has_content(&self) -> bool {
        self.node
            .table(&self.table)
            .is_ok_and(|data| data.state().revision > 0)
    }

    /// Replicates until `stop` turns true or the table goes away.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let name = String::from_utf8_lossy(&self.table).into_owned();
        let stats = self.stats();
        stats.set_leased(true);
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stop.borrow() || self.stored_index().is_none() {
                break;
            }
            let round = tokio::select! {
                round = self.round() => round,
                _ = stop.changed() => break,
            };
            let pause = match round {
                Ok(RoundEnd::CaughtUp) => {
                    backoff = Duration::from_millis(100);
                    self.settings.poll_interval
                }
                Ok(RoundEnd::UseSnapshot) => {
                    stats.snapshot_needed();
                    let stored = self.stored_index().unwrap_or(0);
                    tracing::info!(
                        table = %name,
                        stored,
                        "the leader no longer has the entries after this follower's index \
                         (USE_SNAPSHOT): copying the table from its snapshot"
                    );
                    let started = std::time::Instant::now();
                    match tokio::select! {
                        recovered = recovery::recover(&self) => recovered,
                        _ = stop.changed() => break,
                    } {
                        Ok(leader_index) => {
                            tracing::info!(
                                table = %name,
                                leader_index,
                                elapsed = ?started.elapsed(),
                                "recovered by snapshot; replicating from the next entry"
                            );
                            backoff = Duration::from_millis(100);
                            Duration::ZERO
                        }
                        Err(err) => {
                            tracing::warn!(table = %name, error = %err, "recovery by snapshot failed; retrying");
                            backoff
                        }
                    }
                }
                Ok(RoundEnd::LeaderBehind) => {
                    tracing::warn!(
                        table = %name,
                        stored = self.stored_index().unwrap_or(0),
                        "the leader cluster is behind this follower (LEADER_BEHIND): \
                         it was restored or this follower points at the wrong cluster; retrying"
                    );
                    backoff
                }
                Err(err) => {
                    tracing::warn!(table = %name, error = %err, "replication round failed; retrying");
                    backoff
                }
            };
            backoff = (backoff * 2).min(MAX_BACKOFF);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => break,
            }
        }
        // A recovery cut short by the stop leaves no flag behind.
        stats.set_waiting_for_recovery(false);
        stats.set_recovering(false);
        stats.set_leased(false);
    }

    /// One Log.Replicate stream: apply what it brings until it ends.
    async fn round(&self) -> Result<RoundEnd, String> {
        let stats = self.stats();
        let mut stored = self.stored_index().ok_or("table not found")?;
        if stored == 0 && self.has_content() {
            // Reset (maintenance): content without a leader index is copied
            // again whole, so reads keep answering from it until the switch.
            return Ok(RoundEnd::UseSnapshot);
        }
        let mut client = LogClient::new(self.leader.clone())
            .max_decoding_message_size(self.settings.max_recv_message_bytes);
        let mut request = tonic::Request::new(ReplicateRequest {
            table: self.table.clone(),
            leader_index: stored + 1,
        });
        if self.settings.follow_mode {
            request.metadata_mut().insert(
                "regatta-replicate-mode",
                tonic::metadata::MetadataValue::from_static("follow"),
            );
        }
        let mut stream =
            tokio::time::timeout(self.settings.log_rpc_timeout, client.replicate(request))
                .await
                .map_err(|_| "Log.Replicate did not answer in time".to_string())?
                .map_err(|status| format!("Log.Replicate: {status}"))?
                .into_inner();
        loop {
            let message = tokio::time::timeout(self.settings.log_rpc_timeout, stream.message())
                .await
                .map_err(|_| "the replication stream went silent".to_string())?
                .map_err(|status| format!("Log.Replicate stream: {status}"))?;
            let Some(message) = message else {
                return Ok(RoundEnd::CaughtUp);
            };
            // Messages already received join this one: proposed as one
            // batch, and taken out of h2's buffers at once. Left there while
            // the worker proposed one command at a time, many small DATA
            // frames piled up until h2's flood guard closed the connection
            // (GoAway ENHANCE_YOUR_CALM "too_many_data_frames").
            let mut messages = vec![message];
            let mut then = None;
            while messages.len() < MAX_MESSAGES_PER_BATCH {
                match stream.message().now_or_never() {
                    Some(Ok(Some(next))) => messages.push(next),
                    Some(other) => {
                        then = Some(other);
                        break;
                    }
                    None => break,
                }
            }
            if self.stored_index() != Some(stored) {
                return Err("the stored leader index changed (a reset?); asking again".into());
            }
            let mut commands = Vec::new();
            let mut end = None;
            for message in messages {
                stats.observe_leader(message.leader_index);
                match message.response {
                    Some(Reply::ErrorResponse(error)) => {
                        end = Some(if error.error == ReplicateError::UseSnapshot as i32 {
                            RoundEnd::UseSnapshot
                        } else {
                            RoundEnd::LeaderBehind
                        });
                        break;
                    }
                    Some(Reply::CommandsResponse(batch)) => {
                        for replicated in batch.commands {
                            let Some(command) = replicated.command else {
                                return Err(format!(
                                    "entry {} has no command",
                                    replicated.leader_index
                                ));
                            };
                            let expected = stored + 1 + commands.len() as u64;
                            if replicated.leader_index != expected {
                                return Err(format!(
                                    "expected entry {expected}, got {}",
                                    replicated.leader_index
                                ));
                            }
                            commands.push(command);
                        }
                    }
                    None => {}
                }
            }
            if !commands.is_empty() {
                // One batch of entries: at high write rates one append and
                // one sync for many commands instead of one each.
                let (applied, failed) = self
                    .node
                    .write_many(&self.table, &commands, PROPOSE_TIMEOUT)
                    .await;
                stored += applied as u64;
                stats.observe_stored(stored);
                if let Some(err) = failed {
                    return Err(format!("proposing entry {}: {err}", stored + 1));
                }
            }
            if let Some(end) = end {
                return Ok(end);
            }
            match then {
                Some(Ok(None)) => return Ok(RoundEnd::CaughtUp),
                Some(Err(status)) => return Err(format!("Log.Replicate stream: {status}")),
                Some(Ok(Some(_))) | None => {}
            }
        }
    }
}
