//! The embedded store: flows in memory, compact, indexed and bounded in
//! bytes, for the demo and single nodes.
//!
//! Each flow is kept as a compact [`row::Row`] (about 200 bytes) whose
//! repeated parts (texts, endpoint identities, verdicts, policy lists, DNS
//! records) are symbols of per-store tables with reference counts
//! ([`intern`]): a value is freed when the last row holding it is evicted, so
//! churning pod names do not grow the tables. Query results are rendered back
//! to the exact `pb::Flow` that was inserted.
//!
//! Rows are kept in time buckets by `last_seen` (one per
//! [`MemoryConfig::bucket_width`], a minute by default), in a `BTreeMap` from
//! bucket start to bucket. Each bucket keeps the reports' tallies of its rows
//! ([`index`]), updated on insert, so `denied` and `dns_failures` merge
//! tallies of the buckets inside their window and read rows only in the (at
//! most two) buckets the window cuts.
//!
//! The store is bounded twice: past [`MemoryConfig::max_flows`] records or
//! past [`MemoryConfig::max_bytes`] of estimated memory the oldest bucket is
//! dropped whole (when a single bucket is over a bound, its oldest inserted
//! records go first, and the bucket loses its tallies: reports then read its
//! rows), and every record dropped is counted in
//! [`StoreStatus::flows_dropped`]. The estimate ([`MemoryStore::bytes`]) adds
//! up what the store allocates: the rows (by their buckets' capacity), the
//! tallies, the id set and the symbol tables (by their capacity, with the
//! values' heap bytes).
//!
//! Each flow id is remembered, so a batch sent again is stored once; the id
//! set holds exactly the stored flows and shrinks with them. A flow resent
//! after its bucket was evicted is stored again (and, being the oldest, is
//! the next to go).
//!
//! Locking: one `RwLock`. Inserts hold it to write for their batch. `flows`
//! walks the window's buckets from the newest back (or the oldest forward for
//! `first`) until it has its `limit`, taking the read lock for one bucket at a
//! time, so a query over many rows lets inserts in between buckets. The
//! reports hold the read lock while they merge tallies and read the rows of
//! at most two cut buckets.

mod index;
mod intern;
mod row;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::RwLock;
use std::time::Duration;

use netverdict_proto::filter::{Filter, FilterSet};
use netverdict_proto::time::{TimeWindow, UnixNanos};
use netverdict_proto::v1 as pb;
use netverdict_proto::validate::check_storable;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use rustc_hash::{FxBuildHasher, FxHashMap};

use self::index::{BucketIndex, BucketView};
use self::intern::hash_table_bytes;
use self::row::{Addresses, FlowId, Row, Signature, Tables};
use crate::store::{FlowQuery, InsertOutcome, ReportQuery, Result, Store, StoreStatus};

/// Settings of the in-memory store.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// The most flow records held.
    pub max_flows: usize,
    /// The most bytes the store's estimate of its memory may reach (rows,
    /// report tallies, the id set and the symbol tables).
    pub max_bytes: usize,
    /// The time span of one bucket (whole seconds, at least one).
    pub bucket_width: Duration,
}

impl MemoryConfig {
    /// The default record bound.
    pub const DEFAULT_MAX_FLOWS: usize = 1_000_000;
    /// The default byte bound: 256 MiB, about a million records of a small
    /// cluster's flows.
    pub const DEFAULT_MAX_BYTES: usize = 256 << 20;
}

impl Default for MemoryConfig {
    /// One million records and 256 MiB, in one-minute buckets.
    fn default() -> Self {
        MemoryConfig {
            max_flows: MemoryConfig::DEFAULT_MAX_FLOWS,
            max_bytes: MemoryConfig::DEFAULT_MAX_BYTES,
            bucket_width: Duration::from_secs(60),
        }
    }
}

struct Bucket {
    /// In insertion order.
    rows: VecDeque<Row>,
    /// The reports' tallies of every row; None once a partial eviction
    /// removed rows (reports then read the rows).
    index: Option<BucketIndex>,
    /// The least and the greatest `last_seen` of its rows (nanoseconds).
    oldest: i64,
    newest: i64,
    /// The estimate of its bytes, as last computed.
    bytes: usize,
}

impl Bucket {
    fn new() -> Self {
        Bucket {
            rows: VecDeque::new(),
            index: Some(BucketIndex::default()),
            oldest: i64::MAX,
            newest: i64::MIN,
            bytes: 0,
        }
    }

    fn estimate(&self) -> usize {
        size_of::<Bucket>()
            + BTREE_ENTRY_BYTES
            + self.rows.capacity() * size_of::<Row>()
            + self.index.as_ref().map_or(0, BucketIndex::bytes)
    }

    fn recompute_bounds(&mut self) {
        self.oldest = self
            .rows
            .iter()
            .map(|r| r.last_seen)
            .min()
            .unwrap_or(i64::MAX);
        self.newest = self
            .rows
            .iter()
            .map(|r| r.last_seen)
            .max()
            .unwrap_or(i64::MIN);
    }
}

/// A B-tree's share per entry beyond the entry (its nodes' links and
/// lengths; nodes hold up to 11 entries).
const BTREE_ENTRY_BYTES: usize = 16;

struct Inner {
    buckets: BTreeMap<i64, Bucket>,
    /// The ids of the stored flows.
    ids: HashSet<FlowId, FxBuildHasher>,
    tables: Tables,
    len: usize,
    dropped: u64,
    /// The sum of the buckets' `bytes`.
    bucket_bytes: usize,
}

impl Inner {
    fn bytes(&self) -> usize {
        self.bucket_bytes
            + hash_table_bytes(self.ids.capacity(), size_of::<FlowId>())
            + self.tables.bytes()
    }

    /// Drops the oldest `n` rows of the bucket at `start` (all when `n` is
    /// its length: the bucket goes), counting them as dropped.
    fn drop_oldest(&mut self, start: i64, n: usize) {
        let Some(bucket) = self.buckets.get_mut(&start) else {
            return;
        };
        let n = n.min(bucket.rows.len());
        for row in bucket.rows.drain(..n) {
            self.ids.remove(&row.id);
            self.tables.release(&row);
        }
        self.len -= n;
        self.dropped += n as u64;
        self.bucket_bytes -= bucket.bytes;
        if bucket.rows.is_empty() {
            self.buckets.remove(&start);
        } else {
            // Tallies cannot take rows out: reports read this bucket's rows.
            bucket.index = None;
            bucket.rows.shrink_to_fit();
            bucket.recompute_bounds();
            bucket.bytes = bucket.estimate();
            self.bucket_bytes += bucket.bytes;
        }
        // Keep the id set near its length, so that its share of the
        // estimate falls with the rows.
        if self.ids.capacity() > 1024 && self.ids.capacity() > 4 * self.ids.len() {
            self.ids.shrink_to(self.ids.len() * 2);
        }
    }
}

/// The bounded in-memory [`Store`].
pub struct MemoryStore {
    max_flows: usize,
    max_bytes: usize,
    width: i64,
    inner: RwLock<Inner>,
    /// The estimate of the bytes held, as of the last insert (a metric).
    bytes_gauge: Gauge,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_flows", &self.max_flows)
            .field("max_bytes", &self.max_bytes)
            .field("bucket_width_secs", &self.width)
            .finish_non_exhaustive()
    }
}

/// A bound or the bucket width is zero.
#[derive(Debug, thiserror::Error)]
#[error("memory store setting {field} must be at least 1")]
pub struct ConfigError {
    /// The offending setting.
    pub field: &'static str,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(config: MemoryConfig) -> Result<Self, ConfigError> {
        if config.max_flows == 0 {
            return Err(ConfigError { field: "max_flows" });
        }
        if config.max_bytes == 0 {
            return Err(ConfigError { field: "max_bytes" });
        }
        let width = i64::try_from(config.bucket_width.as_secs()).unwrap_or(i64::MAX);
        if width == 0 {
            return Err(ConfigError {
                field: "bucket_width",
            });
        }
        Ok(MemoryStore {
            max_flows: config.max_flows,
            max_bytes: config.max_bytes,
            width,
            bytes_gauge: Gauge::default(),
            inner: RwLock::new(Inner {
                buckets: BTreeMap::new(),
                ids: HashSet::default(),
                tables: Tables::default(),
                len: 0,
                dropped: 0,
                bucket_bytes: 0,
            }),
        })
    }

    /// The store's estimate of the bytes it holds (what
    /// [`MemoryConfig::max_bytes`] bounds).
    pub fn bytes(&self) -> usize {
        self.read().bytes()
    }

    /// The start of the bucket holding `seconds` (saturating: never overflows).
    fn bucket_of(&self, seconds: i64) -> i64 {
        seconds.saturating_sub(seconds.rem_euclid(self.width))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The buckets a window's flows can be in, from the window's whole
    /// seconds; None when the window is empty.
    fn range(&self, window: &TimeWindow) -> Option<(Bound<i64>, Bound<i64>)> {
        let seconds = window.seconds()?;
        let bound =
            |s: Option<i64>| s.map_or(Bound::Unbounded, |s| Bound::Included(self.bucket_of(s)));
        Some((bound(seconds.first), bound(seconds.last)))
    }

    /// Whether every moment of the bucket starting at `start` is in `window`.
    fn whole(&self, start: i64, window: &TimeWindow) -> bool {
        let end = UnixNanos::from_seconds(start.saturating_add(self.width));
        window
            .since()
            .is_none_or(|s| s <= UnixNanos::from_seconds(start))
            && window.until().is_none_or(|u| end <= u)
    }

    /// The buckets overlapping `window`, as the reports read them.
    fn views<'a>(
        &self,
        inner: &'a Inner,
        window: &TimeWindow,
    ) -> impl Iterator<Item = BucketView<'a>> {
        let range = self.range(window);
        let window = *window;
        range
            .map(|r| inner.buckets.range(r))
            .into_iter()
            .flatten()
            .map(move |(&start, b)| BucketView {
                rows: &b.rows,
                index: b.index.as_ref(),
                whole: self.whole(start, &window),
            })
    }

    fn evict(&self, inner: &mut Inner) {
        loop {
            let over_flows = inner.len > self.max_flows;
            let bytes = inner.bytes();
            if !over_flows && bytes <= self.max_bytes {
                break;
            }
            let Some((&start, oldest)) = inner.buckets.first_key_value() else {
                // Nothing left to drop (a bound below an empty store's size).
                break;
            };
            let n = if inner.buckets.len() > 1 {
                oldest.rows.len()
            } else {
                // One bucket over a bound: its oldest inserted records go,
                // as many as the bounds ask for (at least one).
                let excess_flows = inner.len.saturating_sub(self.max_flows);
                let excess_bytes = bytes
                    .saturating_sub(self.max_bytes)
                    .div_ceil(size_of::<Row>());
                excess_flows.max(excess_bytes).max(1)
            };
            inner.drop_oldest(start, n);
        }
    }

    /// The rows of `bucket` matching `query`, oldest first, rendered: the
    /// first (`first`) or last `need` of them.
    fn select(bucket: &Bucket, tables: &Tables, query: &FlowQuery, need: usize) -> Vec<pb::Flow> {
        let everything = query.filters.include.is_empty() && query.filters.exclude.is_empty();
        let addresses = Addresses(reads_addresses(&query.filters));
        let mut probe = tables.probe();
        // The filters are decided once per signature.
        let mut decided: FxHashMap<Signature, bool> = FxHashMap::default();
        let mut passes = |r: &Row| {
            *decided
                .entry(r.signature(addresses))
                .or_insert_with(|| probe.check(r, Some(addresses), |f| query.filters.matches(f)))
        };
        let mut matched: Vec<&Row> = bucket
            .rows
            .iter()
            .filter(|r| {
                query.window.contains(UnixNanos::from_nanos(r.last_seen))
                    && (everything || passes(r))
            })
            .collect();
        let order = |a: &&Row, b: &&Row| {
            a.last_seen
                .cmp(&b.last_seen)
                .then_with(|| tables.cmp_ids(&a.id, &b.id))
        };
        // Only the rows taken are sorted: the first or last `need` are
        // selected first.
        let taken = need.min(matched.len());
        let rows = if query.first {
            if taken < matched.len() {
                matched.select_nth_unstable_by(taken, order);
            }
            &mut matched[..taken]
        } else {
            let from = matched.len() - taken;
            if from > 0 {
                matched.select_nth_unstable_by(from - 1, order);
            }
            &mut matched[from..]
        };
        rows.sort_unstable_by(order);
        rows.iter().map(|r| tables.render(r)).collect()
    }
}

/// Whether a filter of `filters` reads the endpoints' addresses. Every
/// field of [`Filter`] is named: a new one must say here what it reads. The
/// matchers read only a row's [`row::Signature`] (its verdict, outcome,
/// mismatch, protocol, node, drop reason, policy lists, DNS record,
/// destination names and endpoints; never its id, times, counts, reason,
/// Service or direction verdicts), the addresses only for `source_ip` and
/// `destination_ip`.
/// `api/tests/it/clickhouse_filters.rs` checks every field on this store.
fn reads_addresses(filters: &FilterSet) -> bool {
    filters.include.iter().chain(&filters.exclude).any(|f| {
        let Filter {
            verdict: _,
            outcome: _,
            namespace: _,
            source_pod: _,
            destination_pod: _,
            labels: _,
            policy: _,
            destination_port: _,
            protocol: _,
            dns_query: _,
            mismatch: _,
            node_name: _,
            source_ip,
            destination_ip,
            source_namespace: _,
            destination_namespace: _,
            source_labels: _,
            destination_labels: _,
            drop_reason: _,
            destination_fqdn: _,
            flow_type: _,
        } = f;
        !source_ip.is_empty() || !destination_ip.is_empty()
    })
}

impl Store for MemoryStore {
    /// `memory_bytes`, the estimate of the bytes held (as of the last
    /// insert), and `memory_max_bytes`, its bound.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "memory_bytes",
            "The memory store's estimate of the bytes it holds (rows, report tallies, ids, symbol tables)",
            self.bytes_gauge.clone(),
        );
        registry.register(
            "memory_max_bytes",
            "The memory store's bound on its estimate of the bytes it holds",
            ConstGauge::new(i64::try_from(self.max_bytes).unwrap_or(i64::MAX)),
        );
    }

    async fn insert(&self, flows: Vec<pb::Flow>) -> Result<InsertOutcome> {
        // Validate the whole batch first: it is stored entirely or not at all.
        for flow in &flows {
            check_storable(flow)?;
        }
        let mut outcome = InsertOutcome::default();
        let mut guard = self.write();
        let inner = &mut *guard;
        let mut touched: Vec<i64> = Vec::new();
        for flow in &flows {
            if let Some(id) = inner.tables.find_id(&flow.id)
                && inner.ids.contains(&id)
            {
                outcome.duplicates += 1;
                continue;
            }
            // Validated: last_seen is set.
            let seconds = flow.last_seen.as_ref().map_or(0, |t| t.seconds);
            let start = self.bucket_of(seconds);
            let row = inner.tables.compact(flow);
            inner.ids.insert(row.id);
            if !inner.buckets.contains_key(&start) {
                // A new newest bucket: the one before has its final size.
                if let Some(mut before) = inner.buckets.last_entry()
                    && *before.key() < start
                {
                    let last = *before.key();
                    before.get_mut().rows.shrink_to_fit();
                    if !touched.contains(&last) {
                        touched.push(last);
                    }
                }
                inner.buckets.insert(start, Bucket::new());
            }
            let Some(bucket) = inner.buckets.get_mut(&start) else {
                continue;
            };
            bucket.oldest = bucket.oldest.min(row.last_seen);
            bucket.newest = bucket.newest.max(row.last_seen);
            if let Some(index) = &mut bucket.index {
                index.add(&row, &inner.tables);
            }
            bucket.rows.push_back(row);
            inner.len += 1;
            outcome.stored += 1;
            if !touched.contains(&start) {
                touched.push(start);
            }
        }
        for start in touched {
            if let Some(bucket) = inner.buckets.get_mut(&start) {
                inner.bucket_bytes -= bucket.bytes;
                bucket.bytes = bucket.estimate();
                inner.bucket_bytes += bucket.bytes;
            }
        }
        self.evict(inner);
        self.bytes_gauge
            .set(i64::try_from(inner.bytes()).unwrap_or(i64::MAX));
        Ok(outcome)
    }

    async fn flows(&self, query: &FlowQuery) -> Result<Vec<pb::Flow>> {
        let Some((low, high)) = self.range(&query.window) else {
            return Ok(Vec::new());
        };
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        // Buckets are ordered by last_seen, so whole buckets can be taken
        // until the limit is reached; each is read under the lock on its own.
        let mut parts: Vec<Vec<pb::Flow>> = Vec::new();
        let mut found = 0;
        let mut cursor = if query.first { low } else { high };
        while found < limit {
            let inner = self.read();
            let next = if query.first {
                inner.buckets.range((cursor, high)).next()
            } else {
                inner.buckets.range((low, cursor)).next_back()
            };
            let Some((&start, bucket)) = next else { break };
            let part = Self::select(bucket, &inner.tables, query, limit - found);
            drop(inner);
            found += part.len();
            parts.push(part);
            cursor = Bound::Excluded(start);
        }
        if !query.first {
            parts.reverse();
        }
        Ok(parts.concat())
    }

    async fn denied(&self, query: &ReportQuery) -> Result<Vec<pb::DeniedGroup>> {
        let inner = self.read();
        Ok(index::denied(
            self.views(&inner, &query.window),
            query,
            &inner.tables,
        ))
    }

    async fn dns_failures(&self, query: &ReportQuery) -> Result<Vec<pb::DnsFailure>> {
        let inner = self.read();
        Ok(index::dns_failures(
            self.views(&inner, &query.window),
            query,
            &inner.tables,
        ))
    }

    async fn status(&self) -> Result<StoreStatus> {
        let inner = self.read();
        let time = |nanos: i64| UnixNanos::from_nanos(nanos).to_system();
        Ok(StoreStatus {
            flows_stored: inner.len as u64,
            flows_dropped: inner.dropped,
            oldest: inner
                .buckets
                .first_key_value()
                .and_then(|(_, b)| time(b.oldest)),
            newest: inner
                .buckets
                .last_key_value()
                .and_then(|(_, b)| time(b.newest)),
            flows_dead_lettered: 0,
        })
    }
}
