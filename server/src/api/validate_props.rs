//! Property tests of request validation (`validate.rs`,
//! `features/kv_validation.feature`) and of the command-stream decoder
//! (`storage/stream.rs`, `docs/contract-notes.md`), the two places where
//! bytes from outside meet the server first.
//!
//! Validation: for arbitrary requests (lengths around every limit, any
//! integer) the checks never panic, refuse only with InvalidArgument or
//! NotFound, and accept exactly the requests within the documented limits.
//! Decoder: arbitrary bytes, arbitrary bytes inside valid Snappy framing,
//! and valid streams cut or corrupted never panic; the reader either fails
//! with a malformed-stream error (once, last) or returns records; valid
//! streams read back what was written.

use proptest::prelude::*;
use prost::Message;
use regatta_proto::mvcc::v1::command::CommandType;
use regatta_proto::mvcc::v1::request_op::{self, Request};
use regatta_proto::mvcc::v1::{Command, Compare, KeyValue, RequestOp};
use regatta_proto::regatta::v1::{DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest};

use super::status::Error;
use super::validate::{self, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::storage::stream::{
    data_record, trailer_record, CommandStreamReader, CommandStreamWriter, Record,
};
use crate::storage::Error as StorageError;

/// The one known table.
fn exists(table: &[u8]) -> bool {
    table == b"t"
}

fn table() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(b"t".to_vec()),
        1 => Just(Vec::new()),
        1 => prop::collection::vec(any::<u8>(), 1..4),
    ]
}

/// Keys and range ends: empty, short, and every length around the limit.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        4 => prop::collection::vec(any::<u8>(), 1..8),
        2 => (MAX_KEY_BYTES - 2..=MAX_KEY_BYTES + 2).prop_map(|n| vec![b'k'; n]),
        1 => (2 * MAX_KEY_BYTES..4 * MAX_KEY_BYTES).prop_map(|n| vec![0xff; n]),
    ]
}

/// Values: short, and around the 2 MiB limit.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..16),
        1 => (MAX_VALUE_BYTES - 1..=MAX_VALUE_BYTES + 1).prop_map(|n| vec![b'v'; n]),
    ]
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(0),
        Just(1),
        Just(-1),
        Just(i64::MIN),
        Just(i64::MAX)
    ]
}

prop_compose! {
    fn range_request()(
        table in table(), key in key(), range_end in key(), limit in int(),
        linearizable in any::<bool>(), keys_only in any::<bool>(), count_only in any::<bool>(),
        revisions in (int(), int(), int(), int()),
    ) -> RangeRequest {
        RangeRequest {
            table, key, range_end, limit, linearizable, keys_only, count_only,
            min_mod_revision: revisions.0,
            max_mod_revision: revisions.1,
            min_create_revision: revisions.2,
            max_create_revision: revisions.3,
        }
    }
}

prop_compose! {
    fn put_request()(table in table(), key in key(), value in value(), prev_kv in any::<bool>())
        -> PutRequest {
        PutRequest { table, key, value, prev_kv }
    }
}

prop_compose! {
    fn delete_request()(
        table in table(), key in key(), range_end in key(),
        prev_kv in any::<bool>(), count in any::<bool>(),
    ) -> DeleteRangeRequest {
        DeleteRangeRequest { table, key, range_end, prev_kv, count }
    }
}

fn request_op() -> impl Strategy<Value = RequestOp> {
    let range = (key(), key(), int(), any::<bool>(), any::<bool>()).prop_map(
        |(key, range_end, limit, keys_only, count_only)| {
            Some(Request::RequestRange(request_op::Range {
                key,
                range_end,
                limit,
                keys_only,
                count_only,
            }))
        },
    );
    let put = (key(), value(), any::<bool>()).prop_map(|(key, value, prev_kv)| {
        Some(Request::RequestPut(request_op::Put {
            key,
            value,
            prev_kv,
        }))
    });
    let delete = (key(), key(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(key, range_end, prev_kv, prev_kv_v0_5, count)| {
            Some(Request::RequestDeleteRange(request_op::DeleteRange {
                key,
                range_end,
                prev_kv,
                prev_kv_v0_5,
                count,
            }))
        },
    );
    prop_oneof![3 => range, 3 => put, 3 => delete, 1 => Just(None)]
        .prop_map(|request| RequestOp { request })
}

fn compare() -> impl Strategy<Value = Compare> {
    (key(), key(), any::<i32>(), any::<i32>()).prop_map(|(key, range_end, result, target)| {
        Compare {
            key,
            range_end,
            result,
            target,
            target_union: None,
        }
    })
}

prop_compose! {
    fn txn_request()(
        table in table(),
        compare in prop::collection::vec(compare(), 0..4),
        success in prop::collection::vec(request_op(), 0..5),
        failure in prop::collection::vec(request_op(), 0..5),
    ) -> TxnRequest {
        TxnRequest { table, compare, success, failure }
    }
}

/// The limits `features/kv_validation.feature` checks, written out
/// independently of the checks' order.
fn keys_ok(key: &[u8], range_end: &[u8]) -> bool {
    key.len() <= MAX_KEY_BYTES && range_end.len() <= MAX_KEY_BYTES
}

fn range_ok(r: &RangeRequest) -> bool {
    r.limit >= 0
        && !(r.keys_only && r.count_only)
        && exists(&r.table)
        && !r.key.is_empty()
        && keys_ok(&r.key, &r.range_end)
}

fn put_ok(r: &PutRequest) -> bool {
    exists(&r.table)
        && !r.key.is_empty()
        && r.key.len() <= MAX_KEY_BYTES
        && r.value.len() <= MAX_VALUE_BYTES
}

fn delete_ok(r: &DeleteRangeRequest) -> bool {
    exists(&r.table) && !r.key.is_empty() && keys_ok(&r.key, &r.range_end)
}

fn op_ok(op: &RequestOp) -> bool {
    match &op.request {
        Some(Request::RequestRange(r)) => {
            r.limit >= 0
                && !(r.keys_only && r.count_only)
                && !r.key.is_empty()
                && keys_ok(&r.key, &r.range_end)
        }
        Some(Request::RequestPut(p)) => {
            !p.key.is_empty() && p.key.len() <= MAX_KEY_BYTES && p.value.len() <= MAX_VALUE_BYTES
        }
        Some(Request::RequestDeleteRange(d)) => !d.key.is_empty() && keys_ok(&d.key, &d.range_end),
        None => true,
    }
}

fn txn_ok(r: &TxnRequest) -> bool {
    exists(&r.table)
        && r.success.iter().chain(&r.failure).all(op_ok)
        && r.compare.iter().all(|c| keys_ok(&c.key, &c.range_end))
}

/// A refusal is a bad argument, or an unknown (set) table; nothing else.
fn refusal_is_a_client_error(result: &Result<(), Error>, table: &[u8]) -> Result<(), String> {
    match result {
        Ok(()) | Err(Error::InvalidArgument(_)) => Ok(()),
        Err(Error::NotFound(_)) if !table.is_empty() && !exists(table) => Ok(()),
        Err(other) => Err(format!("refused with {other:?} (table {table:?})")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn range_accepts_exactly_the_requests_within_the_limits(r in range_request()) {
        let result = validate::range(&r, &exists);
        prop_assert_eq!(result.is_ok(), range_ok(&r), "{:?}", result);
        refusal_is_a_client_error(&result, &r.table).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn put_accepts_exactly_the_requests_within_the_limits(r in put_request()) {
        let result = validate::put(&r, &exists);
        prop_assert_eq!(result.is_ok(), put_ok(&r), "{:?}", result);
        refusal_is_a_client_error(&result, &r.table).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn delete_accepts_exactly_the_requests_within_the_limits(r in delete_request()) {
        let result = validate::delete_range(&r, &exists);
        prop_assert_eq!(result.is_ok(), delete_ok(&r), "{:?}", result);
        refusal_is_a_client_error(&result, &r.table).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn txn_accepts_exactly_the_requests_within_the_limits(r in txn_request()) {
        let result = validate::txn(&r, &exists);
        prop_assert_eq!(result.is_ok(), txn_ok(&r), "{:?}", result);
        refusal_is_a_client_error(&result, &r.table).map_err(TestCaseError::fail)?;
    }

    /// Whatever bytes decode as a request, validating it does not panic and
    /// agrees with the limits.
    #[test]
    fn requests_decoded_from_arbitrary_bytes_validate_without_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        if let Ok(r) = RangeRequest::decode(bytes.as_slice()) {
            prop_assert_eq!(validate::range(&r, &exists).is_ok(), range_ok(&r));
        }
        if let Ok(r) = PutRequest::decode(bytes.as_slice()) {
            prop_assert_eq!(validate::put(&r, &exists).is_ok(), put_ok(&r));
        }
        if let Ok(r) = DeleteRangeRequest::decode(bytes.as_slice()) {
            prop_assert_eq!(validate::delete_range(&r, &exists).is_ok(), delete_ok(&r));
        }
        if let Ok(r) = TxnRequest::decode(bytes.as_slice()) {
            prop_assert_eq!(validate::txn(&r, &exists).is_ok(), txn_ok(&r));
        }
    }
}

/// Reads `bytes` to the end: every item, checking that an error comes at
/// most once, last, and is a malformed-stream error.
fn read_checked(bytes: &[u8]) -> Result<Result<Vec<Record>, String>, String> {
    let mut records = Vec::new();
    let mut reader = CommandStreamReader::new(bytes);
    // Far more items than any of these inputs holds: a reader that never
    // ends is a failure, not a hang.
    const ENOUGH: usize = 1_000_000;
    for _ in 0..ENOUGH {
        match reader.next() {
            None => return Ok(Ok(records)),
            Some(Ok(record)) => records.push(record),
            Some(Err(StorageError::MalformedStream(reason))) => {
                return match reader.next() {
                    None => Ok(Err(reason)),
                    Some(more) => Err(format!("an item after the error {reason:?}: {more:?}")),
                };
            }
            Some(Err(other)) => return Err(format!("not a malformed-stream error: {other:?}")),
        }
    }
    Err(format!(
        "more than {ENOUGH} items from {} bytes",
        bytes.len()
    ))
}

/// Snappy framing (`docs/contract-notes.md`, "Command streams") around
/// `content`, valid at that level.
fn snappy(content: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = snap::write::FrameEncoder::new(Vec::new());
    encoder.write_all(content).expect("in memory");
    encoder.into_inner().expect("in memory")
}

fn kv() -> impl Strategy<Value = KeyValue> {
    (
        prop::collection::vec(any::<u8>(), 1..16),
        prop::collection::vec(any::<u8>(), 0..32),
        any::<i64>(),
        any::<i64>(),
    )
        .prop_map(|(key, value, create_revision, mod_revision)| KeyValue {
            key,
            value,
            create_revision,
            mod_revision,
        })
}

/// Raw record bodies: arbitrary bytes, or a Command of any type (SEQUENCE
/// nested, unknown types, keys or not).
fn record_body() -> impl Strategy<Value = Vec<u8>> {
    let command = (0i32..9, prop::option::of(kv()), any::<Option<u64>>()).prop_map(
        |(kind, kv, leader_index)| Command {
            table: b"t".to_vec(),
            r#type: kind,
            kv,
            leader_index,
            ..Command::default()
        },
    );
    let nested = command.prop_recursive(4, 16, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(|sequence| Command {
            table: b"t".to_vec(),
            r#type: CommandType::Sequence as i32,
            sequence,
            ..Command::default()
        })
    });
    prop_oneof![
        3 => nested.prop_map(|c| c.encode_to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// `[u64 LE length][body]` records; the length sometimes a lie.
fn records() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        (
            record_body(),
            prop_oneof![
                8 => Just(None),
                1 => any::<u64>().prop_map(Some),
                1 => (0u64..80).prop_map(Some),
            ],
        ),
        0..6,
    )
    .prop_map(|records| {
        let mut out = Vec::new();
        for (body, length) in records {
            out.extend_from_slice(&length.unwrap_or(body.len() as u64).to_le_bytes());
            out.extend_from_slice(&body);
        }
        out
    })
}

fn write_stream(commands: &[Command]) -> Vec<u8> {
    let mut writer = CommandStreamWriter::new(Vec::new());
    for command in commands {
        writer.write(command).expect("in memory");
    }
    writer.finish().expect("in memory")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_an_error_or_records(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        // An error or records, either is fine here.
        let _ = read_checked(&bytes).map_err(TestCaseError::fail)?;
    }

    /// Past the Snappy layer: record lengths and Command bodies of any kind.
    #[test]
    fn arbitrary_records_in_valid_framing_are_an_error_or_records(content in records()) {
        // An error or records, either is fine here.
        let _ = read_checked(&snappy(&content)).map_err(TestCaseError::fail)?;
    }

    /// A valid stream reads back as written; cut or with a byte changed, it
    /// is still an error or records, never a panic.
    #[test]
    fn valid_streams_read_back_and_damaged_ones_do_not_panic(
        kvs in prop::collection::vec(kv(), 0..20),
        trailer in any::<Option<(Option<u64>, Option<u64>)>>(),
        as_sequence in any::<bool>(),
        cut in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let mut commands: Vec<Command> =
            kvs.iter().cloned().map(|kv| data_record(b"t", kv)).collect();
        if as_sequence {
            // Regatta 0.5 packs records into SEQUENCE commands.
            commands = vec![Command {
                table: b"t".to_vec(),
                r#type: CommandType::Sequence as i32,
                sequence: commands,
                ..Command::default()
            }];
        }
        if let Some((leader_index, revision)) = trailer {
            commands.push(trailer_record(b"t", leader_index, revision));
        }
        let bytes = write_stream(&commands);
        let read = read_checked(&bytes).map_err(TestCaseError::fail)?;
        let mut expected: Vec<Record> = kvs.into_iter().map(Record::Data).collect();
        if let Some((leader_index, revision)) = trailer {
            // The writer keeps the revision in an i64 (clamped), and a
            // reader takes only a positive one.
            let stored = revision.map(|r| i64::try_from(r).unwrap_or(i64::MAX));
            expected.push(Record::Trailer {
                leader_index,
                revision: stored.and_then(|r| u64::try_from(r).ok()).filter(|r| *r > 0),
            });
        }
        prop_assert_eq!(read, Ok(expected));
        if !bytes.is_empty() {
            // An error or records, either is fine here.
            let _ = read_checked(&bytes[..cut.index(bytes.len())]).map_err(TestCaseError::fail)?;
            let mut damaged = bytes.clone();
            let at = flip.0.index(damaged.len());
            damaged[at] ^= flip.1.max(1);
            // An error or records, either is fine here.
            let _ = read_checked(&damaged).map_err(TestCaseError::fail)?;
        }
    }
}

#[test]
fn a_record_claiming_more_than_the_limit_is_refused_before_it_is_allocated() {
    let mut content = (u64::MAX).to_le_bytes().to_vec();
    content.extend_from_slice(b"tiny");
    let read = read_checked(&snappy(&content)).expect("an error, not a panic");
    assert!(read.is_err(), "{read:?}");
}

#[test]
fn a_deep_sequence_is_an_error_not_a_stack_overflow() {
    // A SEQUENCE inside a SEQUENCE ... 2,000 levels deep: prost stops at
    // its recursion limit, the reader reports a malformed record.
    let mut command = Command {
        table: b"t".to_vec(),
        r#type: CommandType::Put as i32,
        kv: Some(KeyValue {
            key: b"k".to_vec(),
            ..KeyValue::default()
        }),
        ..Command::default()
    }
    .encode_to_vec();
    for _ in 0..2_000 {
        let mut outer = Vec::new();
        // table = 1, type = 2 (SEQUENCE), sequence = 10
        outer.extend_from_slice(&[0x0a, 0x01, b't', 0x10, CommandType::Sequence as u8, 0x52]);
        prost::encoding::encode_varint(command.len() as u64, &mut outer);
        outer.extend_from_slice(&command);
        command = outer;
    }
    let mut content = (command.len() as u64).to_le_bytes().to_vec();
    content.extend_from_slice(&command);
    let read = read_checked(&snappy(&content)).expect("an error, not a panic");
    assert!(read.is_err(), "{read:?}");
}
