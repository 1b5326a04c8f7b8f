//! What Regatta 0.5 added to the commands and ops a table applies
//! (`features/wire_generations.feature`): SEQUENCE commands, and a Txn delete's `prev_kv` at
//! field 4 as well as at field 3.

use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::request_op::{self, Request};
use regatta_proto::mvcc::v1::response_op::{self, Response};
use regatta_proto::mvcc::v1::{Command, KeyValue, RequestOp, Txn};

use super::{delete, keys, put, range, txn, Fixture};

fn sequence(commands: Vec<Command>) -> Command {
    Command {
        table: b"t".to_vec(),
        r#type: CommandType::Sequence as i32,
        sequence: commands,
        ..Command::default()
    }
}

fn dummy() -> Command {
    Command {
        table: b"t".to_vec(),
        r#type: CommandType::Dummy as i32,
        ..Command::default()
    }
}

fn pair(key: &[u8], value: &[u8], revision: i64) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value: value.to_vec(),
        create_revision: revision,
        mod_revision: revision,
    }
}

#[test]
fn a_sequence_applies_its_commands_in_order_as_one_step() {
    let mut f = Fixture::new();
    f.must_put(b"a", b"0"); // revision 1
    let result = f.must_apply(sequence(vec![
        put(b"a", b"1"),
        put(b"b", b"2"),
        delete(b"a", None, true),
        // Sees the writes before it in the same step.
        txn(Txn {
            compare: vec![],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(request_op::Put {
                    key: b"c".to_vec(),
                    value: b"3".to_vec(),
                    prev_kv: false,
                })),
            }],
            failure: vec![],
        }),
    ]));
    assert_eq!(result.result.revision, 2, "one entry, one revision");
    assert_eq!(result.result.responses.len(), 4);
    assert_eq!(
        result.result.responses[2].response,
        Some(Response::ResponseDeleteRange(response_op::DeleteRange {
            deleted: 1,
            prev_kvs: vec![KeyValue {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                create_revision: 1,
                mod_revision: 2,
            }],
        }))
    );
    assert_eq!(f.must_get(b"a"), None);
    assert_eq!(f.must_get(b"b"), Some(pair(b"b", b"2", 2)));
    assert_eq!(f.must_get(b"c"), Some(pair(b"c", b"3", 2)));
}

#[test]
fn a_large_delete_inside_a_sequence_keeps_the_writes_after_it() {
    // A top-level DELETE of more than 64 keys is one range tombstone written
    // beside the other changes; inside a SEQUENCE a PUT after it must survive.
    let mut f = Fixture::new();
    for i in 0..100u32 {
        f.must_put(format!("k{i:03}").as_bytes(), b"v");
    }
    f.must_apply(sequence(vec![
        delete(b"k", Some(b"l"), false),
        put(b"k050", b"after"),
    ]));
    let left = f.must_range(range(b"k", b"l"));
    assert_eq!(keys(&left), vec![b"k050".to_vec()]);
    assert_eq!(left.kvs[0].value, b"after".to_vec());
}

#[test]
fn a_sequence_of_dummies_does_not_move_the_revision() {
    let mut f = Fixture::new();
    f.must_put(b"a", b"1");
    let result = f.must_apply(sequence(vec![dummy(), sequence(vec![dummy()])]));
    assert_eq!(result.result.revision, 1);
    assert!(result.result.responses.is_empty());
}

#[test]
fn a_txn_delete_returns_prev_kvs_for_prev_kv_at_field_3_or_4() {
    let delete_op = |prev_kv: bool, prev_kv_v0_5: bool| RequestOp {
        request: Some(Request::RequestDeleteRange(request_op::DeleteRange {
            key: b"k".to_vec(),
            prev_kv,
            prev_kv_v0_5,
            ..Default::default()
        })),
    };
    for (prev_kv, prev_kv_v0_5, returned) in [
        (true, false, true),
        (false, true, true),
        (true, true, true),
        (false, false, false),
    ] {
        let mut f = Fixture::new();
        f.must_put(b"k", b"v");
        let result = f.must_apply(txn(Txn {
            compare: vec![],
            success: vec![delete_op(prev_kv, prev_kv_v0_5)],
            failure: vec![],
        }));
        let expected = if returned {
            vec![pair(b"k", b"v", 1)]
        } else {
            vec![]
        };
        assert_eq!(
            result.result.responses[0].response,
            Some(Response::ResponseDeleteRange(response_op::DeleteRange {
                deleted: 1,
                prev_kvs: expected,
            })),
            "prev_kv {prev_kv}, prev_kv_v0_5 {prev_kv_v0_5}"
        );
    }
}
