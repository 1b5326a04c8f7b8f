//! One table's replication worker on a follower cluster
//! (`docs/replication.md`, "Follower side"): asks the leader cluster for
//! entries after the stored leader index `L` and proposes them, in order, to
//! the table's own Raft group.
//!
//! `L` is stored with the data by the state machine, which applies a
//! replicated command only as the next after `L`; a retried or late proposal
//! therefore changes nothing, and after any error the worker simply asks
//! again from the stored `L`.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use regatta_proto::mvcc::v1::Command;
use regatta_proto::replication::v1::log_client::LogClient;
use regatta_proto::replication::v1::{
    replicate_response::Response as Reply, ReplicateError, ReplicateRequest, ReplicateResponse,
};
use tokio::sync::watch;
use tonic::transport::Channel;

use super::metrics::{ReplicationMetrics, TableReplication};
use super::recovery::{self, Recoveries};
use super::FollowerSettings;
use crate::cluster::{Error, Node};

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
/// Batches handed to the table's group and not yet applied, at most.
const MAX_BATCHES_IN_FLIGHT: usize = 4;

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
            let before = self.stored_index();
            let round = tokio::select! {
                round = self.round() => round,
                _ = stop.changed() => break,
            };
            if self.stored_index() > before {
                // A follow-mode round ends only on an error: one that made
                // progress first is not a run of failures.
                backoff = Duration::from_millis(100);
            }
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
        let stored = self.stored_index().ok_or("table not found")?;
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
        let mut batches = Batches {
            stored,
            proposed: stored,
            in_flight: FuturesOrdered::new(),
            stats: &stats,
        };
        loop {
            let message = tokio::select! {
                // Applied batches first: they free room for the next.
                biased;
                Some(outcome) = batches.in_flight.next(), if !batches.in_flight.is_empty() => {
                    batches.applied(outcome)?;
                    continue;
                }
                message = tokio::time::timeout(self.settings.log_rpc_timeout, stream.message()),
                    if batches.in_flight.len() < MAX_BATCHES_IN_FLIGHT =>
                {
                    message
                        .map_err(|_| "the replication stream went silent".to_string())?
                        .map_err(|status| format!("Log.Replicate stream: {status}"))?
                }
            };
            let Some(message) = message else {
                batches.drain().await?;
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
            // A reset (maintenance) moves the stored index outside what
            // this round stored or handed over.
            let now = self.stored_index();
            if !now.is_some_and(|now| (batches.stored..=batches.proposed).contains(&now)) {
                return Err("the stored leader index changed (a reset?); asking again".into());
            }
            let (commands, end) = commands_of(&stats, messages, batches.proposed + 1)?;
            if !commands.is_empty() {
                self.propose(&mut batches, commands).await?;
            }
            if let Some(end) = end {
                batches.drain().await?;
                return Ok(end);
            }
            match then {
                Some(Ok(None)) => {
                    batches.drain().await?;
                    return Ok(RoundEnd::CaughtUp);
                }
                Some(Err(status)) => return Err(format!("Log.Replicate stream: {status}")),
                Some(Ok(Some(_))) | None => {}
            }
        }
    }

    /// Proposes one batch of entries (at high write rates one append and
    /// one sync for many commands instead of one each). Where this node
    /// leads the table's group the batch is handed over and left in flight;
    /// elsewhere it is written through the group's leader, in turn.
    async fn propose(
        &self,
        batches: &mut Batches<'_>,
        commands: Vec<Command>,
    ) -> Result<(), String> {
        let count = commands.len() as u64;
        match self.node.submit_many(&self.table, &commands).await {
            Some(Ok(outcome)) => {
                batches.in_flight.push_back(outcome.boxed());
                batches.proposed += count;
            }
            Some(Err(err)) => {
                return Err(format!("proposing entry {}: {err}", batches.proposed + 1))
            }
            None => {
                // In turn: what is in flight lands first, keeping the order.
                batches.drain().await?;
                let outcome = self
                    .node
                    .write_many(&self.table, &commands, PROPOSE_TIMEOUT)
                    .await;
                batches.proposed += count;
                batches.applied(outcome)?;
            }
        }
        Ok(())
    }
}

/// Batches of one round handed to the table's group: while one is made
/// durable the next is appended, so the copy keeps pace with the leader's
/// stream instead of taking one sync per batch in turn. Batches are handed
/// over in order, and a replicated command applies only as the next after
/// the stored index, so an entry landing out of place changes nothing and
/// the next round asks again from what was stored.
struct Batches<'a> {
    /// The last leader index applied by this round's batches.
    stored: u64,
    /// The last leader index handed to the group.
    proposed: u64,
    in_flight: FuturesOrdered<BoxFuture<'static, (usize, Option<Error>)>>,
    stats: &'a TableReplication,
}

impl Batches<'_> {
    fn applied(&mut self, (applied, failed): (usize, Option<Error>)) -> Result<(), String> {
        self.stored += applied as u64;
        self.stats.observe_stored(self.stored);
        match failed {
            Some(err) => Err(format!("proposing entry {}: {err}", self.stored + 1)),
            None => Ok(()),
        }
    }

    async fn drain(&mut self) -> Result<(), String> {
        while let Some(outcome) = self.in_flight.next().await {
            self.applied(outcome)?;
        }
        Ok(())
    }
}

/// The commands of `messages`, which must start at leader index `first`
/// and follow on, and how the round ends if one of them says so.
fn commands_of(
    stats: &TableReplication,
    messages: Vec<ReplicateResponse>,
    first: u64,
) -> Result<(Vec<Command>, Option<RoundEnd>), String> {
    let mut commands = Vec::new();
    for message in messages {
        stats.observe_leader(message.leader_index);
        match message.response {
            Some(Reply::ErrorResponse(error)) => {
                let end = if error.error == ReplicateError::UseSnapshot as i32 {
                    RoundEnd::UseSnapshot
                } else {
                    RoundEnd::LeaderBehind
                };
                return Ok((commands, Some(end)));
            }
            Some(Reply::CommandsResponse(batch)) => {
                for replicated in batch.commands {
                    let Some(command) = replicated.command else {
                        return Err(format!("entry {} has no command", replicated.leader_index));
                    };
                    let expected = first + commands.len() as u64;
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
    Ok((commands, None))
}
