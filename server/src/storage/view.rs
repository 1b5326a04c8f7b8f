//! Read access to one table's data: the live column family, a point-in-time
//! RocksDB snapshot of it, or a transaction's pending writes on top of either.

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

use rocksdb::{BoundColumnFamily, ReadOptions, SnapshotWithThreadMode, DB};

use super::encoding::{data_key, decode_value, Stored, DATA_END, DATA_PREFIX};
use super::error::Result;

/// One stored pair, as views hand them out.
pub type Pair = (Vec<u8>, Stored);
/// An ascending scan over a view.
pub type Scan<'a> = Box<dyn Iterator<Item = Result<Pair>> + 'a>;

/// What queries and transactions read through.
pub trait View {
    /// The stored pair of `key`, if present.
    fn get(&self, key: &[u8]) -> Result<Option<Stored>>;
    /// Every pair with `start <= key < end` (`end = None`: no bound), ascending.
    fn scan<'a>(&'a self, start: &[u8], end: Option<&[u8]>) -> Scan<'a>;
}

/// A table's column family, read live or through a RocksDB snapshot.
pub struct DbView<'a> {
    pub(crate) db: &'a DB,
    pub(crate) cf: &'a Arc<BoundColumnFamily<'a>>,
    pub(crate) snapshot: Option<&'a SnapshotWithThreadMode<'a, DB>>,
}

impl DbView<'_> {
    pub(crate) fn read_options(&self) -> ReadOptions {
        let mut options = ReadOptions::default();
        if let Some(snapshot) = self.snapshot {
            options.set_snapshot(snapshot);
        }
        options
    }
}

impl View for DbView<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Stored>> {
        let found = self
            .db
            .get_pinned_cf_opt(self.cf, data_key(key), &self.read_options())?;
        found.map(|raw| decode_value(&raw)).transpose()
    }

    fn scan<'a>(&'a self, start: &[u8], end: Option<&[u8]>) -> Scan<'a> {
        let mut options = self.read_options();
        options.set_iterate_upper_bound(match end {
            Some(end) => data_key(end),
            None => DATA_END.to_vec(),
        });
        let mut iter = self.db.raw_iterator_cf_opt(self.cf, options);
        iter.seek(data_key(start));
        let mut done = false;
        Box::new(std::iter::from_fn(move || {
            if done {
                return None;
            }
            if !iter.valid() {
                done = true;
                return iter.status().err().map(|err| Err(err.into()));
            }
            let item = match (iter.key(), iter.value()) {
                (Some(key), Some(value)) if key.first() == Some(&DATA_PREFIX) => {
                    decode_value(value).map(|stored| (key[1..].to_vec(), stored))
                }
                _ => {
                    done = true;
                    return None;
                }
            };
            iter.next();
            Some(item)
        }))
    }
}

/// Pending writes of a transaction over a base view: reads see them first
/// (read-your-writes); `None` marks a deleted key.
pub struct Overlay<'b, V: View> {
    base: &'b V,
    writes: BTreeMap<Vec<u8>, Option<Stored>>,
}

impl<'b, V: View> Overlay<'b, V> {
    pub fn new(base: &'b V) -> Self {
        Overlay {
            base,
            writes: BTreeMap::new(),
        }
    }

    pub fn put(&mut self, key: Vec<u8>, stored: Stored) {
        self.writes.insert(key, Some(stored));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// The pending writes, ascending by key.
    pub fn into_writes(self) -> BTreeMap<Vec<u8>, Option<Stored>> {
        self.writes
    }
}

impl<V: View> View for Overlay<'_, V> {
    fn get(&self, key: &[u8]) -> Result<Option<Stored>> {
        match self.writes.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => self.base.get(key),
        }
    }

    fn scan<'a>(&'a self, start: &[u8], end: Option<&[u8]>) -> Scan<'a> {
        let upper = match end {
            Some(end) if end <= start => return Box::new(std::iter::empty()),
            Some(end) => Bound::Excluded(end.to_vec()),
            None => Bound::Unbounded,
        };
        let pending = self
            .writes
            .range::<Vec<u8>, _>((Bound::Included(start.to_vec()), upper))
            .map(|(key, value)| (key.clone(), value.clone()))
            .peekable();
        Box::new(Merge {
            base: self.base.scan(start, end).peekable(),
            pending,
        })
    }
}

/// Merges a base scan with pending writes, pending ones winning on equal keys.
struct Merge<'a, P: Iterator<Item = (Vec<u8>, Option<Stored>)>> {
    base: Peekable<Scan<'a>>,
    pending: Peekable<P>,
}

impl<P: Iterator<Item = (Vec<u8>, Option<Stored>)>> Iterator for Merge<'_, P> {
    type Item = Result<Pair>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_pending = match (self.base.peek(), self.pending.peek()) {
                (None, None) => return None,
                (Some(_), None) | (Some(Err(_)), _) => return self.base.next(),
                (None, Some(_)) => true,
                (Some(Ok((base_key, _))), Some((pending_key, _))) => {
                    if base_key == pending_key {
                        // The pending write shadows the stored pair.
                        self.base.next();
                        true
                    } else {
                        pending_key < base_key
                    }
                }
            };
            if !take_pending {
                return self.base.next();
            }
            if let Some((key, Some(stored))) = self.pending.next() {
                return Some(Ok((key, stored)));
            }
            // A pending delete hides the key; look further.
        }
    }
}
