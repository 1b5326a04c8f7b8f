//! A run's history: operations and faults with their times (microseconds
//! since the run started), written as JSON lines, and the checks run on it
//! besides linearizability: no acknowledged write lost, revisions increasing
//! in the real-time order of acknowledged writes, every node ending in the
//! same state, and the recovery time after each heal.

use std::io::Write;

use serde_json::json;

use super::checker::{self, Op, Operation, Outcome};
use super::follower::{self, LeaderLog};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Kill,
    Pause,
    /// The nodes named are cut off from the others, together (2|1, 3|2).
    Isolate,
    /// The follower cluster is cut off from the leader cluster.
    CutOff,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub fault: Fault,
    pub nodes: Vec<usize>,
    pub at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Op {
        client: usize,
        key: u64,
        op: Op,
        invoked: u64,
        completed: u64,
        /// The revision an acknowledged write returned.
        revision: Option<i64>,
        /// The node that answered (the header's `replica_id`), when one did.
        answered_by: Option<u64>,
        /// Why the operation failed or is of unknown outcome: the gRPC code
        /// and message, or what the client saw instead.
        error: Option<String>,
    },
    /// A read of every key at once on a follower node (`values` is `None`
    /// when it failed).
    FollowerRead {
        client: usize,
        node: usize,
        linearizable: bool,
        values: Option<Vec<Option<u64>>>,
        invoked: u64,
        completed: u64,
    },
    Fault(Event),
    Heal(Event),
}

/// Everything a run recorded.
#[derive(Debug, Clone)]
pub struct History {
    pub records: Vec<Record>,
    /// Each node's final value of every key (after the last heal).
    pub final_values: Vec<Vec<Option<u64>>>,
    /// Each follower node's final value of every key (follower variant).
    pub follower_finals: Vec<Vec<Option<u64>>>,
    /// Times the follower cluster copied the table by snapshot (its nodes'
    /// `regatta_replication_snapshot_recoveries_total`), when known.
    pub follower_snapshot_recoveries: Option<u64>,
    pub clients: usize,
    pub nemesis: String,
    /// The leader's replication log as followed during the run (follower
    /// variant).
    pub leader_log: Option<LeaderLog>,
}

/// What the checks found.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    pub operations: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    pub linearizable: bool,
    pub anomalies: Vec<String>,
    /// Microseconds from each heal on the leader side to the next
    /// acknowledged write.
    pub recoveries: Vec<u64>,
    /// Microseconds from each fault on the leader side to the first
    /// acknowledged write invoked after it (how long writes stalled).
    pub failovers: Vec<u64>,
    /// Follower variant: reads on follower nodes, and those that answered.
    pub follower_reads: usize,
    pub follower_reads_ok: usize,
    pub follower_snapshot_recoveries: Option<u64>,
    /// Why the run could not be checked in full, if so.
    pub unchecked: Option<String>,
}

fn outcome_name<T>(outcome: &Outcome<T>) -> &'static str {
    match outcome {
        Outcome::Ok(_) => "ok",
        Outcome::Failed => "failed",
        Outcome::Unknown => "unknown",
    }
}

pub fn op_outcome(op: &Op) -> &'static str {
    match op {
        Op::Read(outcome) => outcome_name(outcome),
        Op::Write(_, outcome) => outcome_name(outcome),
        Op::Cas { outcome, .. } => outcome_name(outcome),
    }
}

fn fault_name(fault: Fault) -> &'static str {
    match fault {
        Fault::Kill => "kill",
        Fault::Pause => "pause",
        Fault::Isolate => "isolate",
        Fault::CutOff => "cut-off",
    }
}

impl History {
    /// One JSON object per line, in recording order.
    pub fn write_jsonl(&self, out: &mut impl Write) -> std::io::Result<()> {
        for record in &self.records {
            let line = match record {
                Record::Op {
                    client,
                    key,
                    op,
                    invoked,
                    completed,
                    revision,
                    answered_by,
                    error,
                } => {
                    let (kind, detail) = match op {
                        Op::Read(Outcome::Ok(value)) => ("read", json!({"value": value})),
                        Op::Read(_) => ("read", json!({})),
                        Op::Write(value, _) => ("write", json!({"value": value})),
                        Op::Cas {
                            expected,
                            new,
                            outcome,
                        } => (
                            "cas",
                            json!({"expected": expected, "new": new,
                                   "swapped": match outcome { Outcome::Ok(s) => Some(*s), _ => None }}),
                        ),
                    };
                    json!({"type": "op", "client": client, "key": key, "f": kind,
                           "outcome": op_outcome(op), "invoked_us": invoked,
                           "completed_us": completed, "revision": revision, "detail": detail,
                           "answered_by": answered_by, "error": error})
                }
                Record::FollowerRead {
                    client,
                    node,
                    linearizable,
                    values,
                    invoked,
                    completed,
                } => json!({"type": "follower-read", "client": client, "node": node,
                            "linearizable": linearizable,
                            "outcome": if values.is_some() { "ok" } else { "failed" },
                            "values": values, "invoked_us": invoked, "completed_us": completed}),
                Record::Fault(event) | Record::Heal(event) => json!({
                    "type": if matches!(record, Record::Fault(_)) { "fault" } else { "heal" },
                    "fault": fault_name(event.fault), "nodes": event.nodes, "at_us": event.at,
                }),
            };
            writeln!(out, "{line}")?;
        }
        if let Some(log) = &self.leader_log {
            for entry in &log.entries {
                let (key, value) = entry.change.unzip();
                let line = json!({"type": "leader-log", "index": entry.index,
                                  "key": key, "value": value});
                writeln!(out, "{line}")?;
            }
        }
        for (n, values) in self.follower_finals.iter().enumerate() {
            let line = json!({"type": "follower-final", "node": n + 1, "values": values});
            writeln!(out, "{line}")?;
        }
        Ok(())
    }

    pub fn operations(&self) -> Vec<Operation> {
        self.records
            .iter()
            .filter_map(|record| match record {
                Record::Op {
                    key,
                    op,
                    invoked,
                    completed,
                    ..
                } => Some(Operation {
                    key: *key,
                    op: op.clone(),
                    invoked: *invoked,
                    completed: *completed,
                }),
                _ => None,
            })
            .collect()
    }

    /// Runs every check.
    pub fn analyse(&self, budget: u64) -> Analysis {
        let mut analysis = Analysis::default();
        for record in &self.records {
            match record {
                Record::Op { op, .. } => {
                    analysis.operations += 1;
                    match op_outcome(op) {
                        "ok" => analysis.ok += 1,
                        "failed" => analysis.failed += 1,
                        _ => analysis.unknown += 1,
                    }
                }
                Record::FollowerRead { values, .. } => {
                    analysis.follower_reads += 1;
                    analysis.follower_reads_ok += usize::from(values.is_some());
                }
                _ => {}
            }
        }
        let verdict = checker::check(&self.operations(), budget);
        analysis.linearizable = verdict.linearizable();
        for key in &verdict.bad_keys {
            analysis
                .anomalies
                .push(format!("key {key}: the history is not linearizable"));
        }
        for key in &verdict.undecided_keys {
            analysis.anomalies.push(format!(
                "key {key}: the checker ran out of budget (undecided)"
            ));
        }
        analysis.anomalies.extend(self.lost_writes());
        analysis.anomalies.extend(self.revision_order());
        if let Some(first) = self.final_values.first() {
            for (n, values) in self.final_values.iter().enumerate().skip(1) {
                if values != first {
                    analysis.anomalies.push(format!(
                        "node {} ended with {values:?}, node 1 with {first:?}",
                        n + 1
                    ));
                }
            }
        }
        if let Some(log) = &self.leader_log {
            match &log.lost {
                Some(lost) => analysis.unchecked = Some(lost.clone()),
                None => analysis.anomalies.extend(follower::check(self, log)),
            }
        }
        analysis.recoveries = self.recoveries();
        analysis.failovers = self.failovers();
        analysis.follower_snapshot_recoveries = self.follower_snapshot_recoveries;
        analysis
    }

    /// An acknowledged write is lost when every node ends with an older
    /// value: one written by an acknowledged operation that completed before
    /// the write was even invoked (values are unique), or no value at all.
    /// (Linearizability with the final reads implies this; stated on its own
    /// it names the write.)
    fn lost_writes(&self) -> Vec<String> {
        let Some(finals) = self.final_values.first() else {
            return Vec::new();
        };
        let acknowledged = |record: &Record| -> Option<(u64, u64, u64, u64)> {
            match record {
                Record::Op {
                    key,
                    op: Op::Write(value, Outcome::Ok(())),
                    invoked,
                    completed,
                    ..
                } => Some((*key, *value, *invoked, *completed)),
                Record::Op {
                    key,
                    op:
                        Op::Cas {
                            new,
                            outcome: Outcome::Ok(true),
                            ..
                        },
                    invoked,
                    completed,
                    ..
                } => Some((*key, *new, *invoked, *completed)),
                _ => None,
            }
        };
        let writes: Vec<(u64, u64, u64, u64)> =
            self.records.iter().filter_map(acknowledged).collect();
        let mut anomalies = Vec::new();
        for &(key, value, invoked, _) in &writes {
            let last = finals.get(key as usize).copied().flatten();
            let older = match last {
                None => true,
                Some(last) => writes
                    .iter()
                    .any(|&(k, v, _, completed)| k == key && v == last && completed < invoked),
            };
            if older {
                anomalies.push(format!(
                    "key {key}: the acknowledged write of {value} is lost: every node ends with {last:?}, written before it"
                ));
            }
        }
        anomalies
    }

    /// Acknowledged writes that did not overlap in time must have increasing revisions.
    fn revision_order(&self) -> Vec<String> {
        let mut writes: Vec<(u64, u64, i64)> = self
            .records
            .iter()
            .filter_map(|record| match record {
                Record::Op {
                    invoked,
                    completed,
                    revision: Some(revision),
                    ..
                } => Some((*invoked, *completed, *revision)),
                _ => None,
            })
            .collect();
        writes.sort_unstable_by_key(|w| w.1);
        let mut anomalies = Vec::new();
        // The highest revision among writes completed before each invocation.
        let mut by_invocation = writes.clone();
        by_invocation.sort_unstable_by_key(|w| w.0);
        let mut done = 0;
        let mut highest = i64::MIN;
        for (invoked, completed, revision) in by_invocation {
            while done < writes.len() && writes[done].1 < invoked {
                highest = highest.max(writes[done].2);
                done += 1;
            }
            if revision <= highest {
                anomalies.push(format!(
                    "a write acknowledged with revision {revision} (at {completed} µs) was invoked after one acknowledged with revision {highest}"
                ));
            }
        }
        anomalies
    }

    /// From each fault to the first acknowledged write invoked after it.
    fn failovers(&self) -> Vec<u64> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::Fault(event) if event.fault != Fault::CutOff => Some(event.at),
                _ => None,
            })
            .filter_map(|fault| {
                self.records
                    .iter()
                    .filter_map(|r| match r {
                        Record::Op {
                            op: Op::Write(_, Outcome::Ok(())),
                            invoked,
                            completed,
                            ..
                        } if *invoked >= fault => Some(*completed - fault),
                        _ => None,
                    })
                    .min()
            })
            .collect()
    }

    /// From each heal to the first acknowledged write completed after it.
    fn recoveries(&self) -> Vec<u64> {
        let heals: Vec<u64> = self
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Heal(event) if event.fault != Fault::CutOff => Some(event.at),
                _ => None,
            })
            .collect();
        heals
            .iter()
            .filter_map(|&healed| {
                self.records
                    .iter()
                    .filter_map(|r| match r {
                        Record::Op {
                            op: Op::Write(_, Outcome::Ok(())),
                            completed,
                            ..
                        } if *completed >= healed => Some(*completed - healed),
                        _ => None,
                    })
                    .min()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: u64, value: u64, invoked: u64, completed: u64, revision: i64) -> Record {
        Record::Op {
            client: 0,
            key,
            op: Op::Write(value, Outcome::Ok(())),
            invoked,
            completed,
            revision: Some(revision),
            answered_by: None,
            error: None,
        }
    }

    fn history(records: Vec<Record>, finals: Vec<Vec<Option<u64>>>) -> History {
        History {
            records,
            final_values: finals,
            follower_finals: Vec::new(),
            follower_snapshot_recoveries: None,
            clients: 1,
            nemesis: "test".into(),
            leader_log: None,
        }
    }

    #[test]
    fn a_lost_last_write_and_diverging_nodes_are_reported() {
        let h = history(
            vec![write(0, 1, 0, 10, 5), write(0, 2, 20, 30, 6)],
            vec![vec![Some(1)], vec![Some(2)]],
        );
        let analysis = h.analyse(100_000);
        assert!(
            analysis.anomalies.iter().any(|a| a.contains("is lost")),
            "{:?}",
            analysis.anomalies
        );
        assert!(
            analysis.anomalies.iter().any(|a| a.contains("ended with")),
            "{:?}",
            analysis.anomalies
        );
    }

    #[test]
    fn the_history_names_the_answering_node_and_the_error_of_each_operation() {
        let refused = Record::Op {
            client: 3,
            key: 1,
            op: Op::Write(9, Outcome::Failed),
            invoked: 5,
            completed: 6,
            revision: None,
            answered_by: None,
            error: Some("Unimplemented: writes go to the leader cluster".into()),
        };
        let read = Record::Op {
            client: 3,
            key: 1,
            op: Op::Read(Outcome::Ok(Some(4))),
            invoked: 7,
            completed: 8,
            revision: None,
            answered_by: Some(2),
            error: None,
        };
        let mut out = Vec::new();
        history(vec![refused, read], vec![vec![Some(4)]])
            .write_jsonl(&mut out)
            .expect("written");
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("json"))
            .collect();
        assert_eq!(
            lines[0]["error"],
            "Unimplemented: writes go to the leader cluster"
        );
        assert_eq!(lines[0]["answered_by"], serde_json::Value::Null);
        assert_eq!(lines[1]["answered_by"], 2);
        assert_eq!(lines[1]["error"], serde_json::Value::Null);
    }

    #[test]
    fn revisions_must_grow_with_real_time() {
        let h = history(
            vec![write(0, 1, 0, 10, 7), write(1, 2, 20, 30, 6)],
            vec![vec![Some(1), Some(2)]],
        );
        let analysis = h.analyse(100_000);
        assert!(
            analysis.anomalies.iter().any(|a| a.contains("revision 6")),
            "{:?}",
            analysis.anomalies
        );
        let good = history(
            vec![
                write(0, 1, 0, 10, 6),
                write(1, 2, 5, 30, 5),
                write(0, 3, 40, 50, 9),
            ],
            vec![vec![Some(3), Some(2)]],
        );
        assert!(good.analyse(100_000).anomalies.is_empty());
    }

    #[test]
    fn recovery_is_the_time_from_heal_to_the_next_acknowledged_write() {
        let h = history(
            vec![
                Record::Heal(Event {
                    fault: Fault::Kill,
                    nodes: vec![1],
                    at: 100,
                }),
                write(0, 1, 90, 350, 3),
                write(0, 2, 360, 400, 4),
            ],
            vec![vec![Some(2)]],
        );
        assert_eq!(h.analyse(1000).recoveries, vec![250]);
        let mut out = Vec::new();
        h.write_jsonl(&mut out).expect("jsonl");
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["type"], "heal");
        assert_eq!(lines[1]["outcome"], "ok");
    }
}
