//! The request checks of `features/kv_validation.feature`, in their order:
//! the first failing check answers.

use regatta_proto::mvcc::v1::request_op::{self, Request};
use regatta_proto::mvcc::v1::{Compare, RequestOp};
use regatta_proto::regatta::v1::{DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest};

use super::status::{Error, TABLE_NOT_FOUND};

/// Longest key (and range end) accepted.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value accepted.
pub const MAX_VALUE_BYTES: usize = 2 * 1024 * 1024;

const LIMIT_NEGATIVE: &str = "limit must be a positive number";
const KEYS_AND_COUNT_ONLY: &str = "keys_only and count_only must not be set at the same time";
const TABLE_NOT_SET: &str = "table must be set";
const KEY_NOT_SET: &str = "key must be set";
const KEY_TOO_LONG: &str = "key length exceeded max allowed value";
const VALUE_TOO_LONG: &str = "value length exceeded max allowed value";

fn check(ok: bool, message: &'static str) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(message))
    }
}

fn table_set_and_known(table: &[u8], exists: &dyn Fn(&[u8]) -> bool) -> Result<(), Error> {
    check(!table.is_empty(), TABLE_NOT_SET)?;
    if exists(table) {
        Ok(())
    } else {
        Err(Error::NotFound(TABLE_NOT_FOUND))
    }
}

fn key_lengths(key: &[u8], range_end: &[u8]) -> Result<(), Error> {
    check(
        key.len() <= MAX_KEY_BYTES && range_end.len() <= MAX_KEY_BYTES,
        KEY_TOO_LONG,
    )
}

pub fn range(request: &RangeRequest, exists: &dyn Fn(&[u8]) -> bool) -> Result<(), Error> {
    check(request.limit >= 0, LIMIT_NEGATIVE)?;
    check(
        !(request.keys_only && request.count_only),
        KEYS_AND_COUNT_ONLY,
    )?;
    check(!request.table.is_empty(), TABLE_NOT_SET)?;
    check(!request.key.is_empty(), KEY_NOT_SET)?;
    table_set_and_known(&request.table, exists)?;
    key_lengths(&request.key, &request.range_end)
}

pub fn put(request: &PutRequest, exists: &dyn Fn(&[u8]) -> bool) -> Result<(), Error> {
    check(!request.table.is_empty(), TABLE_NOT_SET)?;
    check(!request.key.is_empty(), KEY_NOT_SET)?;
    table_set_and_known(&request.table, exists)?;
    key_lengths(&request.key, &[])?;
    check(request.value.len() <= MAX_VALUE_BYTES, VALUE_TOO_LONG)
}

pub fn delete_range(
    request: &DeleteRangeRequest,
    exists: &dyn Fn(&[u8]) -> bool,
) -> Result<(), Error> {
    check(!request.table.is_empty(), TABLE_NOT_SET)?;
    check(!request.key.is_empty(), KEY_NOT_SET)?;
    table_set_and_known(&request.table, exists)?;
    key_lengths(&request.key, &request.range_end)
}

pub fn txn(request: &TxnRequest, exists: &dyn Fn(&[u8]) -> bool) -> Result<(), Error> {
    table_set_and_known(&request.table, exists)?;
    for op in request.success.iter().chain(&request.failure) {
        txn_op(op)?;
    }
    for compare in &request.compare {
        compare_keys(compare)?;
    }
    Ok(())
}

fn txn_op(op: &RequestOp) -> Result<(), Error> {
    match &op.request {
        Some(Request::RequestRange(range)) => range_op(range),
        Some(Request::RequestPut(put)) => {
            check(!put.key.is_empty(), KEY_NOT_SET)?;
            key_lengths(&put.key, &[])?;
            check(put.value.len() <= MAX_VALUE_BYTES, VALUE_TOO_LONG)
        }
        Some(Request::RequestDeleteRange(delete)) => {
            check(!delete.key.is_empty(), KEY_NOT_SET)?;
            key_lengths(&delete.key, &delete.range_end)
        }
        // An op with nothing set does nothing; nothing to refuse.
        None => Ok(()),
    }
}

fn range_op(range: &request_op::Range) -> Result<(), Error> {
    check(range.limit >= 0, LIMIT_NEGATIVE)?;
    check(!(range.keys_only && range.count_only), KEYS_AND_COUNT_ONLY)?;
    check(!range.key.is_empty(), KEY_NOT_SET)?;
    key_lengths(&range.key, &range.range_end)
}

fn compare_keys(compare: &Compare) -> Result<(), Error> {
    key_lengths(&compare.key, &compare.range_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(table: &[u8]) -> bool {
        table == b"t"
    }

    fn invalid(message: &'static str) -> Result<(), Error> {
        Err(Error::InvalidArgument(message))
    }

    #[test]
    fn range_checks_answer_in_the_spec_order() {
        let base = RangeRequest {
            table: b"t".to_vec(),
            key: b"k".to_vec(),
            ..RangeRequest::default()
        };
        let everything_wrong = RangeRequest {
            table: vec![],
            key: vec![],
            limit: -1,
            keys_only: true,
            count_only: true,
            ..RangeRequest::default()
        };
        assert_eq!(range(&everything_wrong, &known), invalid(LIMIT_NEGATIVE));
        let r = RangeRequest {
            limit: 0,
            ..everything_wrong.clone()
        };
        assert_eq!(range(&r, &known), invalid(KEYS_AND_COUNT_ONLY));
        let r = RangeRequest {
            count_only: false,
            ..r
        };
        assert_eq!(range(&r, &known), invalid(TABLE_NOT_SET));
        let r = RangeRequest {
            table: b"nope".to_vec(),
            ..r
        };
        assert_eq!(range(&r, &known), invalid(KEY_NOT_SET));
        let r = RangeRequest {
            key: vec![1; 2000],
            ..r
        };
        assert_eq!(
            range(&r, &known),
            Err(Error::NotFound(TABLE_NOT_FOUND)),
            "unknown table before key length"
        );
        let r = RangeRequest {
            table: b"t".to_vec(),
            ..r
        };
        assert_eq!(range(&r, &known), invalid(KEY_TOO_LONG));
        let r = RangeRequest {
            key: vec![1; 1024],
            range_end: vec![2; 1025],
            ..r
        };
        assert_eq!(range(&r, &known), invalid(KEY_TOO_LONG));
        let r = RangeRequest {
            range_end: vec![2; 1024],
            ..r
        };
        assert_eq!(range(&r, &known), Ok(()));
        assert_eq!(range(&base, &known), Ok(()));
    }

    #[test]
    fn put_checks_answer_in_the_spec_order_and_accept_the_limits() {
        let r = PutRequest {
            value: vec![0; MAX_VALUE_BYTES + 1],
            key: vec![0; 1025],
            ..PutRequest::default()
        };
        assert_eq!(put(&r, &known), invalid(TABLE_NOT_SET));
        let r = PutRequest {
            table: b"x".to_vec(),
            key: vec![],
            ..r
        };
        assert_eq!(put(&r, &known), invalid(KEY_NOT_SET));
        let r = PutRequest {
            key: vec![0; 1025],
            ..r
        };
        assert_eq!(put(&r, &known), Err(Error::NotFound(TABLE_NOT_FOUND)));
        let r = PutRequest {
            table: b"t".to_vec(),
            ..r
        };
        assert_eq!(put(&r, &known), invalid(KEY_TOO_LONG));
        let r = PutRequest {
            key: vec![0; 1024],
            ..r
        };
        assert_eq!(put(&r, &known), invalid(VALUE_TOO_LONG));
        let r = PutRequest {
            value: vec![0; MAX_VALUE_BYTES],
            ..r
        };
        assert_eq!(
            put(&r, &known),
            Ok(()),
            "exactly 1024-byte keys and 2 MiB values are accepted"
        );
    }

    #[test]
    fn delete_checks_answer_in_the_spec_order() {
        let r = DeleteRangeRequest::default();
        assert_eq!(delete_range(&r, &known), invalid(TABLE_NOT_SET));
        let r = DeleteRangeRequest {
            table: b"nope".to_vec(),
            ..r
        };
        assert_eq!(delete_range(&r, &known), invalid(KEY_NOT_SET));
        let r = DeleteRangeRequest {
            key: b"k".to_vec(),
            range_end: vec![0; 1025],
            ..r
        };
        assert_eq!(
            delete_range(&r, &known),
            Err(Error::NotFound(TABLE_NOT_FOUND))
        );
        let r = DeleteRangeRequest {
            table: b"t".to_vec(),
            ..r
        };
        assert_eq!(delete_range(&r, &known), invalid(KEY_TOO_LONG));
    }

    #[test]
    fn txn_checks_table_then_success_ops_then_failure_ops_then_compares() {
        let put_op = |key: Vec<u8>, value: Vec<u8>| RequestOp {
            request: Some(Request::RequestPut(request_op::Put {
                key,
                value,
                prev_kv: false,
            })),
        };
        let range_op = |limit: i64| RequestOp {
            request: Some(Request::RequestRange(request_op::Range {
                key: b"k".to_vec(),
                limit,
                ..Default::default()
            })),
        };
        let long_compare = Compare {
            key: vec![0; 1025],
            ..Compare::default()
        };
        let r = TxnRequest {
            compare: vec![long_compare.clone()],
            success: vec![range_op(-1)],
            ..TxnRequest::default()
        };
        assert_eq!(txn(&r, &known), invalid(TABLE_NOT_SET));
        let r = TxnRequest {
            table: b"nope".to_vec(),
            ..r
        };
        assert_eq!(txn(&r, &known), Err(Error::NotFound(TABLE_NOT_FOUND)));
        let r = TxnRequest {
            table: b"t".to_vec(),
            failure: vec![put_op(vec![], vec![])],
            ..r
        };
        assert_eq!(
            txn(&r, &known),
            invalid(LIMIT_NEGATIVE),
            "success ops first"
        );
        let r = TxnRequest {
            success: vec![range_op(1)],
            ..r
        };
        assert_eq!(txn(&r, &known), invalid(KEY_NOT_SET), "then failure ops");
        let r = TxnRequest {
            failure: vec![put_op(b"k".to_vec(), vec![0; MAX_VALUE_BYTES + 1])],
            ..r
        };
        assert_eq!(txn(&r, &known), invalid(VALUE_TOO_LONG));
        let r = TxnRequest {
            failure: vec![],
            ..r
        };
        assert_eq!(txn(&r, &known), invalid(KEY_TOO_LONG), "compares last");
        let r = TxnRequest {
            compare: vec![Compare::default()],
            ..r
        };
        assert_eq!(txn(&r, &known), Ok(()), "an empty compare key is allowed");
    }
}
