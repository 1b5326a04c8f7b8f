//! Range, Put, DeleteRange and revisions, as `features/kv_range.feature`,
//! `kv_put.feature`, `kv_delete_range.feature` and
//! `headers_and_revisions.feature` describe them.

use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::response_op::Response;
use regatta_proto::mvcc::v1::{Command, KeyValue};

use super::super::{prefix_end, RangeQuery};
use super::{delete, keys, put, range, Fixture};

fn deleted_count(result: &super::ApplyResult) -> (i64, Vec<KeyValue>) {
    match &result.result.responses[..] {
        [op] => match &op.response {
            Some(Response::ResponseDeleteRange(d)) => (d.deleted, d.prev_kvs.clone()),
            other => panic!("expected a delete response, got {other:?}"),
        },
        other => panic!("expected one response, got {other:?}"),
    }
}

fn put_prev(result: &super::ApplyResult) -> Option<KeyValue> {
    match &result.result.responses[..] {
        [op] => match &op.response {
            Some(Response::ResponsePut(p)) => p.prev_kv.clone(),
            other => panic!("expected a put response, got {other:?}"),
        },
        other => panic!("expected one response, got {other:?}"),
    }
}

fn abc() -> Fixture {
    let mut f = Fixture::new();
    for key in [&b"a"[..], b"b", b"c", b"d"] {
        f.must_put(key, &[key[0], b'!']);
    }
    f
}

#[test]
fn single_key_range_of_a_missing_key_is_empty_success() {
    let f = abc();
    let result = f.must_range(range(b"zz", b""));
    assert!(result.kvs.is_empty());
    assert_eq!(result.count, 0);
    assert!(!result.more);
}

#[test]
fn half_open_range_is_ascending_and_excludes_end() {
    let f = abc();
    assert_eq!(
        keys(&f.must_range(range(b"a", b"c"))),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(f.must_range(range(b"a", b"c")).count, 2);
}

#[test]
fn range_end_at_or_below_key_is_empty_not_an_error() {
    let f = abc();
    assert!(f.must_range(range(b"c", b"a")).kvs.is_empty());
    assert!(f.must_range(range(b"c", b"c")).kvs.is_empty());
}

#[test]
fn zero_byte_range_end_selects_every_key_from_key_on() {
    let f = abc();
    assert_eq!(keys(&f.must_range(range(b"b", b"\0"))).len(), 3);
    assert_eq!(
        keys(&f.must_range(range(b"\0", b"\0"))).len(),
        4,
        "whole table"
    );
}

#[test]
fn prefix_range_selects_keys_with_the_prefix() {
    let mut f = Fixture::new();
    for key in [&b"pa"[..], b"pb", b"p\xff", b"q", b"o"] {
        f.must_put(key, b"v");
    }
    let result = f.must_range(range(b"p", &prefix_end(b"p")));
    assert_eq!(
        keys(&result),
        vec![b"pa".to_vec(), b"pb".to_vec(), b"p\xff".to_vec()]
    );
}

#[test]
fn limit_caps_pairs_and_more_says_whether_keys_remain() {
    let f = abc();
    let limited = |limit| {
        f.must_range(RangeQuery {
            limit,
            ..range(b"a", b"\0")
        })
    };
    let two = limited(2);
    assert_eq!(keys(&two), vec![b"a".to_vec(), b"b".to_vec()]);
    assert!(two.more);
    assert_eq!(two.count, 2);
    let four = limited(4);
    assert_eq!(four.kvs.len(), 4);
    assert!(
        !four.more,
        "limit equal to the number of keys leaves nothing more"
    );
    let unlimited = limited(0);
    assert_eq!(unlimited.kvs.len(), 4);
    assert!(!unlimited.more);
}

#[test]
fn count_only_returns_only_the_count() {
    let f = abc();
    let all = f.must_range(RangeQuery {
        count_only: true,
        ..range(b"a", b"\0")
    });
    assert!(all.kvs.is_empty());
    assert_eq!(all.count, 4);
    assert!(!all.more);
    let limited = f.must_range(RangeQuery {
        count_only: true,
        limit: 3,
        ..range(b"a", b"\0")
    });
    assert_eq!(limited.count, 3);
    assert!(limited.more);
}

#[test]
fn keys_only_returns_keys_without_values() {
    let f = abc();
    let result = f.must_range(RangeQuery {
        keys_only: true,
        ..range(b"a", b"c")
    });
    assert_eq!(
        result.kvs,
        vec![
            KeyValue {
                key: b"a".to_vec(),
                ..KeyValue::default()
            },
            KeyValue {
                key: b"b".to_vec(),
                ..KeyValue::default()
            }
        ]
    );
}

#[test]
fn empty_value_round_trips_as_empty() {
    let mut f = Fixture::new();
    f.must_put(b"k", b"");
    let kv = f.must_get(b"k").expect("present");
    assert_eq!(kv.value, b"");
}

#[test]
fn maximal_keys_and_values_round_trip_intact() {
    let mut f = Fixture::new();
    let max_key = vec![0xff; 1024];
    let big_value: Vec<u8> = (0..2 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    f.must_put(&max_key, &big_value);
    f.must_put(&[0xff], b"one");
    f.must_put(&[0x00], b"zero");
    assert_eq!(f.must_get(&max_key).expect("max key").value, big_value);
    let all = f.must_range(range(b"\0", b"\0"));
    assert_eq!(keys(&all), vec![vec![0x00], vec![0xff], max_key.clone()]);
}

#[test]
fn responses_never_exceed_the_message_limit() {
    let mut f = Fixture::new();
    let value = vec![7u8; 2 * 1024 * 1024];
    for key in [&b"a"[..], b"b", b"c"] {
        f.must_put(key, &value);
    }
    let result = f.must_range(range(b"a", b"\0"));
    assert_eq!(
        result.kvs.len(),
        1,
        "two 2 MiB values do not fit under 4 MiB"
    );
    assert!(result.more);
    assert_eq!(result.count, 1);
}

#[test]
fn put_upserts_and_returns_prev_kv_only_when_asked_and_present() {
    let mut f = Fixture::new();
    let mut with_prev = put(b"k", b"1");
    with_prev.prev_kvs = true;
    assert_eq!(
        put_prev(&f.must_apply(with_prev.clone())),
        None,
        "no previous pair"
    );
    with_prev.kv.as_mut().expect("kv").value = b"2".to_vec();
    let prev = put_prev(&f.must_apply(with_prev)).expect("previous pair");
    assert_eq!(
        (prev.key.as_slice(), prev.value.as_slice()),
        (&b"k"[..], &b"1"[..])
    );
    assert_eq!((prev.create_revision, prev.mod_revision), (1, 1));
    assert_eq!(put_prev(&f.must_put(b"k", b"3")), None, "not asked");
    assert_eq!(f.must_get(b"k").expect("k").value, b"3");
}

#[test]
fn revisions_track_creation_and_last_modification() {
    let mut f = Fixture::new();
    f.must_put(b"k", b"1"); // 1
    f.must_put(b"other", b"x"); // 2
    f.must_put(b"k", b"2"); // 3
    let kv = f.must_get(b"k").expect("k");
    assert_eq!((kv.create_revision, kv.mod_revision), (1, 3));
    f.must_apply(delete(b"k", None, false)); // 4
    f.must_put(b"k", b"3"); // 5
    let kv = f.must_get(b"k").expect("k");
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (5, 5),
        "recreated after delete"
    );
}

#[test]
fn revision_filters_are_inclusive_and_count_only_passing_pairs() {
    let mut f = Fixture::new();
    for key in [&b"a"[..], b"b", b"c", b"d"] {
        f.must_put(key, b"v"); // revisions 1..=4
    }
    f.must_put(b"a", b"v2"); // 5: a = (create 1, mod 5)
    let query = |q: RangeQuery| f.must_range(RangeQuery { ..q });
    let base = range(b"a", b"\0");
    let r = query(RangeQuery {
        min_mod_revision: 2,
        max_mod_revision: 3,
        ..base.clone()
    });
    assert_eq!(keys(&r), vec![b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(r.count, 2);
    let r = query(RangeQuery {
        min_create_revision: 1,
        max_create_revision: 1,
        ..base.clone()
    });
    assert_eq!(keys(&r), vec![b"a".to_vec()]);
    let r = query(RangeQuery {
        min_mod_revision: 4,
        limit: 1,
        ..base.clone()
    });
    assert_eq!(keys(&r), vec![b"a".to_vec()]);
    assert!(r.more, "d passes the filter too");
    let r = query(RangeQuery {
        min_mod_revision: 5,
        limit: 1,
        ..base
    });
    assert!(!r.more, "nothing else passes");
}

#[test]
fn a_bounded_range_gives_up_past_its_visits_and_otherwise_equals_range() {
    let mut f = Fixture::new();
    for i in 0..10u8 {
        f.must_put(&[b'k', i], b"v"); // revisions 1..=10
    }
    let bounded = |q: &RangeQuery, max: usize| {
        f.table
            .range_within(q, max)
            .expect("range")
            .map(|found| found.value)
    };
    let all = range(b"k", b"l");
    assert_eq!(bounded(&all, 10), Some(f.must_range(all.clone())));
    assert_eq!(bounded(&all, 9), None, "ten pairs to visit");
    // Pairs a filter skips are visited too: only the last passes.
    let last = RangeQuery {
        min_mod_revision: 10,
        ..all.clone()
    };
    assert_eq!(bounded(&last, 9), None);
    assert_eq!(
        keys(&bounded(&last, 10).expect("within")),
        vec![vec![b'k', 9]]
    );
    // A limit ends the visit early: the limit plus one pair to learn `more`.
    let limited = RangeQuery { limit: 3, ..all };
    let found = bounded(&limited, 4).expect("within");
    assert_eq!((found.kvs.len(), found.more), (3, true));
}

#[test]
fn delete_counts_removed_keys_and_missing_keys_succeed() {
    let mut f = abc();
    assert_eq!(
        deleted_count(&f.must_apply(delete(b"zz", None, false))).0,
        0
    );
    assert_eq!(deleted_count(&f.must_apply(delete(b"a", None, false))).0, 1);
    assert_eq!(f.must_get(b"a"), None);
    assert_eq!(
        deleted_count(&f.must_apply(delete(b"a", Some(b"c"), false))).0,
        1,
        "only b is left in [a, c)"
    );
    assert_eq!(
        deleted_count(&f.must_apply(delete(b"c", Some(b"\0"), false))).0,
        2
    );
    assert!(f.must_range(range(b"\0", b"\0")).kvs.is_empty());
}

#[test]
fn delete_with_prev_kv_returns_every_removed_pair_ascending() {
    let mut f = abc();
    let (deleted, prev) = deleted_count(&f.must_apply(delete(b"b", Some(b"\0"), true)));
    assert_eq!(deleted, 3);
    let prev_keys: Vec<&[u8]> = prev.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(prev_keys, vec![&b"b"[..], b"c", b"d"]);
    assert_eq!(prev[0].value, b"b!");
}

#[test]
fn large_range_delete_counts_exactly_and_later_puts_survive() {
    let mut f = Fixture::new();
    for i in 0..500u32 {
        f.must_put(format!("k{i:04}").as_bytes(), b"v");
    }
    f.must_put(b"z", b"keep");
    let (deleted, _) = deleted_count(&f.must_apply(delete(b"k", Some(b"l"), false)));
    assert_eq!(deleted, 500);
    f.must_put(b"k0001", b"again");
    let all = f.must_range(range(b"\0", b"\0"));
    assert_eq!(keys(&all), vec![b"k0001".to_vec(), b"z".to_vec()]);
}

#[test]
fn batches_put_and_delete_atomically_at_one_revision() {
    let mut f = Fixture::new();
    let kvs = |keys: &[&[u8]]| -> Vec<KeyValue> {
        keys.iter()
            .map(|k| KeyValue {
                key: k.to_vec(),
                value: b"v".to_vec(),
                ..KeyValue::default()
            })
            .collect()
    };
    let result = f.must_apply(Command {
        r#type: CommandType::PutBatch as i32,
        batch: kvs(&[b"a", b"b", b"c"]),
        ..Command::default()
    });
    assert_eq!(result.result.responses.len(), 3);
    assert_eq!(result.result.revision, 1);
    assert!(f
        .must_range(range(b"a", b"\0"))
        .kvs
        .iter()
        .all(|kv| kv.mod_revision == 1));
    let result = f.must_apply(Command {
        r#type: CommandType::DeleteBatch as i32,
        batch: kvs(&[b"a", b"c", b"missing"]),
        ..Command::default()
    });
    assert_eq!(result.result.revision, 2);
    assert_eq!(keys(&f.must_range(range(b"a", b"\0"))), vec![b"b".to_vec()]);
}

#[test]
fn every_write_gets_a_strictly_greater_revision_and_dummy_does_not() {
    let mut f = Fixture::new();
    assert_eq!(f.must_put(b"a", b"1").result.revision, 1);
    assert_eq!(
        f.must_apply(delete(b"missing", None, false))
            .result
            .revision,
        2,
        "a no-op delete is still a write"
    );
    let dummy = Command {
        r#type: CommandType::Dummy as i32,
        leader_index: Some(1),
        ..Command::default()
    };
    assert_eq!(
        f.must_apply(dummy).result.revision,
        2,
        "DUMMY changes no data"
    );
    let state = f.table.state();
    assert_eq!(
        (state.applied_index, state.revision, state.leader_index),
        (3, 2, Some(1))
    );
    assert_eq!(
        f.must_apply(super::txn(Default::default())).result.revision,
        4,
        "an empty write Txn too"
    );
    let read = f.table.range(&range(b"a", b"")).expect("range");
    assert_eq!(
        read.revision, 4,
        "reads return the revision of the state they read"
    );
}

#[test]
fn entries_at_or_below_the_applied_index_are_not_applied_again() {
    let mut f = Fixture::new();
    f.must_put(b"k", b"1");
    let again = f.table.apply(1, &put(b"k", b"replayed")).expect("apply");
    assert_eq!(again.result.revision, 1);
    assert_eq!(f.must_get(b"k").expect("k").value, b"1");
}

#[test]
fn unknown_table_and_dropped_table_are_not_found() {
    let f = Fixture::new();
    assert!(matches!(
        f.storage.apply(b"nope", 1, &put(b"k", b"v")),
        Err(super::super::Error::TableNotFound)
    ));
    let table = f.table.clone();
    f.storage.drop_table(b"t").expect("drop");
    assert!(matches!(
        table.range(&range(b"k", b"")),
        Err(super::super::Error::TableNotFound)
    ));
    assert!(f.storage.table(b"t").is_none());
    let again = f.storage.create_table(b"t").expect("recreate");
    assert!(again
        .range(&range(b"\0", b"\0"))
        .expect("range")
        .value
        .kvs
        .is_empty());
}

#[test]
fn replicated_commands_apply_only_in_leader_index_order() {
    let mut f = Fixture::new();
    let replicated = |key: &[u8], leader_index: u64| {
        let mut command = put(key, b"v");
        command.leader_index = Some(leader_index);
        command
    };
    f.must_apply(replicated(b"first", 1));
    // A retry of an applied command, and a command past a gap, change nothing.
    f.must_apply(replicated(b"again", 1));
    f.must_apply(replicated(b"gap", 3));
    f.must_apply(replicated(b"second", 2));
    let keys: Vec<Vec<u8>> = f
        .table
        .range(&range(b"\0", b"\0"))
        .expect("range")
        .value
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, vec![b"first".to_vec(), b"second".to_vec()]);
    assert_eq!(f.table.state().leader_index, Some(2));
}
