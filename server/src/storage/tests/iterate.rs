//! IterateRange from the table's side (`features/kv_iterate_range.feature`): one view, cut
//! into messages by size, `more` on every message but the last and exact at
//! the limit, counts per message.

use super::{range, Fixture};
use crate::storage::{MessageSizes, RangeQuery, RangeResult};

/// Every message of one iteration, with the revision each carried.
fn messages(f: &Fixture, query: &RangeQuery, message_bytes: usize) -> Vec<(RangeResult, u64)> {
    messages_of(f, query, MessageSizes::uniform(message_bytes))
}

fn messages_of(f: &Fixture, query: &RangeQuery, sizes: MessageSizes) -> Vec<(RangeResult, u64)> {
    let mut out = Vec::new();
    f.table
        .iterate(query, sizes, |message, revision| {
            out.push((message, revision));
            true
        })
        .expect("iterate");
    out
}

fn filled(n: usize, value_len: usize) -> Fixture {
    let mut f = Fixture::new();
    for i in 0..n {
        f.must_put(format!("k{i:02}").as_bytes(), &vec![b'v'; value_len]);
    }
    f
}

#[test]
fn messages_are_cut_by_size_with_more_on_all_but_the_last() {
    let f = filled(10, 100);
    // Each pair takes 1 + 10 + about 110 bytes: three fit in 400.
    let got = messages(&f, &range(b"k", b"l"), 400);
    let counts: Vec<i64> = got.iter().map(|(m, _)| m.count as i64).collect();
    assert_eq!(counts, vec![3, 3, 3, 1]);
    let more: Vec<bool> = got.iter().map(|(m, _)| m.more).collect();
    assert_eq!(more, vec![true, true, true, false]);
    let keys: Vec<Vec<u8>> = got
        .iter()
        .flat_map(|(m, _)| m.kvs.iter().map(|kv| kv.key.clone()))
        .collect();
    let expected: Vec<Vec<u8>> = (0..10).map(|i| format!("k{i:02}").into_bytes()).collect();
    assert_eq!(keys, expected);
    assert!(got.iter().all(|(m, _)| m.count == m.kvs.len() as u64));
    assert!(got.iter().all(|(_, revision)| *revision == 10));
}

#[test]
fn the_first_message_is_small_so_pairs_reach_the_client_at_once() {
    let f = filled(10, 100);
    // Room for one pair first, then three a message.
    let sizes = MessageSizes {
        first: 150,
        rest: 400,
    };
    let got = messages_of(&f, &range(b"k", b"l"), sizes);
    let counts: Vec<u64> = got.iter().map(|(m, _)| m.count).collect();
    assert_eq!(counts, vec![1, 3, 3, 3]);
    let stream = MessageSizes::STREAM;
    assert!(stream.first < stream.rest && stream.rest < 4 * 1024 * 1024 - 1024);
}

#[test]
fn a_pair_larger_than_a_message_travels_alone() {
    let mut f = Fixture::new();
    f.must_put(b"a", b"1");
    f.must_put(b"b", &[b'x'; 1000]);
    f.must_put(b"c", b"3");
    let got = messages(&f, &range(b"a", b"\0"), 200);
    let counts: Vec<u64> = got.iter().map(|(m, _)| m.count).collect();
    assert_eq!(counts, vec![1, 1, 1]);
    assert_eq!(got[1].0.kvs[0].value.len(), 1000);
}

#[test]
fn more_on_the_last_message_is_exact_at_the_limit() {
    let f = filled(5, 10);
    for (limit, returned, more) in [(4, 4, true), (5, 5, false), (6, 5, false), (0, 5, false)] {
        let query = RangeQuery {
            limit,
            ..range(b"k", b"l")
        };
        let got = messages(&f, &query, 30);
        let total: u64 = got.iter().map(|(m, _)| m.count).sum();
        assert_eq!(total, returned, "limit {limit}");
        assert_eq!(got.last().map(|(m, _)| m.more), Some(more), "limit {limit}");
        assert!(got[..got.len() - 1].iter().all(|(m, _)| m.more));
    }
}

#[test]
fn count_only_is_one_message_with_the_total_and_keys_only_has_no_values() {
    let f = filled(7, 50);
    let count_only = RangeQuery {
        count_only: true,
        limit: 6,
        ..range(b"k", b"l")
    };
    let got = messages(&f, &count_only, 30);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0.count, got[0].0.kvs.len(), got[0].0.more),
        (6, 0, true)
    );

    let keys_only = RangeQuery {
        keys_only: true,
        ..range(b"k", b"l")
    };
    let got = messages(&f, &keys_only, 1 << 20);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.count, 7);
    assert!(got[0]
        .0
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.mod_revision == 0));
}

#[test]
fn an_empty_result_or_a_single_key_is_one_message() {
    let f = filled(3, 10);
    let none = messages(&f, &range(b"x", b"y"), 100);
    assert_eq!(none.len(), 1);
    assert_eq!((none[0].0.count, none[0].0.more), (0, false));
    let single = messages(&f, &range(b"k01", b""), 100);
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].0.kvs[0].key, b"k01".to_vec());
    // "\0" as range_end: every key from `key` on.
    let from = messages(&f, &range(b"k01", b"\0"), 1 << 20);
    assert_eq!(from[0].0.count, 2);
}

#[test]
fn the_view_is_the_table_when_the_call_began() {
    let mut f = filled(6, 10);
    let table = f.table.clone();
    let mut keys = Vec::new();
    let mut revisions = Vec::new();
    table
        .iterate(
            &range(b"k", b"l"),
            MessageSizes::uniform(30),
            |message, revision| {
                keys.extend(message.kvs.into_iter().map(|kv| kv.key));
                revisions.push(revision);
                // Within the range, after every key so far: a live iterator
                // would meet it.
                f.must_put(format!("k5{}", revisions.len()).as_bytes(), b"late");
                true
            },
        )
        .expect("iterate");
    assert_eq!(keys.len(), 6, "{keys:?}");
    assert!(revisions.iter().all(|revision| *revision == 6));
    assert!(f.must_get(b"k51").is_some());
}

#[test]
fn a_reader_that_stops_ends_the_iteration() {
    let f = filled(6, 10);
    let mut calls = 0;
    f.table
        .iterate(&range(b"k", b"l"), MessageSizes::uniform(30), |_, _| {
            calls += 1;
            calls < 2
        })
        .expect("iterate");
    assert_eq!(calls, 2);
}
