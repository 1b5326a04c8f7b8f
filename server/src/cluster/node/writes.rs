//! Writes: proposed on the group's leader, here or forwarded to it, and
//! sent again only when they provably were not applied.

use std::time::{Duration, Instant};

use prost::Message;
use regatta_proto::mvcc::v1::{Command, CommandResult};

use super::{GroupInfo, Node, Written};
use crate::cluster::error::{Error, Result};
use crate::cluster::raft::group::{Group, GroupError};
use crate::cluster::raft::network::{CallError, Method};
use crate::cluster::raft::types::{Request, Response, RestoreStep};
use crate::cluster::table_name;

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
            .propose(&group, Request::Table(command.encode_to_vec()), timeout)
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
                    Err(GroupError::Unavailable(reason) | GroupError::NoQuorum(reason)) => {
                        return (done, Some(Error::Unavailable(reason)))
                    }
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

    /// Proposes one step of a restore of `table` (see `storage/restore.rs`);
    /// returns whether the restore it names was open when it applied.
    pub async fn restore(
        &self,
        table: &[u8],
        step: RestoreStep,
        timeout: Duration,
    ) -> Result<bool> {
        table_name::check_user_table(table)?;
        let group = self.table_group(table)?;
        let response = self
            .propose(&group, Request::Restore(step), timeout)
            .await?;
        Ok(response.restore_open.unwrap_or(false))
    }

    /// Proposes on the leader: locally, or forwarded once per attempt.
    /// Retries only when the request is known not to have been applied.
    pub(super) async fn propose(
        &self,
        group: &Group,
        request: Request,
        timeout: Duration,
    ) -> Result<Response> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Unavailable(
                    "no leader accepted the write in time".into(),
                ));
            }
            // A leader that lost its quorum never commits: bound the wait.
            let local = tokio::time::timeout(remaining, group.write_local(request.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(GroupError::Unavailable(
                        "write outcome unknown: not committed in time".into(),
                    ))
                });
            let leader = match local {
                Ok(response) => return Ok(response),
                Err(GroupError::Unavailable(reason) | GroupError::NoQuorum(reason)) => {
                    return Err(Error::Unavailable(reason))
                }
                Err(GroupError::NotLeader(leader)) => leader,
            };
            match leader {
                Some(leader) if leader != self.id() => {
                    let reply: std::result::Result<
                        std::result::Result<Response, GroupError>,
                        CallError,
                    > = tokio::select! {
                        reply = self
                            .peers
                            .call(leader, group.id, Method::Forward, &request, remaining) => reply,
                        // A new leader elsewhere: stop waiting for the old
                        // one (the client learns at once that the outcome is
                        // unknown, instead of at its deadline).
                        () = group.leader_moved_from(leader) => Err(CallError::Superseded(leader)),
                    };
                    match reply {
                        Ok(Ok(response)) => return Ok(response),
                        Ok(Err(GroupError::Unavailable(reason) | GroupError::NoQuorum(reason))) => {
                            return Err(Error::Unavailable(reason))
                        }
                        // Provably not applied there: the leader moved, or the
                        // request never reached it. Anything else (a lost
                        // connection after sending, a timeout) may have been
                        // applied, so it is not sent again.
                        Ok(Err(GroupError::NotLeader(_))) | Err(CallError::Unreachable(_)) => {
                            self.pause_for_leader(group, deadline).await;
                        }
                        Err(err) => {
                            return Err(Error::Unavailable(format!(
                                "write outcome unknown: {err}"
                            )));
                        }
                    }
                }
                _ => self.pause_for_leader(group, deadline).await,
            }
        }
    }

    pub(super) async fn pause_for_leader(&self, group: &Group, deadline: Instant) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let step = Duration::from_millis(self.config.heartbeat_interval).min(remaining);
        tokio::time::sleep(step).await;
        group
            .wait_leader(deadline.saturating_duration_since(Instant::now()))
            .await;
    }
}
