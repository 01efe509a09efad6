//! The schema: versioned, idempotent migrations applied at start-up, the
//! server's features (18.16 or modern), and retention (dropping day partitions
//! older than the retention on every server; TTL too where the server has it).
//! SCHEMA.md documents every table and column.

use clickhouse::Client;
use netverdict_proto::names::EnumName;
use netverdict_proto::v1 as pb;

use super::ch_error;
use super::sql::enum_literal;
use crate::store::{Result, StoreError};

/// What the server can do, from its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFeatures {
    /// The server's major version.
    pub major: u32,
    /// The server's minor version.
    pub minor: u32,
    /// `TTL` on tables (19.6+; we require 20.3 to be conservative).
    pub ttl: bool,
    /// Data skipping indexes (`set`, `bloom_filter`) without experimental settings (20.3+).
    pub skip_indexes: bool,
}

impl ServerFeatures {
    /// Features of `version` ("18.16.1", "24.3.2.23").
    pub fn from_version(version: &str) -> Result<Self> {
        let mut parts = version.split('.').map(str::parse::<u32>);
        let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
            return Err(StoreError::Backend {
                backend: "clickhouse",
                message: format!("cannot parse server version {version:?}"),
            });
        };
        let modern = (major, minor) >= (20, 3);
        Ok(ServerFeatures {
            major,
            minor,
            ttl: modern,
            skip_indexes: modern,
        })
    }
}

/// An `Enum8` whose members are the enum's SQL names (the proto names) and
/// values its proto numbers.
fn enum8<E: EnumName>() -> String {
    let items: Vec<String> = E::ALL
        .iter()
        .map(|e| format!("'{}' = {}", e.sql_name(), e.number()))
        .collect();
    format!("Enum8({})", items.join(", "))
}

pub(crate) fn verdict_type() -> String {
    enum8::<pb::Verdict>()
}
pub(crate) fn outcome_type() -> String {
    enum8::<pb::Outcome>()
}
fn mismatch_type() -> String {
    enum8::<pb::Mismatch>()
}
fn protocol_type() -> String {
    enum8::<pb::Protocol>()
}
fn direction_type() -> String {
    enum8::<pb::TrafficDirection>()
}
fn observation_point_type() -> String {
    enum8::<pb::ObservationPoint>()
}
fn kind_type() -> String {
    enum8::<pb::EndpointKind>()
}
fn status_type() -> String {
    enum8::<pb::PolicyStatus>()
}
fn tier_type() -> String {
    enum8::<pb::PolicyTier>()
}

fn endpoint_columns(p: &str) -> String {
    let kind = kind_type();
    format!(
        "{p}_present UInt8, {p}_ip String, {p}_ip_family UInt8, {p}_ipv4 UInt32, \
         {p}_ipv6 FixedString(16), {p}_port UInt16, {p}_kind {kind}, {p}_namespace String, \
         {p}_pod String, {p}_workload String, {p}_node String, {p}_label_keys Array(String), \
         {p}_labels Array(String), {p}_group_namespace String, {p}_group_workload String, \
         {p}_group_ip String"
    )
}

fn flows_table(db: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.flows (\
         id String, node String, first_seen DateTime, last_seen DateTime, \
         first_seen_ns Int64, last_seen_ns Int64, count UInt64, \
         verdict {v}, outcome {o}, mismatch {m}, protocol {p}, traffic_direction {d}, \
         drop_reason String, drop_count UInt64, service String, reason String, \
         {src}, {dst}, \
         allowed_by Array(String), denied_by Array(String), \
         egress_status {s}, egress_isolated UInt8, egress_selected_by Array(String), \
         ingress_status {s}, ingress_isolated UInt8, ingress_selected_by Array(String), \
         has_dns UInt8, dns_query String, dns_query_norm String, dns_qtype String, \
         dns_rcode String, dns_answers UInt32, egress_allows_cluster_dns UInt8, \
         flow String, {observed}\
         ) ENGINE = ReplacingMergeTree() \
         PARTITION BY toYYYYMMDD(last_seen) \
         ORDER BY (verdict, last_seen, id) \
         SETTINGS index_granularity = 8192",
        v = verdict_type(),
        o = outcome_type(),
        m = mismatch_type(),
        p = protocol_type(),
        d = direction_type(),
        s = status_type(),
        src = endpoint_columns("src"),
        dst = endpoint_columns("dst"),
        observed = OBSERVED_COLUMNS
            .iter()
            .map(|(name, definition)| format!("{name} {}", definition()))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// A column's type and default, made when needed (enum types are built).
type ColumnDefinition = fn() -> String;

/// The columns migration 5 added to `flows`, after `flow` (name,
/// definition): which end observed a record, and whether another record of
/// the connection is its record of account. `CREATE TABLE` makes them too, as
/// the rollups' views (migration 2) read `counted_elsewhere`.
const OBSERVED_COLUMNS: [(&str, ColumnDefinition); 2] = [
    ("observation_point", || {
        format!(
            "{} DEFAULT {}",
            observation_point_type(),
            enum_literal(pb::ObservationPoint::Unspecified)
        )
    }),
    ("counted_elsewhere", || "UInt8 DEFAULT 0".to_string()),
];

/// A rollup: its table, and the SELECT over `flows` that its materialized
/// view runs on each insert (`{db}` stands for the database,
/// `{verdict_denied}` and `{status_denied}` for the enum members, see
/// [`Rollup::select`]).
pub(crate) struct Rollup {
    pub table: &'static str,
    /// `SELECT ... FROM {db}.flows [ARRAY JOIN ...]`.
    pub select: &'static str,
    /// The view's condition on `flows` (`1` for none).
    pub condition: &'static str,
    /// What follows the condition: ` GROUP BY ...` for a rollup of
    /// aggregate states, empty for one a `SummingMergeTree` sums.
    pub group_by: &'static str,
    /// The flows its rows (of the table or of `select`) count, as an
    /// aggregate: `sum(flows)`, or `countMerge(flows)` for aggregate states.
    pub flows: &'static str,
}

/// The rollups count a connection once: records that are a second
/// observation (`counted_elsewhere`) add nothing to `flows` and `attempts`
/// and are left out of the denied and DNS rollups; their `drops` still count
/// (a packet is dropped on one node only, so drops never repeat).
pub(crate) const ROLLUPS: [Rollup; 3] = [
    Rollup {
        table: "flows_by_minute",
        select: "SELECT toStartOfMinute(last_seen) AS minute, node, verdict, outcome, mismatch, \
             drop_reason, protocol, src_group_namespace AS src_namespace, \
             src_group_workload AS src_workload, dst_group_namespace AS dst_namespace, \
             dst_group_workload AS dst_workload, dst_port, \
             toUInt64(counted_elsewhere = 0) AS flows, \
             if(counted_elsewhere = 0, count, toUInt64(0)) AS attempts, drop_count AS drops \
             FROM {db}.flows",
        condition: "1",
        group_by: "",
        flows: "sum(flows)",
    },
    Rollup {
        table: "denied_by_minute",
        select: "SELECT toStartOfMinute(last_seen) AS minute, policy, \
             src_group_namespace AS src_namespace, src_group_workload AS src_workload, \
             dst_group_namespace AS dst_namespace, dst_group_workload AS dst_workload, \
             dst_port, protocol, \
             toUInt8(egress_status = {status_denied}) AS egress_denied, \
             toUInt8(ingress_status = {status_denied}) AS ingress_denied, \
             outcome, toUInt64(1) AS flows, count AS attempts \
             FROM {db}.flows ARRAY JOIN denied_by AS policy",
        condition: "verdict = {verdict_denied} AND counted_elsewhere = 0",
        group_by: "",
        flows: "sum(flows)",
    },
    Rollup {
        table: "dns_by_minute",
        select: "SELECT toStartOfMinute(last_seen) AS minute, src_namespace, src_pod, \
             dns_query_norm AS query, dns_qtype AS qtype, dns_rcode AS rcode, outcome, \
             verdict, egress_allows_cluster_dns, toUInt64(1) AS flows, count AS attempts \
             FROM {db}.flows",
        condition: "has_dns = 1 AND counted_elsewhere = 0",
        group_by: "",
        flows: "sum(flows)",
    },
];

/// The columns of the `denied` report's key (`report::WorkloadKey` of each
/// end, protocol, port, policies), as `flows` and `denied_groups_by_minute`
/// name them.
pub(crate) const DENIED_KEY: &str = "src_group_kind, src_group_namespace, src_group_workload, \
     src_group_ip, dst_group_kind, dst_group_namespace, dst_group_workload, dst_group_ip, \
     protocol, dst_port, denied_by";

/// The aggregate states of a `denied` group over `flows` rows, named as the
/// columns of `denied_groups_by_minute` (`query_denied` merges them).
macro_rules! denied_states {
    () => {
        "maxState(toUInt8(egress_status = {status_denied})) AS egress_denied, \
         maxState(toUInt8(ingress_status = {status_denied})) AS ingress_denied, \
         sumState(count) AS attempts, countState() AS flows, \
         minState(first_seen_ns) AS first_seen_min, maxState(last_seen_ns) AS last_seen_max, \
         argMaxState(reason, last_seen_ns) AS latest_reason, \
         argMaxState(outcome, last_seen_ns) AS latest_outcome, \
         argMaxState(dst_names, last_seen_ns) AS latest_names"
    };
}

/// `SELECT` of the report key and [`denied_states!`] (and `FROM {db}.flows`
/// after it): the `flows` side of `query_denied` when it reads the rollup.
pub(crate) const DENIED_STATES_SELECT: &str = concat!(
    "SELECT src_group_kind, src_group_namespace, src_group_workload, src_group_ip, \
     dst_group_kind, dst_group_namespace, dst_group_workload, dst_group_ip, \
     protocol, dst_port, denied_by, ",
    denied_states!()
);

/// Migration 10's rollup: the `denied` report's groups per minute of
/// `last_seen`, as aggregate states, with each end's namespace (what the
/// report's namespace filter reads). `query_denied` reads it for the whole
/// minutes of a window that it covers (see `rollup_coverage`). Granules of
/// 1024 rows: a short window reads few rows besides its minutes'.
pub(crate) const DENIED_GROUPS: Rollup = Rollup {
    table: "denied_groups_by_minute",
    select: concat!(
        "SELECT toDateTime(intDiv(toUInt32(last_seen), 60) * 60) AS minute, \
         src_group_kind, src_group_namespace, src_group_workload, src_group_ip, \
         dst_group_kind, dst_group_namespace, dst_group_workload, dst_group_ip, \
         protocol, dst_port, denied_by, src_namespace, dst_namespace, ",
        denied_states!(),
        " FROM {db}.flows"
    ),
    condition: "verdict = {verdict_denied} AND counted_elsewhere = 0",
    group_by: " GROUP BY minute, src_group_kind, src_group_namespace, src_group_workload, \
         src_group_ip, dst_group_kind, dst_group_namespace, dst_group_workload, dst_group_ip, \
         protocol, dst_port, denied_by, src_namespace, dst_namespace",
    flows: "countMerge(flows)",
};

/// Every rollup a view fills: migration 2's and migration 10's.
pub(crate) fn all_rollups() -> impl Iterator<Item = &'static Rollup> {
    ROLLUPS.iter().chain(std::iter::once(&DENIED_GROUPS))
}

/// `sql` with `{db}`, `{verdict_denied}` and `{status_denied}` filled in.
pub(crate) fn expand(sql: &str, db: &str) -> String {
    sql.replace("{db}", db)
        .replace("{verdict_denied}", &enum_literal(pb::Verdict::Denied))
        .replace("{status_denied}", &enum_literal(pb::PolicyStatus::Denied))
}

impl Rollup {
    /// The flows the rows of [`select`](Self::select) count, as an aggregate
    /// over them: the same as over the rollup's table (its `flows` column
    /// counts records of account only, so `count()` of the rows would
    /// over-count a minute with a second observation).
    pub fn selected_flows(&self) -> &'static str {
        self.flows
    }

    /// The view's SELECT for database `db`, with `extra` ANDed to its condition.
    pub fn select(&self, db: &str, extra: &str) -> String {
        format!(
            "{} WHERE ({}) AND ({extra}){}",
            expand(self.select, db),
            expand(self.condition, db),
            self.group_by
        )
    }
}

fn view(db: &str, r: &Rollup) -> String {
    format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{t}_mv TO {db}.{t} AS {sel}",
        t = r.table,
        sel = r.select(db, "1")
    )
}

fn rollups(db: &str) -> Vec<String> {
    let (v, o, m, p) = (
        verdict_type(),
        outcome_type(),
        mismatch_type(),
        protocol_type(),
    );
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.flows_by_minute (\
             minute DateTime, node String, verdict {v}, outcome {o}, mismatch {m}, \
             drop_reason String, protocol {p}, src_namespace String, src_workload String, \
             dst_namespace String, dst_workload String, dst_port UInt16, \
             flows UInt64, attempts UInt64, drops UInt64\
             ) ENGINE = SummingMergeTree((flows, attempts, drops)) \
             PARTITION BY toYYYYMMDD(minute) \
             ORDER BY (minute, verdict, outcome, mismatch, node, src_namespace, src_workload, \
             dst_namespace, dst_workload, dst_port, protocol, drop_reason)"
        ),
        view(db, &ROLLUPS[0]),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.denied_by_minute (\
             minute DateTime, policy String, src_namespace String, src_workload String, \
             dst_namespace String, dst_workload String, dst_port UInt16, protocol {p}, \
             egress_denied UInt8, ingress_denied UInt8, outcome {o}, \
             flows UInt64, attempts UInt64\
             ) ENGINE = SummingMergeTree((flows, attempts)) \
             PARTITION BY toYYYYMMDD(minute) \
             ORDER BY (minute, policy, src_namespace, src_workload, dst_namespace, \
             dst_workload, dst_port, protocol, egress_denied, ingress_denied, outcome)"
        ),
        view(db, &ROLLUPS[1]),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.dns_by_minute (\
             minute DateTime, src_namespace String, src_pod String, query String, \
             qtype String, rcode String, outcome {o}, verdict {v}, \
             egress_allows_cluster_dns UInt8, flows UInt64, attempts UInt64\
             ) ENGINE = SummingMergeTree((flows, attempts)) \
             PARTITION BY toYYYYMMDD(minute) \
             ORDER BY (minute, src_namespace, src_pod, query, qtype, rcode, outcome, \
             verdict, egress_allows_cluster_dns)"
        ),
        view(db, &ROLLUPS[2]),
    ]
}

/// Every table retention applies to, with its time column.
pub(crate) const TABLES: [(&str, &str); 6] = [
    ("flows", "last_seen"),
    ("flows_by_minute", "minute"),
    ("denied_by_minute", "minute"),
    ("dns_by_minute", "minute"),
    ("dead_letters", "received"),
    ("denied_groups_by_minute", "minute"),
];

/// Migration 10: the `denied` report's groups per minute
/// ([`DENIED_GROUPS`]), its view, and the minute from which it holds every
/// flow (`rollup_coverage`): the epoch when `flows` was empty once the view
/// existed, else the minute after the newest `last_seen` stored then (rows
/// stored before the view are not in the rollup; every later row at or after
/// that minute is). Recorded once: a rerun keeps the first coverage.
fn denied_groups(db: &str) -> Vec<Step> {
    let key_types = format!(
        "src_group_kind {k}, src_group_namespace String, src_group_workload String, \
         src_group_ip String, dst_group_kind {k}, dst_group_namespace String, \
         dst_group_workload String, dst_group_ip String, protocol {p}, dst_port UInt16, \
         denied_by Array(String), src_namespace String, dst_namespace String",
        k = kind_type(),
        p = protocol_type(),
    );
    let table = DENIED_GROUPS.table;
    sql_steps(vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{table} (\
             minute DateTime, {key_types}, \
             egress_denied AggregateFunction(max, UInt8), \
             ingress_denied AggregateFunction(max, UInt8), \
             attempts AggregateFunction(sum, UInt64), flows AggregateFunction(count), \
             first_seen_min AggregateFunction(min, Int64), \
             last_seen_max AggregateFunction(max, Int64), \
             latest_reason AggregateFunction(argMax, String, Int64), \
             latest_outcome AggregateFunction(argMax, {o}, Int64), \
             latest_names AggregateFunction(argMax, Array(String), Int64)\
             ) ENGINE = AggregatingMergeTree() \
             PARTITION BY toYYYYMMDD(minute) \
             ORDER BY (minute, src_group_namespace, src_group_workload, dst_group_namespace, \
             dst_group_workload, dst_port, protocol, src_group_kind, src_group_ip, \
             dst_group_kind, dst_group_ip, denied_by, src_namespace, dst_namespace) \
             SETTINGS index_granularity = 1024",
            o = outcome_type(),
        ),
        view(db, &DENIED_GROUPS),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.rollup_coverage \
             (rollup String, since DateTime) ENGINE = TinyLog"
        ),
        format!(
            "INSERT INTO {db}.rollup_coverage (rollup, since) \
             SELECT '{table}', since FROM (\
             SELECT if(count() = 0, toDateTime(0), \
             toDateTime(intDiv(toUInt32(max(last_seen)), 60) * 60 + 60)) AS since \
             FROM {db}.flows) \
             WHERE (SELECT count() FROM {db}.rollup_coverage WHERE rollup = '{table}') = 0"
        ),
    ])
}

/// Migration 7: where the writer sets aside the flows ClickHouse rejects
/// (`writer.rs`), with the error, for a person to look at (and, once the
/// cause is fixed, to re-insert from the encoded `flow`). Partitioned by
/// the day received, so retention drops it like the other tables.
fn dead_letters_table(db: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.dead_letters (\
         received DateTime, id String, node String, last_seen DateTime, \
         error String, flow String\
         ) ENGINE = MergeTree() \
         PARTITION BY toYYYYMMDD(received) \
         ORDER BY (received, id)"
    )
}

/// The server's `max_partitions_per_insert_block` for our user; 0 when it
/// has none (18.16) or it is unlimited.
pub(crate) async fn max_partitions_per_insert(client: &Client) -> Result<usize> {
    let values: Vec<String> = client
        .query("SELECT value FROM system.settings WHERE name = 'max_partitions_per_insert_block'")
        .fetch_all()
        .await
        .map_err(|e| ch_error("reading max_partitions_per_insert_block", e))?;
    Ok(values
        .first()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0))
}

/// One migration: its version, what it does, whether this server can run it,
/// and its steps (each idempotent, so a half-applied migration reruns).
struct Migration {
    version: u32,
    description: &'static str,
    applies: fn(&ServerFeatures) -> bool,
    steps: fn(&str) -> Vec<Step>,
}

/// One idempotent step of a migration.
enum Step {
    /// A statement idempotent by itself (`IF NOT EXISTS`).
    Sql(String),
    /// `ALTER TABLE flows ADD COLUMN`, unless the table has the column (18.16
    /// has no `ADD COLUMN IF NOT EXISTS`, so `system.columns` is asked first).
    AddFlowsColumn {
        /// The new column's name.
        column: String,
        /// Its type and default.
        definition: String,
        /// The column it goes after.
        after: String,
    },
}

fn sql_steps(statements: Vec<String>) -> Vec<Step> {
    statements.into_iter().map(Step::Sql).collect()
}

/// Migration 4: each endpoint's report grouping kind (`report::WorkloadKey`)
/// as a column of its own, next to the other group columns. Rows stored
/// before it read `{p}_kind`, which is the key's kind for every flow a store
/// accepts.
fn group_kind_columns() -> Vec<Step> {
    ["src", "dst"]
        .into_iter()
        .map(|p| Step::AddFlowsColumn {
            column: format!("{p}_group_kind"),
            definition: format!("{} DEFAULT {p}_kind", kind_type()),
            after: format!("{p}_group_ip"),
        })
        .collect()
}

/// Migration 5: observation points and one record of account per connection
/// (the columns, the rollups' views recreated to count connections once), and
/// the mismatch `MISMATCH_NO_ANSWER_THOUGH_ALLOWED` (Enum8 extended: a
/// metadata change on 18.16 and modern servers, sort keys included).
fn observation_points(db: &str) -> Vec<Step> {
    let mut after = "flow";
    let mut steps: Vec<Step> = OBSERVED_COLUMNS
        .iter()
        .map(|(name, definition)| {
            let step = Step::AddFlowsColumn {
                column: name.to_string(),
                definition: definition(),
                after: after.to_string(),
            };
            after = name;
            step
        })
        .collect();
    let m = mismatch_type();
    for table in ["flows", "flows_by_minute"] {
        steps.push(Step::Sql(format!(
            "ALTER TABLE {db}.{table} MODIFY COLUMN mismatch {m}"
        )));
    }
    for r in &ROLLUPS {
        steps.push(Step::Sql(format!(
            "DROP TABLE IF EXISTS {db}.{}_mv",
            r.table
        )));
        steps.push(Step::Sql(view(db, r)));
    }
    steps
}

/// Migration 6: the tier that decided each direction (`POLICY_TIER_*`), next
/// to its status. Rows stored before it read a default from their status: a
/// decided direction (allowed or denied) was NetworkPolicy's, the only tier
/// there was.
fn tier_columns() -> Vec<Step> {
    let allowed = enum_literal(pb::PolicyStatus::Allowed);
    let denied = enum_literal(pb::PolicyStatus::Denied);
    let np = enum_literal(pb::PolicyTier::NetworkPolicy);
    let none = enum_literal(pb::PolicyTier::Unspecified);
    ["egress", "ingress"]
        .into_iter()
        .map(|d| Step::AddFlowsColumn {
            column: format!("{d}_tier"),
            definition: format!(
                "{} DEFAULT if({d}_status IN ({allowed}, {denied}), {np}, {none})",
                tier_type()
            ),
            after: format!("{d}_status"),
        })
        .collect()
}

/// Migration 8: the names the source resolved to the destination's address
/// (`Flow.destination_names`, normalized), for `destination_fqdn` filters.
/// Rows stored before it have none.
fn destination_names_column() -> Vec<Step> {
    vec![Step::AddFlowsColumn {
        column: "dst_names".into(),
        definition: "Array(String)".into(),
        after: "dst_group_ip".into(),
    }]
}

/// Migration 9: ICMP (`PROTOCOL_ICMP` added to the `protocol` Enum8 of
/// `flows` and of the rollups: a metadata change on 18.16 and modern
/// servers, sort keys included) and the packets and bytes the source sent
/// (`Flow.packets`, `Flow.bytes`), after `counted_elsewhere`. Rows stored
/// before it read 0: not counted.
fn icmp_and_counts(db: &str) -> Vec<Step> {
    let p = protocol_type();
    let mut steps: Vec<Step> = ["flows", "flows_by_minute", "denied_by_minute"]
        .into_iter()
        .map(|table| {
            Step::Sql(format!(
                "ALTER TABLE {db}.{table} MODIFY COLUMN protocol {p}"
            ))
        })
        .collect();
    let mut after = "counted_elsewhere";
    for column in ["packets", "bytes"] {
        steps.push(Step::AddFlowsColumn {
            column: column.to_string(),
            definition: "UInt64 DEFAULT 0".to_string(),
            after: after.to_string(),
        });
        after = column;
    }
    steps
}

fn migrations() -> Vec<Migration> {
    vec![
        Migration {
            version: 1,
            description: "flows table",
            applies: |_| true,
            steps: |db| sql_steps(vec![flows_table(db)]),
        },
        Migration {
            version: 2,
            description: "per-minute rollups: flows, denied by policy, DNS",
            applies: |_| true,
            steps: |db| sql_steps(rollups(db)),
        },
        Migration {
            // Not recorded on servers without skip indexes, so it runs once
            // the server is upgraded.
            version: 3,
            description: "skip indexes for namespaces, policies, DNS names and ids",
            applies: |f| f.skip_indexes,
            steps: |db| {
                sql_steps(
                    [
                        "idx_src_namespace src_namespace TYPE set(1000) GRANULARITY 4",
                        "idx_dst_namespace dst_namespace TYPE set(1000) GRANULARITY 4",
                        "idx_denied_by denied_by TYPE bloom_filter(0.01) GRANULARITY 4",
                        "idx_allowed_by allowed_by TYPE bloom_filter(0.01) GRANULARITY 4",
                        "idx_dns_query dns_query_norm TYPE bloom_filter(0.01) GRANULARITY 4",
                        "idx_id id TYPE bloom_filter(0.001) GRANULARITY 1",
                    ]
                    .iter()
                    .map(|i| format!("ALTER TABLE {db}.flows ADD INDEX IF NOT EXISTS {i}"))
                    .collect(),
                )
            },
        },
        Migration {
            version: 4,
            description: "report grouping kind columns",
            applies: |_| true,
            steps: |_| group_kind_columns(),
        },
        Migration {
            version: 5,
            description: "observation points, one record of account per connection in the \
                          rollups, mismatch no answer though allowed",
            applies: |_| true,
            steps: observation_points,
        },
        Migration {
            version: 6,
            description: "deciding tier columns (admin, network policy, baseline)",
            applies: |_| true,
            steps: |_| tier_columns(),
        },
        Migration {
            version: 7,
            description: "dead_letters: flows ClickHouse rejected, set aside",
            applies: |_| true,
            steps: |db| sql_steps(vec![dead_letters_table(db)]),
        },
        Migration {
            version: 8,
            description: "destination names (what the source resolved)",
            applies: |_| true,
            steps: |_| destination_names_column(),
        },
        Migration {
            version: 9,
            description: "ICMP protocol, packets and bytes columns",
            applies: |_| true,
            steps: icmp_and_counts,
        },
        Migration {
            version: 10,
            description: "denied report groups per minute (denied_groups_by_minute) and \
                          the minute from which the rollup holds every flow",
            applies: |_| true,
            steps: denied_groups,
        },
    ]
}

/// The newest schema version this code knows.
pub fn latest_version() -> u32 {
    migrations().iter().map(|m| m.version).max().unwrap_or(0)
}

/// Every migration's version, ascending (numbers are assigned per change, so
/// there may be gaps), with whether it runs on a server with `features`.
pub fn migration_versions(features: &ServerFeatures) -> Vec<u32> {
    migrations()
        .iter()
        .filter(|m| (m.applies)(features))
        .map(|m| m.version)
        .collect()
}

/// Creates the database and applies every migration not applied yet.
pub(crate) async fn migrate(
    client: &Client,
    db: &str,
    features: &ServerFeatures,
) -> Result<Vec<u32>> {
    let run = |sql: String| async move {
        client
            .query(&sql)
            .execute()
            .await
            .map_err(|e| ch_error(&format!("migration: {sql}"), e))
    };
    run(format!("CREATE DATABASE IF NOT EXISTS {db}")).await?;
    run(format!(
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations \
         (version UInt32, description String, applied_at DateTime) \
         ENGINE = MergeTree() ORDER BY version"
    ))
    .await?;
    let applied: Vec<u32> = client
        .query(&format!(
            "SELECT DISTINCT version FROM {db}.schema_migrations"
        ))
        .fetch_all::<u32>()
        .await
        .map_err(|e| ch_error("reading schema_migrations", e))?;
    let mut newly = Vec::new();
    for m in migrations() {
        if applied.contains(&m.version) || !(m.applies)(features) {
            continue;
        }
        tracing::info!(
            version = m.version,
            description = m.description,
            "applying migration"
        );
        for step in (m.steps)(db) {
            match step {
                Step::Sql(sql) => run(sql).await?,
                Step::AddFlowsColumn {
                    column,
                    definition,
                    after,
                } => {
                    let has: u64 = client
                        .query(
                            "SELECT count() FROM system.columns \
                             WHERE database = ? AND table = 'flows' AND name = ?",
                        )
                        .bind(db)
                        .bind(&column)
                        .fetch_one()
                        .await
                        .map_err(|e| ch_error("reading system.columns", e))?;
                    if has == 0 {
                        run(format!(
                            "ALTER TABLE {db}.flows ADD COLUMN {column} {definition} AFTER {after}"
                        ))
                        .await?;
                    }
                }
            }
        }
        client
            .query(&format!(
                "INSERT INTO {db}.schema_migrations (version, description, applied_at) \
                 SELECT ?, ?, now()"
            ))
            .bind(m.version)
            .bind(m.description)
            .execute()
            .await
            .map_err(|e| ch_error("recording migration", e))?;
        newly.push(m.version);
    }
    Ok(newly)
}

/// Sets each table's TTL to the retention where the server has TTL (only when
/// it differs, so restarts do not rewrite parts). Best effort: partition
/// dropping enforces retention anyway.
pub(crate) async fn apply_ttl(client: &Client, db: &str, features: &ServerFeatures, days: u32) {
    if !features.ttl {
        return;
    }
    for (table, column) in TABLES {
        let ttl = format!("{column} + toIntervalDay({days})");
        let current: Result<String, _> = client
            .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
            .bind(db)
            .bind(table)
            .fetch_one::<String>()
            .await;
        if matches!(&current, Ok(engine) if engine.contains(&format!("TTL {ttl}"))) {
            continue;
        }
        let sql = format!("ALTER TABLE {db}.{table} MODIFY TTL {ttl}");
        if let Err(e) = client
            .query(&sql)
            .with_setting("materialize_ttl_after_modify", "0")
            .execute()
            .await
        {
            tracing::warn!(table, error = %e, "cannot set TTL; partition dropping still applies");
        }
    }
}

/// Drops day partitions of every table older than `days`; returns the number
/// of `flows` rows dropped.
pub(crate) async fn drop_expired(client: &Client, db: &str, days: u32) -> Result<u64> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Part {
        table: String,
        partition: String,
        n: u64,
    }
    let parts: Vec<Part> = client
        .query(
            "SELECT table, partition, sum(rows) AS n FROM system.parts \
             WHERE database = ? AND active AND has(?, table) \
             AND toUInt32OrZero(partition) < toYYYYMMDD(now() - toIntervalDay(?)) \
             GROUP BY table, partition ORDER BY table, partition",
        )
        .bind(db)
        .bind(TABLES.iter().map(|(t, _)| *t).collect::<Vec<_>>())
        .bind(days)
        .fetch_all()
        .await
        .map_err(|e| ch_error("listing expired partitions", e))?;
    let mut dropped = 0;
    for p in parts {
        // The partition is a number (toYYYYMMDD): checked before it reaches SQL.
        let Ok(day) = p.partition.trim_matches('\'').parse::<u32>() else {
            continue;
        };
        client
            .query(&format!(
                "ALTER TABLE {db}.{} DROP PARTITION {day}",
                p.table
            ))
            .execute()
            .await
            .map_err(|e| ch_error(&format!("dropping partition {day} of {}", p.table), e))?;
        tracing::info!(table = %p.table, partition = day, rows = p.n, "dropped expired partition");
        if p.table == "flows" {
            dropped += p.n;
        }
    }
    Ok(dropped)
}
