//! Range reads (`features/kv_range.feature`, `features/limits.feature`),
//! shared by the Range RPC and Txn range ops.

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
        let needed = encoded_pair_bytes(kv);
        if needed > self.remaining {
            return false;
        }
        self.remaining -= needed;
        true
    }
}

/// Bytes one pair adds to a response: its tag, length prefix (at most 10)
/// and the message itself.
fn encoded_pair_bytes(kv: &KeyValue) -> usize {
    1 + 10 + kv.encoded_len()
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

type Matches<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Stored)>> + 'a>;

/// The stored pairs of `query`'s keys, ascending, before its filters.
fn in_key_range<'a>(view: &'a impl View, query: &'a RangeQuery) -> Result<Matches<'a>> {
    Ok(match KeyRange::new(&query.key, &query.range_end) {
        KeyRange::Single(key) => {
            Box::new(view.get(&key)?.map(|stored| Ok((key, stored))).into_iter())
        }
        range if range.is_empty() => Box::new(std::iter::empty()),
        KeyRange::Span { start, end } => view.scan(&start, end.as_deref()),
    })
}

/// The stored pairs `query` selects, ascending, before its limit.
fn matching<'a>(view: &'a impl View, query: &'a RangeQuery) -> Result<Matches<'a>> {
    Ok(Box::new(in_key_range(view, query)?.filter(|item| {
        item.as_ref()
            .map_or(true, |(_, stored)| query.passes(stored))
    })))
}

/// Runs a range read against `view`.
pub fn range(
    view: &impl View,
    query: &RangeQuery,
    budget: &mut ResponseBudget,
) -> Result<RangeResult> {
    Ok(range_within(view, query, budget, usize::MAX)?.unwrap_or_default())
}

/// Runs a range read against `view`, or gives up (`None`) once it has
/// visited more than `max_visited` stored pairs (those its filters skip
/// included): the caller then knows the read is long.
pub fn range_within(
    view: &impl View,
    query: &RangeQuery,
    budget: &mut ResponseBudget,
    max_visited: usize,
) -> Result<Option<RangeResult>> {
    let mut result = RangeResult::default();
    for (visited, item) in in_key_range(view, query)?.enumerate() {
        if visited >= max_visited {
            return Ok(None);
        }
        let (key, stored) = item?;
        if !query.passes(&stored) {
            continue;
        }
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
    Ok(Some(result))
}

/// How many bytes of pairs each streamed message may carry: the first
/// message a little, so that a client sees pairs at once (the first message
/// waits for nothing but its own pairs), the others up to `rest`. A pair
/// larger than its message's share travels alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageSizes {
    pub first: usize,
    pub rest: usize,
}

impl MessageSizes {
    /// IterateRange's: 64 KiB first, then every message under 4 MiB - 1 KiB
    /// encoded (`features/kv_iterate_range.feature`), header, count and
    /// framing included.
    pub const STREAM: MessageSizes = MessageSizes {
        first: 64 * 1024,
        rest: MAX_MESSAGE_BYTES - 1024 - 256,
    };

    /// Every message the same size.
    pub const fn uniform(bytes: usize) -> MessageSizes {
        MessageSizes {
            first: bytes,
            rest: bytes,
        }
    }
}

/// Streams the pairs `query` selects from `view` as messages of `sizes`,
/// calling `emit` for each until it returns false (the reader went away).
/// `more` is set on every message but the last, and on the last exactly
/// when keys beyond the limit match; `count` is the pairs of the message,
/// or with `count_only` the total in one message. At least one message is
/// emitted.
pub fn iterate(
    view: &impl View,
    query: &RangeQuery,
    sizes: MessageSizes,
    mut emit: impl FnMut(RangeResult) -> bool,
) -> Result<()> {
    let mut message_bytes = sizes.first;
    let mut matches = matching(view, query)?;
    let mut message = RangeResult::default();
    let mut message_size = 0;
    let mut taken = 0u64;
    for item in matches.by_ref() {
        let (key, stored) = item?;
        taken += 1;
        if query.count_only {
            message.count += 1;
        } else {
            let kv = query.pair(key, stored);
            let size = encoded_pair_bytes(&kv);
            if !message.kvs.is_empty() && message_size + size > message_bytes {
                message.more = true;
                if !emit(std::mem::take(&mut message)) {
                    return Ok(());
                }
                message_size = 0;
                message_bytes = sizes.rest;
            }
            message_size += size;
            message.kvs.push(kv);
            message.count += 1;
        }
        if query.limit > 0 && taken >= query.limit {
            break;
        }
    }
    // Exact: the range holds a key beyond the limit only if one more matches.
    message.more = match matches.next() {
        Some(item) => {
            item?;
            true
        }
        None => false,
    };
    emit(message);
    Ok(())
}
