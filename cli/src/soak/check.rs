//! What the soak measures and checks: resident memory of the collector and
//! the API server (sampled from /proc across restarts), the loss counters of
//! their /metrics (kept across restarts: each run's last scrape is banked
//! before it is killed), and at the end the acknowledged flows against what
//! ClickHouse stored: every acknowledged id present, none stored twice.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use netverdict_collector::export::read_acked_ids;
use netverdict_proto::v1 as pb;
use serde::Serialize;

use super::stages::{samples, sql};

/// Resident memory of one process kind, across its restarts.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Memory {
    /// The highest VmHWM (peak resident set) of any of its runs, in KiB.
    pub peak_kib: u64,
    /// The highest VmRSS sampled in each minute of the soak, in KiB.
    pub per_minute_kib: Vec<u64>,
    /// The peak (VmHWM) of each run (process), in KiB, in order.
    pub peak_per_run_kib: Vec<u64>,
    #[serde(skip)]
    last_pid: Option<u32>,
}

impl Memory {
    /// Samples `pid`'s memory at `minute` of the soak.
    pub fn sample(&mut self, pid: u32, minute: usize) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        if let Some(hwm) = field("VmHWM:") {
            self.peak_kib = self.peak_kib.max(hwm);
            if self.last_pid != Some(pid) {
                self.last_pid = Some(pid);
                self.peak_per_run_kib.push(0);
            }
            if let Some(run) = self.peak_per_run_kib.last_mut() {
                *run = (*run).max(hwm);
            }
        }
        if let Some(rss) = field("VmRSS:") {
            if self.per_minute_kib.len() <= minute {
                self.per_minute_kib.resize(minute + 1, 0);
            }
            self.per_minute_kib[minute] = self.per_minute_kib[minute].max(rss);
        }
    }

    /// How much the per-minute peak grew from the second minute to the
    /// last, in KiB (None before two minutes after the first).
    pub fn growth_after_first_minute_kib(&self) -> Option<i64> {
        let after: Vec<u64> = self.per_minute_kib.iter().skip(1).copied().collect();
        if after.len() < 2 {
            return None;
        }
        Some(after[after.len() - 1] as i64 - after[0] as i64)
    }

    /// Whether memory stayed flat after the first minute: the last minute's
    /// peak within 20% (and 16 MiB) of the second minute's. None when too short.
    pub fn flat(&self) -> Option<bool> {
        let growth = self.growth_after_first_minute_kib()?;
        let base = *self.per_minute_kib.get(1)? as i64;
        Some(growth <= (base / 5).max(16 * 1024))
    }
}

/// Whether a metric family counts flows (or events, or bytes) lost, dropped
/// or refused somewhere on the way: the soak reports those, by cause.
pub(crate) fn is_loss(name: &str) -> bool {
    const LOSSES: [&str; 14] = [
        "_lost",
        "flows_dropped",
        "flows_refused",
        "batches_refused",
        "batches_denied",
        "invalid_flows",
        "rejected_flows",
        "unknown_enum_flows",
        "dead_lettered",
        "bad_records",
        "corrupt_bytes",
        "full_refusals",
        "rows_expired",
        "held_evictions",
    ];
    LOSSES.iter().any(|l| name.contains(l))
}

/// The loss counters of one process kind, summed over its runs.
#[derive(Debug, Default)]
pub(crate) struct Losses {
    banked: BTreeMap<String, f64>,
    current: BTreeMap<String, f64>,
}

impl Losses {
    /// Keeps the loss counters of the current run's latest scrape.
    pub fn observe(&mut self, metrics: &str) {
        self.current = samples(metrics)
            .filter(|(_, name, _)| is_loss(name))
            .map(|(series, _, value)| (series.to_string(), value))
            .collect();
    }

    /// The current run ends (killed or stopped): its counts are kept.
    pub fn bank(&mut self) {
        for (series, value) in std::mem::take(&mut self.current) {
            *self.banked.entry(series).or_default() += value;
        }
    }

    /// The nonzero counters over every run, by series.
    pub fn totals(&self) -> BTreeMap<String, f64> {
        let mut out = self.banked.clone();
        for (series, value) in &self.current {
            *out.entry(series.clone()).or_default() += value;
        }
        out.retain(|_, v| *v > 0.0);
        out
    }
}

/// Acknowledged flows against stored flows.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Stored {
    /// Ids in the acknowledged-id log.
    pub acked: usize,
    /// Distinct ids in it.
    pub acked_distinct: usize,
    /// Flows the acknowledgements counted as refused (not stored by design).
    pub acked_refused: u64,
    /// Rows in `flows`.
    pub stored_rows: u64,
    /// Distinct ids in `flows`.
    pub stored_distinct: u64,
    /// Acknowledged ids missing from `flows`.
    pub lost: usize,
    /// Of those, ids ClickHouse rejected and the API server dead-lettered.
    pub lost_dead_lettered: usize,
    /// Some of the lost ids.
    pub lost_examples: Vec<String>,
    /// Ids with more than one row in `flows` (counted before any OPTIMIZE:
    /// a background merge may have folded some already).
    pub duplicated_ids: u64,
    /// Some of those, with their row counts.
    pub duplicated_examples: Vec<String>,
    /// Flows counted by the `flows_by_minute` rollup (whose view counts
    /// every insert, and which no merge deduplicates) ...
    pub rollup_flows: u64,
    /// ... and distinct ids of the records it counts: a difference means a
    /// flow was inserted twice.
    pub rollup_distinct_ids: u64,
    /// Stored flows whose acknowledgement the log missed (a collector killed
    /// between the ack and its write): not a loss.
    pub stored_not_in_log: usize,
    /// Stored flows the policies denied (the scans, among others).
    pub stored_denied: u64,
    /// Stored DNS flows ...
    pub stored_dns: u64,
    /// ... and the distinct names they asked for (the random subdomains).
    pub stored_dns_names: u64,
    /// Whether a torn last line (a collector killed mid-write) was left out.
    pub torn_line: bool,
}

impl Stored {
    /// Flows inserted more than once, by either measure.
    pub fn duplicated(&self) -> u64 {
        self.duplicated_ids
            .max(self.rollup_flows.saturating_sub(self.rollup_distinct_ids))
    }
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.is_empty())
}

fn number(text: &str, what: &str) -> Result<u64> {
    text.trim()
        .parse()
        .with_context(|| format!("{what}: ClickHouse answered {text:?}"))
}

/// Compares the acknowledged-id log with the soak database in ClickHouse.
pub(crate) fn stored(clickhouse: SocketAddr, db: &str, acked_log: &Path) -> Result<Stored> {
    let slow = Duration::from_secs(120);
    let text = std::fs::read_to_string(acked_log)
        .with_context(|| format!("reading {}", acked_log.display()))?;
    let log = read_acked_ids(&text).map_err(|e| anyhow::anyhow!("{}: {e}", acked_log.display()))?;
    let acked: HashSet<&str> = log.ids.iter().map(String::as_str).collect();
    let q = |query: String| sql(clickhouse, &query, slow);
    let stored_text = q(format!("SELECT DISTINCT id FROM {db}.flows FORMAT TSV"))?;
    let stored_ids: HashSet<&str> = lines(&stored_text).collect();
    let dead_text = q(format!(
        "SELECT DISTINCT id FROM {db}.dead_letters FORMAT TSV"
    ))?;
    let dead: HashSet<&str> = lines(&dead_text).collect();
    let mut lost: Vec<&str> = acked
        .iter()
        .filter(|id| !stored_ids.contains(*id))
        .copied()
        .collect();
    lost.sort_unstable();
    let duplicated_text = q(format!(
        "SELECT id, count() AS c FROM {db}.flows GROUP BY id HAVING c > 1 ORDER BY c DESC, id FORMAT TSV"
    ))?;
    let duplicated: Vec<&str> = lines(&duplicated_text).collect();
    let kinds_text = q(format!(
        "SELECT countIf(toInt8(verdict) = {denied}), countIf(has_dns = 1), \
         uniqExactIf(dns_query_norm, has_dns = 1) FROM {db}.flows FORMAT TSV",
        denied = pb::Verdict::Denied as i32
    ))?;
    let kinds: Vec<u64> = kinds_text
        .split_whitespace()
        .map(|n| number(n, "stored flows by kind"))
        .collect::<Result<_>>()?;
    let [stored_denied, stored_dns, stored_dns_names] = kinds[..] else {
        anyhow::bail!("stored flows by kind: ClickHouse answered {kinds_text:?}");
    };
    Ok(Stored {
        acked: log.ids.len(),
        acked_distinct: acked.len(),
        acked_refused: log.refused,
        stored_rows: number(&q(format!("SELECT count() FROM {db}.flows"))?, "rows")?,
        stored_distinct: stored_ids.len() as u64,
        lost: lost.len(),
        lost_dead_lettered: lost.iter().filter(|id| dead.contains(*id)).count(),
        lost_examples: lost.iter().take(10).map(|s| s.to_string()).collect(),
        duplicated_ids: duplicated.len() as u64,
        duplicated_examples: duplicated
            .iter()
            .take(10)
            .map(|l| l.replace('\t', " x"))
            .collect(),
        rollup_flows: number(
            &q(format!("SELECT sum(flows) FROM {db}.flows_by_minute"))?,
            "rollup flows",
        )?,
        rollup_distinct_ids: number(
            &q(format!(
                "SELECT uniqExact(id) FROM {db}.flows WHERE counted_elsewhere = 0"
            ))?,
            "rollup ids",
        )?,
        stored_not_in_log: stored_ids.iter().filter(|id| !acked.contains(*id)).count(),
        stored_denied,
        stored_dns,
        stored_dns_names,
        torn_line: log.torn_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_add_up_over_runs_and_keep_only_loss_counters() {
        let mut l = Losses::default();
        l.observe("netverdict_collector_export_flows_dropped_total 2\nnetverdict_collector_export_flows_acked_total 9\n");
        l.bank();
        l.observe("netverdict_collector_export_flows_dropped_total 1\nnetverdict_collector_kernel_events_lost_total{kind=\"tcp\",cause=\"ring_buffer_full\"} 0\n");
        let totals = l.totals();
        assert_eq!(
            totals.into_iter().collect::<Vec<_>>(),
            [(
                "netverdict_collector_export_flows_dropped_total".to_string(),
                3.0
            )]
        );
        assert!(!is_loss("netverdict_collector_kernel_drops_total"));
    }

    #[test]
    fn memory_keeps_a_peak_per_process_run() {
        let mut m = Memory::default();
        let me = std::process::id();
        m.sample(me, 0);
        m.sample(me, 0);
        assert_eq!(m.peak_per_run_kib.len(), 1);
        assert!(m.peak_kib > 0 && m.peak_per_run_kib[0] == m.peak_kib);
        assert_eq!(m.per_minute_kib.len(), 1);
        m.sample(u32::MAX, 1);
        assert_eq!(
            m.peak_per_run_kib.len(),
            1,
            "no such process: nothing sampled"
        );
    }

    #[test]
    fn memory_is_flat_only_when_the_last_minute_stays_near_the_second() {
        let mut m = Memory {
            per_minute_kib: vec![10_000, 100_000, 101_000, 102_000],
            ..Memory::default()
        };
        assert_eq!(m.growth_after_first_minute_kib(), Some(2_000));
        assert_eq!(m.flat(), Some(true));
        m.per_minute_kib.push(200_000);
        assert_eq!(m.flat(), Some(false));
        m.per_minute_kib.truncate(2);
        assert_eq!(m.flat(), None);
    }
}
