//! The schema: versioned, idempotent migrations applied at start-up, the
//! server's features (18.16 or modern), and retention (dropping day partitions
//! older than the retention on every server; TTL too where the server has it).
//! SCHEMA.md documents every table and column.
//!
//! Cluster mode ([`Layout::Cluster`], `--clickhouse-cluster NAME`): every
//! DDL statement runs `ON CLUSTER`, so one API server's migrations apply to
//! every server of the cluster once. Each sharded table `T` is a
//! `Replicated*MergeTree` named `T_local` (ZooKeeper path
//! `/clickhouse/tables/{shard}/<db>/T`, replica `{replica}`: the servers'
//! macros) under a `Distributed` table named `T` that reads and writes every
//! shard (`flows` and `dead_letters` sharded by `cityHash64(id)`, so a resent
//! flow lands on the shard holding it; rollups at random). The rollups' views
//! read `flows_local` and write the replicated `*_local` rollups, on the
//! replica that took the insert. `schema_migrations` and `rollup_coverage`
//! are one replicated table every server holds whole (replica
//! `{shard}-{replica}`). Queries and the writer use the plain names in both
//! layouts.

use std::time::Duration;

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

fn flows_table() -> Table {
    let columns = format!(
        "id String, node String, first_seen DateTime, last_seen DateTime, \
         first_seen_ns Int64, last_seen_ns Int64, count UInt64, \
         verdict {v}, outcome {o}, mismatch {m}, protocol {p}, traffic_direction {d}, \
         drop_reason String, drop_count UInt64, service String, reason String, \
         {src}, {dst}, \
         allowed_by Array(String), denied_by Array(String), \
         egress_status {s}, egress_isolated UInt8, egress_selected_by Array(String), \
         ingress_status {s}, ingress_isolated UInt8, ingress_selected_by Array(String), \
         has_dns UInt8, dns_query String, dns_query_norm String, dns_qtype String, \
         dns_rcode String, dns_answers UInt32, egress_allows_cluster_dns UInt8, \
         flow String, {observed}",
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
    );
    Table::sharded(
        "flows",
        columns,
        "ReplacingMergeTree",
        "",
        "PARTITION BY toYYYYMMDD(last_seen) ORDER BY (verdict, last_seen, id) \
         SETTINGS index_granularity = 8192",
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

/// Migration 2: the per-minute rollups, each a table and the view filling it.
fn rollups() -> Vec<Step> {
    let (v, o, m, p) = (
        verdict_type(),
        outcome_type(),
        mismatch_type(),
        protocol_type(),
    );
    vec![
        Step::Table(Table::sharded(
            "flows_by_minute",
            format!(
                "minute DateTime, node String, verdict {v}, outcome {o}, mismatch {m}, \
                 drop_reason String, protocol {p}, src_namespace String, src_workload String, \
                 dst_namespace String, dst_workload String, dst_port UInt16, \
                 flows UInt64, attempts UInt64, drops UInt64"
            ),
            "SummingMergeTree",
            "(flows, attempts, drops)",
            "PARTITION BY toYYYYMMDD(minute) \
             ORDER BY (minute, verdict, outcome, mismatch, node, src_namespace, src_workload, \
             dst_namespace, dst_workload, dst_port, protocol, drop_reason)",
        )),
        Step::View(&ROLLUPS[0]),
        Step::Table(Table::sharded(
            "denied_by_minute",
            format!(
                "minute DateTime, policy String, src_namespace String, src_workload String, \
                 dst_namespace String, dst_workload String, dst_port UInt16, protocol {p}, \
                 egress_denied UInt8, ingress_denied UInt8, outcome {o}, \
                 flows UInt64, attempts UInt64"
            ),
            "SummingMergeTree",
            "(flows, attempts)",
            "PARTITION BY toYYYYMMDD(minute) \
             ORDER BY (minute, policy, src_namespace, src_workload, dst_namespace, \
             dst_workload, dst_port, protocol, egress_denied, ingress_denied, outcome)",
        )),
        Step::View(&ROLLUPS[1]),
        Step::Table(Table::sharded(
            "dns_by_minute",
            format!(
                "minute DateTime, src_namespace String, src_pod String, query String, \
                 qtype String, rcode String, outcome {o}, verdict {v}, \
                 egress_allows_cluster_dns UInt8, flows UInt64, attempts UInt64"
            ),
            "SummingMergeTree",
            "(flows, attempts)",
            "PARTITION BY toYYYYMMDD(minute) \
             ORDER BY (minute, src_namespace, src_pod, query, qtype, rcode, outcome, \
             verdict, egress_allows_cluster_dns)",
        )),
        Step::View(&ROLLUPS[2]),
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
    vec![
        Step::Table(Table::sharded(
            table,
            format!(
                "minute DateTime, {key_types}, \
                 egress_denied AggregateFunction(max, UInt8), \
                 ingress_denied AggregateFunction(max, UInt8), \
                 attempts AggregateFunction(sum, UInt64), flows AggregateFunction(count), \
                 first_seen_min AggregateFunction(min, Int64), \
                 last_seen_max AggregateFunction(max, Int64), \
                 latest_reason AggregateFunction(argMax, String, Int64), \
                 latest_outcome AggregateFunction(argMax, {o}, Int64), \
                 latest_names AggregateFunction(argMax, Array(String), Int64)",
                o = outcome_type(),
            ),
            "AggregatingMergeTree",
            "",
            "PARTITION BY toYYYYMMDD(minute) \
             ORDER BY (minute, src_group_namespace, src_group_workload, dst_group_namespace, \
             dst_group_workload, dst_port, protocol, src_group_kind, src_group_ip, \
             dst_group_kind, dst_group_ip, denied_by, src_namespace, dst_namespace) \
             SETTINGS index_granularity = 1024",
        )),
        Step::View(&DENIED_GROUPS),
        Step::Table(Table::everywhere(
            "rollup_coverage",
            "rollup String, since DateTime".into(),
            "rollup",
        )),
        Step::Sql(format!(
            "INSERT INTO {db}.rollup_coverage (rollup, since) \
             SELECT '{table}', since FROM (\
             SELECT if(count() = 0, toDateTime(0), \
             toDateTime(intDiv(toUInt32(max(last_seen)), 60) * 60 + 60)) AS since \
             FROM {db}.flows) \
             WHERE (SELECT count() FROM {db}.rollup_coverage WHERE rollup = '{table}') = 0"
        )),
    ]
}

/// Migration 7: where the writer sets aside the flows ClickHouse rejects
/// (`writer.rs`), with the error, for a person to look at (and, once the
/// cause is fixed, to re-insert from the encoded `flow`). Partitioned by
/// the day received, so retention drops it like the other tables.
fn dead_letters_table() -> Table {
    Table::sharded(
        "dead_letters",
        "received DateTime, id String, node String, last_seen DateTime, \
         error String, flow String"
            .into(),
        "MergeTree",
        "",
        "PARTITION BY toYYYYMMDD(received) ORDER BY (received, id)",
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
    /// A statement idempotent by itself, run once on the server we talk to
    /// (DML: in a cluster it reads and writes the `Distributed` tables).
    Sql(String),
    /// `CREATE TABLE IF NOT EXISTS`, laid out by [`Layout::create_table`].
    Table(Table),
    /// `CREATE MATERIALIZED VIEW IF NOT EXISTS` of a rollup.
    View(&'static Rollup),
    /// `DROP TABLE IF EXISTS` of a rollup's view.
    DropView(&'static Rollup),
    /// `ALTER TABLE` of a sharded table (its local and `Distributed` tables in
    /// a cluster).
    Alter {
        /// The table's name.
        table: &'static str,
        /// What follows `ALTER TABLE <name>`.
        action: String,
        /// Whether only the stored table changes (an index): not a
        /// `Distributed` table.
        stored_only: bool,
    },
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

/// Which servers hold a table in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spread {
    /// Rows split over the shards by [`shard_by`], each shard replicated; a
    /// `Distributed` table reads and writes them all.
    Sharded,
    /// Small bookkeeping every server holds whole (one replicated table
    /// across the cluster), ordered by `order_by`.
    Everywhere {
        /// Its `ORDER BY` in a cluster (on one server it is a `TinyLog`, or a
        /// `MergeTree` with `rest`).
        order_by: &'static str,
    },
}

/// A table to create: its columns, `MergeTree` family engine and clauses.
struct Table {
    name: &'static str,
    /// The column definitions, comma separated.
    columns: String,
    /// The engine on one server: `MergeTree`, `SummingMergeTree`, ...
    /// (`TinyLog` for a bookkeeping table).
    engine: &'static str,
    /// The engine's arguments (`(flows, attempts)`) or empty.
    args: &'static str,
    /// What follows the engine: `PARTITION BY`, `ORDER BY`, `SETTINGS`.
    rest: &'static str,
    spread: Spread,
}

impl Table {
    fn sharded(
        name: &'static str,
        columns: String,
        engine: &'static str,
        args: &'static str,
        rest: &'static str,
    ) -> Table {
        Table {
            name,
            columns,
            engine,
            args,
            rest,
            spread: Spread::Sharded,
        }
    }

    /// The column definitions (and index clauses), split at the commas
    /// outside parentheses and quotes.
    fn definitions(&self) -> Vec<String> {
        let mut defs = super::sql::split_top_level_commas(&self.columns);
        if defs.last().is_some_and(String::is_empty) {
            defs.pop();
        }
        defs
    }

    /// Whether definition `def` is column `name`'s.
    fn defines(def: &str, name: &str) -> bool {
        def.split_whitespace().next() == Some(name)
    }

    /// Adds column definition `def` after column `after` (nothing when the
    /// table has the column already, as [`Step::AddFlowsColumn`] does);
    /// false (nothing changed) when there is no column `after`.
    fn add_column_after(&mut self, after: &str, def: &str) -> bool {
        let mut defs = self.definitions();
        let name = def.split_whitespace().next().unwrap_or_default();
        if defs.iter().any(|d| Table::defines(d, name)) {
            return true;
        }
        let Some(at) = defs.iter().position(|d| Table::defines(d, after)) else {
            return false;
        };
        defs.insert(at + 1, def.to_string());
        self.columns = defs.join(", ");
        true
    }

    /// Replaces the definition of the column `def` names; false when there is
    /// no such column.
    fn modify_column(&mut self, def: &str) -> bool {
        let Some(name) = def.split_whitespace().next() else {
            return false;
        };
        let mut defs = self.definitions();
        let Some(at) = defs.iter().position(|d| Table::defines(d, name)) else {
            return false;
        };
        defs[at] = def.to_string();
        self.columns = defs.join(", ");
        true
    }

    /// Takes the change `action` (what follows `ALTER TABLE <name>`) into the
    /// definition, when it is one a `CREATE TABLE` can say: `ADD COLUMN ..
    /// AFTER ..`, `MODIFY COLUMN`, `ADD INDEX IF NOT EXISTS`. False (nothing
    /// changed) for anything else.
    fn absorb(&mut self, action: &str) -> bool {
        if let Some(rest) = action.strip_prefix("ADD COLUMN ") {
            return match rest.rsplit_once(" AFTER ") {
                Some((def, after)) => self.add_column_after(after.trim(), def.trim()),
                None => false,
            };
        }
        if let Some(def) = action.strip_prefix("MODIFY COLUMN ") {
            return self.modify_column(def.trim());
        }
        if let Some(index) = action.strip_prefix("ADD INDEX IF NOT EXISTS ") {
            self.columns = format!("{}, INDEX {}", self.columns, index.trim());
            return true;
        }
        false
    }

    /// A bookkeeping table: a `TinyLog` on one server.
    fn everywhere(name: &'static str, columns: String, order_by: &'static str) -> Table {
        Table {
            name,
            columns,
            engine: "TinyLog",
            args: "",
            rest: "",
            spread: Spread::Everywhere { order_by },
        }
    }
}

/// Where netverdict's tables live: on one server, or sharded and replicated
/// over a cluster (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One server: plain `MergeTree` family tables.
    Single,
    /// The cluster of this name (in the servers' `remote_servers`, with
    /// `{shard}` and `{replica}` macros and ZooKeeper or Keeper).
    Cluster(String),
}

impl Layout {
    /// The layout of a `--clickhouse-cluster` value (None: one server).
    pub fn new(cluster: Option<&str>) -> Layout {
        match cluster {
            Some(c) => Layout::Cluster(c.to_string()),
            None => Layout::Single,
        }
    }

    /// ` ON CLUSTER <name>` in a cluster, else nothing.
    pub(crate) fn on_cluster(&self) -> String {
        match self {
            Layout::Single => String::new(),
            Layout::Cluster(c) => format!(" ON CLUSTER {c}"),
        }
    }

    /// The name of the table holding the rows of sharded table `table` on
    /// each server (`T_local` in a cluster, where `T` is `Distributed`).
    pub(crate) fn stored(&self, table: &str) -> String {
        match self {
            Layout::Single => table.to_string(),
            Layout::Cluster(_) => format!("{table}_local"),
        }
    }

    fn create_table(&self, db: &str, t: &Table) -> Vec<String> {
        let Table {
            name,
            columns,
            engine,
            args,
            rest,
            spread,
        } = t;
        let Layout::Cluster(cluster) = self else {
            // A Log engine takes no parentheses; the MergeTree family's do.
            let engine = match *engine {
                "TinyLog" => engine.to_string(),
                _ => format!("{engine}({args})"),
            };
            return vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{name} ({columns}) ENGINE = {engine} {rest}"
                )
                .trim_end()
                .to_string(),
            ];
        };
        let args = if args.is_empty() {
            String::new()
        } else {
            format!(", {args}")
        };
        match spread {
            Spread::Sharded => {
                let local = self.stored(name);
                // Block ids kept for deduplication: a batch resent through
                // another API server is recognized among the last 1 000
                // INSERTs of its shard (100 by default).
                let window = "replicated_deduplication_window = 1000";
                let rest = if rest.contains("SETTINGS") {
                    format!("{rest}, {window}")
                } else {
                    format!("{rest} SETTINGS {window}")
                };
                vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {db}.{local} ON CLUSTER {cluster} ({columns}) \
                         ENGINE = Replicated{engine}('/clickhouse/tables/{{shard}}/{db}/{name}', \
                         '{{replica}}'{args}) {rest}"
                    ),
                    format!(
                        "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster} AS {db}.{local} \
                         ENGINE = Distributed({cluster}, {db}, {local}, {})",
                        shard_by(name)
                    ),
                ]
            }
            Spread::Everywhere { order_by } => vec![format!(
                "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster} ({columns}) \
                 ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{db}/{name}', \
                 '{{shard}}-{{replica}}') ORDER BY {order_by}"
            )],
        }
    }

    fn view(&self, db: &str, r: &Rollup) -> String {
        let select = r.select(db, "1");
        match self {
            Layout::Single => format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{t}_mv TO {db}.{t} AS {select}",
                t = r.table
            ),
            // The view reads the inserted block of the replica that took it.
            Layout::Cluster(cluster) => format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{t}_mv ON CLUSTER {cluster} \
                 TO {db}.{local} AS {select}",
                t = r.table,
                local = self.stored(r.table),
                select = select.replace(
                    &format!("FROM {db}.flows "),
                    &format!("FROM {db}.{} ", self.stored("flows"))
                ),
            ),
        }
    }

    /// `ALTER TABLE` of a sharded table. In a cluster the stored tables are
    /// altered `ON CLUSTER` and the `Distributed` table is made again from
    /// them: 18.16 refuses `ALTER ... ON CLUSTER` of a table that is not
    /// replicated on a cluster whose shards are (`internal_replication`).
    /// Inserts are synchronous, so a `Distributed` table holds no rows.
    fn alter(&self, db: &str, table: &str, action: &str, stored_only: bool) -> Vec<String> {
        let on = self.on_cluster();
        let mut statements = vec![format!(
            "ALTER TABLE {db}.{}{on} {action}",
            self.stored(table)
        )];
        if !stored_only {
            statements.extend(self.remake_distributed(db, table));
        }
        statements
    }

    /// In a cluster: drops the `Distributed` table `table` and creates it
    /// again with its stored table's columns. Nothing on one server.
    fn remake_distributed(&self, db: &str, table: &str) -> Vec<String> {
        let Layout::Cluster(cluster) = self else {
            return Vec::new();
        };
        let local = self.stored(table);
        vec![
            format!("DROP TABLE IF EXISTS {db}.{table} ON CLUSTER {cluster}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {cluster} AS {db}.{local} \
                 ENGINE = Distributed({cluster}, {db}, {local}, {})",
                shard_by(table)
            ),
        ]
    }
}

/// The `Distributed` table's sharding key of a sharded table: a hash of the
/// flow id for `flows` and `dead_letters` (a flow sent again lands on the
/// shard that holds it), random for the rollups (their sums add up over the
/// shards).
fn shard_by(table: &str) -> &'static str {
    match table {
        "flows" | "dead_letters" => "cityHash64(id)",
        _ => "rand()",
    }
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
fn observation_points() -> Vec<Step> {
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
        steps.push(Step::Alter {
            table,
            action: format!("MODIFY COLUMN mismatch {m}"),
            stored_only: false,
        });
    }
    for r in &ROLLUPS {
        steps.push(Step::DropView(r));
        steps.push(Step::View(r));
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
fn icmp_and_counts() -> Vec<Step> {
    let p = protocol_type();
    let mut steps: Vec<Step> = ["flows", "flows_by_minute", "denied_by_minute"]
        .into_iter()
        .map(|table| Step::Alter {
            table,
            action: format!("MODIFY COLUMN protocol {p}"),
            stored_only: false,
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
            steps: |_| vec![Step::Table(flows_table())],
        },
        Migration {
            version: 2,
            description: "per-minute rollups: flows, denied by policy, DNS",
            applies: |_| true,
            steps: |_| rollups(),
        },
        Migration {
            // Not recorded on servers without skip indexes, so it runs once
            // the server is upgraded.
            version: 3,
            description: "skip indexes for namespaces, policies, DNS names and ids",
            applies: |f| f.skip_indexes,
            steps: |_| {
                [
                    "idx_src_namespace src_namespace TYPE set(1000) GRANULARITY 4",
                    "idx_dst_namespace dst_namespace TYPE set(1000) GRANULARITY 4",
                    "idx_denied_by denied_by TYPE bloom_filter(0.01) GRANULARITY 4",
                    "idx_allowed_by allowed_by TYPE bloom_filter(0.01) GRANULARITY 4",
                    "idx_dns_query dns_query_norm TYPE bloom_filter(0.01) GRANULARITY 4",
                    "idx_id id TYPE bloom_filter(0.001) GRANULARITY 1",
                ]
                .iter()
                .map(|i| Step::Alter {
                    table: "flows",
                    action: format!("ADD INDEX IF NOT EXISTS {i}"),
                    stored_only: true,
                })
                .collect()
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
            steps: |_| observation_points(),
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
            steps: |_| vec![Step::Table(dead_letters_table())],
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
            steps: |_| icmp_and_counts(),
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
    layout: &Layout,
) -> Result<Vec<u32>> {
    // `ON CLUSTER` waits for every server: once this server has the
    // bookkeeping table, a start with nothing to migrate runs no DDL, so an
    // API server starts while a ClickHouse server of the cluster is down.
    let known = matches!(layout, Layout::Cluster(_))
        && client
            .query(
                "SELECT count() FROM system.tables \
                 WHERE database = ? AND name = 'schema_migrations'",
            )
            .bind(db)
            .fetch_one::<u64>()
            .await
            .map_err(|e| ch_error("reading system.tables", e))?
            > 0;
    if !known {
        create_bookkeeping(client, db, layout).await?;
    }
    let applied = applied_versions(client, db).await?;
    let pending = migrations()
        .iter()
        .any(|m| !applied.contains(&m.version) && (m.applies)(features));
    if !pending {
        return Ok(Vec::new());
    }
    if matches!(layout, Layout::Single) {
        return apply_pending(client, db, features, layout, &applied).await;
    }
    // One API server at a time migrates the cluster; the others wait, then
    // find the migrations applied.
    let lock = MigrationLock::acquire(client, db, &layout.on_cluster()).await?;
    let applied = match sync_applied(client, db).await {
        Ok(applied) => applied,
        Err(e) => {
            lock.release().await;
            return Err(e);
        }
    };
    let result = apply_pending(client, db, features, layout, &applied).await;
    lock.release().await;
    result
}

/// The database and `schema_migrations`.
async fn create_bookkeeping(client: &Client, db: &str, layout: &Layout) -> Result<()> {
    let on = layout.on_cluster();
    let migrations_table = Table {
        name: "schema_migrations",
        columns: "version UInt32, description String, applied_at DateTime".into(),
        engine: "MergeTree",
        args: "",
        rest: "ORDER BY version",
        spread: Spread::Everywhere {
            order_by: "version",
        },
    };
    let mut statements = vec![format!("CREATE DATABASE IF NOT EXISTS {db}{on}")];
    statements.extend(layout.create_table(db, &migrations_table));
    for sql in statements {
        client
            .query(&sql)
            .execute()
            .await
            .map_err(|e| ch_error(&format!("migration: {sql}"), e))?;
    }
    Ok(())
}

/// The versions `schema_migrations` records.
async fn applied_versions(client: &Client, db: &str) -> Result<Vec<u32>> {
    client
        .query(&format!(
            "SELECT DISTINCT version FROM {db}.schema_migrations"
        ))
        .fetch_all::<u32>()
        .await
        .map_err(|e| ch_error("reading schema_migrations", e))
}

/// [`applied_versions`] once this server's replica of `schema_migrations`
/// has every row another server recorded.
async fn sync_applied(client: &Client, db: &str) -> Result<Vec<u32>> {
    client
        .query(&format!("SYSTEM SYNC REPLICA {db}.schema_migrations"))
        .execute()
        .await
        .map_err(|e| ch_error("syncing schema_migrations", e))?;
    applied_versions(client, db).await
}

/// How long an API server waits for another to finish migrating a cluster.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(300);
/// A migration lock older than this was left by an API server that died
/// while migrating: it is broken.
const MIGRATION_LOCK_STALE: Duration = Duration::from_secs(600);

/// The lock one API server holds while it migrates a cluster: the table
/// `schema_lock` on its server, a `ReplicatedMergeTree` whose one replica
/// name (`holder`) ZooKeeper (or Keeper) gives to one server only, so its
/// `CREATE` succeeds for one API server at a time. Dropping the table
/// releases it.
struct MigrationLock<'a> {
    client: &'a Client,
    db: &'a str,
}

impl<'a> MigrationLock<'a> {
    /// Takes the lock, waiting up to [`MIGRATION_LOCK_WAIT`] while another
    /// holds it (breaking it once older than [`MIGRATION_LOCK_STALE`]).
    /// `on_cluster` is [`Layout::on_cluster`].
    async fn acquire(
        client: &'a Client,
        db: &'a str,
        on_cluster: &str,
    ) -> Result<MigrationLock<'a>> {
        let deadline = tokio::time::Instant::now() + MIGRATION_LOCK_WAIT;
        let path = format!("/clickhouse/tables/all/{db}/schema_lock");
        loop {
            let created = client
                .query(&format!(
                    "CREATE TABLE {db}.schema_lock (holder String) \
                     ENGINE = ReplicatedMergeTree('{path}', 'holder') ORDER BY holder"
                ))
                .execute()
                .await;
            let err = match created {
                Ok(()) => return Ok(MigrationLock { client, db }),
                Err(e) => ch_error("taking the migration lock (schema_lock)", e),
            };
            // Held: by whom does not matter, for how long does.
            let age: Option<u32> = client
                .query(
                    "SELECT toUInt32(now()) - toUInt32(min(ctime)) FROM system.zookeeper \
                     WHERE path = ? AND name = 'holder'",
                )
                .bind(format!("{path}/replicas"))
                .fetch_one::<u32>()
                .await
                .ok();
            if age.is_some_and(|a| u64::from(a) > MIGRATION_LOCK_STALE.as_secs()) {
                tracing::warn!(database = db, "breaking a stale migration lock");
                let _ = client
                    .query(&format!(
                        "DROP TABLE IF EXISTS {db}.schema_lock{on_cluster}"
                    ))
                    .execute()
                    .await;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(err);
            }
            tracing::info!(
                database = db,
                "another API server is migrating the cluster; waiting"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Drops `schema_lock` (best effort: a lock left behind goes stale).
    async fn release(self) {
        let db = self.db;
        if let Err(e) = self
            .client
            .query(&format!("DROP TABLE IF EXISTS {db}.schema_lock"))
            .execute()
            .await
        {
            tracing::warn!(error = %e, "cannot release the migration lock (schema_lock)");
        }
    }
}

/// Folds the changes that pending migrations make to a table one of them
/// creates (`plans`: each pending migration's steps, in order) into that
/// table's `CREATE`, and drops those steps: a new database gets its tables
/// whole, with no `ALTER`. Tables in `existing` (already on a server) are
/// altered step by step as before.
///
/// In a cluster this is what keeps `ALTER ... ON CLUSTER` away from a new
/// database: on 18.16 the replicas of a shard race to run such an `ALTER`
/// of a replicated table once, and the loser's `DDLWorker` stops for good
/// ("Unexpected ZooKeeper error: Node exists .../executed"), so every later
/// `ON CLUSTER` statement times out on that server until it restarts.
///
/// In a cluster, an index (an `ALTER` of the stored table only) is not
/// folded: a `Distributed` table made `AS` a stored table with indexes would
/// inherit them, which current servers refuse for that engine.
fn fold_into_new_tables(
    plans: &mut [Vec<Step>],
    existing: &std::collections::HashSet<String>,
    layout: &Layout,
) {
    let cluster = matches!(layout, Layout::Cluster(_));
    // Where each table this run creates is: (migration, step).
    let mut created: std::collections::HashMap<&'static str, (usize, usize)> =
        std::collections::HashMap::new();
    for m in 0..plans.len() {
        let mut i = 0;
        while i < plans[m].len() {
            // The table a step changes, and the change if it may fold.
            let (target, change) = match &plans[m][i] {
                Step::Table(t) => {
                    if !existing.contains(t.name) {
                        created.insert(t.name, (m, i));
                    }
                    (None, None)
                }
                Step::Alter {
                    table,
                    action,
                    stored_only,
                } => (
                    Some(*table),
                    (!(cluster && *stored_only)).then(|| action.clone()),
                ),
                Step::AddFlowsColumn {
                    column,
                    definition,
                    after,
                } => (
                    Some("flows"),
                    Some(format!("ADD COLUMN {column} {definition} AFTER {after}")),
                ),
                _ => (None, None),
            };
            let folded = match (target, change) {
                (Some(table), Some(action)) => {
                    created
                        .get(table)
                        .is_some_and(|&(tm, ti)| match &mut plans[tm][ti] {
                            Step::Table(t) => t.absorb(&action),
                            _ => false,
                        })
                }
                _ => false,
            };
            if folded {
                plans[m].remove(i);
            } else {
                // A change that stays a step: the later ones stay steps too,
                // so they run after it, in order.
                if let Some(table) = target {
                    created.remove(table);
                }
                i += 1;
            }
        }
    }
}

/// The tables of `db` on this server, and in a cluster on a replica of every
/// shard (names as created: `T` and `T_local`, both reported as `T`).
async fn existing_tables(
    client: &Client,
    db: &str,
    layout: &Layout,
) -> Result<std::collections::HashSet<String>> {
    let source = match layout {
        Layout::Single => "system.tables".to_string(),
        Layout::Cluster(c) => format!("cluster('{c}', system, tables)"),
    };
    let names = client
        .query(&format!(
            "SELECT DISTINCT name FROM {source} WHERE database = ?"
        ))
        .bind(db)
        .fetch_all::<String>()
        .await
        .map_err(|e| ch_error("reading system.tables", e))?;
    Ok(names
        .into_iter()
        .map(|n| n.strip_suffix("_local").map(str::to_string).unwrap_or(n))
        .collect())
}

/// Applies every migration not in `applied` that this server can run.
async fn apply_pending(
    client: &Client,
    db: &str,
    features: &ServerFeatures,
    layout: &Layout,
    applied: &[u32],
) -> Result<Vec<u32>> {
    apply_pending_steps(client, db, features, layout, applied, true).await
}

/// [`apply_pending`], with the changes to new tables folded into their
/// `CREATE` ([`fold_into_new_tables`]) or (tests) run one by one.
async fn apply_pending_steps(
    client: &Client,
    db: &str,
    features: &ServerFeatures,
    layout: &Layout,
    applied: &[u32],
    fold: bool,
) -> Result<Vec<u32>> {
    let run = |sql: String| async move {
        client
            .query(&sql)
            .execute()
            .await
            .map_err(|e| ch_error(&format!("migration: {sql}"), e))
    };
    let on = layout.on_cluster();
    let mut newly = Vec::new();
    let pending: Vec<Migration> = migrations()
        .into_iter()
        .filter(|m| !applied.contains(&m.version) && (m.applies)(features))
        .collect();
    let mut plans: Vec<Vec<Step>> = pending.iter().map(|m| (m.steps)(db)).collect();
    if fold {
        fold_into_new_tables(
            &mut plans,
            &existing_tables(client, db, layout).await?,
            layout,
        );
    }
    for (m, steps) in pending.into_iter().zip(plans) {
        tracing::info!(
            version = m.version,
            description = m.description,
            "applying migration"
        );
        for step in steps {
            let statements = match step {
                Step::Sql(sql) => vec![sql],
                Step::Table(t) => layout.create_table(db, &t),
                Step::View(r) => vec![layout.view(db, r)],
                Step::DropView(r) => vec![format!("DROP TABLE IF EXISTS {db}.{}_mv{on}", r.table)],
                Step::Alter {
                    table,
                    action,
                    stored_only,
                } => layout.alter(db, table, &action, stored_only),
                Step::AddFlowsColumn {
                    column,
                    definition,
                    after,
                } => {
                    let table = layout.stored("flows");
                    let has: u64 = client
                        .query(
                            "SELECT count() FROM system.columns \
                             WHERE database = ? AND table = ? AND name = ?",
                        )
                        .bind(db)
                        .bind(&table)
                        .bind(&column)
                        .fetch_one()
                        .await
                        .map_err(|e| ch_error("reading system.columns", e))?;
                    if has == 0 {
                        layout.alter(
                            db,
                            "flows",
                            &format!("ADD COLUMN {column} {definition} AFTER {after}"),
                            false,
                        )
                    } else {
                        layout.remake_distributed(db, "flows")
                    }
                }
            };
            for sql in statements {
                run(sql).await?;
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
pub(crate) async fn apply_ttl(
    client: &Client,
    db: &str,
    features: &ServerFeatures,
    days: u32,
    layout: &Layout,
) {
    if !features.ttl {
        return;
    }
    let on = layout.on_cluster();
    for (table, column) in TABLES {
        let table = layout.stored(table);
        let ttl = format!("{column} + toIntervalDay({days})");
        let current: Result<String, _> = client
            .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
            .bind(db)
            .bind(&table)
            .fetch_one::<String>()
            .await;
        if matches!(&current, Ok(engine) if engine.contains(&format!("TTL {ttl}"))) {
            continue;
        }
        let sql = format!("ALTER TABLE {db}.{table}{on} MODIFY TTL {ttl}");
        if let Err(e) = client
            .query(&sql)
            .with_setting("materialize_ttl_after_modify", "0")
            .execute()
            .await
        {
            tracing::warn!(%table, error = %e, "cannot set TTL; partition dropping still applies");
        }
    }
}

/// Drops day partitions of every table older than `days`; returns the number
/// of `flows` rows dropped. In a cluster the expired days are read from the
/// `Distributed` tables (every shard's rows) and dropped `ON CLUSTER` from
/// the stored tables.
pub(crate) async fn drop_expired(
    client: &Client,
    db: &str,
    days: u32,
    layout: &Layout,
) -> Result<u64> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Part {
        table: String,
        partition: String,
        n: u64,
    }
    let parts: Vec<Part> = match layout {
        Layout::Single => client
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
            .map_err(|e| ch_error("listing expired partitions", e))?,
        Layout::Cluster(_) => {
            let mut parts = Vec::new();
            for (table, column) in TABLES {
                let days_of: Vec<(u32, u64)> = client
                    .query(&format!(
                        "SELECT toYYYYMMDD({column}) AS day, count() FROM {db}.{table} \
                         WHERE day < toYYYYMMDD(now() - toIntervalDay(?)) \
                         GROUP BY day ORDER BY day"
                    ))
                    .bind(days)
                    .fetch_all()
                    .await
                    .map_err(|e| ch_error("listing expired partitions", e))?;
                parts.extend(days_of.into_iter().map(|(day, n)| Part {
                    table: table.to_string(),
                    partition: day.to_string(),
                    n,
                }));
            }
            parts
        }
    };
    let on = layout.on_cluster();
    let mut dropped = 0;
    for p in parts {
        // The partition is a number (toYYYYMMDD): checked before it reaches SQL.
        let Ok(day) = p.partition.trim_matches('\'').parse::<u32>() else {
            continue;
        };
        client
            .query(&format!(
                "ALTER TABLE {db}.{}{on} DROP PARTITION {day}",
                layout.stored(&p.table)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Layout {
        Layout::new(Some("c1"))
    }

    #[test]
    fn definitions_split_at_commas_outside_parentheses_and_quotes() {
        let t = Table::sharded(
            "t",
            "a Enum8('x, y' = 1, 'it\\'s' = 2), b UInt8 DEFAULT if(a IN (1, 2), 1, 0), c String"
                .into(),
            "MergeTree",
            "",
            "ORDER BY a",
        );
        assert_eq!(
            t.definitions(),
            [
                "a Enum8('x, y' = 1, 'it\\'s' = 2)",
                "b UInt8 DEFAULT if(a IN (1, 2), 1, 0)",
                "c String"
            ]
        );
    }

    #[test]
    fn changes_to_a_table_created_in_the_same_run_fold_into_its_create() {
        let table = || {
            Step::Table(Table::sharded(
                "flows",
                "id String, mismatch Enum8('A' = 0), flow String".into(),
                "MergeTree",
                "",
                "ORDER BY id",
            ))
        };
        let later = || {
            vec![
                Step::AddFlowsColumn {
                    column: "kind".into(),
                    definition: "UInt8 DEFAULT 1".into(),
                    after: "id".into(),
                },
                Step::Alter {
                    table: "flows",
                    action: "MODIFY COLUMN mismatch Enum8('A' = 0, 'B' = 1)".into(),
                    stored_only: false,
                },
                Step::Alter {
                    table: "flows",
                    action: "ADD INDEX IF NOT EXISTS i id TYPE set(1) GRANULARITY 1".into(),
                    stored_only: true,
                },
                // A column the table has: nothing to add.
                Step::AddFlowsColumn {
                    column: "flow".into(),
                    definition: "String".into(),
                    after: "id".into(),
                },
                // A column after one that is not there: kept, and so is
                // every later change to the table (they run after it).
                Step::AddFlowsColumn {
                    column: "x".into(),
                    definition: "UInt8".into(),
                    after: "nope".into(),
                },
                Step::AddFlowsColumn {
                    column: "y".into(),
                    definition: "UInt8".into(),
                    after: "id".into(),
                },
            ]
        };
        let mut plans = vec![vec![table()], later()];
        fold_into_new_tables(&mut plans, &Default::default(), &Layout::Single);
        let Step::Table(t) = &plans[0][0] else {
            panic!("the table step moved")
        };
        assert_eq!(
            t.columns,
            "id String, kind UInt8 DEFAULT 1, mismatch Enum8('A' = 0, 'B' = 1), flow String, \
             INDEX i id TYPE set(1) GRANULARITY 1"
        );
        assert_eq!(
            plans[1].len(),
            2,
            "the change a CREATE cannot say, and the one after it, stay"
        );
        // A table already on the server is altered step by step.
        let mut plans = vec![vec![table()], later()];
        fold_into_new_tables(
            &mut plans,
            &["flows".to_string()].into_iter().collect(),
            &Layout::Single,
        );
        assert_eq!(plans[1].len(), 6);
        let Step::Table(t) = &plans[0][0] else {
            panic!("the table step moved")
        };
        assert_eq!(t.columns, "id String, mismatch Enum8('A' = 0), flow String");
        // In a cluster an index stays an ALTER of the stored table (the
        // Distributed table is made AS it).
        let mut plans = vec![vec![table()], later()];
        fold_into_new_tables(&mut plans, &Default::default(), &cluster());
        let Step::Table(t) = &plans[0][0] else {
            panic!("the table step moved")
        };
        assert_eq!(
            t.columns,
            "id String, kind UInt8 DEFAULT 1, mismatch Enum8('A' = 0, 'B' = 1), flow String"
        );
        assert!(matches!(&plans[1][0], Step::Alter { action, .. } if action.contains("ADD INDEX")));
        assert_eq!(
            plans[1].len(),
            4,
            "the index and every change after it stay"
        );
    }

    /// Every migration applied to a new database, folded as `migrate` does
    /// and one step at a time, on the shared server: the same tables.
    #[tokio::test]
    async fn a_new_database_gets_the_tables_its_migrations_make_one_by_one() {
        let (folded, stepwise) = (
            netverdict_testing::clickhouse::TestDb::shared(),
            netverdict_testing::clickhouse::TestDb::shared(),
        );
        let client = Client::default()
            .with_url(format!("http://{}", folded.addr))
            .with_validation(false);
        let version: String = client.query("SELECT version()").fetch_one().await.unwrap();
        let features = ServerFeatures::from_version(&version).unwrap();
        let tables = |db: &netverdict_testing::clickhouse::TestDb| {
            db.sql(&format!(
                "SELECT name, create_table_query FROM system.tables \
                 WHERE database = '{}' AND name != 'schema_migrations' ORDER BY name \
                 FORMAT TSV",
                db.name
            ))
            .replace(&db.name, "DB")
        };
        for (db, fold) in [(&folded, true), (&stepwise, false)] {
            create_bookkeeping(&client, &db.name, &Layout::Single)
                .await
                .unwrap();
            let applied =
                apply_pending_steps(&client, &db.name, &features, &Layout::Single, &[], fold)
                    .await
                    .unwrap();
            assert_eq!(applied, migration_versions(&features));
        }
        let (a, b) = (tables(&folded), tables(&stepwise));
        assert!(a.contains("CREATE TABLE DB.flows"), "{a}");
        for (a, b) in a.lines().zip(b.lines()) {
            assert_eq!(a, b, "folded (left) and step by step (right) differ");
        }
        assert_eq!(a.lines().count(), b.lines().count());
    }

    #[test]
    fn one_server_tables_are_plain_merge_trees() {
        let sql = Layout::Single.create_table("db", &flows_table());
        assert_eq!(sql.len(), 1);
        assert!(sql[0].starts_with("CREATE TABLE IF NOT EXISTS db.flows (id String, "));
        assert!(sql[0].ends_with(
            "ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMMDD(last_seen) \
             ORDER BY (verdict, last_seen, id) SETTINGS index_granularity = 8192"
        ));
        let coverage = Table::everywhere("rollup_coverage", "rollup String".into(), "rollup");
        assert_eq!(
            Layout::Single.create_table("db", &coverage),
            ["CREATE TABLE IF NOT EXISTS db.rollup_coverage (rollup String) ENGINE = TinyLog"]
        );
        assert_eq!(
            Layout::Single.alter("db", "flows", "MODIFY COLUMN x UInt8", false),
            ["ALTER TABLE db.flows MODIFY COLUMN x UInt8"]
        );
        assert!(
            Layout::Single
                .view("db", &ROLLUPS[0])
                .starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS db.flows_by_minute_mv TO db.flows_by_minute AS SELECT")
        );
    }

    #[test]
    fn cluster_tables_are_replicated_under_distributed_tables() {
        let sql = cluster().create_table("db", &flows_table());
        assert_eq!(sql.len(), 2);
        assert!(sql[0].starts_with("CREATE TABLE IF NOT EXISTS db.flows_local ON CLUSTER c1 ("));
        assert!(sql[0].contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/flows', \
             '{replica}') PARTITION BY toYYYYMMDD(last_seen)"
        ));
        assert!(sql[0].ends_with(
            "SETTINGS index_granularity = 8192, replicated_deduplication_window = 1000"
        ));
        assert_eq!(
            sql[1],
            "CREATE TABLE IF NOT EXISTS db.flows ON CLUSTER c1 AS db.flows_local \
             ENGINE = Distributed(c1, db, flows_local, cityHash64(id))"
        );
        // Engine arguments follow the path and replica.
        let rollup = &rollups()[0];
        let Step::Table(t) = rollup else {
            panic!("migration 2 starts with a table")
        };
        let sql = cluster().create_table("db", t);
        assert!(sql[0].contains(
            "ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/db/flows_by_minute', \
             '{replica}', (flows, attempts, drops))"
        ));
        assert!(sql[0].ends_with(" SETTINGS replicated_deduplication_window = 1000"));
        assert!(sql[1].ends_with("Distributed(c1, db, flows_by_minute_local, rand())"));
        // Bookkeeping: one replicated table on every server.
        let coverage = Table::everywhere("rollup_coverage", "rollup String".into(), "rollup");
        assert_eq!(
            cluster().create_table("db", &coverage),
            [
                "CREATE TABLE IF NOT EXISTS db.rollup_coverage ON CLUSTER c1 (rollup String) \
              ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/db/rollup_coverage', \
              '{shard}-{replica}') ORDER BY rollup"
            ]
        );
        // Views read and write the stored tables.
        let view = cluster().view("db", &ROLLUPS[1]);
        assert!(view.starts_with(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS db.denied_by_minute_mv ON CLUSTER c1 \
             TO db.denied_by_minute_local AS SELECT"
        ));
        assert!(view.contains("FROM db.flows_local ARRAY JOIN"));
        assert!(!view.contains("FROM db.flows "));
        // An ALTER changes the stored tables and makes the Distributed one again.
        assert_eq!(
            cluster().alter("db", "flows", "ADD COLUMN x UInt8 AFTER id", false),
            [
                "ALTER TABLE db.flows_local ON CLUSTER c1 ADD COLUMN x UInt8 AFTER id",
                "DROP TABLE IF EXISTS db.flows ON CLUSTER c1",
                "CREATE TABLE IF NOT EXISTS db.flows ON CLUSTER c1 AS db.flows_local \
                 ENGINE = Distributed(c1, db, flows_local, cityHash64(id))",
            ]
        );
        assert_eq!(
            cluster().alter(
                "db",
                "flows",
                "ADD INDEX i id TYPE set(1) GRANULARITY 1",
                true
            ),
            ["ALTER TABLE db.flows_local ON CLUSTER c1 ADD INDEX i id TYPE set(1) GRANULARITY 1"]
        );
    }
}
