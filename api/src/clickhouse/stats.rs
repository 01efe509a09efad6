//! Insert and query metrics of the ClickHouse store: plain atomics a server
//! exports (Prometheus text via [`ClickHouseStats::render_prometheus`]).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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
    /// Observations.
    pub count: AtomicU64,
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
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, n) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.overflow.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_sum {sum}\n{name}_count {}",
            self.count.load(Relaxed)
        );
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
    /// Flows in the spool not replayed yet (a gauge).
    pub spool_pending_rows: AtomicU64,
    /// Spool records that could not be decoded (moved aside or cut short).
    pub spool_bad_records: AtomicU64,
    /// Flows removed by retention (dropped day partitions).
    pub rows_expired: AtomicU64,
    /// Time from a batch's first flow to its durable acknowledgement.
    pub insert_latency: Histogram,
    /// Query latency (flows, denied, dns_failures, status).
    pub query_latency: Histogram,
    /// Queries that failed.
    pub query_errors: AtomicU64,
}

impl ClickHouseStats {
    /// The metrics in Prometheus' text format, names prefixed `netverdict_clickhouse_`.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &AtomicU64, &str, &str); 11] = [
            (
                "rows_inserted_total",
                &self.rows_inserted,
                "counter",
                "Flows inserted.",
            ),
            (
                "rows_duplicate_total",
                &self.rows_duplicate,
                "counter",
                "Flows skipped as already stored.",
            ),
            (
                "batches_inserted_total",
                &self.batches_inserted,
                "counter",
                "INSERT statements that succeeded.",
            ),
            (
                "insert_failures_total",
                &self.insert_failures,
                "counter",
                "Failed insert attempts.",
            ),
            (
                "insert_retries_total",
                &self.insert_retries,
                "counter",
                "Insert retries.",
            ),
            (
                "rows_spooled_total",
                &self.rows_spooled,
                "counter",
                "Flows spooled to disk.",
            ),
            (
                "rows_replayed_total",
                &self.rows_replayed,
                "counter",
                "Spooled flows replayed.",
            ),
            (
                "spool_pending_rows",
                &self.spool_pending_rows,
                "gauge",
                "Flows waiting in the spool.",
            ),
            (
                "spool_bad_records_total",
                &self.spool_bad_records,
                "counter",
                "Undecodable spool records.",
            ),
            (
                "rows_expired_total",
                &self.rows_expired,
                "counter",
                "Flows dropped by retention.",
            ),
            (
                "query_errors_total",
                &self.query_errors,
                "counter",
                "Failed queries.",
            ),
        ];
        for (name, v, kind, help) in counters {
            let name = format!("netverdict_clickhouse_{name}");
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        }
        self.insert_latency.render(
            &mut out,
            "netverdict_clickhouse_insert_seconds",
            "Time from a batch's first flow to its durable acknowledgement.",
        );
        self.query_latency.render(
            &mut out,
            "netverdict_clickhouse_query_seconds",
            "Query latency.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let s = ClickHouseStats::default();
        s.query_latency.observe(Duration::from_millis(3));
        s.query_latency.observe(Duration::from_secs(9));
        let text = s.render_prometheus();
        assert!(
            text.contains("netverdict_clickhouse_query_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("netverdict_clickhouse_query_seconds_bucket{le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("netverdict_clickhouse_query_seconds_count 2"),
            "{text}"
        );
    }
}
