//! The shared clock and record of a run: every client, the nemesis and the
//! final reads push into one history, stamped with microseconds since the
//! run began. Kept apart so the tasks that write into it depend only on this
//! small type, not on the run loop.

use std::sync::Mutex;
use std::time::Instant;

use super::checker::{Op, Outcome};
use super::history::Record;

/// Shared clock and record of a run.
pub(crate) struct Recorder {
    pub(super) started: Instant,
    pub(super) history: Mutex<Vec<Record>>,
}

impl Recorder {
    pub(crate) fn now(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Records `record`; returns its place in the history.
    pub(crate) fn push(&self, record: Record) -> usize {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.push(record);
        history.len() - 1
    }

    /// Turns the successful reads at `places` into failed ones: they were
    /// not answered by the system under test.
    pub(super) fn retract_reads(&self, places: &[usize], why: &str) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        for place in places {
            if let Some(Record::Op { op, error, .. }) = history.get_mut(*place) {
                if matches!(op, Op::Read(Outcome::Ok(_))) {
                    *op = Op::Read(Outcome::Failed);
                    *error = Some(why.to_string());
                }
            }
        }
    }
}

/// How a follower-cluster node refuses a write ("method Put not implemented
/// for follower", "writable Txn not implemented for follower").
pub(super) fn refused_as_on_a_follower(error: Option<&str>) -> bool {
    error.is_some_and(|error| error.starts_with("Unimplemented") && error.contains("for follower"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_at_an_address_that_turns_out_to_be_a_follower_node_are_retracted() {
        let recorder = Recorder {
            started: Instant::now(),
            history: Mutex::default(),
        };
        let read = |value| Record::Op {
            client: 0,
            key: 0,
            op: Op::Read(Outcome::Ok(Some(value))),
            invoked: 0,
            completed: 1,
            revision: None,
            answered_by: Some(1),
            error: None,
        };
        let places = [recorder.push(read(1)), recorder.push(read(2))];
        assert!(refused_as_on_a_follower(Some(
            "Unimplemented: method Put not implemented for follower"
        )));
        assert!(!refused_as_on_a_follower(Some(
            "Unavailable: tcp connect error"
        )));
        recorder.retract_reads(&places[1..], "a follower node");
        let history = recorder.history.lock().expect("history");
        assert!(matches!(
            &history[0],
            Record::Op {
                op: Op::Read(Outcome::Ok(_)),
                ..
            }
        ));
        assert!(matches!(
            &history[1],
            Record::Op { op: Op::Read(Outcome::Failed), error: Some(why), .. } if why == "a follower node"
        ));
    }
}
