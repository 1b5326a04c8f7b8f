//! Transactions and the write commands built from the same parts
//! (`features/kv_txn.feature`, `kv_put.feature`, `kv_delete_range.feature`),
//! evaluated over an [`Overlay`] so every op sees the effects of the ops
//! before it.

use regatta_proto::mvcc::v1::compare::{CompareResult, TargetUnion};
use regatta_proto::mvcc::v1::request_op::{self, Request};
use regatta_proto::mvcc::v1::response_op::{self, Response};
use regatta_proto::mvcc::v1::{Compare, KeyValue, RequestOp, ResponseOp, Txn};

use super::encoding::Stored;
use super::error::Result;
use super::query::{self, to_i64, RangeQuery, ResponseBudget};
use super::range::KeyRange;
use super::view::{Overlay, View};

/// What a transaction did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TxnOutcome {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

/// Whether every op of both branches is a range read: such a Txn is never
/// written to the log (`features/kv_txn.feature`).
pub fn is_read_only(txn: &Txn) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .all(|op| matches!(op.request, Some(Request::RequestRange(_)) | None))
}

/// Evaluates the compares, then runs the chosen branch. Writes land in
/// `overlay` with `revision` as their mod revision.
pub fn run<V: View>(
    overlay: &mut Overlay<'_, V>,
    txn: &Txn,
    revision: u64,
    budget: &mut ResponseBudget,
) -> Result<TxnOutcome> {
    let mut succeeded = true;
    for compare in &txn.compare {
        if !compare_holds(overlay, compare)? {
            succeeded = false;
            break;
        }
    }
    let branch = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let mut responses = Vec::with_capacity(branch.len());
    for op in branch {
        responses.push(run_op(overlay, op, revision, budget)?);
    }
    Ok(TxnOutcome {
        succeeded,
        responses,
    })
}

fn run_op<V: View>(
    overlay: &mut Overlay<'_, V>,
    op: &RequestOp,
    revision: u64,
    budget: &mut ResponseBudget,
) -> Result<ResponseOp> {
    let response = match &op.request {
        Some(Request::RequestRange(range)) => {
            Response::ResponseRange(range_op(overlay, range, budget)?)
        }
        Some(Request::RequestPut(put)) => Response::ResponsePut(response_op::Put {
            prev_kv: put_key(overlay, &put.key, &put.value, revision)?.filter(|_| put.prev_kv),
        }),
        Some(Request::RequestDeleteRange(delete)) => {
            let removed = delete_range(overlay, &KeyRange::new(&delete.key, &delete.range_end))?;
            Response::ResponseDeleteRange(response_op::DeleteRange {
                deleted: removed.len() as i64,
                // 2022 clients send prev_kv as field 3, Regatta 0.5 as field 4.
                prev_kvs: if delete.prev_kv || delete.prev_kv_v0_5 {
                    removed
                } else {
                    Vec::new()
                },
            })
        }
        // An op with nothing set: answer with nothing, deterministically.
        None => return Ok(ResponseOp { response: None }),
    };
    Ok(ResponseOp {
        response: Some(response),
    })
}

fn range_op(
    view: &impl View,
    range: &request_op::Range,
    budget: &mut ResponseBudget,
) -> Result<response_op::Range> {
    let query = RangeQuery {
        key: range.key.clone(),
        range_end: range.range_end.clone(),
        limit: u64::try_from(range.limit).unwrap_or(0),
        keys_only: range.keys_only,
        count_only: range.count_only,
        ..RangeQuery::default()
    };
    let result = query::range(view, &query, budget)?;
    Ok(response_op::Range {
        kvs: result.kvs,
        more: result.more,
        count: to_i64(result.count),
    })
}

/// Upserts one key; returns the pair it replaced.
pub fn put_key<V: View>(
    overlay: &mut Overlay<'_, V>,
    key: &[u8],
    value: &[u8],
    revision: u64,
) -> Result<Option<KeyValue>> {
    let previous = overlay.get(key)?;
    let create_revision = previous
        .as_ref()
        .map_or(revision, |prev| prev.create_revision);
    overlay.put(
        key.to_vec(),
        Stored {
            create_revision,
            mod_revision: revision,
            value: value.to_vec(),
        },
    );
    Ok(previous.map(|prev| key_value(key.to_vec(), prev)))
}

/// Removes every key of `range`; returns the removed pairs in key order.
pub fn delete_range<V: View>(
    overlay: &mut Overlay<'_, V>,
    range: &KeyRange,
) -> Result<Vec<KeyValue>> {
    let removed: Vec<KeyValue> = match range {
        KeyRange::Single(key) => overlay
            .get(key)?
            .map(|stored| key_value(key.clone(), stored))
            .into_iter()
            .collect(),
        KeyRange::Span { .. } if range.is_empty() => Vec::new(),
        KeyRange::Span { start, end } => overlay
            .scan(start, end.as_deref())
            .map(|item| item.map(|(key, stored)| key_value(key, stored)))
            .collect::<Result<_>>()?,
    };
    for kv in &removed {
        overlay.delete(kv.key.clone());
    }
    Ok(removed)
}

pub(crate) fn key_value(key: Vec<u8>, stored: Stored) -> KeyValue {
    KeyValue {
        key,
        create_revision: to_i64(stored.create_revision),
        mod_revision: to_i64(stored.mod_revision),
        value: stored.value,
    }
}

/// One compare (`features/kv_txn.feature`): a missing single key is false
/// whatever the operator; a range must be non-empty and hold for every key.
fn compare_holds(view: &impl View, compare: &Compare) -> Result<bool> {
    let holds = |stored: &Stored| match &compare.target_union {
        None => true,
        Some(TargetUnion::Value(operand)) => {
            let stored = stored.value.as_slice();
            match CompareResult::try_from(compare.result) {
                Ok(CompareResult::Equal) => stored == operand.as_slice(),
                Ok(CompareResult::NotEqual) => stored != operand.as_slice(),
                Ok(CompareResult::Greater) => stored > operand.as_slice(),
                Ok(CompareResult::Less) => stored < operand.as_slice(),
                // An operator this version does not know never holds.
                Err(_) => false,
            }
        }
    };
    match KeyRange::new(&compare.key, &compare.range_end) {
        KeyRange::Single(key) => Ok(view.get(&key)?.as_ref().is_some_and(holds)),
        range if range.is_empty() => Ok(false),
        KeyRange::Span { start, end } => {
            let mut any = false;
            for item in view.scan(&start, end.as_deref()) {
                let (_, stored) = item?;
                if !holds(&stored) {
                    return Ok(false);
                }
                any = true;
            }
            Ok(any)
        }
    }
}
