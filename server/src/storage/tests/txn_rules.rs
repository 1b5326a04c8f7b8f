//! Txn, as `features/kv_txn.feature` describes it.

use regatta_proto::mvcc::v1::compare::{CompareResult, TargetUnion};
use regatta_proto::mvcc::v1::request_op::{self, Request};
use regatta_proto::mvcc::v1::response_op::{self, Response};
use regatta_proto::mvcc::v1::{Compare, KeyValue, RequestOp, ResponseOp, Txn};

use super::{txn, Fixture};
use crate::storage::is_read_only;

fn cmp(key: &[u8], result: CompareResult, value: Option<&[u8]>) -> Compare {
    Compare {
        result: result as i32,
        key: key.to_vec(),
        target_union: value.map(|v| TargetUnion::Value(v.to_vec())),
        ..Compare::default()
    }
}

fn cmp_range(key: &[u8], range_end: &[u8], result: CompareResult, value: Option<&[u8]>) -> Compare {
    Compare {
        range_end: range_end.to_vec(),
        ..cmp(key, result, value)
    }
}

fn get_op(key: &[u8], range_end: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(request_op::Range {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..Default::default()
        })),
    }
}

fn put_op(key: &[u8], value: &[u8], prev_kv: bool) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(request_op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            prev_kv,
        })),
    }
}

fn delete_op(key: &[u8], range_end: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(request_op::DeleteRange {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            prev_kv: true,
            ..Default::default()
        })),
    }
}

/// Runs a Txn whose success branch is one `put(marker)`; returns whether it succeeded.
fn holds(f: &mut Fixture, compare: Vec<Compare>) -> bool {
    let result = f.must_apply(txn(Txn {
        compare,
        success: vec![],
        failure: vec![],
    }));
    result.txn_succeeded.expect("txn reports succeeded")
}

fn seeded() -> Fixture {
    let mut f = Fixture::new();
    f.must_put(b"a", b"1");
    f.must_put(b"b", b"2");
    f.must_put(b"e", b"");
    f.must_put(b"hi", &[0xff]);
    f
}

#[test]
fn empty_compare_list_is_true() {
    let mut f = seeded();
    assert!(holds(&mut f, vec![]));
}

#[test]
fn single_key_compare_on_a_missing_key_is_false_whatever_the_operator() {
    let mut f = seeded();
    for result in [
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Greater,
        CompareResult::Less,
    ] {
        assert!(
            !holds(&mut f, vec![cmp(b"missing", result, Some(b"x"))]),
            "{result:?}"
        );
        assert!(
            !holds(&mut f, vec![cmp(b"missing", result, None)]),
            "{result:?} existence"
        );
        assert!(
            !holds(&mut f, vec![cmp(b"", result, Some(b""))]),
            "empty key is a missing key"
        );
    }
}

#[test]
fn compare_without_value_tests_existence() {
    let mut f = seeded();
    assert!(holds(&mut f, vec![cmp(b"a", CompareResult::Equal, None)]));
    assert!(holds(
        &mut f,
        vec![cmp(b"a", CompareResult::NotEqual, None)]
    ));
    assert!(holds(
        &mut f,
        vec![cmp_range(b"a", b"c", CompareResult::Equal, None)]
    ));
    assert!(
        !holds(
            &mut f,
            vec![cmp_range(b"c", b"d", CompareResult::Equal, None)]
        ),
        "empty range"
    );
}

#[test]
fn value_compares_use_the_stored_value_as_left_operand_bytewise_unsigned() {
    let mut f = seeded();
    assert!(holds(
        &mut f,
        vec![cmp(b"a", CompareResult::Equal, Some(b"1"))]
    ));
    assert!(!holds(
        &mut f,
        vec![cmp(b"a", CompareResult::Equal, Some(b"2"))]
    ));
    assert!(holds(
        &mut f,
        vec![cmp(b"a", CompareResult::NotEqual, Some(b"2"))]
    ));
    assert!(
        holds(&mut f, vec![cmp(b"a", CompareResult::Less, Some(b"2"))]),
        "stored 1 < 2"
    );
    assert!(!holds(
        &mut f,
        vec![cmp(b"a", CompareResult::Greater, Some(b"2"))]
    ));
    assert!(
        holds(
            &mut f,
            vec![cmp(b"hi", CompareResult::Greater, Some(&[0x01]))]
        ),
        "0xff > 0x01 unsigned"
    );
}

#[test]
fn explicitly_set_empty_value_compares_against_the_empty_string() {
    let mut f = seeded();
    assert!(holds(
        &mut f,
        vec![cmp(b"e", CompareResult::Equal, Some(b""))]
    ));
    assert!(holds(
        &mut f,
        vec![cmp(b"a", CompareResult::Greater, Some(b""))]
    ));
    assert!(!holds(
        &mut f,
        vec![cmp(b"a", CompareResult::Equal, Some(b""))]
    ));
}

#[test]
fn range_compare_must_hold_for_every_key() {
    let mut f = seeded();
    assert!(holds(
        &mut f,
        vec![cmp_range(b"a", b"c", CompareResult::Less, Some(b"3"))]
    ));
    assert!(
        !holds(
            &mut f,
            vec![cmp_range(b"a", b"c", CompareResult::Equal, Some(b"1"))]
        ),
        "b is 2"
    );
    assert!(
        !holds(
            &mut f,
            vec![cmp_range(b"x", b"y", CompareResult::NotEqual, Some(b"z"))]
        ),
        "empty range"
    );
    assert!(holds(
        &mut f,
        vec![cmp_range(
            b"a",
            b"\0",
            CompareResult::NotEqual,
            Some(b"nope")
        )]
    ));
}

#[test]
fn compares_are_a_conjunction() {
    let mut f = seeded();
    assert!(holds(
        &mut f,
        vec![
            cmp(b"a", CompareResult::Equal, Some(b"1")),
            cmp(b"b", CompareResult::Equal, Some(b"2"))
        ]
    ));
    assert!(!holds(
        &mut f,
        vec![
            cmp(b"a", CompareResult::Equal, Some(b"1")),
            cmp(b"b", CompareResult::Equal, Some(b"3"))
        ]
    ));
}

#[test]
fn branch_runs_in_order_with_read_your_writes_and_last_write_wins() {
    let mut f = seeded();
    let result = f.must_apply(txn(Txn {
        compare: vec![cmp(b"a", CompareResult::Equal, Some(b"1"))],
        success: vec![
            put_op(b"n", b"first", false),
            get_op(b"n", b""),
            put_op(b"n", b"second", true),
            delete_op(b"a", b""),
            get_op(b"a", b"c"),
        ],
        failure: vec![put_op(b"never", b"x", false)],
    }));
    assert_eq!(result.txn_succeeded, Some(true));
    let revision = result.result.revision as i64;
    let kv = |key: &[u8], value: &[u8], create: i64, modr: i64| KeyValue {
        key: key.to_vec(),
        value: value.to_vec(),
        create_revision: create,
        mod_revision: modr,
    };
    let responses: Vec<Option<Response>> = result
        .result
        .responses
        .into_iter()
        .map(|op| op.response)
        .collect();
    assert_eq!(
        responses,
        vec![
            Some(Response::ResponsePut(response_op::Put { prev_kv: None })),
            Some(Response::ResponseRange(response_op::Range {
                kvs: vec![kv(b"n", b"first", revision, revision)],
                more: false,
                count: 1,
            })),
            Some(Response::ResponsePut(response_op::Put {
                prev_kv: Some(kv(b"n", b"first", revision, revision)),
            })),
            Some(Response::ResponseDeleteRange(response_op::DeleteRange {
                deleted: 1,
                prev_kvs: vec![kv(b"a", b"1", 1, 1)],
            })),
            Some(Response::ResponseRange(response_op::Range {
                kvs: vec![kv(b"b", b"2", 2, 2)],
                more: false,
                count: 1,
            })),
        ]
    );
    assert_eq!(
        f.must_get(b"n").expect("n").value,
        b"second",
        "last write wins"
    );
    assert_eq!(f.must_get(b"a"), None);
    assert_eq!(f.must_get(b"never"), None);
}

#[test]
fn failure_branch_runs_when_a_compare_fails() {
    let mut f = seeded();
    let result = f.must_apply(txn(Txn {
        compare: vec![cmp(b"a", CompareResult::Equal, Some(b"nope"))],
        success: vec![put_op(b"s", b"x", false)],
        failure: vec![put_op(b"f", b"x", false), get_op(b"missing", b"")],
    }));
    assert_eq!(result.txn_succeeded, Some(false));
    assert_eq!(
        result.result.responses[1],
        ResponseOp {
            response: Some(Response::ResponseRange(response_op::Range::default()))
        },
        "a range op on a missing key gives an empty response_range"
    );
    assert!(f.must_get(b"f").is_some());
    assert!(f.must_get(b"s").is_none());
}

#[test]
fn read_only_txn_is_recognised_and_served_from_a_snapshot() {
    let f = seeded();
    let read = Txn {
        compare: vec![cmp(b"a", CompareResult::Equal, Some(b"1"))],
        success: vec![get_op(b"a", b"c")],
        failure: vec![get_op(b"b", b"")],
    };
    assert!(is_read_only(&read));
    assert!(!is_read_only(&Txn {
        failure: vec![put_op(b"x", b"y", false)],
        ..read.clone()
    }));
    let outcome = f.table.txn_read(&read).expect("txn read");
    assert!(outcome.value.succeeded);
    assert_eq!(outcome.revision, 4);
    match &outcome.value.responses[0].response {
        Some(Response::ResponseRange(r)) => assert_eq!(r.count, 2),
        other => panic!("{other:?}"),
    }
}
