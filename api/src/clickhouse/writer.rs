//! The writer: one task that owns every write, so that a flow id is checked
//! and inserted by one writer at a time.
//!
//! `insert()` calls become requests; the writer gathers them into a batch
//! until it holds `batch_max_rows` flows or `batch_max_delay` has passed since
//! the first was queued (so under load, when requests queued while the last
//! INSERT ran, a batch takes what is there and goes). The batch is cut into
//! INSERTs of at most `batch_max_rows` rows spanning at most
//! [`days_per_insert`] days of `last_seen` (the tables are partitioned by day,
//! and ClickHouse refuses an INSERT touching more than
//! `max_partitions_per_insert_block` partitions), and each INSERT is stored
//! exactly once:
//!
//! 1. wait until no earlier INSERT of ours whose outcome is unknown is still
//!    running on the server (each INSERT has its own `query_id`, looked up in
//!    `system.processes`), so none can land after the next step;
//! 2. read back which of the INSERT's ids are stored already (bounded by its
//!    `last_seen` range: day partitions, and on modern servers the `idx_id`
//!    bloom filter, keep it to a few granules); the ids of a large INSERT go
//!    as rows of a temporary table of the writer's HTTP session, which
//!    ClickHouse takes 20 times faster than the same ids as a literal;
//! 3. insert the others.
//!
//! **One INSERT at a time.** ClickHouse parses and writes an INSERT in one
//! thread, and two INSERTs of one batch at once were a little faster on two
//! cores; but [`Writer::repair_rollups`] can tell whether an interrupted
//! INSERT's rows reached the rollups only while no other INSERT of the same
//! minutes has an unknown outcome, and two interrupted together could leave
//! rollups it cannot attribute.
//!
//! **What ClickHouse rejects is isolated.** A failure is either an outage
//! (no answer, a timeout, or an error not about the data: retried with
//! exponential backoff from step 1, so a retried INSERT is never stored
//! twice) or a rejection of the rows themselves (a ClickHouse error code in
//! [`REJECTED_CODES`]). A rejected INSERT is split in halves, each stored on
//! its own, down to the single rows ClickHouse refuses; those go to the
//! `dead_letters` table with the error (counted in
//! `netverdict_api_clickhouse_rows_dead_lettered_total` and in `status`), and
//! everything else is stored. So one collector's bad rows never keep the
//! other collectors' rows of the same batch out. Bisection is bounded: once
//! [`rejection_budget`] INSERTs of one batch have been refused with none
//! accepted, the parts left are dead-lettered whole.
//!
//! **Outages go to the spool.** When an outage outlasts the retries, the rows
//! not stored are appended to the spool (`spool.rs`, fsynced) and
//! acknowledged, and later batches go straight to the spool until ClickHouse
//! answers again (probed every `replay_interval`). From then on new batches go
//! to ClickHouse again, and the spool is **replayed beside them**: a reader
//! task streams the sealed segments in chunks of `replay_chunk_rows` flows
//! (bounded memory, whatever the spool's size), and this task stores each
//! chunk by the same steps between live batches, removing a segment once all
//! its flows are stored or dead-lettered. A corrupt record is quarantined by
//! the reader and the records after it are replayed. When the spool is full
//! (`spool_max_bytes`), inserts fail: collectors keep their flows and send
//! them again later; nothing acknowledged is dropped.
//!
//! `ReplacingMergeTree` on `(verdict, last_seen, id)` is only a backstop
//! (for several API servers writing one table): the steps above are what
//! keep duplicates out of the rollups.
//!
//! **Cluster mode** (`ClickHouseConfig::cluster`): several API servers write
//! the same `Distributed` tables, and their read-backs race (and may ask a
//! replica that has not fetched a part yet). So each `insert()` call of a
//! batch is stored by INSERTs of its own ([`Writer::store_each_request`]),
//! its rows in id order ([`sort_by_request`]) and each row's bytes the same
//! in every process (`row::canonical_encoding`): a collector's batch resent
//! through another API server makes the same blocks on the same shards
//! (sharded by the id's hash), which the replicated tables drop as
//! duplicates, and their views with them. The spool's replay still stores
//! its chunks as they come (a spooled batch was acknowledged: only this
//! server sends it).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clickhouse::Client;
use netverdict_proto::time::UnixNanos;
use tokio::sync::{mpsc, oneshot};

use super::replay::{self, ReplayChunk};
use super::row::FlowRow;
use super::spool::{Spool, SpoolError};
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
    /// Whether ClickHouse takes inserts: batches go to it (else to the spool).
    pub healthy: bool,
    /// INSERTs whose outcome is unknown.
    pub uncertain: Vec<Uncertain>,
    /// Set once the schema is applied; until then every batch is spooled.
    pub schema: Arc<std::sync::OnceLock<schema::ServerFeatures>>,
    /// The server's `max_partitions_per_insert_block` (0: none or unknown),
    /// read when the schema is applied.
    pub max_partitions: Arc<AtomicUsize>,
    /// The replay under way, if any.
    pub replay: Option<mpsc::Receiver<ReplayChunk>>,
    /// The HTTP session holding the read-back's temporary table
    /// ([`readback_session`]).
    pub readback_session: String,
}

/// An INSERT whose outcome is unknown: its query id and what it carried.
pub(crate) struct Uncertain {
    query_id: String,
    ids: Vec<String>,
    lo: u32,
    hi: u32,
}

/// What became of one row of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Not stored yet (an outage): spool it, or leave it in the spool.
    Pending,
    /// Inserted now.
    Stored,
    /// Already in `flows`.
    Duplicate,
    /// Rejected by ClickHouse and kept in `dead_letters`.
    DeadLettered,
    /// Appended to the spool.
    Spooled,
}

/// Why one INSERT failed.
#[derive(Debug)]
enum Failure {
    /// ClickHouse is unreachable or failing for reasons not about the rows.
    Outage(StoreError),
    /// ClickHouse refused the rows ([`REJECTED_CODES`]).
    Rejected(StoreError),
}

/// ClickHouse error codes that refuse the inserted rows themselves (values
/// it cannot parse, convert or accept), rather than report an outage: an
/// INSERT failing with one of these is bisected. Any other error (none, a
/// timeout, too many parts, memory, a missing table, access) is retried and
/// then spooled: it is no reason to set flows aside.
pub(crate) const REJECTED_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  // ATTEMPT_TO_READ_AFTER_EOF
    33,  // CANNOT_READ_ALL_DATA
    36,  // BAD_ARGUMENTS
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    44,  // ILLEGAL_COLUMN
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    128, // TOO_LARGE_ARRAY_SIZE
    131, // TOO_LARGE_STRING_SIZE
    190, // SIZES_OF_ARRAYS_DOESNT_MATCH
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    407, // DECIMAL_OVERFLOW
    469, // VIOLATED_CONSTRAINT
    691, // UNKNOWN_ELEMENT_OF_ENUM
];

/// The ClickHouse error code in an error's text (`Code: 395`), if any.
pub(crate) fn error_code(text: &str) -> Option<u32> {
    let at = text.find("Code: ")? + "Code: ".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Whether a failed INSERT's error refuses its rows (see [`REJECTED_CODES`]).
/// "Too many partitions for single INSERT block" (code 252, shared with "too
/// many parts", an outage) is a rejection too: halves touch fewer partitions.
pub(crate) fn is_rejection(text: &str) -> bool {
    match error_code(text) {
        Some(252) => text.contains("partitions"),
        Some(code) => REJECTED_CODES.contains(&code),
        None => false,
    }
}

/// How many days of `last_seen` one INSERT may span: half the server's
/// `max_partitions_per_insert_block` (partitions are days in the server's
/// time zone, cut here in UTC: one UTC day touches at most two), at most 50.
pub(crate) fn days_per_insert(max_partitions: usize) -> usize {
    match max_partitions {
        0 => 50,
        n => (n / 2).clamp(1, 50),
    }
}

/// The INSERTs of a batch: indices into `rows`, each at most `max_rows`
/// long and spanning at most `max_days` UTC days of `last_seen`.
pub(crate) fn insert_chunks(
    rows: &[&FlowRow],
    max_rows: usize,
    max_days: usize,
) -> Vec<Vec<usize>> {
    let (max_rows, max_days) = (max_rows.max(1), max_days.max(1));
    let mut by_day: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        by_day.entry(row.last_seen / 86_400).or_default().push(i);
    }
    let mut chunks = Vec::new();
    let mut chunk: Vec<usize> = Vec::new();
    let mut days = 0;
    for day in by_day.into_values() {
        if days == max_days {
            chunks.push(std::mem::take(&mut chunk));
            days = 0;
        }
        days += 1;
        for i in day {
            if chunk.len() == max_rows {
                chunks.push(std::mem::take(&mut chunk));
                days = 1;
            }
            chunk.push(i);
        }
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// How many refused INSERTs with none accepted a bisection of `rows` rows
/// may try before it dead-letters what is left whole: about two walks from
/// the top to a single row.
pub(crate) fn rejection_budget(rows: usize) -> usize {
    let depth = usize::BITS - rows.max(1).leading_zeros();
    2 * depth as usize + 8
}

/// Orders a batch's rows by request, and each request's rows by id (`rows`
/// and their `owners`, the request each came from, together): the same
/// request makes the same INSERTs in every API server.
pub(crate) fn sort_by_request(rows: &mut Vec<&FlowRow>, owners: &mut Vec<usize>) {
    let mut pairs: Vec<(usize, &FlowRow)> = owners.drain(..).zip(rows.drain(..)).collect();
    pairs.sort_by(|(oa, a), (ob, b)| oa.cmp(ob).then_with(|| a.id.cmp(&b.id)));
    for (owner, row) in pairs {
        owners.push(owner);
        rows.push(row);
    }
}

/// The whole minutes an interrupted INSERT's rows (`lo..=hi` seconds) fall
/// in, as an inclusive range of seconds, never past `u32::MAX`.
pub(crate) fn minute_range(lo: u32, hi: u32) -> (u32, u32) {
    let start = lo - lo % 60;
    let end = (u64::from(hi) - u64::from(hi % 60) + 59).min(u64::from(u32::MAX));
    (start, u32::try_from(end).unwrap_or(u32::MAX))
}

/// A row of `dead_letters`.
#[derive(Debug, clickhouse::Row, serde::Serialize)]
struct DeadLetterRow {
    received: u32,
    id: String,
    node: String,
    last_seen: u32,
    error: String,
    #[serde(with = "serde_bytes")]
    flow: Vec<u8>,
}

/// Read-backs of at least this many ids send them as rows of a table rather
/// than as a literal ([`Writer::existing_ids_through_table`]): three more
/// round trips of a millisecond or two, against about 2 µs of parsing per id.
/// Not in cluster mode, where read-backs are one request's (a few hundred
/// ids) and a `Distributed` read would need `GLOBAL IN`.
pub const READBACK_TABLE_MIN_IDS: usize = 2_000;

/// A row of the read-back's temporary table.
#[derive(clickhouse::Row, serde::Serialize)]
struct ReadbackId<'a> {
    id: &'a str,
}

/// A new id for the HTTP session of a writer's read-back table.
pub(crate) fn readback_session() -> String {
    unique_id("readback")
}

static QUERY_SEQ: AtomicU64 = AtomicU64::new(0);

/// `netverdict-<kind>-<pid>-<ns>-<seq>`: never the same twice on a server.
fn unique_id(kind: &str) -> String {
    let nanos = UnixNanos::now().nanos_saturating();
    format!(
        "netverdict-{kind}-{}-{nanos}-{}",
        std::process::id(),
        QUERY_SEQ.fetch_add(1, Relaxed)
    )
}

fn query_id() -> String {
    unique_id("insert")
}

/// The next chunk of the replay under way; pending without one.
async fn next_chunk(replay: &mut Option<mpsc::Receiver<ReplayChunk>>) -> Option<ReplayChunk> {
    match replay {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Writer {
    /// Runs until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        self.stats
            .spool_bytes
            .store(self.spool.used_bytes(), Relaxed);
        let mut tick = tokio::time::interval(self.config.replay_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Unbiased: with live batches and replay chunks both ready, either
            // may go first, so neither waits for the other to run dry.
            tokio::select! {
                req = rx.recv() => {
                    let Some(first) = req else { break };
                    let batch = self.gather(first, &mut rx).await;
                    self.process(batch).await;
                }
                chunk = next_chunk(&mut self.replay) => match chunk {
                    Some(chunk) => self.replay_chunk(chunk).await,
                    None => self.replay_ended().await,
                },
                _ = tick.tick() => self.maintain().await,
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

    /// Marks ClickHouse healthy again when it answers, and starts a replay
    /// when the spool holds sealed segments.
    async fn maintain(&mut self) {
        if self.schema.get().is_none() {
            return;
        }
        if !self.healthy {
            if self.client.query("SELECT 1").execute().await.is_err() {
                return;
            }
            tracing::info!("ClickHouse answers: inserting again, replaying the spool beside");
            self.healthy = true;
        }
        if self.replay.is_some() {
            return;
        }
        // What was appended while unhealthy becomes replayable.
        self.spool.seal();
        match self.spool.sealed().await {
            Ok(segments) if segments.is_empty() => {
                self.stats.spool_pending_rows.store(0, Relaxed);
            }
            Ok(segments) => {
                tracing::info!(
                    segments = segments.len(),
                    bytes = segments.iter().map(|s| s.bytes).sum::<u64>(),
                    "replaying the spool"
                );
                self.replay = Some(replay::start(
                    segments,
                    self.spool.dir().join(super::spool::QUARANTINE_DIR),
                    self.config.replay_chunk_rows,
                    self.stats.clone(),
                ));
            }
            Err(e) => tracing::error!(error = %e, "cannot list the spool"),
        }
    }

    async fn replay_ended(&mut self) {
        self.replay = None;
        match self.spool.sealed().await {
            Ok(left) if left.is_empty() => {
                self.stats.spool_pending_rows.store(0, Relaxed);
                tracing::info!("spool replayed");
            }
            Ok(left) => tracing::info!(segments = left.len(), "replay round over; segments left"),
            Err(e) => tracing::error!(error = %e, "cannot list the spool"),
        }
    }

    /// Stores one chunk of a spool segment; removes the segment after its
    /// last chunk. An outage stops the replay (the segment stays, and is
    /// replayed from its start next time: stored ids are skipped).
    async fn replay_chunk(&mut self, chunk: ReplayChunk) {
        if !self.healthy {
            self.replay = None;
            return;
        }
        let rows: Vec<&FlowRow> = chunk.rows.iter().collect();
        let fates = self.store_all(&rows).await;
        if fates.contains(&Fate::Pending) {
            tracing::warn!(segment = %chunk.segment.path.display(), "replay interrupted; will retry");
            self.replay = None;
            return;
        }
        let replayed = chunk.rows.len() as u64;
        let duplicates = fates.iter().filter(|f| **f == Fate::Duplicate).count() as u64;
        self.stats.rows_replayed.fetch_add(replayed, Relaxed);
        self.stats.rows_duplicate.fetch_add(duplicates, Relaxed);
        let pending = &self.stats.spool_pending_rows;
        let _ = pending.fetch_update(Relaxed, Relaxed, |p| Some(p.saturating_sub(chunk.records)));
        if chunk.last {
            match self.spool.remove(&chunk.segment).await {
                Ok(()) => {
                    tracing::info!(segment = %chunk.segment.path.display(), "spool segment replayed")
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot remove a replayed spool segment");
                    self.replay = None;
                }
            }
            self.stats
                .spool_bytes
                .store(self.spool.used_bytes(), Relaxed);
        }
    }

    async fn process(&mut self, batch: Vec<Request>) {
        let started = Instant::now();
        // The rows stay in their requests' vectors and the batch is
        // references to them: a row is close to a kilobyte, and moving
        // 100 000 into one vector showed in the profile (copies into fresh
        // pages). Which rows repeat an id seen before them (a batch sent
        // twice while its first copy waited) is found on the way.
        let (requests, replies): (Vec<Vec<FlowRow>>, Vec<_>) =
            batch.into_iter().map(|r| (r.rows, r.reply)).unzip();
        let total: usize = requests.iter().map(Vec::len).sum();
        let mut rows: Vec<&FlowRow> = Vec::with_capacity(total);
        let mut owners = Vec::with_capacity(total);
        let mut outcomes = vec![InsertOutcome::default(); requests.len()];
        let mut seen: HashSet<&str> = HashSet::with_capacity(total);
        for (i, request) in requests.iter().enumerate() {
            for row in request {
                if seen.insert(row.id.as_str()) {
                    rows.push(row);
                    owners.push(i);
                } else {
                    outcomes[i].duplicates += 1;
                }
            }
        }
        drop(seen);
        let mut fates = if !self.healthy || self.schema.get().is_none() {
            vec![Fate::Pending; rows.len()]
        } else if self.config.cluster.is_some() {
            sort_by_request(&mut rows, &mut owners);
            self.store_each_request(&rows, &owners).await
        } else {
            self.store_all(&rows).await
        };
        let pending: Vec<usize> = (0..rows.len())
            .filter(|&i| fates[i] == Fate::Pending)
            .collect();
        let mut failed: Option<StoreError> = None;
        if !pending.is_empty() {
            match self.spool_rows(&rows, &pending).await {
                Ok(()) => pending.iter().for_each(|&i| fates[i] = Fate::Spooled),
                Err(e) => {
                    tracing::error!(error = %e, rows = pending.len(), "flows neither stored nor spooled");
                    failed = Some(e);
                }
            }
        }
        let mut failed_owner = vec![false; replies.len()];
        for (fate, &owner) in fates.iter().zip(&owners) {
            let o = &mut outcomes[owner];
            match fate {
                Fate::Stored | Fate::Spooled => o.stored += 1,
                Fate::Duplicate => o.duplicates += 1,
                Fate::DeadLettered => o.rejected += 1,
                Fate::Pending => failed_owner[owner] = true,
            }
        }
        let dups: usize = outcomes.iter().map(|o| o.duplicates).sum();
        self.stats.rows_duplicate.fetch_add(dups as u64, Relaxed);
        self.stats.insert_latency.observe(started.elapsed());
        for ((reply, outcome), failed_owner) in replies.into_iter().zip(outcomes).zip(failed_owner)
        {
            let result = match (&failed, failed_owner) {
                (Some(e), true) => Err(e.clone()),
                _ => Ok(outcome),
            };
            let _ = reply.send(result);
        }
        // Freeing 100,000 rows (some 30 allocations each) takes tens of
        // milliseconds: off this task, which the next batch waits for.
        drop(rows);
        tokio::task::spawn_blocking(move || drop(requests));
    }

    async fn spool_rows(&mut self, rows: &[&FlowRow], which: &[usize]) -> Result<()> {
        let appended = self
            .spool
            .append(which.iter().map(|&i| rows[i].flow.as_slice()))
            .await;
        self.stats
            .spool_bytes
            .store(self.spool.used_bytes(), Relaxed);
        match appended {
            Ok(_) => {
                self.healthy = false;
                let n = which.len() as u64;
                self.stats.rows_spooled.fetch_add(n, Relaxed);
                self.stats.spool_pending_rows.fetch_add(n, Relaxed);
                Ok(())
            }
            Err(e @ SpoolError::Full { .. }) => {
                self.stats.spool_full_refusals.fetch_add(1, Relaxed);
                Err(StoreError::Full {
                    backend: "spool",
                    message: format!("{e}: not acknowledged, send again later"),
                })
            }
            Err(e) => Err(StoreError::Backend {
                backend: "spool",
                message: e.to_string(),
            }),
        }
    }

    /// Cluster mode: stores each request's rows (contiguous in `rows`, in id
    /// order: see [`sort_by_request`]) by INSERTs of their own, so that a
    /// request resent through another API server makes the same blocks,
    /// which the replicated tables drop as duplicates (and their views with
    /// them) even when the read-back of stored ids missed them (a replica
    /// behind). After an outage the rest stays [`Fate::Pending`].
    async fn store_each_request(&mut self, rows: &[&FlowRow], owners: &[usize]) -> Vec<Fate> {
        let mut fates = vec![Fate::Pending; rows.len()];
        let mut start = 0;
        while start < rows.len() && self.healthy {
            let end = start + owners[start..].partition_point(|&o| o == owners[start]);
            let stored = self.store_all(&rows[start..end]).await;
            fates[start..end].copy_from_slice(&stored);
            start = end;
        }
        fates
    }

    /// Stores `rows` by INSERTs of bounded size and day span, isolating what
    /// ClickHouse rejects. An outage marks ClickHouse unhealthy and leaves the
    /// rows not stored yet [`Fate::Pending`].
    async fn store_all(&mut self, rows: &[&FlowRow]) -> Vec<Fate> {
        let mut fates = vec![Fate::Pending; rows.len()];
        let days = days_per_insert(self.max_partitions.load(Relaxed));
        for chunk in insert_chunks(rows, self.config.batch_max_rows, days) {
            if let Err(e) = self.isolate(rows, chunk, &mut fates).await {
                tracing::warn!(error = %e, rows = rows.len(), "ClickHouse unreachable: spooling");
                self.healthy = false;
                break;
            }
        }
        fates
    }

    /// Stores the rows `part` of `rows`, bisecting rejected INSERTs down to
    /// the rows ClickHouse refuses, which go to `dead_letters`. Err on an
    /// outage (what is not stored stays [`Fate::Pending`]).
    async fn isolate(
        &mut self,
        rows: &[&FlowRow],
        part: Vec<usize>,
        fates: &mut [Fate],
    ) -> Result<()> {
        let budget = rejection_budget(part.len());
        let (mut accepted, mut refused) = (0usize, 0usize);
        let mut suspects: Vec<(usize, String)> = Vec::new();
        let mut stack = vec![part];
        while let Some(part) = stack.pop() {
            match self.store_with_retries(rows, &part).await {
                Ok(existing) => {
                    accepted += 1;
                    for &i in &part {
                        fates[i] = if existing.contains(&rows[i].id) {
                            Fate::Duplicate
                        } else {
                            Fate::Stored
                        };
                    }
                }
                Err(Failure::Outage(e)) => return Err(e),
                Err(Failure::Rejected(e)) => {
                    refused += 1;
                    self.stats.insert_rejections.fetch_add(1, Relaxed);
                    let whole = part.len() == 1 || (accepted == 0 && refused >= budget);
                    if whole {
                        if part.len() > 1 {
                            tracing::warn!(rows = part.len(), error = %e, "ClickHouse refuses every part of this batch: setting the rest aside whole");
                        }
                        let error = e.to_string();
                        suspects.extend(part.into_iter().map(|i| (i, error.clone())));
                    } else {
                        tracing::debug!(rows = part.len(), error = %e, "insert rejected: splitting");
                        let (a, b) = part.split_at(part.len() / 2);
                        stack.push(b.to_vec());
                        stack.push(a.to_vec());
                    }
                }
            }
        }
        if suspects.is_empty() {
            return Ok(());
        }
        self.dead_letter(rows, &suspects, fates).await
    }

    /// Sets rejected rows aside in `dead_letters` (skipping rows that did
    /// land in `flows` and rows already set aside).
    async fn dead_letter(
        &mut self,
        rows: &[&FlowRow],
        suspects: &[(usize, String)],
        fates: &mut [Fate],
    ) -> Result<()> {
        self.settle().await?;
        let idx: Vec<usize> = suspects.iter().map(|(i, _)| *i).collect();
        let landed = self.existing_ids(rows, &idx).await?;
        let ids: Vec<&str> = idx.iter().map(|&i| rows[i].id.as_str()).collect();
        let already: HashSet<String> = self
            .client
            .query(&format!(
                "SELECT id FROM {}.dead_letters WHERE id IN (SELECT arrayJoin(?))",
                self.db
            ))
            .bind(&ids)
            .with_setting("max_query_size", "268435456")
            .fetch_all::<String>()
            .await
            .map_err(|e| ch_error("reading back dead letters", e))?
            .into_iter()
            .collect();
        let received = u32::try_from(UnixNanos::now().floor_seconds().max(0)).unwrap_or(u32::MAX);
        let mut letters = Vec::new();
        for (i, error) in suspects {
            let row = rows[*i];
            if landed.contains(&row.id) {
                fates[*i] = Fate::Stored;
            } else if !already.contains(&row.id) {
                letters.push(DeadLetterRow {
                    received,
                    id: row.id.clone(),
                    node: row.node.clone(),
                    last_seen: row.last_seen,
                    error: error.clone(),
                    flow: row.flow.clone(),
                });
            }
        }
        if !letters.is_empty() {
            let timeout = Some(self.config.request_timeout);
            let mut insert = self
                .client
                .insert::<DeadLetterRow>("dead_letters")
                .await
                .map_err(|e| ch_error("setting rejected flows aside", e))?
                .with_timeouts(timeout, timeout);
            for letter in &letters {
                insert
                    .write(letter)
                    .await
                    .map_err(|e| ch_error("setting rejected flows aside", e))?;
            }
            insert
                .end()
                .await
                .map_err(|e| ch_error("setting rejected flows aside", e))?;
            tracing::warn!(
                flows = letters.len(),
                first = %letters[0].id,
                error = %letters[0].error,
                "ClickHouse rejected flows: kept in dead_letters"
            );
        }
        let mut set_aside = 0;
        for (i, _) in suspects {
            if fates[*i] != Fate::Stored {
                fates[*i] = Fate::DeadLettered;
                set_aside += 1;
            }
        }
        self.stats.rows_dead_lettered.fetch_add(set_aside, Relaxed);
        Ok(())
    }

    async fn store_with_retries(
        &mut self,
        rows: &[&FlowRow],
        part: &[usize],
    ) -> Result<HashSet<String>, Failure> {
        let mut backoff = self.config.retry_backoff;
        let mut attempt = 1;
        loop {
            match self.store_once(rows, part).await {
                Ok(existing) => return Ok(existing),
                Err(Failure::Rejected(e)) => {
                    self.stats.insert_failures.fetch_add(1, Relaxed);
                    return Err(Failure::Rejected(e));
                }
                Err(Failure::Outage(e)) => {
                    self.stats.insert_failures.fetch_add(1, Relaxed);
                    if attempt >= self.config.insert_attempts {
                        return Err(Failure::Outage(e));
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
    async fn store_once(
        &mut self,
        rows: &[&FlowRow],
        part: &[usize],
    ) -> Result<HashSet<String>, Failure> {
        self.settle().await.map_err(Failure::Outage)?;
        let existing = self
            .existing_ids(rows, part)
            .await
            .map_err(Failure::Outage)?;
        let fresh: Vec<&FlowRow> = part
            .iter()
            .map(|&i| rows[i])
            .filter(|r| !existing.contains(&r.id))
            .collect();
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
                insert.write(*row).await?;
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
            Err(e) => {
                let text = e.to_string();
                let err = ch_error("inserting flows", e);
                if is_rejection(&text) {
                    Err(Failure::Rejected(err))
                } else {
                    Err(Failure::Outage(err))
                }
            }
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
            if self.config.cluster.is_some() {
                // Counts read through Distributed tables come from whichever
                // replica answers, one behind another: comparing them would
                // add rollup rows that are only being replicated.
                tracing::debug!(
                    rows = u.ids.len(),
                    "cluster mode: an interrupted insert's rollups are not compared"
                );
            } else {
                self.repair_rollups(u).await?;
            }
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
        let (lo, hi) = minute_range(u.lo, u.hi);
        let landed: u64 = self
            .client
            .query(&format!(
                "SELECT count() FROM {db}.flows WHERE last_seen >= toDateTime(?) \
                 AND last_seen <= toDateTime(?) AND id IN (SELECT arrayJoin(?))"
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
        let range = format!("last_seen >= toDateTime({lo}) AND last_seen <= toDateTime({hi})");
        for r in schema::all_rollups() {
            let expected: u64 = self
                .client
                .query(&format!(
                    "SELECT {} FROM ({})",
                    r.selected_flows(),
                    r.select(db, &range)
                ))
                .fetch_one()
                .await
                .map_err(|e| ch_error("counting flows for a rollup", e))?;
            let actual: u64 = self
                .client
                .query(&format!(
                    "SELECT {} FROM {db}.{} WHERE minute >= toDateTime({lo}) \
                     AND minute <= toDateTime({hi})",
                    r.flows, r.table
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

    /// Which of the rows `part`'s ids are stored already.
    async fn existing_ids(&mut self, rows: &[&FlowRow], part: &[usize]) -> Result<HashSet<String>> {
        let (Some(lo), Some(hi)) = (
            part.iter().map(|&i| rows[i].last_seen).min(),
            part.iter().map(|&i| rows[i].last_seen).max(),
        ) else {
            return Ok(HashSet::new());
        };
        let ids: Vec<String> =
            if part.len() >= READBACK_TABLE_MIN_IDS && self.config.cluster.is_none() {
                let read = self.existing_ids_through_table(rows, part, lo, hi).await;
                if read.is_err() {
                    // Never wait on a session a timed-out query may still hold.
                    self.readback_session = readback_session();
                }
                read?
            } else {
                let ids_bound: Vec<&str> = part.iter().map(|&i| rows[i].id.as_str()).collect();
                self.client
                    .query(&self.readback_sql("(SELECT arrayJoin(?))"))
                    .bind(lo)
                    .bind(hi)
                    .bind(ids_bound)
                    .with_setting("max_query_size", "268435456")
                    .fetch_all()
                    .await
                    .map_err(|e| ch_error("reading back stored ids", e))?
            };
        Ok(ids.into_iter().collect())
    }

    /// The read-back of the ids `ids` names (a subquery or a table) that
    /// `flows` holds, with `last_seen` between two bound seconds.
    fn readback_sql(&self, ids: &str) -> String {
        format!(
            "SELECT id FROM {}.flows WHERE last_seen >= toDateTime(?) \
             AND last_seen <= toDateTime(?) AND id IN {ids}",
            self.db
        )
    }

    /// [`existing_ids`](Self::existing_ids) of many ids: they are inserted
    /// into a temporary table of the writer's HTTP session (RowBinary), which
    /// the read-back's `IN` names. ClickHouse 18.16 takes about 200 ms to
    /// parse a literal of 100,000 ids, and about 10 ms to take them as rows.
    async fn existing_ids_through_table(
        &self,
        rows: &[&FlowRow],
        part: &[usize],
        lo: u32,
        hi: u32,
    ) -> Result<Vec<String>> {
        let context = "reading back stored ids";
        let session = self
            .client
            .clone()
            .with_setting("session_id", self.readback_session.as_str());
        for sql in [
            "DROP TEMPORARY TABLE IF EXISTS readback_ids",
            "CREATE TEMPORARY TABLE readback_ids (id String)",
        ] {
            session
                .query(sql)
                .execute()
                .await
                .map_err(|e| ch_error(context, e))?;
        }
        let timeout = Some(self.config.request_timeout);
        let mut insert = session
            .insert::<ReadbackId>("readback_ids")
            .await
            .map_err(|e| ch_error(context, e))?
            .with_timeouts(timeout, timeout);
        for &i in part {
            insert
                .write(&ReadbackId { id: &rows[i].id })
                .await
                .map_err(|e| ch_error(context, e))?;
        }
        insert.end().await.map_err(|e| ch_error(context, e))?;
        session
            .query(&self.readback_sql("readback_ids"))
            .bind(lo)
            .bind(hi)
            .fetch_all()
            .await
            .map_err(|e| ch_error(context, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: usize, last_seen: u32) -> FlowRow {
        let flow = netverdict_proto::v1::Flow {
            id: format!("n/1/{id}"),
            last_seen: Some(prost_types::Timestamp {
                seconds: i64::from(last_seen),
                nanos: 0,
            }),
            ..Default::default()
        };
        FlowRow::from_flow(&flow).unwrap()
    }

    #[test]
    fn inserts_span_few_days_and_rows() {
        // 150 days, two rows each: the batch ClickHouse refused whole.
        let rows: Vec<FlowRow> = (0..300)
            .map(|i| row(i, 1_700_000_000 + (i as u32 / 2) * 86_400))
            .collect();
        let refs: Vec<&FlowRow> = rows.iter().collect();
        let chunks = insert_chunks(&refs, 100_000, days_per_insert(100));
        assert_eq!(chunks.len(), 3);
        let mut all: Vec<usize> = chunks.concat();
        all.sort_unstable();
        assert_eq!(all, (0..300).collect::<Vec<_>>(), "every row once");
        for chunk in &chunks {
            let days: HashSet<u32> = chunk.iter().map(|&i| rows[i].last_seen / 86_400).collect();
            assert!(days.len() <= 50, "{} days", days.len());
        }
        // Rows per insert too, within a day.
        let same_day: Vec<FlowRow> = (0..10).map(|i| row(i, 1_700_000_000)).collect();
        let refs: Vec<&FlowRow> = same_day.iter().collect();
        let chunks = insert_chunks(&refs, 4, 50);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        assert!(insert_chunks(&[], 4, 50).is_empty());
        // Days spill over a row-cut chunk: never more than max_days per chunk.
        let rows: Vec<FlowRow> = (0..6)
            .map(|i| row(i, 1_700_000_000 + i as u32 * 86_400))
            .collect();
        let refs: Vec<&FlowRow> = rows.iter().collect();
        for chunk in insert_chunks(&refs, 4, 2) {
            let days: HashSet<u32> = chunk.iter().map(|&i| rows[i].last_seen / 86_400).collect();
            assert!(days.len() <= 2 && chunk.len() <= 4, "{chunk:?}");
        }
    }

    #[test]
    fn a_request_makes_the_same_rows_in_the_same_order_however_it_arrives() {
        // Two requests, interleaved as a batch holds them, ids out of order.
        let made = [row(3, 10), row(9, 10), row(1, 10), row(7, 10), row(2, 10)];
        let mut rows: Vec<&FlowRow> = made.iter().collect();
        let mut owners = vec![1, 0, 1, 0, 1];
        sort_by_request(&mut rows, &mut owners);
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["n/1/7", "n/1/9", "n/1/1", "n/1/2", "n/1/3"]);
        assert_eq!(owners, [0, 0, 1, 1, 1]);
        // The second request alone, in another order, makes the same rows.
        let made_alone = [row(2, 10), row(3, 10), row(1, 10)];
        let mut alone: Vec<&FlowRow> = made_alone.iter().collect();
        let mut alone_owners = vec![0; 3];
        sort_by_request(&mut alone, &mut alone_owners);
        assert!(
            alone
                .iter()
                .zip(&rows[2..])
                .all(|(a, b)| a.id == b.id && a.flow == b.flow)
        );
    }

    #[test]
    fn days_per_insert_follows_the_servers_limit() {
        assert_eq!(days_per_insert(0), 50);
        assert_eq!(days_per_insert(100), 50);
        assert_eq!(days_per_insert(1000), 50);
        assert_eq!(days_per_insert(10), 5);
        assert_eq!(days_per_insert(1), 1);
    }

    #[test]
    fn the_minutes_of_an_interrupted_insert_never_overflow() {
        assert_eq!(minute_range(125, 130), (120, 179));
        assert_eq!(minute_range(0, 0), (0, 59));
        // last_seen near u32::MAX (2106): clamped, not a panic.
        assert_eq!(
            minute_range(u32::MAX - 5, u32::MAX),
            (u32::MAX - 5 - (u32::MAX - 5) % 60, u32::MAX)
        );
    }

    #[test]
    fn rejections_are_told_from_outages() {
        let v18 = "Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero, e.what() = DB::Exception";
        let modern = "Code: 53. DB::Exception: Type mismatch in VALUES section. (TYPE_MISMATCH) (version 24.3.1)";
        let partitions = "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). (TOO_MANY_PARTS)";
        let parts = "Code: 252. DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts. (TOO_MANY_PARTS)";
        assert_eq!(error_code(v18), Some(395));
        assert!(is_rejection(v18) && is_rejection(modern) && is_rejection(partitions));
        assert!(!is_rejection(parts), "too many parts is an outage");
        assert!(!is_rejection(
            "Code: 60. DB::Exception: Table db.flows doesn't exist"
        ));
        assert!(!is_rejection("network error: connection refused"));
        assert!(!is_rejection("timeout expired"));
        assert_eq!(error_code("Code: x"), None);
    }

    #[test]
    fn the_rejection_budget_allows_a_few_walks_down() {
        assert_eq!(rejection_budget(1), 10);
        assert_eq!(rejection_budget(100_000), 2 * 17 + 8);
        assert_eq!(rejection_budget(0), 10);
    }
}
