//! The embedded store: flows in memory, bounded, for the demo and single nodes.
//!
//! Flows are kept in time buckets by `last_seen` (one per
//! [`MemoryConfig::bucket_width`], a minute by default), in a `BTreeMap` from
//! bucket start to bucket. Past [`MemoryConfig::max_flows`] the oldest bucket is
//! dropped whole (when a single bucket holds more than the bound, its oldest
//! inserted records go first), and every record dropped is counted in
//! [`StoreStatus::flows_dropped`].
//!
//! Each flow id is remembered with its bucket, so a batch sent again is stored
//! once; the id set holds exactly the stored flows and shrinks with them. A
//! flow resent after its bucket was evicted is stored again (and, being the
//! oldest, is the next to go).
//!
//! Queries walk only the buckets that overlap their window: `flows` from the
//! newest bucket back (or the oldest forward for `first`) until it has its
//! `limit`; the reports run [`crate::report`]'s functions over the window.

use std::collections::{BTreeMap, VecDeque};
use std::sync::RwLock;
use std::time::Duration;

use std::ops::Bound;

use netverdict_proto::time::{TimeWindow, UnixNanos, system_time};
use netverdict_proto::v1 as pb;
use netverdict_proto::validate::check_storable;
use rustc_hash::FxHashMap;

use crate::report;
use crate::store::{FlowQuery, InsertOutcome, ReportQuery, Result, Store, StoreStatus};

/// Settings of the in-memory store.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// The most flow records held.
    pub max_flows: usize,
    /// The time span of one bucket (whole seconds, at least one).
    pub bucket_width: Duration,
}

impl Default for MemoryConfig {
    /// One million records in one-minute buckets.
    fn default() -> Self {
        MemoryConfig {
            max_flows: 1_000_000,
            bucket_width: Duration::from_secs(60),
        }
    }
}

#[derive(Default)]
struct Bucket {
    /// In insertion order.
    flows: VecDeque<pb::Flow>,
}

#[derive(Default)]
struct Inner {
    buckets: BTreeMap<i64, Bucket>,
    /// Flow id to the start of its bucket.
    ids: FxHashMap<String, i64>,
    len: usize,
    dropped: u64,
}

/// The bounded in-memory [`Store`].
pub struct MemoryStore {
    max_flows: usize,
    width: i64,
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_flows", &self.max_flows)
            .field("bucket_width_secs", &self.width)
            .finish_non_exhaustive()
    }
}

/// The bound or the bucket width is zero.
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
        let width = i64::try_from(config.bucket_width.as_secs()).unwrap_or(i64::MAX);
        if width == 0 {
            return Err(ConfigError {
                field: "bucket_width",
            });
        }
        Ok(MemoryStore {
            max_flows: config.max_flows,
            width,
            inner: RwLock::default(),
        })
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

    /// Runs `f` over every flow whose bucket overlaps the window, under the read lock.
    fn scan<R>(
        &self,
        window: &TimeWindow,
        f: impl FnOnce(&mut dyn Iterator<Item = &pb::Flow>) -> R,
    ) -> R {
        let inner = self.read();
        let Some(range) = self.range(window) else {
            return f(&mut std::iter::empty());
        };
        let mut iter = inner.buckets.range(range).flat_map(|(_, b)| b.flows.iter());
        f(&mut iter)
    }

    fn evict(&self, inner: &mut Inner) {
        while inner.len > self.max_flows {
            let single = inner.buckets.len() == 1;
            let Some(mut entry) = inner.buckets.first_entry() else {
                break;
            };
            if single {
                // One bucket over the bound: its oldest inserted records go.
                let excess = inner.len - self.max_flows;
                let removed: Vec<pb::Flow> = entry.get_mut().flows.drain(..excess).collect();
                for flow in removed {
                    inner.ids.remove(&flow.id);
                }
                inner.len -= excess;
                inner.dropped += excess as u64;
                break;
            }
            let bucket = entry.remove();
            inner.len -= bucket.flows.len();
            inner.dropped += bucket.flows.len() as u64;
            for flow in bucket.flows {
                inner.ids.remove(&flow.id);
            }
        }
    }
}

impl Store for MemoryStore {
    async fn insert(&self, flows: Vec<pb::Flow>) -> Result<InsertOutcome> {
        // Validate the whole batch first: it is stored entirely or not at all.
        for flow in &flows {
            check_storable(flow)?;
        }
        let mut outcome = InsertOutcome::default();
        let mut inner = self.write();
        for flow in flows {
            // Validated: last_seen is set.
            let seconds = flow.last_seen.as_ref().map_or(0, |t| t.seconds);
            let bucket = self.bucket_of(seconds);
            if inner.ids.contains_key(&flow.id) {
                outcome.duplicates += 1;
                continue;
            }
            inner.ids.insert(flow.id.clone(), bucket);
            inner
                .buckets
                .entry(bucket)
                .or_default()
                .flows
                .push_back(flow);
            inner.len += 1;
            outcome.stored += 1;
        }
        self.evict(&mut inner);
        Ok(outcome)
    }

    async fn flows(&self, query: &FlowQuery) -> Result<Vec<pb::Flow>> {
        let matches = |f: &pb::Flow| query.window.contains_flow(f) && query.filters.matches(f);
        let inner = self.read();
        let Some(range) = self.range(&query.window) else {
            return Ok(Vec::new());
        };
        let buckets = inner.buckets.range(range);
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        let mut out: Vec<&pb::Flow> = Vec::new();
        // Buckets are ordered by last_seen, so whole buckets can be taken until
        // the limit is reached; the boundary bucket is sorted and cut.
        let sort = |v: &mut Vec<&pb::Flow>| {
            v.sort_by(|a, b| (last_seen(a), &a.id).cmp(&(last_seen(b), &b.id)));
        };
        if query.first {
            for (_, bucket) in buckets {
                let mut part: Vec<&pb::Flow> = bucket.flows.iter().filter(|f| matches(f)).collect();
                sort(&mut part);
                out.extend(part);
                if out.len() >= limit {
                    out.truncate(limit);
                    break;
                }
            }
        } else {
            let mut parts: Vec<Vec<&pb::Flow>> = Vec::new();
            let mut n = 0;
            for (_, bucket) in buckets.rev() {
                let mut part: Vec<&pb::Flow> = bucket.flows.iter().filter(|f| matches(f)).collect();
                sort(&mut part);
                n += part.len();
                parts.push(part);
                if n >= limit {
                    break;
                }
            }
            out = parts.into_iter().rev().flatten().collect();
            let excess = out.len().saturating_sub(limit);
            out.drain(..excess);
        }
        Ok(out.into_iter().cloned().collect())
    }

    async fn denied(&self, query: &ReportQuery) -> Result<Vec<pb::DeniedGroup>> {
        Ok(self.scan(&query.window, |flows| report::denied_groups(flows, query)))
    }

    async fn dns_failures(&self, query: &ReportQuery) -> Result<Vec<pb::DnsFailure>> {
        Ok(self.scan(&query.window, |flows| report::dns_failures(flows, query)))
    }

    async fn status(&self) -> Result<StoreStatus> {
        let inner = self.read();
        let bound = |b: Option<(&i64, &Bucket)>, newest: bool| {
            let flows = b?.1.flows.iter().filter_map(|f| f.last_seen.as_ref());
            let t = if newest {
                flows.max_by_key(|t| UnixNanos::from_timestamp(t))
            } else {
                flows.min_by_key(|t| UnixNanos::from_timestamp(t))
            };
            t.and_then(system_time)
        };
        Ok(StoreStatus {
            flows_stored: inner.len as u64,
            flows_dropped: inner.dropped,
            oldest: bound(inner.buckets.first_key_value(), false),
            newest: bound(inner.buckets.last_key_value(), true),
            flows_dead_lettered: 0,
        })
    }
}

/// The order of flows in time.
fn last_seen(flow: &pb::Flow) -> Option<UnixNanos> {
    flow.last_seen.as_ref().map(UnixNanos::from_timestamp)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use netverdict_proto::time::UnixNanos;
    use prost_types::Timestamp;

    use super::*;

    fn flow(id: &str, seconds: i64) -> pb::Flow {
        pb::Flow {
            id: id.into(),
            last_seen: Some(Timestamp { seconds, nanos: 0 }),
            count: 1,
            ..Default::default()
        }
    }

    fn store(max_flows: usize) -> MemoryStore {
        MemoryStore::new(MemoryConfig {
            max_flows,
            bucket_width: Duration::from_secs(60),
        })
        .unwrap()
    }

    fn ids(flows: &[pb::Flow]) -> Vec<&str> {
        flows.iter().map(|f| f.id.as_str()).collect()
    }

    #[tokio::test]
    async fn dedupes_by_id() {
        let s = store(10);
        let batch = vec![flow("a", 1), flow("b", 2)];
        assert_eq!(
            s.insert(batch.clone()).await.unwrap(),
            InsertOutcome {
                stored: 2,
                duplicates: 0,
                rejected: 0
            }
        );
        assert_eq!(
            s.insert(batch).await.unwrap(),
            InsertOutcome {
                stored: 0,
                duplicates: 2,
                rejected: 0
            }
        );
        assert_eq!(s.status().await.unwrap().flows_stored, 2);
    }

    #[tokio::test]
    async fn evicts_oldest_buckets_and_forgets_their_ids() {
        let s = store(4);
        s.insert(vec![flow("old1", 10), flow("old2", 20)])
            .await
            .unwrap();
        s.insert(vec![flow("mid", 70), flow("new1", 130), flow("new2", 140)])
            .await
            .unwrap();
        let st = s.status().await.unwrap();
        assert_eq!((st.flows_stored, st.flows_dropped), (3, 2));
        assert_eq!(st.oldest, Some(UNIX_EPOCH + Duration::from_secs(70)));
        assert_eq!(st.newest, Some(UNIX_EPOCH + Duration::from_secs(140)));
        let all = s.flows(&FlowQuery::default()).await.unwrap();
        assert_eq!(ids(&all), ["mid", "new1", "new2"]);
        // The evicted id is forgotten: sent again, it is stored (and the
        // oldest bucket goes again).
        let out = s.insert(vec![flow("old1", 10)]).await.unwrap();
        assert_eq!(out.stored, 1);
        assert_eq!(s.status().await.unwrap().flows_dropped, 2);
        s.insert(vec![flow("n3", 150), flow("n4", 151)])
            .await
            .unwrap();
        let st = s.status().await.unwrap();
        assert_eq!((st.flows_stored, st.flows_dropped), (4, 4));
    }

    #[tokio::test]
    async fn one_bucket_over_the_bound_drops_its_oldest_records() {
        let s = store(2);
        s.insert(vec![flow("a", 1), flow("b", 2), flow("c", 3)])
            .await
            .unwrap();
        let all = s.flows(&FlowQuery::default()).await.unwrap();
        assert_eq!(ids(&all), ["b", "c"]);
        assert_eq!(s.status().await.unwrap().flows_dropped, 1);
    }

    #[tokio::test]
    async fn limits_take_the_newest_or_the_first() {
        let s = store(100);
        let flows: Vec<_> = (0..10)
            .map(|i| flow(&format!("f{i}"), 500 - i * 30))
            .collect();
        s.insert(flows).await.unwrap();
        let q = |limit, first| FlowQuery {
            limit,
            first,
            ..Default::default()
        };
        assert_eq!(
            ids(&s.flows(&q(3, false)).await.unwrap()),
            ["f2", "f1", "f0"]
        );
        assert_eq!(ids(&s.flows(&q(2, true)).await.unwrap()), ["f9", "f8"]);
        let window = FlowQuery {
            window: TimeWindow::from_system(
                Some(UNIX_EPOCH + Duration::from_secs(380)),
                Some(UNIX_EPOCH + Duration::from_secs(440)),
            ),
            ..Default::default()
        };
        assert_eq!(ids(&s.flows(&window).await.unwrap()), ["f4", "f3"]);
    }

    #[tokio::test]
    async fn extreme_and_empty_windows_never_panic() {
        let s = store(100);
        s.insert(vec![
            flow("a", 0),
            flow("b", 61),
            flow("c", i64::from(u32::MAX)),
        ])
        .await
        .unwrap();
        let at = |seconds, nanos| Some(UnixNanos::from_timestamp(&Timestamp { seconds, nanos }));
        let q = |since, until| FlowQuery {
            window: TimeWindow::new(since, until),
            ..Default::default()
        };
        let cases = [
            (
                at(i64::MIN, 0),
                at(i64::MAX, 999_999_999),
                vec!["a", "b", "c"],
            ),
            (at(i64::MIN, 0), None, vec!["a", "b", "c"]),
            (None, at(i64::MIN, 0), vec![]),
            (at(i64::MAX, 999_999_999), None, vec![]),
            (at(i64::MAX, 0), at(i64::MIN, 0), vec![]),
            (at(61, 0), at(61, 0), vec![]),
            (at(60, 0), at(61, 0), vec![]),
            (at(61, 0), at(61, 1), vec!["b"]),
            (at(1, 0), at(120, 0), vec!["b"]),
        ];
        for (since, until, expected) in cases {
            let got = s.flows(&q(since, until)).await.unwrap();
            assert_eq!(ids(&got), expected, "{since:?}..{until:?}");
            let report = ReportQuery {
                window: TimeWindow::new(since, until),
                ..Default::default()
            };
            s.denied(&report).await.unwrap();
        }
    }

    #[tokio::test]
    async fn rejects_flows_without_last_seen_naming_them() {
        let s = store(10);
        let mut bad = flow("n/1/7", 0);
        bad.last_seen = None;
        let err = s.insert(vec![flow("ok", 1), bad]).await.unwrap_err();
        assert_eq!(err.to_string(), "flow n/1/7: last_seen: missing");
        assert_eq!(s.status().await.unwrap().flows_stored, 0);
        assert!(
            MemoryStore::new(MemoryConfig {
                max_flows: 0,
                ..Default::default()
            })
            .is_err()
        );
    }
}
