//! The ClickHouse store: flows in a `flows` table, per-minute rollups for
//! dashboards, durable batched inserts with a local spool, and the queries of
//! the [`Store`] trait in SQL. Works on ClickHouse 18.16 (Debian, CI) and on
//! current servers (the server's version decides which features are used).
//!
//! How data flows through it:
//! - [`ClickHouseStore::connect`] detects the server version, applies the
//!   migrations (`schema.rs`; tables and columns in `SCHEMA.md`), drops expired
//!   partitions, and starts the writer (replaying spool files left behind);
//!   [`ClickHouseStore::start`] does the same but, when ClickHouse does not
//!   answer yet, spools until it does.
//! - `insert()` flattens flows into rows (`row.rs`) and hands them to the one
//!   writer task (`writer.rs`), which batches by size and time, reads back
//!   stored ids before inserting so retries never store a flow twice, splits
//!   INSERTs ClickHouse rejects down to the rows it refuses (set aside in
//!   `dead_letters`), and spools to disk (`spool.rs`: checksummed segments,
//!   capped) while ClickHouse is unreachable; a reader task (`replay.rs`)
//!   streams the spool back beside new batches once it answers.
//! - Queries (`query.rs`) compile `FlowFilter`s into SQL with bound values
//!   (`sql.rs`) and group the reports in SQL; every query runs with
//!   `max_execution_time` and `max_result_rows`.
//! - [`ClickHouseStats`] counts inserts, spooling and query latency.
//! - `https.rs`: the HTTP client for `https://` URLs (TLS with a CA file).

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod https;
pub mod local_server;
mod query;
mod replay;
mod row;
mod schema;
mod spool;
mod sql;
mod stats;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clickhouse::Client;
use netverdict_proto::v1 as pb;
use netverdict_proto::validate::check_storable;
use tokio::sync::{mpsc, oneshot};

pub use query::DEFAULT_REPORT_LIMIT;
pub use schema::{Layout, ServerFeatures, latest_version, migration_versions};
pub use spool::{
    Item as SpoolItem, MAX_RECORD_BYTES, RecordReader as SpoolRecordReader, SpoolError,
};
pub use sql::split_top_level_commas;
pub use stats::{ClickHouseStats, Histogram, LATENCY_BUCKETS};
pub use writer::READBACK_TABLE_MIN_IDS;

use crate::store::{FlowQuery, InsertOutcome, ReportQuery, Result, Store, StoreError, StoreStatus};

/// How to reach ClickHouse and how to write to it.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// The HTTP interface, e.g. `http://127.0.0.1:8123`, or
    /// `https://clickhouse.example:8443` for TLS.
    pub url: String,
    /// For an `https://` URL, the CA file (PEM) the server's certificate must
    /// chain to; None: the system's CA certificates.
    pub ca_file: Option<PathBuf>,
    /// The database holding netverdict's tables (created if missing);
    /// letters, digits and `_`.
    pub database: String,
    /// The cluster (in the servers' `remote_servers`) the tables are
    /// sharded and replicated over, DDL run `ON CLUSTER` (`--clickhouse-cluster`;
    /// see `schema.rs`); None: one server. Letters, digits and `_`.
    pub cluster: Option<String>,
    /// The user.
    pub user: String,
    /// The user's password (empty for none).
    pub password: String,
    /// Days of flows and rollups kept (default 7).
    pub retention_days: u32,
    /// Flows per INSERT at most (default 100 000). ClickHouse writes a part
    /// (a file per column, and per rollup) for every INSERT, so few large
    /// INSERTs are much cheaper than many small ones; under load, batches grow
    /// to what arrived while the previous INSERT ran.
    pub batch_max_rows: usize,
    /// How long a batch waits for more flows after its first (default 100 ms).
    pub batch_max_delay: Duration,
    /// Where flows are spooled while ClickHouse is unreachable.
    pub spool_dir: PathBuf,
    /// The most bytes the spool may hold (default 1 GiB, half the deploy's
    /// 2 GiB volume: room for the file system). When full, inserts
    /// fail (collectors keep their flows and send them again later); keep it
    /// below the spool volume's size.
    pub spool_max_bytes: u64,
    /// Spool segments are sealed at this size (default 64 MiB); replay
    /// removes each once its flows are stored.
    pub spool_segment_bytes: u64,
    /// Flows per chunk when the spool is replayed (default 10 000): what the
    /// replay holds in memory, whatever the spool's size.
    pub replay_chunk_rows: usize,
    /// `max_result_rows` of flow queries (default 1 000 000): ClickHouse
    /// refuses to return more.
    pub query_max_rows: u64,
    /// Attempts per batch before it is spooled (default 3).
    pub insert_attempts: u32,
    /// The first retry's backoff, doubled per retry up to 5 s (default 100 ms).
    pub retry_backoff: Duration,
    /// How often the spool is replayed while ClickHouse is unreachable (default 1 s).
    pub replay_interval: Duration,
    /// How often expired partitions are dropped (default 1 h).
    pub retention_interval: Duration,
    /// Timeout of each request to ClickHouse (default 30 s).
    pub request_timeout: Duration,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            ca_file: None,
            database: "netverdict".into(),
            cluster: None,
            user: "default".into(),
            password: String::new(),
            retention_days: 7,
            batch_max_rows: 100_000,
            batch_max_delay: Duration::from_millis(100),
            spool_dir: PathBuf::from("/var/lib/netverdict/spool"),
            spool_max_bytes: 1 << 30,
            spool_segment_bytes: 64 << 20,
            replay_chunk_rows: 10_000,
            query_max_rows: 1_000_000,
            insert_attempts: 3,
            retry_backoff: Duration::from_millis(100),
            replay_interval: Duration::from_secs(1),
            retention_interval: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl ClickHouseConfig {
    /// The defaults with `url`, `database` and `spool_dir`.
    pub fn new(
        url: impl Into<String>,
        database: impl Into<String>,
        spool_dir: impl Into<PathBuf>,
    ) -> Self {
        ClickHouseConfig {
            url: url.into(),
            database: database.into(),
            spool_dir: spool_dir.into(),
            ..Default::default()
        }
    }

    /// Where the tables live: one server, or [`cluster`](Self::cluster).
    pub fn layout(&self) -> Layout {
        Layout::new(self.cluster.as_deref())
    }

    fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: &str| StoreError::Backend {
            backend: "clickhouse",
            message: format!("config field {field}: {reason}"),
        };
        let identifier = |name: &str| {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let db = &self.database;
        if !identifier(db) {
            return Err(bad(
                "database",
                &format!("{db:?} is not letters, digits and '_'"),
            ));
        }
        if let Some(cluster) = self.cluster.as_deref().filter(|c| !identifier(c)) {
            return Err(bad(
                "cluster",
                &format!("{cluster:?} is not letters, digits and '_'"),
            ));
        }
        if self.retention_days == 0 {
            return Err(bad("retention_days", "must be at least 1"));
        }
        if self.batch_max_rows == 0 {
            return Err(bad("batch_max_rows", "must be at least 1"));
        }
        if self.insert_attempts == 0 {
            return Err(bad("insert_attempts", "must be at least 1"));
        }
        if self.replay_chunk_rows == 0 {
            return Err(bad("replay_chunk_rows", "must be at least 1"));
        }
        if self.spool_segment_bytes == 0 || self.spool_max_bytes < self.spool_segment_bytes {
            return Err(bad(
                "spool_max_bytes",
                "must be at least spool_segment_bytes, which must be positive",
            ));
        }
        if self.query_max_rows == 0 {
            return Err(bad("query_max_rows", "must be at least 1"));
        }
        Ok(())
    }
}

/// A ClickHouse error with what we were doing.
/// The message carries the error's causes too (an HTTPS connection refused
/// for an untrusted certificate says so, not only "client error").
pub(crate) fn ch_error(context: &str, e: clickhouse::error::Error) -> StoreError {
    let mut message = format!("{context}: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        message.push_str(&format!(": {c}"));
        cause = c.source();
    }
    StoreError::Backend {
        backend: "clickhouse",
        message,
    }
}

struct Inner {
    client: Client,
    db: String,
    config: ClickHouseConfig,
    features: Arc<OnceLock<ServerFeatures>>,
    stats: Arc<ClickHouseStats>,
    tx: mpsc::Sender<writer::Request>,
    retention: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.retention.abort();
    }
}

/// The ClickHouse store. Cheap to clone; the writer stops when the last clone
/// is dropped (every `insert()` that returned is durable by then).
#[derive(Clone)]
pub struct ClickHouseStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("url", &self.inner.config.url)
            .field("database", &self.inner.db)
            .field("features", &self.inner.features)
            .finish()
    }
}

impl ClickHouseStore {
    /// Connects, applies migrations, drops expired partitions and starts the
    /// writer (which first replays any spool files in `spool_dir`). Fails when
    /// ClickHouse does not answer.
    pub async fn connect(config: ClickHouseConfig) -> Result<ClickHouseStore> {
        ClickHouseStore::open(config, false).await
    }

    /// As [`connect`](Self::connect), but when ClickHouse does not answer (or
    /// fails to apply the schema) the store starts anyway: inserts go to the
    /// spool, queries fail, and the schema is tried again after
    /// `replay_interval` (at least 1 s, doubling up to 30 s) until it
    /// succeeds, after which the spool is replayed.
    /// Invalid settings still fail at once. What a server uses at start-up,
    /// so that a ClickHouse outage does not stop collectors' flows.
    pub async fn start(config: ClickHouseConfig) -> Result<ClickHouseStore> {
        ClickHouseStore::open(config, true).await
    }

    async fn open(config: ClickHouseConfig, wait_for_server: bool) -> Result<ClickHouseStore> {
        config.validate()?;
        let mut server = https::client(&config)?
            .with_url(&config.url)
            .with_user(&config.user)
            .with_validation(false)
            .with_compression(clickhouse::Compression::Lz4);
        if !config.password.is_empty() {
            server = server.with_password(&config.password);
        }
        if config.cluster.is_some() {
            // An INSERT into a Distributed table returns once every shard
            // has stored its rows (not when they are queued locally), so an
            // acknowledged flow is on a shard.
            server = server.with_setting("insert_distributed_sync", "1");
        }
        let db = config.database.clone();
        // The writer's INSERT names the table only: the database comes from the client.
        let client = server.clone().with_database(&db);
        let stats = Arc::new(ClickHouseStats::default());
        let features = Arc::new(OnceLock::new());
        let max_partitions = Arc::new(AtomicUsize::new(0));
        let prepared = prepare(&server, &client, &config, &stats, &max_partitions).await;
        let ready = match prepared {
            Ok(f) => {
                let _ = features.set(f);
                true
            }
            Err(e @ StoreError::Backend { .. }) if wait_for_server => {
                tracing::warn!(
                    error = %e,
                    url = %config.url,
                    "ClickHouse is not ready: spooling flows until the schema is applied"
                );
                false
            }
            Err(e) => return Err(e),
        };

        let spool = spool::Spool::open(spool::SpoolConfig {
            dir: config.spool_dir.clone(),
            max_bytes: config.spool_max_bytes,
            segment_bytes: config.spool_segment_bytes,
        })
        .await
        .map_err(|e| StoreError::Backend {
            backend: "spool",
            message: format!("opening {}: {e}", config.spool_dir.display()),
        })?;
        let (tx, rx) = mpsc::channel(1024);
        // Spool segments left by an earlier process are replayed at the
        // writer's first tick, beside new batches.
        let writer = writer::Writer {
            client: client.clone(),
            db: db.clone(),
            config: config.clone(),
            stats: stats.clone(),
            spool,
            healthy: ready,
            uncertain: Vec::new(),
            schema: features.clone(),
            max_partitions: max_partitions.clone(),
            replay: None,
            readback_session: writer::readback_session(),
        };
        tokio::spawn(writer.run(rx));
        let retention = tokio::spawn(maintain(
            server,
            client.clone(),
            config.clone(),
            stats.clone(),
            features.clone(),
            max_partitions,
        ));
        Ok(ClickHouseStore {
            inner: Arc::new(Inner {
                client,
                db,
                config,
                features,
                stats,
                tx,
                retention,
            }),
        })
    }

    /// The store's counters, to export.
    pub fn stats(&self) -> Arc<ClickHouseStats> {
        self.inner.stats.clone()
    }

    /// What the server can do; None until the schema has been applied (a
    /// store [`start`](Self::start)ed while ClickHouse did not answer).
    pub fn features(&self) -> Option<ServerFeatures> {
        self.inner.features.get().copied()
    }

    /// The database the tables live in.
    pub fn database(&self) -> &str {
        &self.inner.db
    }

    /// Drops expired partitions now; returns the `flows` rows dropped.
    pub async fn enforce_retention(&self) -> Result<u64> {
        let n = schema::drop_expired(
            &self.inner.client,
            &self.inner.db,
            self.inner.config.retention_days,
            &self.inner.config.layout(),
        )
        .await?;
        self.inner.stats.rows_expired.fetch_add(n, Relaxed);
        Ok(n)
    }
}

/// Reads the server's version, applies the migrations and the retention
/// TTL, and drops expired partitions.
async fn prepare(
    server: &Client,
    client: &Client,
    config: &ClickHouseConfig,
    stats: &ClickHouseStats,
    max_partitions: &AtomicUsize,
) -> Result<ServerFeatures> {
    let version: String = tokio::time::timeout(
        config.request_timeout,
        server.query("SELECT version()").fetch_one(),
    )
    .await
    .map_err(|_| StoreError::Backend {
        backend: "clickhouse",
        message: format!(
            "{}: no answer within {:?}",
            config.url, config.request_timeout
        ),
    })?
    .map_err(|e| ch_error(&format!("connecting to {}", config.url), e))?;
    let features = ServerFeatures::from_version(&version)?;
    let db = &config.database;
    let layout = config.layout();
    let applied = schema::migrate(server, db, &features, &layout).await?;
    let partitions = schema::max_partitions_per_insert(client).await?;
    max_partitions.store(partitions, Relaxed);
    tracing::info!(%version, database = %db, ?applied, max_partitions_per_insert_block = partitions, "ClickHouse schema ready");
    schema::apply_ttl(client, db, &features, config.retention_days, &layout).await;
    let expired = schema::drop_expired(client, db, config.retention_days, &layout).await?;
    stats.rows_expired.fetch_add(expired, Relaxed);
    Ok(features)
}

/// Applies the schema until it succeeds (when the store started without it),
/// then drops expired partitions every `retention_interval`.
async fn maintain(
    server: Client,
    client: Client,
    config: ClickHouseConfig,
    stats: Arc<ClickHouseStats>,
    features: Arc<OnceLock<ServerFeatures>>,
    max_partitions: Arc<AtomicUsize>,
) {
    // Every replay_interval (at least 1 s) at first, backing off to 30 s.
    let mut retry = config.replay_interval.max(Duration::from_secs(1));
    while features.get().is_none() {
        tokio::time::sleep(retry).await;
        match prepare(&server, &client, &config, &stats, &max_partitions).await {
            Ok(f) => {
                let _ = features.set(f);
                tracing::info!(url = %config.url, "ClickHouse answers: replaying the spool");
            }
            Err(e) => {
                retry = (retry * 2).min(Duration::from_secs(30));
                tracing::warn!(error = %e, ?retry, "ClickHouse still not ready; flows are spooled");
            }
        }
    }
    let mut tick = tokio::time::interval(config.retention_interval);
    tick.tick().await; // prepare() just did it
    loop {
        tick.tick().await;
        let layout = config.layout();
        match schema::drop_expired(&client, &config.database, config.retention_days, &layout).await
        {
            Ok(n) => {
                stats.rows_expired.fetch_add(n, Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
        }
    }
}

impl Store for ClickHouseStore {
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.stats.register(registry);
    }

    async fn insert(&self, flows: Vec<pb::Flow>) -> Result<InsertOutcome> {
        if flows.is_empty() {
            return Ok(InsertOutcome::default());
        }
        // The rule every store shares first (so the error is the memory
        // store's), then the columns (which accept every flow it accepts).
        let rows = flows
            .into_iter()
            .map(|flow| {
                check_storable(&flow)?;
                row::FlowRow::from_owned(flow)
            })
            .collect::<Result<Vec<_>>>()?;
        let (reply, rx) = oneshot::channel();
        let stopped = || StoreError::Backend {
            backend: "clickhouse",
            message: "the writer has stopped".into(),
        };
        self.inner
            .tx
            .send(writer::Request {
                rows,
                reply,
                queued_at: tokio::time::Instant::now(),
            })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    async fn flows(&self, query: &FlowQuery) -> Result<Vec<pb::Flow>> {
        self.query_flows(query).await
    }

    async fn denied(&self, query: &ReportQuery) -> Result<Vec<pb::DeniedGroup>> {
        self.query_denied(query).await
    }

    async fn dns_failures(&self, query: &ReportQuery) -> Result<Vec<pb::DnsFailure>> {
        self.query_dns_failures(query).await
    }

    async fn status(&self) -> Result<StoreStatus> {
        self.query_status().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_name_that_is_no_identifier_is_refused_naming_the_field() {
        let config = |cluster: &str| ClickHouseConfig {
            cluster: Some(cluster.to_string()),
            ..ClickHouseConfig::default()
        };
        for bad in ["", "1st", "a-b", "a b", "c;DROP"] {
            let err = config(bad).validate().unwrap_err().to_string();
            assert!(err.contains("config field cluster"), "{bad:?}: {err}");
        }
        config("netverdict_cluster_2").validate().unwrap();
        assert_eq!(config("c").layout(), Layout::Cluster("c".into()));
        assert_eq!(ClickHouseConfig::default().layout(), Layout::Single);
    }
}
