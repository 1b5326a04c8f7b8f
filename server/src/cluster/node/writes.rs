//! Writes: proposed on the group's leader, here or forwarded to it, and
//! sent again only when they provably were not applied.

use std::time::{Duration, Instant};

use prost::Message;
use regatta_proto::mvcc::v1::{Command, CommandResult};

use super::{GroupInfo, Node, Written};
use crate::cluster::error::{Error, Result};
use crate::cluster::raft::group::{Group, GroupError};
use crate::cluster::raft::network::CallError;
use crate::cluster::raft::types::{Request, Response, RestoreStep};
use crate::cluster::table_name;

/// Whether a write may be sent again after an attempt of unknown outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resend {
    /// Only attempts provably not applied are made again: a second apply
    /// would be a second write (Put, Txn, restore steps).
    IfNotApplied,
    /// Applying it twice has the effect of applying it once (creating a
    /// table if absent, deleting it if present).
    Idempotent,
}

/// How one attempt at a write ended.
enum Attempt {
    Applied(Response),
    /// Refused or never delivered: certainly not applied; why, when it is
    /// worth telling the client should every attempt end so.
    NotApplied(Option<String>),
    /// It may or may not have been applied; why.
    Unknown(String),
    /// Refused for good (the leader's disk is full): not applied, and not
    /// to be sent again now.
    Refused(Error),
}

impl Node {
    /// Writes a command to a table, on whichever node leads its group.
    pub async fn write(
        &self,
        table: &[u8],
        command: &Command,
        timeout: Duration,
    ) -> Result<(Written, GroupInfo)> {
        let group = self.table_group(table)?;
        let response = self
            .propose(
                &group,
                Request::Table(command.encode_to_vec()),
                timeout,
                Resend::IfNotApplied,
            )
            .await?;
        let result = CommandResult::decode(response.command_result.as_slice())
            .map_err(|err| Error::Unavailable(format!("undecodable result: {err}")))?;
        Ok((
            Written {
                result,
                txn_succeeded: response.txn_succeeded,
            },
            self.group_info(&group),
        ))
    }

    /// Writes `commands` to a table in order and answers how many were
    /// applied, with the reason when that is not all of them. When this
    /// node leads the table's group they go to the Raft core in one message
    /// and become consecutive entries appended together; otherwise (or
    /// after a leader change) the rest go one at a time through `write`.
    /// Callers must tolerate a command applied twice after an error (the
    /// follower cluster's commands carry their leader index, which makes a
    /// second apply a no-op).
    pub async fn write_many(
        &self,
        table: &[u8],
        commands: &[Command],
        timeout: Duration,
    ) -> (usize, Option<Error>) {
        let group = match self.table_group(table) {
            Ok(group) => group,
            Err(err) => return (0, Some(err)),
        };
        let mut done = 0;
        if commands.len() > 1 && group.leader() == Some(self.id()) {
            let requests = commands
                .iter()
                .map(|command| Request::Table(command.encode_to_vec()))
                .collect();
            let Ok(answers) = tokio::time::timeout(timeout, group.write_local_many(requests)).await
            else {
                return (
                    0,
                    Some(Error::Unavailable(
                        "write outcome unknown: not committed in time".into(),
                    )),
                );
            };
            for answer in answers {
                match answer {
                    Ok(_) => done += 1,
                    // Refused before appending: the rest go the slow way.
                    Err(GroupError::NotLeader(_)) => break,
                    Err(err) => return (done, Some(write_error(err))),
                }
            }
        }
        for command in &commands[done..] {
            if let Err(err) = self.write(table, command, timeout).await {
                return (done, Some(err));
            }
            done += 1;
        }
        (done, None)
    }

    /// Hands `commands` to the table's group as consecutive entries when
    /// this node leads it, and returns once they are handed over, with how
    /// many were applied still to come (as `write_many` answers it). Batches
    /// handed over one after another are appended in that order, so the
    /// caller may hand over the next before this one is durable. `None`
    /// when this node does not lead the group: nothing was handed over, use
    /// `write_many`.
    pub async fn submit_many(
        &self,
        table: &[u8],
        commands: &[Command],
    ) -> Option<Result<impl std::future::Future<Output = (usize, Option<Error>)> + 'static>> {
        let group = self.table_group(table).ok()?;
        if group.leader() != Some(self.id()) {
            return None;
        }
        let requests = commands
            .iter()
            .map(|command| Request::Table(command.encode_to_vec()))
            .collect();
        let pending = match group.submit_local_many(requests).await {
            Ok(pending) => pending,
            Err(GroupError::NotLeader(_)) => return None,
            Err(err) => return Some(Err(write_error(err))),
        };
        Some(Ok(async move {
            let mut done = 0;
            for answer in pending.answers().await {
                match answer {
                    Ok(_) => done += 1,
                    Err(err) => return (done, Some(write_error(err))),
                }
            }
            (done, None)
        }))
    }

    /// Proposes one step of a restore of `table` (see `storage/restore.rs`);
    /// returns whether the restore it names was open when it applied.
    pub async fn restore(
        &self,
        table: &[u8],
        step: RestoreStep,
        timeout: Duration,
    ) -> Result<bool> {
        table_name::check(table)?;
        let group = self.table_group(table)?;
        let response = self
            .propose(
                &group,
                Request::Restore(step),
                timeout,
                Resend::IfNotApplied,
            )
            .await?;
        Ok(response.restore_open.unwrap_or(false))
    }

    /// Proposes on the leader, here or forwarded, until it is applied, or
    /// until an attempt's outcome is unknown and `resend` forbids another,
    /// or until `timeout`. An attempt provably not applied (no leader here,
    /// the leader refused it, the connection was never made) is always made
    /// again.
    pub(super) async fn propose(
        &self,
        group: &Group,
        request: Request,
        timeout: Duration,
        resend: Resend,
    ) -> Result<Response> {
        let deadline = Instant::now() + timeout;
        let mut last_failure = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Unavailable(last_failure.unwrap_or_else(|| {
                    "no leader accepted the write in time".to_string()
                })));
            }
            match self.propose_once(group, &request, remaining).await {
                Attempt::Applied(response) => return Ok(response),
                Attempt::Refused(err) => return Err(err),
                Attempt::NotApplied(reason) => {
                    if reason.is_some() {
                        last_failure = reason;
                    }
                }
                Attempt::Unknown(reason) => match resend {
                    Resend::IfNotApplied => return Err(Error::Unavailable(reason)),
                    Resend::Idempotent => {
                        tracing::debug!(%reason, "idempotent write not applied yet; sending it again");
                        last_failure = Some(reason);
                    }
                },
            }
            self.pause_for_leader(group, deadline).await;
        }
    }

    /// One attempt: here when this node leads, otherwise forwarded to the
    /// leader it knows of.
    async fn propose_once(&self, group: &Group, request: &Request, remaining: Duration) -> Attempt {
        // Another node leads, as far as this one knows: straight to it,
        // without asking the Raft core here first (a hop on every
        // forwarded write). Should it no longer lead, it refuses and the
        // next attempt starts over.
        let known = group.leader().filter(|leader| *leader != self.id());
        let local = match known {
            Some(leader) => Err(GroupError::NotLeader(Some(leader))),
            // A leader that lost its quorum never commits: bound the wait.
            None => tokio::time::timeout(remaining, group.write_local(request.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(GroupError::Unavailable(
                        "write outcome unknown: not committed in time".into(),
                    ))
                }),
        };
        let leader = match local {
            Ok(response) => return Attempt::Applied(response),
            // The leader could not renew its lease, so the write never
            // reached the Raft core: a later attempt (once the peers
            // answer again, say after a moment of load) may succeed.
            Err(GroupError::NoQuorum(reason)) => return Attempt::NotApplied(Some(reason)),
            Err(GroupError::Unavailable(reason)) => return Attempt::Unknown(reason),
            Err(GroupError::NoSpace(reason)) => return Attempt::Refused(Error::NoSpace(reason)),
            Err(GroupError::NotLeader(leader)) => leader,
        };
        let Some(leader) = leader.filter(|leader| *leader != self.id()) else {
            return Attempt::NotApplied(None);
        };
        let reply: std::result::Result<std::result::Result<Response, GroupError>, CallError> = tokio::select! {
            // Batched with the other writes queued for it
            // (`raft/forward_batch.rs`).
            reply = group.forwards.forward(leader, request.clone(), remaining) => reply,
            // A new leader elsewhere: stop waiting for the old one (the
            // client learns at once that the outcome is unknown, instead
            // of at its deadline).
            () = group.leader_moved_from(leader) => Err(CallError::Superseded(leader)),
        };
        match reply {
            Ok(Ok(response)) => Attempt::Applied(response),
            Ok(Err(GroupError::NoQuorum(reason))) => Attempt::NotApplied(Some(reason)),
            Ok(Err(GroupError::Unavailable(reason))) => Attempt::Unknown(reason),
            Ok(Err(GroupError::NoSpace(reason))) => Attempt::Refused(Error::NoSpace(reason)),
            // Provably not applied there: the leader moved, or the request
            // never reached it. Anything else (a lost connection after
            // sending, a timeout) may have been applied.
            Ok(Err(GroupError::NotLeader(_))) | Err(CallError::Unreachable(_)) => {
                Attempt::NotApplied(None)
            }
            Err(err) => Attempt::Unknown(format!("write outcome unknown: {err}")),
        }
    }

    pub(super) async fn pause_for_leader(&self, group: &Group, deadline: Instant) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let step = self.timing.heartbeat().min(remaining);
        tokio::time::sleep(step).await;
        group
            .wait_leader(deadline.saturating_duration_since(Instant::now()))
            .await;
    }
}

/// A refused or failed batch entry as the cluster layer's error.
fn write_error(err: GroupError) -> Error {
    match err {
        GroupError::NotLeader(_) => {
            Error::Unavailable("the table's group changed leader; not applied".into())
        }
        GroupError::Unavailable(reason) | GroupError::NoQuorum(reason) => {
            Error::Unavailable(reason)
        }
        GroupError::NoSpace(reason) => Error::NoSpace(reason),
    }
}
