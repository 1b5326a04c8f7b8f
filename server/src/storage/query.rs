//! Range reads (behaviour.md §2.3), shared by the Range RPC and Txn range ops.

use prost::Message;
use regatta_proto::mvcc::v1::KeyValue;

use super::encoding::Stored;
use super::error::Result;
use super::range::KeyRange;
use super::view::View;

/// gRPC's message limit; responses stay below it.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Room left for the header, other fields and framing of a response.
const RESPONSE_OVERHEAD: usize = 64 * 1024;

/// How many bytes of pairs one response may still carry. A Txn shares one
/// budget between all its range ops so the whole response fits.
#[derive(Debug)]
pub struct ResponseBudget {
    remaining: usize,
}

impl Default for ResponseBudget {
    fn default() -> Self {
        ResponseBudget {
            remaining: MAX_MESSAGE_BYTES - RESPONSE_OVERHEAD,
        }
    }
}

impl ResponseBudget {
    /// Takes room for one pair; false when it does not fit.
    fn take(&mut self, kv: &KeyValue) -> bool {
        // Tag, length prefix and the message itself.
        let needed = 1 + 10 + kv.encoded_len();
        if needed > self.remaining {
            return false;
        }
        self.remaining -= needed;
        true
    }
}

/// What a range read asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeQuery {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// At most this many pairs; 0 = no limit.
    pub limit: u64,
    pub keys_only: bool,
    pub count_only: bool,
    /// Revision filters, inclusive; 0 = no bound.
    pub min_mod_revision: u64,
    pub max_mod_revision: u64,
    pub min_create_revision: u64,
    pub max_create_revision: u64,
}

/// What a range read found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// Keys beyond those returned match too.
    pub more: bool,
    /// Keys the response covers.
    pub count: u64,
}

impl RangeQuery {
    fn passes(&self, stored: &Stored) -> bool {
        let within = |value: u64, min: u64, max: u64| {
            (min == 0 || value >= min) && (max == 0 || value <= max)
        };
        within(
            stored.mod_revision,
            self.min_mod_revision,
            self.max_mod_revision,
        ) && within(
            stored.create_revision,
            self.min_create_revision,
            self.max_create_revision,
        )
    }

    fn pair(&self, key: Vec<u8>, stored: Stored) -> KeyValue {
        if self.keys_only {
            return KeyValue {
                key,
                ..KeyValue::default()
            };
        }
        KeyValue {
            key,
            create_revision: to_i64(stored.create_revision),
            mod_revision: to_i64(stored.mod_revision),
            value: stored.value,
        }
    }
}

/// Revisions are Raft indices (u64) but travel as int64.
pub(crate) fn to_i64(revision: u64) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

/// Runs a range read against `view`.
pub fn range(
    view: &impl View,
    query: &RangeQuery,
    budget: &mut ResponseBudget,
) -> Result<RangeResult> {
    let mut result = RangeResult::default();
    let matches: Box<dyn Iterator<Item = Result<(Vec<u8>, Stored)>>> =
        match KeyRange::new(&query.key, &query.range_end) {
            KeyRange::Single(key) => {
                Box::new(view.get(&key)?.map(|stored| Ok((key, stored))).into_iter())
            }
            range if range.is_empty() => return Ok(result),
            KeyRange::Span { start, end } => view.scan(&start, end.as_deref()),
        };
    for item in matches.filter(|item| {
        item.as_ref()
            .map_or(true, |(_, stored)| query.passes(stored))
    }) {
        let (key, stored) = item?;
        if query.limit > 0 && result.count >= query.limit {
            result.more = true;
            break;
        }
        if !query.count_only {
            let kv = query.pair(key, stored);
            if !budget.take(&kv) {
                result.more = true;
                break;
            }
            result.kvs.push(kv);
        }
        result.count += 1;
    }
    Ok(result)
}
