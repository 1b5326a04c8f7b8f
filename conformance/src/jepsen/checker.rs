//! A linearizability checker for per-key registers with read, write and
//! compare-and-set, after Wing & Gong with the memoisation of Lowe (the
//! algorithm Porcupine uses): events in time order in a linked list; take a
//! pending call whose model step is legal, remember `(linearized set, state)`
//! to prune repeats, and backtrack when a return is reached whose call has not
//! been linearized. Keys are independent registers, so each key is checked on
//! its own (P-compositionality).
//!
//! Outcomes: `Ok` operations have their observed result; `Failed` ones are
//! known not to have happened and are dropped; `Unknown` ones (timeouts, lost
//! replies) may or may not have happened: they never return (return time = ∞),
//! so they can take effect at any point after their call or never (linearized
//! after everything else). An unknown read has no effect and is dropped.

use std::collections::{BTreeMap, HashSet};

/// What an operation did, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    Ok(T),
    Failed,
    Unknown,
}

/// An operation on one key's register. Values are `Option<u64>`: `None` is
/// "no value" (the key is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A read and the value it returned.
    Read(Outcome<Option<u64>>),
    Write(u64, Outcome<()>),
    /// If the value is `expected`, set `new`; the outcome says whether it swapped.
    Cas {
        expected: u64,
        new: u64,
        outcome: Outcome<bool>,
    },
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub key: u64,
    pub op: Op,
    /// Invocation time (any monotonic unit).
    pub invoked: u64,
    /// Completion time; ignored for unknown outcomes.
    pub completed: u64,
}

/// The verdict for a whole history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Keys whose history is not linearizable.
    pub bad_keys: Vec<u64>,
    /// Keys given up on after `budget` search steps (neither proven nor refuted).
    pub undecided_keys: Vec<u64>,
}

impl Verdict {
    pub fn linearizable(&self) -> bool {
        self.bad_keys.is_empty() && self.undecided_keys.is_empty()
    }
}

/// Checks every key of `history`; each key gets at most `budget` steps.
pub fn check(history: &[Operation], budget: u64) -> Verdict {
    let mut per_key: BTreeMap<u64, Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        per_key.entry(operation.key).or_default().push(operation);
    }
    let mut verdict = Verdict {
        bad_keys: Vec::new(),
        undecided_keys: Vec::new(),
    };
    for (key, operations) in per_key {
        match check_key(&operations, budget) {
            Some(true) => {}
            Some(false) => verdict.bad_keys.push(key),
            None => verdict.undecided_keys.push(key),
        }
    }
    verdict
}

/// What the search linearizes: the kept operations of one key.
struct Kept {
    op: Op,
    invoked: u64,
    /// `None`: never returns (unknown outcome).
    completed: Option<u64>,
}

fn keep(operation: &Operation) -> Option<Kept> {
    let completed = match &operation.op {
        Op::Read(Outcome::Failed | Outcome::Unknown)
        | Op::Write(_, Outcome::Failed)
        | Op::Cas {
            outcome: Outcome::Failed,
            ..
        } => return None,
        Op::Write(_, Outcome::Unknown)
        | Op::Cas {
            outcome: Outcome::Unknown,
            ..
        } => None,
        _ => Some(operation.completed),
    };
    Some(Kept {
        op: operation.op.clone(),
        invoked: operation.invoked,
        completed,
    })
}

/// The register's next state if `op` may take effect in `state`.
fn step(state: Option<u64>, op: &Op) -> Option<Option<u64>> {
    match op {
        Op::Read(Outcome::Ok(value)) => (*value == state).then_some(state),
        Op::Read(_) => Some(state),
        Op::Write(value, _) => Some(Some(*value)),
        Op::Cas {
            expected,
            new,
            outcome,
        } => {
            let holds = state == Some(*expected);
            match outcome {
                Outcome::Ok(true) => holds.then_some(Some(*new)),
                Outcome::Ok(false) => (!holds).then_some(state),
                // It happened (and then swapped iff it held) or never did.
                _ => Some(if holds { Some(*new) } else { state }),
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
    /// For a call: its return event (`NONE` for an unknown outcome).
    partner: usize,
}

const NONE: usize = usize::MAX;
const HEAD: usize = 0;

/// `Some(linearizable)`, or `None` when `budget` ran out.
fn check_key(operations: &[&Operation], budget: u64) -> Option<bool> {
    let kept: Vec<Kept> = operations.iter().filter_map(|o| keep(o)).collect();
    if kept.is_empty() {
        return Some(true);
    }
    // (time, is_return, op): calls before returns at the same time, so
    // operations touching one instant are treated as concurrent.
    let mut times: Vec<(u64, bool, usize)> = Vec::new();
    for (i, k) in kept.iter().enumerate() {
        times.push((k.invoked, false, i));
        if let Some(completed) = k.completed {
            times.push((completed.max(k.invoked), true, i));
        }
    }
    times.sort_unstable();
    // events[0] is the list head; real events from 1.
    let mut events = vec![Event {
        op: NONE,
        is_call: false,
        prev: NONE,
        next: NONE,
        partner: NONE,
    }];
    let mut call_of = vec![NONE; kept.len()];
    for &(_, is_return, op) in &times {
        let index = events.len();
        events.push(Event {
            op,
            is_call: !is_return,
            prev: index - 1,
            next: NONE,
            partner: NONE,
        });
        events[index - 1].next = index;
        if is_return {
            let call = call_of[op];
            events[call].partner = index;
        } else {
            call_of[op] = index;
        }
    }

    let words = kept.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut state: Option<u64> = None;
    let mut entry = events[HEAD].next;
    let mut steps = 0u64;

    let lift = |events: &mut Vec<Event>, call: usize| {
        let (prev, next) = (events[call].prev, events[call].next);
        events[prev].next = next;
        if next != NONE {
            events[next].prev = prev;
        }
        let ret = events[call].partner;
        if ret != NONE {
            let (prev, next) = (events[ret].prev, events[ret].next);
            events[prev].next = next;
            if next != NONE {
                events[next].prev = prev;
            }
        }
    };
    let unlift = |events: &mut Vec<Event>, call: usize| {
        let ret = events[call].partner;
        if ret != NONE {
            let (prev, next) = (events[ret].prev, events[ret].next);
            events[prev].next = ret;
            if next != NONE {
                events[next].prev = ret;
            }
        }
        let (prev, next) = (events[call].prev, events[call].next);
        events[prev].next = call;
        if next != NONE {
            events[next].prev = call;
        }
    };

    while events[HEAD].next != NONE {
        steps += 1;
        if steps > budget {
            return None;
        }
        if entry == NONE {
            // Only calls that never return are left: linearize them last
            // (or as never having happened); nothing observed contradicts.
            return Some(true);
        }
        let event = events[entry];
        if event.is_call {
            let op = event.op;
            if let Some(next_state) = step(state, &kept[op].op) {
                let mut next_set = linearized.clone();
                next_set[op / 64] |= 1 << (op % 64);
                if seen.insert((next_set.clone(), next_state)) {
                    stack.push((entry, state));
                    state = next_state;
                    linearized = next_set;
                    lift(&mut events, entry);
                    entry = events[HEAD].next;
                    continue;
                }
            }
            entry = event.next;
        } else {
            // A return whose call is still pending: undo the last choice.
            let Some((call, previous)) = stack.pop() else {
                return Some(false);
            };
            state = previous;
            let op = events[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut events, call);
            entry = events[call].next;
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: u64, op: Op, invoked: u64, completed: u64) -> Operation {
        Operation {
            key,
            op,
            invoked,
            completed,
        }
    }
    fn read(v: Option<u64>) -> Op {
        Op::Read(Outcome::Ok(v))
    }
    fn write(v: u64) -> Op {
        Op::Write(v, Outcome::Ok(()))
    }
    fn cas(expected: u64, new: u64, swapped: bool) -> Op {
        Op::Cas {
            expected,
            new,
            outcome: Outcome::Ok(swapped),
        }
    }
    fn ok(history: &[Operation]) -> bool {
        let verdict = check(history, 1_000_000);
        assert!(verdict.undecided_keys.is_empty());
        verdict.linearizable()
    }

    #[test]
    fn sequential_histories() {
        assert!(ok(&[op(1, write(1), 0, 1), op(1, read(Some(1)), 2, 3)]));
        assert!(ok(&[op(1, read(None), 0, 1)]));
        assert!(
            !ok(&[op(1, write(1), 0, 1), op(1, read(None), 2, 3)]),
            "stale read"
        );
        assert!(!ok(&[op(1, read(Some(5)), 0, 1)]), "a value nobody wrote");
        assert!(!ok(&[
            op(1, write(1), 0, 1),
            op(1, write(2), 2, 3),
            op(1, read(Some(1)), 4, 5)
        ]));
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        // The read overlaps the write: old or new value are both fine.
        assert!(ok(&[op(1, write(1), 0, 10), op(1, read(None), 1, 2)]));
        assert!(ok(&[op(1, write(1), 0, 10), op(1, read(Some(1)), 1, 2)]));
        // But two sequential reads cannot go back in time.
        assert!(!ok(&[
            op(1, write(1), 0, 10),
            op(1, read(Some(1)), 1, 2),
            op(1, read(None), 3, 4)
        ]));
    }

    #[test]
    fn compare_and_set_must_agree_with_the_state() {
        assert!(ok(&[
            op(1, write(1), 0, 1),
            op(1, cas(1, 2, true), 2, 3),
            op(1, read(Some(2)), 4, 5)
        ]));
        assert!(
            !ok(&[op(1, write(1), 0, 1), op(1, cas(1, 2, false), 2, 3)]),
            "a CAS that should have swapped"
        );
        assert!(
            !ok(&[op(1, write(1), 0, 1), op(1, cas(3, 2, true), 2, 3)]),
            "a CAS that should have failed"
        );
        // Two CAS from the same value, sequential: only one can swap.
        assert!(!ok(&[
            op(1, write(1), 0, 1),
            op(1, cas(1, 2, true), 2, 3),
            op(1, cas(1, 3, true), 4, 5)
        ]));
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_have_happened() {
        let unknown_write = |v| Op::Write(v, Outcome::Unknown);
        // Took effect later...
        assert!(ok(&[
            op(1, unknown_write(1), 0, 0),
            op(1, read(Some(1)), 5, 6)
        ]));
        // ...or never.
        assert!(ok(&[
            op(1, unknown_write(1), 0, 0),
            op(1, read(None), 5, 6)
        ]));
        // But not before it was invoked.
        assert!(!ok(&[
            op(1, read(Some(1)), 0, 1),
            op(1, unknown_write(1), 5, 0)
        ]));
        // Failed operations did not happen.
        assert!(!ok(&[
            op(1, Op::Write(1, Outcome::Failed), 0, 1),
            op(1, read(Some(1)), 5, 6)
        ]));
        // An unknown CAS can explain a value.
        let unknown_cas = Op::Cas {
            expected: 1,
            new: 2,
            outcome: Outcome::Unknown,
        };
        assert!(ok(&[
            op(1, write(1), 0, 1),
            op(1, unknown_cas, 2, 0),
            op(1, read(Some(2)), 10, 11),
            op(1, read(Some(2)), 12, 13)
        ]));
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        // Acknowledged write of 2, then reads see 1 again: the write was lost.
        assert!(!ok(&[
            op(1, write(1), 0, 1),
            op(1, write(2), 2, 3),
            op(1, read(Some(2)), 4, 5),
            op(1, read(Some(1)), 6, 7)
        ]));
    }

    #[test]
    fn keys_are_independent_and_reported() {
        let verdict = check(
            &[
                op(1, write(1), 0, 1),
                op(1, read(Some(1)), 2, 3),
                op(2, write(7), 0, 1),
                op(2, read(None), 2, 3),
            ],
            1_000,
        );
        assert_eq!(verdict.bad_keys, vec![2]);
    }

    #[test]
    fn many_concurrent_clients_check_quickly() {
        // 10 clients, 2,000 operations, each read returns the latest write
        // completed before it started or any overlapping one.
        let mut history = Vec::new();
        let mut t = 0u64;
        for round in 0..200u64 {
            let value = round + 1;
            history.push(op(1, write(value), t, t + 10));
            for client in 0..9 {
                history.push(op(1, read(Some(value)), t + 11 + client, t + 30));
            }
            t += 40;
        }
        let verdict = check(&history, 10_000_000);
        assert!(verdict.linearizable(), "{verdict:?}");
    }
}
