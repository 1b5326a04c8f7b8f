//! Property test: random command sequences applied to RocksDB and to a plain
//! `BTreeMap` model must give the same responses and the same final state.

use std::collections::BTreeMap;

use proptest::prelude::*;
use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::compare::{CompareResult, TargetUnion};
use regatta_proto::mvcc::v1::request_op::{self, Request};
use regatta_proto::mvcc::v1::response_op::{self, Response};
use regatta_proto::mvcc::v1::{Command, Compare, KeyValue, RequestOp, ResponseOp, Txn};

use super::{range, Fixture};
use crate::storage::RangeQuery;

/// key -> (create_revision, mod_revision, value)
type Model = BTreeMap<Vec<u8>, (i64, i64, Vec<u8>)>;

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

fn selected(model: &Model, start: &[u8], end: &[u8]) -> Vec<KeyValue> {
    model
        .iter()
        .filter(|(key, _)| in_range(key, start, end))
        .map(|(key, (create, modr, value))| KeyValue {
            key: key.clone(),
            create_revision: *create,
            mod_revision: *modr,
            value: value.clone(),
        })
        .collect()
}

fn model_range(model: &Model, op: &request_op::Range) -> response_op::Range {
    let all = selected(model, &op.key, &op.range_end);
    let limit = if op.limit > 0 {
        op.limit as usize
    } else {
        usize::MAX
    };
    let more = all.len() > limit;
    let taken: Vec<KeyValue> = all.into_iter().take(limit).collect();
    let count = taken.len() as i64;
    let kvs = if op.count_only {
        vec![]
    } else if op.keys_only {
        taken
            .into_iter()
            .map(|kv| KeyValue {
                key: kv.key,
                ..KeyValue::default()
            })
            .collect()
    } else {
        taken
    };
    response_op::Range { kvs, more, count }
}

fn model_put(model: &mut Model, key: &[u8], value: &[u8], revision: i64) -> Option<KeyValue> {
    let previous = model.get(key).cloned();
    let create = previous.as_ref().map_or(revision, |(create, _, _)| *create);
    model.insert(key.to_vec(), (create, revision, value.to_vec()));
    previous.map(|(create_revision, mod_revision, value)| KeyValue {
        key: key.to_vec(),
        create_revision,
        mod_revision,
        value,
    })
}

fn model_delete(model: &mut Model, key: &[u8], end: &[u8]) -> Vec<KeyValue> {
    let removed = selected(model, key, end);
    for kv in &removed {
        model.remove(&kv.key);
    }
    removed
}

fn model_compare(model: &Model, compare: &Compare) -> bool {
    let matching = selected(model, &compare.key, &compare.range_end);
    !matching.is_empty()
        && matching.iter().all(|kv| match &compare.target_union {
            None => true,
            Some(TargetUnion::Value(v)) => match CompareResult::try_from(compare.result) {
                Ok(CompareResult::Equal) => kv.value == *v,
                Ok(CompareResult::NotEqual) => kv.value != *v,
                Ok(CompareResult::Greater) => kv.value > *v,
                Ok(CompareResult::Less) => kv.value < *v,
                Err(_) => false,
            },
        })
}

/// Applies a command to the model; returns the responses and Txn outcome.
fn model_apply(
    model: &mut Model,
    command: &Command,
    revision: i64,
) -> (Vec<ResponseOp>, Option<bool>) {
    let wrap = |response| ResponseOp {
        response: Some(response),
    };
    match CommandType::try_from(command.r#type).expect("known type") {
        CommandType::Put => {
            let kv = command.kv.as_ref().expect("kv");
            let prev = model_put(model, &kv.key, &kv.value, revision);
            let prev_kv = prev.filter(|_| command.prev_kvs);
            (
                vec![wrap(Response::ResponsePut(response_op::Put { prev_kv }))],
                None,
            )
        }
        CommandType::Delete => {
            let kv = command.kv.as_ref().expect("kv");
            let removed = model_delete(
                model,
                &kv.key,
                command.range_end.as_deref().unwrap_or_default(),
            );
            let deleted = removed.len() as i64;
            let prev_kvs = if command.prev_kvs { removed } else { vec![] };
            (
                vec![wrap(Response::ResponseDeleteRange(
                    response_op::DeleteRange { deleted, prev_kvs },
                ))],
                None,
            )
        }
        CommandType::PutBatch => {
            let responses = command
                .batch
                .iter()
                .map(|kv| {
                    model_put(model, &kv.key, &kv.value, revision);
                    wrap(Response::ResponsePut(response_op::Put::default()))
                })
                .collect();
            (responses, None)
        }
        CommandType::DeleteBatch => {
            let responses = command
                .batch
                .iter()
                .map(|kv| {
                    let deleted = model_delete(model, &kv.key, b"").len() as i64;
                    wrap(Response::ResponseDeleteRange(response_op::DeleteRange {
                        deleted,
                        prev_kvs: vec![],
                    }))
                })
                .collect();
            (responses, None)
        }
        CommandType::Txn => {
            let txn = command.txn.as_ref().expect("txn");
            let succeeded = txn.compare.iter().all(|c| model_compare(model, c));
            let branch = if succeeded {
                &txn.success
            } else {
                &txn.failure
            };
            let responses = branch
                .iter()
                .map(|op| match op.request.as_ref().expect("op") {
                    Request::RequestRange(r) => {
                        wrap(Response::ResponseRange(model_range(model, r)))
                    }
                    Request::RequestPut(p) => {
                        let prev = model_put(model, &p.key, &p.value, revision);
                        wrap(Response::ResponsePut(response_op::Put {
                            prev_kv: prev.filter(|_| p.prev_kv),
                        }))
                    }
                    Request::RequestDeleteRange(d) => {
                        let removed = model_delete(model, &d.key, &d.range_end);
                        wrap(Response::ResponseDeleteRange(response_op::DeleteRange {
                            deleted: removed.len() as i64,
                            prev_kvs: if d.prev_kv || d.prev_kv_v0_5 {
                                removed
                            } else {
                                vec![]
                            },
                        }))
                    }
                })
                .collect();
            (responses, Some(succeeded))
        }
        CommandType::Dummy => (vec![], None),
        CommandType::Sequence => {
            let mut responses = Vec::new();
            let mut succeeded = None;
            for sub in &command.sequence {
                let (more, outcome) = model_apply(model, sub, revision);
                responses.extend(more);
                succeeded = outcome.or(succeeded);
            }
            (responses, succeeded)
        }
    }
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'c', 0xff]), 1..3)
}

fn range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(vec![]), Just(vec![]), Just(vec![0]), key()]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![b'x', b'y', 0]), 0..3)
}

fn request_op() -> impl Strategy<Value = RequestOp> {
    prop_oneof![
        (key(), range_end(), 0i64..3, any::<bool>(), any::<bool>()).prop_map(
            |(key, range_end, limit, keys_only, count_only)| {
                Request::RequestRange(request_op::Range {
                    key,
                    range_end,
                    limit,
                    keys_only,
                    count_only,
                })
            }
        ),
        (key(), value(), any::<bool>()).prop_map(|(key, value, prev_kv)| Request::RequestPut(
            request_op::Put {
                key,
                value,
                prev_kv
            }
        )),
        (key(), range_end(), any::<bool>(), any::<bool>()).prop_map(
            |(key, range_end, prev_kv, prev_kv_v0_5)| {
                Request::RequestDeleteRange(request_op::DeleteRange {
                    key,
                    range_end,
                    prev_kv,
                    prev_kv_v0_5,
                    count: false,
                })
            }
        ),
    ]
    .prop_map(|request| RequestOp {
        request: Some(request),
    })
}

fn compare() -> impl Strategy<Value = Compare> {
    (key(), range_end(), 0i32..4, prop::option::of(value())).prop_map(
        |(key, range_end, result, value)| Compare {
            result,
            key,
            range_end,
            target_union: value.map(TargetUnion::Value),
            ..Compare::default()
        },
    )
}

fn kv(key: Vec<u8>, value: Vec<u8>) -> KeyValue {
    KeyValue {
        key,
        value,
        ..KeyValue::default()
    }
}

/// Any command, a Regatta 0.5 SEQUENCE of them among others.
fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        8 => plain_command(),
        1 => prop::collection::vec(plain_command(), 1..4).prop_map(|sequence| Command {
            r#type: CommandType::Sequence as i32,
            sequence,
            ..Command::default()
        }),
    ]
}

fn plain_command() -> impl Strategy<Value = Command> {
    let typed = |r#type: CommandType| Command {
        r#type: r#type as i32,
        ..Command::default()
    };
    prop_oneof![
        3 => (key(), value(), any::<bool>()).prop_map(move |(k, v, prev)| Command {
            kv: Some(kv(k, v)),
            prev_kvs: prev,
            ..typed(CommandType::Put)
        }),
        1 => (key(), prop::option::of(range_end()), any::<bool>()).prop_map(move |(k, end, prev)| Command {
            kv: Some(kv(k, vec![])),
            range_end: end.filter(|e| !e.is_empty()),
            prev_kvs: prev,
            ..typed(CommandType::Delete)
        }),
        1 => prop::collection::vec((key(), value()), 0..4).prop_map(move |pairs| Command {
            batch: pairs.into_iter().map(|(k, v)| kv(k, v)).collect(),
            ..typed(CommandType::PutBatch)
        }),
        1 => prop::collection::vec(key(), 0..4).prop_map(move |keys| Command {
            batch: keys.into_iter().map(|k| kv(k, vec![])).collect(),
            ..typed(CommandType::DeleteBatch)
        }),
        2 => (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(request_op(), 0..4),
            prop::collection::vec(request_op(), 0..4)
        )
            .prop_map(move |(compare, success, failure)| Command {
                txn: Some(Txn { compare, success, failure }),
                ..typed(CommandType::Txn)
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn rocksdb_table_behaves_like_the_model(commands in prop::collection::vec(command(), 1..40)) {
        let mut fixture = Fixture::new();
        let mut model = Model::new();
        for command in &commands {
            let revision = fixture.index as i64;
            let (expected, succeeded) = model_apply(&mut model, command, revision);
            let actual = fixture.must_apply(command.clone());
            prop_assert_eq!(&actual.result.responses, &expected, "command {:?}", command);
            prop_assert_eq!(actual.txn_succeeded, succeeded);
            prop_assert_eq!(actual.result.revision, revision as u64);
        }
        let stored = fixture.must_range(range(b"\0", b"\0")).kvs;
        prop_assert_eq!(stored, selected(&model, b"\0", b"\0"));
        // A few reads through the public query path as well.
        for (start, end) in [(&b"a"[..], &b"c"[..]), (b"b", b"\0"), (b"\xff", b"")] {
            let got = fixture.must_range(RangeQuery { key: start.to_vec(), range_end: end.to_vec(), ..RangeQuery::default() });
            prop_assert_eq!(got.kvs, selected(&model, start, end));
        }
    }
}
