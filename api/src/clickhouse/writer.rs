//! The writer: one task that owns every write, so that a flow id is checked
//! and inserted by one writer at a time.
//!
//! `insert()` calls become requests; the writer gathers them into a batch
//! until it holds `batch_max_rows` flows or `batch_max_delay` has passed since
//! the first was queued (so under load, when requests queued while the last
//! INSERT ran, a batch takes what is there and goes), then stores the batch
//! exactly once:
//!
//! 1. wait until no earlier INSERT of ours whose outcome is unknown is still
//!    running on the server (each INSERT has its own `query_id`, looked up in
//!    `system.processes`), so none can land after the next step;
//! 2. read back which of the batch's ids are stored already (bounded by the
//!    batch's `last_seen` range: day partitions, and on modern servers the
//!    `idx_id` bloom filter, keep it to a few granules);
//! 3. insert the others.
//!
//! A failed attempt is retried from step 1 with exponential backoff, so a
//! retried batch is never stored twice. When every attempt fails, the batch
//! is appended to the spool (fsynced) and acknowledged; from then on batches
//! go straight to the spool until a replay, tried every `replay_interval`,
//! has stored every spooled flow by the same three steps and removed the
//! files. Spool files left by an earlier process are replayed first.
//! `ReplacingMergeTree` on `(verdict, last_seen, id)` is only a backstop
//! (for several API servers writing one table): the steps above are what
//! keep duplicates out of the rollups.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clickhouse::Client;
use netverdict_proto::v1 as pb;
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use super::row::FlowRow;
use super::spool::Spool;
use super::stats::ClickHouseStats;
use super::{ClickHouseConfig, ch_error, schema};
use crate::store::{InsertOutcome, Result, StoreError};

/// One `insert()` call.
pub(crate) struct Request {
    pub rows: Vec<FlowRow>,
    pub reply: oneshot::Sender<Result<InsertOutcome>>,
    /// When `insert()` handed it over: the batching delay counts from here,
    /// so requests that queued while an INSERT ran do not wait again.
    pub queued_at: tokio::time::Instant,
}

pub(crate) struct Writer {
    pub client: Client,
    pub db: String,
    pub config: ClickHouseConfig,
    pub stats: Arc<ClickHouseStats>,
    pub spool: Spool,
    /// Whether batches go to the spool (it holds flows not replayed yet).
    pub spooling: bool,
    /// INSERTs whose outcome is unknown.
    pub uncertain: Vec<Uncertain>,
    /// Set once the schema is applied; until then every batch is spooled.
    pub schema: Arc<std::sync::OnceLock<schema::ServerFeatures>>,
}

/// An INSERT whose outcome is unknown: its query id and what it carried.
pub(crate) struct Uncertain {
    query_id: String,
    ids: Vec<String>,
    lo: u32,
    hi: u32,
}

static QUERY_SEQ: AtomicU64 = AtomicU64::new(0);

fn query_id() -> String {
    let nanos = netverdict_proto::time::UnixNanos::now().nanos_saturating();
    format!(
        "netverdict-insert-{}-{nanos}-{}",
        std::process::id(),
        QUERY_SEQ.fetch_add(1, Relaxed)
    )
}

impl Writer {
    /// Runs until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        if self.spooling {
            self.replay().await;
        }
        let mut tick = tokio::time::interval(self.config.replay_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                req = rx.recv() => {
                    let Some(first) = req else { break };
                    let batch = self.gather(first, &mut rx).await;
                    self.process(batch).await;
                }
                _ = tick.tick(), if self.spooling => self.replay().await,
            }
        }
    }

    async fn gather(&self, first: Request, rx: &mut mpsc::Receiver<Request>) -> Vec<Request> {
        let deadline = first.queued_at + self.config.batch_max_delay;
        let mut rows = first.rows.len();
        let mut batch = vec![first];
        while rows < self.config.batch_max_rows {
            tokio::select! {
                biased;
                req = rx.recv() => match req {
                    Some(r) => {
                        rows += r.rows.len();
                        batch.push(r);
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        batch
    }

    async fn process(&mut self, batch: Vec<Request>) {
        let started = Instant::now();
        let mut seen = HashSet::new();
        let mut rows = Vec::new();
        let mut owners = Vec::new();
        let mut outcomes = vec![InsertOutcome::default(); batch.len()];
        let mut replies = Vec::with_capacity(batch.len());
        for (i, req) in batch.into_iter().enumerate() {
            for row in req.rows {
                if seen.insert(row.id.clone()) {
                    rows.push(row);
                    owners.push(i);
                } else {
                    outcomes[i].duplicates += 1;
                }
            }
            replies.push(req.reply);
        }
        let mut result = Ok(HashSet::new());
        if !self.spooling {
            result = self.store_chunks(&rows).await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, rows = rows.len(), "ClickHouse unreachable: spooling");
            }
        }
        if self.spooling || result.is_err() {
            result = self.spool_rows(&rows).await.map(|()| HashSet::new());
        }
        match result {
            Ok(existing) => {
                for (row, &owner) in rows.iter().zip(&owners) {
                    if existing.contains(&row.id) {
                        outcomes[owner].duplicates += 1;
                    } else {
                        outcomes[owner].stored += 1;
                    }
                }
                let dups: usize = outcomes.iter().map(|o| o.duplicates).sum();
                self.stats.rows_duplicate.fetch_add(dups as u64, Relaxed);
                self.stats.insert_latency.observe(started.elapsed());
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "flows neither stored nor spooled");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Backend {
                        backend: "spool",
                        message: e.to_string(),
                    }));
                }
            }
        }
    }

    async fn spool_rows(&mut self, rows: &[FlowRow]) -> Result<()> {
        self.spool
            .append(rows.iter().map(|r| r.flow.as_slice()))
            .await
            .map_err(|e| StoreError::Backend {
                backend: "spool",
                message: format!("appending to the spool: {e}"),
            })?;
        self.spooling = true;
        self.stats
            .rows_spooled
            .fetch_add(rows.len() as u64, Relaxed);
        self.stats
            .spool_pending_rows
            .fetch_add(rows.len() as u64, Relaxed);
        Ok(())
    }

    /// Stores rows in chunks of at most `batch_max_rows`; returns the ids that
    /// were stored already.
    async fn store_chunks(&mut self, rows: &[FlowRow]) -> Result<HashSet<String>> {
        let mut existing = HashSet::new();
        for chunk in rows.chunks(self.config.batch_max_rows.max(1)) {
            existing.extend(self.store_with_retries(chunk).await?);
        }
        Ok(existing)
    }

    async fn store_with_retries(&mut self, rows: &[FlowRow]) -> Result<HashSet<String>> {
        let mut backoff = self.config.retry_backoff;
        let mut attempt = 1;
        loop {
            match self.store_once(rows).await {
                Ok(existing) => return Ok(existing),
                Err(e) => {
                    self.stats.insert_failures.fetch_add(1, Relaxed);
                    if attempt >= self.config.insert_attempts {
                        return Err(e);
                    }
                    tracing::debug!(attempt, error = %e, "insert failed; retrying");
                    self.stats.insert_retries.fetch_add(1, Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt of the three steps in the module doc.
    async fn store_once(&mut self, rows: &[FlowRow]) -> Result<HashSet<String>> {
        self.settle().await?;
        let existing = self.existing_ids(rows).await?;
        let fresh: Vec<&FlowRow> = rows.iter().filter(|r| !existing.contains(&r.id)).collect();
        if fresh.is_empty() {
            return Ok(existing);
        }
        let qid = query_id();
        self.uncertain.push(Uncertain {
            query_id: qid.clone(),
            ids: fresh.iter().map(|r| r.id.clone()).collect(),
            lo: fresh.iter().map(|r| r.last_seen).min().unwrap_or(0),
            hi: fresh.iter().map(|r| r.last_seen).max().unwrap_or(0),
        });
        let timeout = Some(self.config.request_timeout);
        let result = async {
            let mut insert = self
                .client
                .insert::<FlowRow>("flows")
                .await?
                .with_setting("query_id", qid.clone())
                .with_timeouts(timeout, timeout);
            for row in &fresh {
                insert.write(row).await?;
            }
            insert.end().await
        }
        .await;
        match result {
            Ok(()) => {
                self.uncertain.retain(|u| u.query_id != qid);
                self.stats.batches_inserted.fetch_add(1, Relaxed);
                self.stats
                    .rows_inserted
                    .fetch_add(fresh.len() as u64, Relaxed);
                Ok(existing)
            }
            Err(e) => Err(ch_error("inserting flows", e)),
        }
    }

    /// Waits until no INSERT of ours with an unknown outcome still runs,
    /// then completes the rollups of those that landed in `flows`.
    async fn settle(&mut self) -> Result<()> {
        if self.uncertain.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.request_timeout;
        let qids: Vec<&str> = self.uncertain.iter().map(|u| u.query_id.as_str()).collect();
        loop {
            let running: u64 = self
                .client
                .query("SELECT count() FROM system.processes WHERE has(?, query_id)")
                .bind(&qids)
                .fetch_one()
                .await
                .map_err(|e| ch_error("looking up running inserts", e))?;
            if running == 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(StoreError::Backend {
                    backend: "clickhouse",
                    message: format!("{running} earlier inserts still running"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        while let Some(u) = self.uncertain.first() {
            self.repair_rollups(u).await?;
            self.uncertain.remove(0);
        }
        Ok(())
    }

    /// Materialized views are filled after the source table's part is
    /// committed, so a server dying mid-INSERT can leave flows stored without
    /// their rollup rows. With one writer, a rollup either has all of an
    /// INSERT's rows or none (one block each): when a rollup counts fewer
    /// flows than `flows` holds for the INSERT's minutes, the INSERT's flows
    /// that landed are added to it.
    async fn repair_rollups(&self, u: &Uncertain) -> Result<()> {
        let db = &self.db;
        let (lo, hi) = (u.lo - u.lo % 60, u.hi - u.hi % 60 + 60);
        let landed: u64 = self
            .client
            .query(&format!(
                "SELECT count() FROM {db}.flows WHERE last_seen >= toDateTime(?) \
                 AND last_seen < toDateTime(?) AND id IN (SELECT arrayJoin(?))"
            ))
            .bind(lo)
            .bind(hi)
            .bind(&u.ids)
            .with_setting("max_query_size", "268435456")
            .fetch_one()
            .await
            .map_err(|e| ch_error("checking an interrupted insert", e))?;
        if landed == 0 {
            return Ok(());
        }
        let range = format!("last_seen >= toDateTime({lo}) AND last_seen < toDateTime({hi})");
        for r in &schema::ROLLUPS {
            let expected: u64 = self
                .client
                .query(&format!("SELECT count() FROM ({})", r.select(db, &range)))
                .fetch_one()
                .await
                .map_err(|e| ch_error("counting flows for a rollup", e))?;
            let actual: u64 = self
                .client
                .query(&format!(
                    "SELECT sum(flows) FROM {db}.{} WHERE minute >= toDateTime({lo}) \
                     AND minute < toDateTime({hi})",
                    r.table
                ))
                .fetch_one()
                .await
                .map_err(|e| ch_error("counting a rollup", e))?;
            if actual < expected {
                tracing::warn!(
                    rollup = r.table,
                    missing = expected - actual,
                    "completing a rollup after an interrupted insert"
                );
                self.client
                    .query(&format!(
                        "INSERT INTO {db}.{} {}",
                        r.table,
                        r.select(db, &format!("{range} AND id IN (SELECT arrayJoin(?))"))
                    ))
                    .bind(&u.ids)
                    .with_setting("max_query_size", "268435456")
                    .execute()
                    .await
                    .map_err(|e| ch_error("completing a rollup", e))?;
            }
        }
        Ok(())
    }

    /// Which of `rows`' ids are stored already.
    async fn existing_ids(&self, rows: &[FlowRow]) -> Result<HashSet<String>> {
        let (Some(lo), Some(hi)) = (
            rows.iter().map(|r| r.last_seen).min(),
            rows.iter().map(|r| r.last_seen).max(),
        ) else {
            return Ok(HashSet::new());
        };
        let sql = format!(
            "SELECT id FROM {}.flows WHERE last_seen >= toDateTime(?) \
             AND last_seen <= toDateTime(?) AND id IN (SELECT arrayJoin(?))",
            self.db
        );
        let ids_bound: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let q = self.client.query(&sql).bind(lo).bind(hi).bind(ids_bound);
        let ids: Vec<String> = q
            .with_setting("max_query_size", "268435456")
            .fetch_all()
            .await
            .map_err(|e| ch_error("reading back stored ids", e))?;
        Ok(ids.into_iter().collect())
    }

    /// Replays the spool if ClickHouse answers; stops at the first failure.
    async fn replay(&mut self) {
        if self.schema.get().is_none() || self.client.query("SELECT 1").execute().await.is_err() {
            return;
        }
        self.spool.seal();
        let files = match self.spool.files().await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the spool");
                return;
            }
        };
        for path in files {
            let file = match Spool::read(&path).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot read spool file");
                    return;
                }
            };
            if file.torn_bytes > 0 {
                tracing::warn!(path = %path.display(), bytes = file.torn_bytes, "spool file ends in a partial record (never acknowledged)");
            }
            let mut rows = Vec::with_capacity(file.records.len());
            let mut bad = 0;
            for rec in &file.records {
                match pb::Flow::decode(rec.as_slice())
                    .map_err(|e| e.to_string())
                    .and_then(|f| FlowRow::from_flow(&f).map_err(|e| e.to_string()))
                {
                    Ok(row) => rows.push(row),
                    Err(e) => {
                        bad += 1;
                        tracing::error!(path = %path.display(), error = %e, "bad spool record");
                    }
                }
            }
            let existing = match self.store_chunks(&rows).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "replay interrupted; will retry");
                    return;
                }
            };
            self.stats
                .rows_duplicate
                .fetch_add(existing.len() as u64, Relaxed);
            self.stats
                .rows_replayed
                .fetch_add(rows.len() as u64, Relaxed);
            let pending = &self.stats.spool_pending_rows;
            let _ = pending.fetch_update(Relaxed, Relaxed, |p| {
                Some(p.saturating_sub(file.records.len() as u64))
            });
            let done = if bad > 0 {
                self.stats.spool_bad_records.fetch_add(bad, Relaxed);
                self.spool.quarantine(&path).await.map(|_| ())
            } else {
                self.spool.remove(&path).await
            };
            if let Err(e) = done {
                tracing::error!(path = %path.display(), error = %e, "cannot remove replayed spool file");
                return;
            }
            tracing::info!(path = %path.display(), flows = rows.len(), already_stored = existing.len(), "spool file replayed");
        }
        self.spooling = false;
        self.stats.spool_pending_rows.store(0, Relaxed);
    }
}
