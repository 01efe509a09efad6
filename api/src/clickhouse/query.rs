//! The read side: `flows`, the `denied` and `dns_failures` reports grouped in
//! SQL, and `status`. Every user value is bound (see `sql.rs`).

use netverdict_proto::filter::PolicyName;
use netverdict_proto::time::UnixNanos;
use netverdict_proto::v1 as pb;
use prost::Message;

use super::ClickHouseStore;
use super::sql::{Sql, enum_literal, filter, predicate, time_range};
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

    pub(crate) async fn query_denied(&self, q: &ReportQuery) -> Result<Vec<pb::DeniedGroup>> {
        let denied_status = enum_literal(pb::PolicyStatus::Denied);
        let mut sql = Sql::new(&format!(
            "SELECT src_group_kind, src_group_namespace, src_group_workload, src_group_ip, \
             dst_group_kind, dst_group_namespace, dst_group_workload, dst_group_ip, \
             protocol, dst_port, denied_by, \
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
        // Grouped by the stored report key (`report::WorkloadKey`), ordered
        // as `report::denied_groups` orders.
        sql.push(&format!(
            " GROUP BY src_group_kind, src_group_namespace, src_group_workload, src_group_ip, \
             dst_group_kind, dst_group_namespace, dst_group_workload, dst_group_ip, protocol, \
             dst_port, denied_by \
             ORDER BY attempts DESC, g_last_seen DESC, src_group_kind, src_group_namespace, \
             src_group_workload, src_group_ip, dst_group_kind, dst_group_namespace, \
             dst_group_workload, dst_group_ip, protocol, dst_port, denied_by LIMIT {}",
            limit(q)
        ));
        self.timed("denied", async {
            let rows: Vec<DeniedRow> = self
                .limited(&sql)
                .fetch_all()
                .await
                .map_err(|e| super::ch_error("querying denied flows", e))?;
            Ok(rows
                .into_iter()
                .map(|r| pb::DeniedGroup {
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
                })
                .collect())
        })
        .await
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
