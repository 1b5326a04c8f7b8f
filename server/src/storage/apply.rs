//! Applying one `mvcc.v1.Command` (`features/kv_*.feature`): computes the
//! responses and the writes, which the table then commits in one batch with
//! its applied index.

use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::response_op::{self, Response};
use regatta_proto::mvcc::v1::{Command, ResponseOp};

use super::encoding::Stored;
use super::error::Result;
use super::query::ResponseBudget;
use super::range::KeyRange;
use super::txn;
use super::view::{Overlay, View};

/// The data changes of one command.
#[derive(Debug, Default)]
pub struct Changes {
    /// Point writes, ascending; `None` deletes the key.
    pub writes: Vec<(Vec<u8>, Option<Stored>)>,
    /// A range removed wholesale (a large DELETE), as `[start, end)`; `None` end = unbounded.
    pub removed_span: Option<(Vec<u8>, Option<Vec<u8>>)>,
}

/// What applying a command produced.
#[derive(Debug, Default)]
pub struct Applied {
    pub responses: Vec<ResponseOp>,
    /// For a TXN: whether its compares held (the success branch ran).
    pub txn_succeeded: Option<bool>,
    /// Whether the command is a user write (moves the table's revision).
    pub is_write: bool,
    pub changes: Changes,
}

/// Above this many keys a DELETE of a range is written as one range
/// tombstone instead of a tombstone per key.
const RANGE_TOMBSTONE_THRESHOLD: usize = 64;

/// Computes what `command` does at `revision` against `view`.
///
/// Commands are validated by the API before they reach the log, so anything
/// malformed here (an unknown type, a PUT without a key) is applied as a
/// deterministic no-op that still counts as a write: every replica must reach
/// the same state.
pub fn apply(view: &impl View, command: &Command, revision: u64) -> Result<Applied> {
    if !is_write(command) {
        return Ok(Applied::default());
    }
    let mut overlay = Overlay::new(view);
    let mut step = Step {
        // A whole-range tombstone is written beside the overlay, so it may
        // only stand for a DELETE that is the command's only change.
        allow_span: true,
        ..Step::default()
    };
    apply_one(view, &mut overlay, command, revision, &mut step)?;
    Ok(Applied {
        responses: step.responses,
        txn_succeeded: step.txn_succeeded,
        is_write: true,
        changes: Changes {
            writes: overlay.into_writes().into_iter().collect(),
            removed_span: step.removed_span,
        },
    })
}

/// Whether `command` changes the table's revision: everything but a DUMMY,
/// and a SEQUENCE holding anything but DUMMYs.
fn is_write(command: &Command) -> bool {
    match CommandType::try_from(command.r#type) {
        Ok(CommandType::Dummy) => false,
        Ok(CommandType::Sequence) => command.sequence.iter().any(is_write),
        _ => true,
    }
}

/// What the commands applied so far produced.
#[derive(Default)]
struct Step {
    responses: Vec<ResponseOp>,
    txn_succeeded: Option<bool>,
    removed_span: Option<(Vec<u8>, Option<Vec<u8>>)>,
    allow_span: bool,
}

fn apply_one<V: View>(
    view: &V,
    overlay: &mut Overlay<'_, V>,
    command: &Command,
    revision: u64,
    step: &mut Step,
) -> Result<()> {
    match CommandType::try_from(command.r#type) {
        Ok(CommandType::Dummy) | Err(_) => {}
        Ok(CommandType::Put) => {
            let mut prev_kv = None;
            if let Some(kv) = command.kv.as_ref().filter(|kv| !kv.key.is_empty()) {
                prev_kv = txn::put_key(overlay, &kv.key, &kv.value, revision)?;
            }
            step.responses
                .push(put_response(prev_kv.filter(|_| command.prev_kvs)));
        }
        Ok(CommandType::Delete) => {
            let key = command
                .kv
                .as_ref()
                .map(|kv| kv.key.as_slice())
                .unwrap_or_default();
            let range = KeyRange::new(key, command.range_end.as_deref().unwrap_or_default());
            let (deleted, prev_kvs) = match &range {
                KeyRange::Span { start, end }
                    if step.allow_span && !command.prev_kvs && !range.is_empty() =>
                {
                    let count = count_keys(view, start, end.as_deref())?;
                    if count > RANGE_TOMBSTONE_THRESHOLD {
                        step.removed_span = Some((start.clone(), end.clone()));
                        (count, Vec::new())
                    } else {
                        (txn::delete_range(overlay, &range)?.len(), Vec::new())
                    }
                }
                _ if key.is_empty() => (0, Vec::new()),
                _ => {
                    let removed = txn::delete_range(overlay, &range)?;
                    let count = removed.len();
                    (
                        count,
                        if command.prev_kvs {
                            removed
                        } else {
                            Vec::new()
                        },
                    )
                }
            };
            step.responses.push(ResponseOp {
                response: Some(Response::ResponseDeleteRange(response_op::DeleteRange {
                    deleted: deleted as i64,
                    prev_kvs,
                })),
            });
        }
        Ok(CommandType::PutBatch) => {
            for kv in command.batch.iter().filter(|kv| !kv.key.is_empty()) {
                txn::put_key(overlay, &kv.key, &kv.value, revision)?;
                step.responses.push(put_response(None));
            }
        }
        Ok(CommandType::DeleteBatch) => {
            for kv in command.batch.iter().filter(|kv| !kv.key.is_empty()) {
                let removed = txn::delete_range(overlay, &KeyRange::Single(kv.key.clone()))?;
                step.responses.push(ResponseOp {
                    response: Some(Response::ResponseDeleteRange(response_op::DeleteRange {
                        deleted: removed.len() as i64,
                        prev_kvs: Vec::new(),
                    })),
                });
            }
        }
        Ok(CommandType::Txn) => {
            if let Some(request) = &command.txn {
                let outcome = txn::run(overlay, request, revision, &mut ResponseBudget::default())?;
                step.responses.extend(outcome.responses);
                step.txn_succeeded = Some(outcome.succeeded);
            }
        }
        Ok(CommandType::Sequence) => {
            // Regatta 0.5: the sub-commands in order, each seeing the ones
            // before it, as one step at one revision. Every change goes
            // through the overlay; nesting is bounded by prost's decoding
            // depth limit.
            step.allow_span = false;
            for sub in &command.sequence {
                apply_one(view, overlay, sub, revision, step)?;
            }
        }
    }
    Ok(())
}

fn put_response(prev_kv: Option<regatta_proto::mvcc::v1::KeyValue>) -> ResponseOp {
    ResponseOp {
        response: Some(Response::ResponsePut(response_op::Put { prev_kv })),
    }
}

fn count_keys(view: &impl View, start: &[u8], end: Option<&[u8]>) -> Result<usize> {
    let mut count = 0;
    for item in view.scan(start, end) {
        item?;
        count += 1;
    }
    Ok(count)
}
