//! The read side: `flows`, the `denied` and `dns_failures` reports grouped in
//! SQL, and `status`. Every user value is bound (see `sql.rs`).

use netverdict_proto::filter::PolicyName;
use netverdict_proto::time::{TimeWindow, UnixNanos};
use netverdict_proto::v1 as pb;
use prost::Message;

use super::ClickHouseStore;
use super::schema::{DENIED_GROUPS, DENIED_KEY, DENIED_STATES_SELECT, expand};
use super::sql::{Sql, Value, enum_literal, filter, namespaces_only, predicate, time_range};
use crate::store::{FlowQuery, ReportQuery, Result, StoreError, StoreStatus};

/// The default number of report groups (`ReportRequest.limit` 0).
pub const DEFAULT_REPORT_LIMIT: usize = 1000;

fn timestamp(ns: i64) -> prost_types::Timestamp {
    UnixNanos::from_nanos(ns).to_timestamp()
}

/// The report's window and its flow filter ([`ReportQuery::flow_filter`]).
fn report_filter(sql: &mut Sql, q: &ReportQuery) {
    time_range(sql, &q.window);
    sql.push(" AND (");
    filter(sql, &q.flow_filter());
    sql.push(")");
}

/// The whole minutes of `window` at or after `covered` (seconds, a whole
/// minute): `[lo, hi)` in seconds, `hi` `None` when unbounded; `None` when
/// there is no such minute a `DateTime` holds.
fn whole_minutes(window: &TimeWindow, covered: u32) -> Option<(i64, Option<i64>)> {
    const MINUTE: i128 = 60_000_000_000;
    if window.is_empty() {
        return None;
    }
    let first = window
        .since()
        .map_or(0, |s| (s.as_i128() + MINUTE - 1).div_euclid(MINUTE) * 60);
    let lo = first.max(i128::from(covered));
    let end = window.until().map(|u| u.as_i128().div_euclid(MINUTE) * 60);
    let max = i128::from(u32::MAX);
    if lo > max || end.is_some_and(|end| end <= lo) {
        return None;
    }
    // Every DateTime is before a bound past the last one.
    let hi = end.filter(|&end| end <= max);
    Some((
        i64::try_from(lo).ok()?,
        hi.and_then(|h| i64::try_from(h).ok()),
    ))
}

fn limit(q: &ReportQuery) -> usize {
    if q.limit == 0 {
        DEFAULT_REPORT_LIMIT
    } else {
        q.limit
    }
}

/// Stored policy names (`PolicyName`'s spellings) back to references.
fn policy_refs(names: Vec<String>) -> Vec<pb::PolicyRef> {
    names
        .into_iter()
        .map(|n| match PolicyName::parse("policy", &n) {
            Ok(name) => name.to_ref(),
            Err(_) => pb::PolicyRef {
                name: n,
                ..Default::default()
            },
        })
        .collect()
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct FlowBytes {
    #[expect(dead_code, reason = "selected for LIMIT 1 BY id")]
    id: String,
    #[serde(with = "serde_bytes")]
    flow: Vec<u8>,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct DeniedRow {
    src_group_kind: i8,
    src_namespace: String,
    src_workload: String,
    src_ip: String,
    dst_group_kind: i8,
    dst_namespace: String,
    dst_workload: String,
    dst_ip: String,
    protocol: i8,
    dst_port: u16,
    denied_by: Vec<String>,
    egress_denied: u8,
    ingress_denied: u8,
    attempts: u64,
    flows: u64,
    first_seen: i64,
    last_seen: i64,
    reason: String,
    outcome: i8,
    destination_names: Vec<String>,
}

/// The `denied` report's ` GROUP BY` the stored report key
/// (`report::WorkloadKey`), ordered as `report::denied_groups` orders.
fn denied_group_order(q: &ReportQuery) -> String {
    format!(
        "GROUP BY {DENIED_KEY} ORDER BY attempts DESC, g_last_seen DESC, {DENIED_KEY} LIMIT {}",
        limit(q)
    )
}

fn denied_group(r: DeniedRow) -> pb::DeniedGroup {
    pb::DeniedGroup {
        source: Some(pb::WorkloadRef {
            kind: i32::from(r.src_group_kind),
            namespace: r.src_namespace,
            workload: r.src_workload,
            ip: r.src_ip,
        }),
        destination: Some(pb::WorkloadRef {
            kind: i32::from(r.dst_group_kind),
            namespace: r.dst_namespace,
            workload: r.dst_workload,
            ip: r.dst_ip,
        }),
        protocol: i32::from(r.protocol),
        destination_port: u32::from(r.dst_port),
        denied_by: policy_refs(r.denied_by),
        egress_denied: r.egress_denied != 0,
        ingress_denied: r.ingress_denied != 0,
        count: r.attempts,
        flows: r.flows,
        first_seen: Some(timestamp(r.first_seen)),
        last_seen: Some(timestamp(r.last_seen)),
        reason: r.reason,
        outcome: i32::from(r.outcome),
        destination_names: r.destination_names,
    }
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct DnsRow {
    namespace: String,
    pod: String,
    query: String,
    qtype: String,
    outcome: i8,
    rcode: String,
    attempts: u64,
    last_seen: i64,
    denied_by: Vec<String>,
    egress_allows_cluster_dns: u8,
    reason: String,
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct StatusRow {
    flows: u64,
    oldest: i64,
    newest: i64,
    dead_letters: u64,
}

impl ClickHouseStore {
    /// A query with the limits every read runs under: ClickHouse stops it
    /// after the request timeout (`max_execution_time`) and refuses to return
    /// more than `query_max_rows` rows (`max_result_rows`), with an error.
    fn limited(&self, sql: &Sql) -> clickhouse::query::Query {
        let config = &self.inner.config;
        let seconds = config.request_timeout.as_secs_f64().ceil().max(1.0);
        sql.query(&self.inner.client)
            .with_setting("max_execution_time", format!("{seconds}"))
            .with_setting("max_result_rows", config.query_max_rows.to_string())
            .with_setting("result_overflow_mode", "throw")
    }

    async fn timed<T>(&self, what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.inner.config.request_timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Backend {
                    backend: "clickhouse",
                    message: format!("{what}: timed out"),
                })
            });
        self.inner.stats.query_latency.observe(started.elapsed());
        if result.is_err() {
            self.inner
                .stats
                .query_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    pub(crate) async fn query_flows(&self, q: &FlowQuery) -> Result<Vec<pb::Flow>> {
        let mut sql = Sql::new(&format!(
            "SELECT id, flow FROM {}.flows WHERE ",
            self.inner.db
        ));
        predicate(&mut sql, &q.filters);
        time_range(&mut sql, &q.window);
        sql.push(if q.first {
            " ORDER BY last_seen_ns ASC, id ASC LIMIT 1 BY id"
        } else {
            " ORDER BY last_seen_ns DESC, id DESC LIMIT 1 BY id"
        });
        if q.limit > 0 {
            sql.push(&format!(" LIMIT {}", q.limit));
        }
        self.timed("flows", async {
            let rows: Vec<FlowBytes> = self
                .limited(&sql)
                .fetch_all()
                .await
                .map_err(|e| super::ch_error("querying flows", e))?;
            let mut flows = rows
                .into_iter()
                .map(|r| {
                    pb::Flow::decode(r.flow.as_slice()).map_err(|e| StoreError::Backend {
                        backend: "clickhouse",
                        message: format!("stored flow does not decode: {e}"),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if !q.first {
                flows.reverse();
            }
            Ok(flows)
        })
        .await
    }

    /// The minute from which `denied_groups_by_minute` holds every flow
    /// (migration 10's `rollup_coverage`), if recorded.
    async fn denied_rollup_since(&self) -> Result<Option<u32>> {
        let since: Vec<u32> = self
            .inner
            .client
            .query(&format!(
                "SELECT toUInt32(since) FROM {}.rollup_coverage WHERE rollup = ?",
                self.inner.db
            ))
            .bind(DENIED_GROUPS.table)
            .fetch_all()
            .await
            .map_err(|e| super::ch_error("reading rollup_coverage", e))?;
        Ok(since.into_iter().min())
    }

    /// The `denied` report over `flows` for the window's partial minutes
    /// and those before the rollup's coverage, merged with the states of
    /// `denied_groups_by_minute` for its whole minutes `[lo, hi)`: the same
    /// groups as over `flows` alone, reading a row per group and minute
    /// instead of one per flow.
    fn denied_with_rollup(&self, q: &ReportQuery, lo: i64, hi: Option<i64>) -> Sql {
        let db = &self.inner.db;
        let mut sql = Sql::new(&format!(
            "SELECT {DENIED_KEY}, maxMerge(egress_denied) AS egress_denied, \
             maxMerge(ingress_denied) AS ingress_denied, sumMerge(attempts) AS attempts, \
             countMerge(flows) AS flows, minMerge(first_seen_min) AS g_first_seen, \
             maxMerge(last_seen_max) AS g_last_seen, argMaxMerge(latest_reason) AS g_reason, \
             argMaxMerge(latest_outcome) AS g_outcome, argMaxMerge(latest_names) AS g_names \
             FROM ({} FROM {db}.flows \
             WHERE verdict = {} AND counted_elsewhere = 0",
            expand(DENIED_STATES_SELECT, db),
            enum_literal(pb::Verdict::Denied),
        ));
        report_filter(&mut sql, q);
        sql.push(" AND (last_seen < toDateTime(")
            .bind(Value::I64(lo))
            .push(")");
        if let Some(hi) = hi {
            sql.push(" OR last_seen >= toDateTime(")
                .bind(Value::I64(hi))
                .push(")");
        }
        sql.push(&format!(
            ") GROUP BY {DENIED_KEY} UNION ALL SELECT {DENIED_KEY}, egress_denied, \
             ingress_denied, attempts, flows, first_seen_min, last_seen_max, latest_reason, \
             latest_outcome, latest_names FROM {db}.{} WHERE minute >= toDateTime(",
            DENIED_GROUPS.table
        ))
        .bind(Value::I64(lo))
        .push(")");
        if let Some(hi) = hi {
            sql.push(" AND minute < toDateTime(")
                .bind(Value::I64(hi))
                .push(")");
        }
        sql.push(" AND (");
        filter(&mut sql, &q.flow_filter());
        // The filter's parenthesis, then the subquery's.
        sql.push(&format!(")) {}", denied_group_order(q)));
        sql
    }

    pub(crate) async fn query_denied(&self, q: &ReportQuery) -> Result<Vec<pb::DeniedGroup>> {
        self.timed("denied", async {
            let rollup = if namespaces_only(&q.flow_filter()) {
                self.denied_rollup_since()
                    .await?
                    .and_then(|covered| whole_minutes(&q.window, covered))
            } else {
                None
            };
            let sql = match rollup {
                Some((lo, hi)) => self.denied_with_rollup(q, lo, hi),
                None => self.denied_over_flows(q),
            };
            let rows: Vec<DeniedRow> = self
                .limited(&sql)
                .fetch_all()
                .await
                .map_err(|e| super::ch_error("querying denied flows", e))?;
            Ok(rows.into_iter().map(denied_group).collect())
        })
        .await
    }

    /// The `denied` report over `flows` alone.
    fn denied_over_flows(&self, q: &ReportQuery) -> Sql {
        let denied_status = enum_literal(pb::PolicyStatus::Denied);
        let mut sql = Sql::new(&format!(
            "SELECT {DENIED_KEY}, \
             max(egress_status = {denied_status}) AS egress_denied, \
             max(ingress_status = {denied_status}) AS ingress_denied, \
             sum(count) AS attempts, count() AS flows, \
             min(first_seen_ns) AS g_first_seen, max(last_seen_ns) AS g_last_seen, \
             argMax(reason, last_seen_ns) AS g_reason, argMax(outcome, last_seen_ns) AS g_outcome, \
             argMax(dst_names, last_seen_ns) AS g_names \
             FROM {}.flows WHERE verdict = {} AND counted_elsewhere = 0",
            self.inner.db,
            enum_literal(pb::Verdict::Denied),
        ));
        report_filter(&mut sql, q);
        sql.push(" ");
        sql.push(&denied_group_order(q));
        sql
    }

    pub(crate) async fn query_dns_failures(&self, q: &ReportQuery) -> Result<Vec<pb::DnsFailure>> {
        let mut sql = Sql::new(&format!(
            "SELECT src_namespace AS namespace, src_pod AS pod, dns_query AS query, \
             dns_qtype AS qtype, outcome, dns_rcode AS rcode, sum(count) AS attempts, \
             max(last_seen_ns) AS g_last_seen, \
             arraySort(groupUniqArrayArray(if(verdict = {denied}, denied_by, emptyArrayString()))) AS denied, \
             argMax(egress_allows_cluster_dns, last_seen_ns) AS g_egress_dns, \
             argMax(if(verdict = {denied}, reason, ''), last_seen_ns) AS g_reason \
             FROM {db}.flows WHERE has_dns = 1 AND counted_elsewhere = 0 \
             AND (outcome IN ({dropped}, {no_answer}) \
             OR (dns_rcode != '' AND dns_rcode != 'NOERROR'))",
            db = self.inner.db,
            denied = enum_literal(pb::Verdict::Denied),
            dropped = enum_literal(pb::Outcome::Dropped),
            no_answer = enum_literal(pb::Outcome::NoAnswer),
        ));
        report_filter(&mut sql, q);
        sql.push(&format!(
            " GROUP BY namespace, pod, query, qtype, outcome, rcode \
             ORDER BY attempts DESC, g_last_seen DESC, namespace, pod, query, qtype, outcome, rcode \
             LIMIT {}",
            limit(q)
        ));
        self.timed("dns_failures", async {
            let rows: Vec<DnsRow> = self
                .limited(&sql)
                .fetch_all()
                .await
                .map_err(|e| super::ch_error("querying DNS failures", e))?;
            Ok(rows
                .into_iter()
                .map(|r| pb::DnsFailure {
                    namespace: r.namespace,
                    pod: r.pod,
                    query: r.query,
                    qtype: r.qtype,
                    outcome: i32::from(r.outcome),
                    rcode: r.rcode,
                    count: r.attempts,
                    last_seen: Some(timestamp(r.last_seen)),
                    denied_by: policy_refs(r.denied_by),
                    egress_allows_cluster_dns: r.egress_allows_cluster_dns != 0,
                    reason: r.reason,
                })
                .collect())
        })
        .await
    }

    pub(crate) async fn query_status(&self) -> Result<StoreStatus> {
        let sql = Sql::new(&format!(
            "SELECT count() AS flows, min(last_seen_ns) AS oldest, max(last_seen_ns) AS newest, \
             (SELECT count() FROM {db}.dead_letters) AS dead_letters \
             FROM {db}.flows",
            db = self.inner.db
        ));
        self.timed("status", async {
            let r: StatusRow = self
                .limited(&sql)
                .fetch_one()
                .await
                .map_err(|e| super::ch_error("querying status", e))?;
            let some = r.flows > 0;
            Ok(StoreStatus {
                flows_stored: r.flows,
                flows_dropped: self
                    .inner
                    .stats
                    .rows_expired
                    .load(std::sync::atomic::Ordering::Relaxed),
                oldest: some
                    .then(|| UnixNanos::from_nanos(r.oldest).to_system())
                    .flatten(),
                newest: some
                    .then(|| UnixNanos::from_nanos(r.newest).to_system())
                    .flatten(),
                flows_dead_lettered: r.dead_letters,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(since: Option<i64>, until: Option<i64>) -> TimeWindow {
        TimeWindow::new(
            since.map(UnixNanos::from_nanos),
            until.map(UnixNanos::from_nanos),
        )
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn whole_minutes_round_inwards_and_start_at_the_coverage() {
        assert_eq!(whole_minutes(&window(None, None), 0), Some((0, None)));
        assert_eq!(whole_minutes(&window(None, None), 600), Some((600, None)));
        // Since rounds up, until down, to whole minutes.
        assert_eq!(
            whole_minutes(&window(Some(60 * S + 1), Some(300 * S - 1)), 0),
            Some((120, Some(240)))
        );
        assert_eq!(
            whole_minutes(&window(Some(60 * S), Some(300 * S)), 0),
            Some((60, Some(300)))
        );
        assert_eq!(
            whole_minutes(&window(Some(60 * S), Some(300 * S)), 180),
            Some((180, Some(300)))
        );
    }

    #[test]
    fn no_whole_minute_reads_flows_alone() {
        // Inside one minute, empty, or wholly before the coverage.
        assert_eq!(whole_minutes(&window(Some(61 * S), Some(119 * S)), 0), None);
        assert_eq!(whole_minutes(&window(Some(60 * S), Some(60 * S)), 0), None);
        assert_eq!(whole_minutes(&window(None, Some(300 * S)), 300), None);
        // Before the epoch, and past the last DateTime.
        assert_eq!(
            whole_minutes(&window(Some(-120 * S), Some(60 * S)), 0),
            Some((0, Some(60)))
        );
        let last = i64::from(u32::MAX) * S;
        assert_eq!(whole_minutes(&window(Some(last), None), 0), None);
        assert_eq!(
            whole_minutes(&window(Some(0), Some(i64::MAX)), 0),
            Some((0, None))
        );
    }
}
