//! Insert and query metrics of the ClickHouse store: plain atomics the writer
//! and queries bump, read at each scrape by a prometheus-client collector
//! ([`ClickHouseStats::register`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound of [`LATENCY_BUCKETS`] (not cumulative).
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// Observations above the largest bound.
    pub overflow: AtomicU64,
    /// Their sum, in microseconds.
    pub sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        match LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Relaxed),
            None => self.overflow.fetch_add(1, Relaxed),
        };
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }
}

/// Counters of the store since start.
#[derive(Debug, Default)]
pub struct ClickHouseStats {
    /// Flows inserted into ClickHouse (directly or replayed).
    pub rows_inserted: AtomicU64,
    /// Flows skipped because their id was already stored or repeated in a batch.
    pub rows_duplicate: AtomicU64,
    /// INSERT statements that succeeded.
    pub batches_inserted: AtomicU64,
    /// Insert attempts that failed (each retried or spooled).
    pub insert_failures: AtomicU64,
    /// Retries of a batch after a failed attempt.
    pub insert_retries: AtomicU64,
    /// Flows appended to the spool while ClickHouse was unreachable.
    pub rows_spooled: AtomicU64,
    /// Spooled flows replayed into ClickHouse (new or already there).
    pub rows_replayed: AtomicU64,
    /// Flows in the spool not replayed yet (a gauge; those this process
    /// spooled: a spool left by an earlier process counts as it replays).
    pub spool_pending_rows: AtomicU64,
    /// Bytes the spool holds on disk (a gauge).
    pub spool_bytes: AtomicU64,
    /// Inserts refused because the spool was full (not acknowledged: the
    /// collectors send them again).
    pub spool_full_refusals: AtomicU64,
    /// Spool records that decode to no valid flow (moved to the quarantine
    /// on replay; a cut short record at the end of a file is logged, not
    /// counted).
    pub spool_bad_records: AtomicU64,
    /// Bytes of spool segments that form no valid record (a corrupt record:
    /// moved to the quarantine, the records after it replayed).
    pub spool_corrupt_bytes: AtomicU64,
    /// INSERTs ClickHouse refused for their rows (each then split).
    pub insert_rejections: AtomicU64,
    /// Flows ClickHouse rejected, set aside in `dead_letters`.
    pub rows_dead_lettered: AtomicU64,
    /// Flows removed by retention (dropped day partitions).
    pub rows_expired: AtomicU64,
    /// Time to make one gathered batch durable (id read-back, INSERT and its
    /// retries, or the spool), without the gathering wait.
    pub insert_latency: Histogram,
    /// Query latency (flows, denied, dns_failures, status).
    pub query_latency: Histogram,
    /// Queries that failed.
    pub query_errors: AtomicU64,
}

impl ClickHouseStats {
    /// Registers the counters with `registry`: each scrape reads them as they
    /// are (names `<registry prefix>_clickhouse_*`).
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(StatsCollector(self.clone())));
    }
}

/// Encodes [`ClickHouseStats`] at scrape time.
#[derive(Debug)]
struct StatsCollector(Arc<ClickHouseStats>);

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let counters: [(&str, &AtomicU64, &str); 14] = [
            (
                "rows_inserted",
                &s.rows_inserted,
                "Flows inserted into ClickHouse",
            ),
            (
                "rows_duplicate",
                &s.rows_duplicate,
                "Flows skipped as already stored",
            ),
            (
                "batches_inserted",
                &s.batches_inserted,
                "INSERT statements that succeeded",
            ),
            (
                "insert_failures",
                &s.insert_failures,
                "Failed insert attempts (each retried or spooled)",
            ),
            ("insert_retries", &s.insert_retries, "Insert retries"),
            (
                "rows_spooled",
                &s.rows_spooled,
                "Flows spooled to disk while ClickHouse was unreachable",
            ),
            ("rows_replayed", &s.rows_replayed, "Spooled flows replayed"),
            (
                "spool_bad_records",
                &s.spool_bad_records,
                "Spool records that could not be decoded (quarantined)",
            ),
            (
                "spool_corrupt_bytes",
                &s.spool_corrupt_bytes,
                "Spool bytes forming no valid record (quarantined)",
            ),
            (
                "spool_full_refusals",
                &s.spool_full_refusals,
                "Inserts refused because the spool was full (sent again by collectors)",
            ),
            (
                "insert_rejections",
                &s.insert_rejections,
                "INSERTs ClickHouse refused for their rows (split to find them)",
            ),
            (
                "rows_dead_lettered",
                &s.rows_dead_lettered,
                "Flows ClickHouse rejected, kept in the dead_letters table",
            ),
            (
                "rows_expired",
                &s.rows_expired,
                "Flows dropped by retention",
            ),
            ("query_errors", &s.query_errors, "Failed queries"),
        ];
        for (name, value, help) in counters {
            let name = format!("clickhouse_{name}");
            let metric = encoder.encode_descriptor(&name, help, None, MetricType::Counter)?;
            ConstCounter::new(value.load(Relaxed)).encode(metric)?;
        }
        for (name, value, help) in [
            (
                "clickhouse_spool_pending_rows",
                &s.spool_pending_rows,
                "Flows waiting in the spool",
            ),
            (
                "clickhouse_spool_bytes",
                &s.spool_bytes,
                "Bytes the spool holds on disk",
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(i64::try_from(value.load(Relaxed)).unwrap_or(i64::MAX))
                .encode(metric)?;
        }
        for (name, histogram, help) in [
            (
                "clickhouse_insert",
                &s.insert_latency,
                "Time to make one gathered batch durable (read-back, INSERT, retries or spool)",
            ),
            (
                "clickhouse_query",
                &s.query_latency,
                "ClickHouse query latency",
            ),
        ] {
            let mut metric = encoder.encode_descriptor(
                name,
                help,
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            histogram.encode(&mut metric)?;
        }
        Ok(())
    }
}

impl Histogram {
    fn encode(&self, metric: &mut MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder accumulates: it takes each bucket's own count.
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| (*bound, n.load(Relaxed)))
            .collect();
        buckets.push((f64::INFINITY, self.overflow.load(Relaxed)));
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        metric.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_read_the_counters_and_cumulative_buckets() {
        let s = Arc::new(ClickHouseStats::default());
        let mut registry = Registry::with_prefix("netverdict_api");
        s.register(&mut registry);
        s.rows_inserted.fetch_add(7, Relaxed);
        s.spool_pending_rows.store(3, Relaxed);
        s.query_latency.observe(Duration::from_millis(3));
        s.query_latency.observe(Duration::from_secs(9));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "netverdict_api_clickhouse_rows_inserted_total 7",
            "netverdict_api_clickhouse_spool_pending_rows 3",
            "netverdict_api_clickhouse_query_seconds_bucket{le=\"0.0025\"} 0",
            "netverdict_api_clickhouse_query_seconds_bucket{le=\"0.005\"} 1",
            "netverdict_api_clickhouse_query_seconds_bucket{le=\"+Inf\"} 2",
            "netverdict_api_clickhouse_query_seconds_count 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        // A later scrape sees later values.
        s.rows_inserted.fetch_add(1, Relaxed);
        let mut again = String::new();
        prometheus_client::encoding::text::encode(&mut again, &registry).unwrap();
        assert!(
            again.contains("netverdict_api_clickhouse_rows_inserted_total 8"),
            "{again}"
        );
    }
}
