//! Export: streams the pipeline's flows to the API server's `Ingest.Push` and
//! keeps them until the server acknowledges them.
//!
//! Flows come from the pipeline's channel and are grouped into batches, by size
//! ([`ExporterConfig::batch_size`]) or by age ([`ExporterConfig::batch_delay`]).
//! Each batch gets the next sequence number of this run (starting at 1), is
//! encoded once (the buffer keeps its bytes, not its flows, so a resend sends
//! the same bytes and nothing is copied per send) and is written to the push
//! stream. An [`Ack`](pb::Ack) with sequence `s` releases
//! every batch with a sequence `<= s`; until then the batch is kept.
//!
//! When the stream fails — connection refused or lost, the server ends the
//! stream, or no acknowledgement arrives within [`ExporterConfig::ack_timeout`]
//! while batches are outstanding — the exporter reconnects with exponential
//! backoff ([`Backoff`]) and first sends again every unacknowledged batch, in
//! order, with the same sequence numbers and the same flow ids, so the server
//! can store each flow once.
//!
//! The exporter never blocks the pipeline: it drains the channel while
//! connecting, while backing off and while connected. What it holds (records not
//! yet sent plus records in unacknowledged batches) is bounded by
//! [`ExporterConfig::buffer_bound`]. Past the bound it drops the **oldest
//! record not yet sent** to make room for the newest one: fresh flows are worth
//! more to an operator than stale ones, and a sent batch may already be durable
//! on the server. Records in sent, unacknowledged batches are never dropped; if
//! they fill the whole bound (a server that does not acknowledge), the incoming
//! record is the only unsent one and is dropped. Every drop is counted in
//! [`ExportStats::flows_dropped`].
//!
//! **Refusals are not outages.** The server refuses bad flows one by one and
//! says how many in each [`Ack`](pb::Ack) ([`ExportStats::flows_refused`]).
//! When it ends the stream with an error, the batches before the first
//! unacknowledged one are acknowledged, and the code says what to do with that
//! one ([`is_permanent`]): `INVALID_ARGUMENT`, `OUT_OF_RANGE` (a message above
//! its size limit), `PERMISSION_DENIED` (a batch naming another node than the
//! collector's certificate) or `FAILED_PRECONDITION` refuse it for good, so
//! it is dropped and counted ([`ExportStats::batches_refused`]) and never sent
//! again; every other code is transient and the batch is sent again after the
//! backoff. Batches are also cut at
//! [`ExporterConfig::max_batch_bytes`], below the server's message limit.
//!
//! **The acknowledged-id log** ([`ExporterConfig::acked_ids_log`], a bench
//! setting: `netverdict collector --acked-ids-log`) records which flows the
//! server acknowledged, for `netverdict lab soak` to check against the store:
//! on each acknowledgement, before the batches are released, the ids of their
//! flows are appended one per line (`AckedIdsLog`), and a batch whose
//! acknowledgement counted refused flows gets a line `!refused SEQUENCE N`
//! (the ack does not say which). The file is written, not fsynced: a killed
//! collector loses nothing the kernel already has, and its last line may be
//! torn, which readers ([`read_acked_ids`]) ignore. Several runs append to
//! the same file.
//!
//! The connection goes through [`netverdict_tls::Target`]: TLS with
//! [`ExporterConfig::tls`] (the files are read again at each reconnect, so
//! rotated certificates are picked up), plaintext only to a loopback address
//! unless [`ExporterConfig::insecure`].

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use netverdict_proto::time::UnixNanos;
use netverdict_proto::v1 as pb;
use netverdict_tls::{ClientTlsFiles, Target};
use prost::Message;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::IntoStreamingRequest;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Endpoint;

/// Errors of the exporter. The configuration errors come from
/// [`Exporter::new`]; the others end one push stream and are retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint is invalid, its TLS files unusable, or it is plaintext
    /// to a non-loopback address without `insecure`.
    #[error("export endpoint: {0}")]
    Endpoint(#[from] netverdict_tls::client::Error),
    /// A setting is out of range.
    #[error("export setting {field} is invalid: {reason}")]
    Config {
        field: &'static str,
        reason: &'static str,
    },
    /// The TCP or HTTP/2 connection could not be made (retried: the server may
    /// be restarting).
    #[error("connecting to the API server failed: {0}")]
    Connect(#[source] tonic::transport::Error),
    /// Connecting and opening the push stream took longer than
    /// [`ExporterConfig::connect_timeout`] (retried: a server that accepts TCP
    /// but does not answer must not hold the exporter).
    #[error("opening the push stream took longer than {0:?}")]
    ConnectTimeout(Duration),
    /// The server refused to open the push stream (retried: it may be
    /// overloaded or starting).
    #[error("the API server refused the push stream: {0}")]
    Refused(#[source] tonic::Status),
    /// The server refused the first unacknowledged batch for good
    /// ([`is_permanent`]): it is dropped, its flows counted as refused, and
    /// the stream opened again for the batches after it.
    #[error("the API server refused batch {sequence} for good: {status}")]
    BatchRefused {
        /// The refused batch.
        sequence: u64,
        /// The server's answer.
        #[source]
        status: tonic::Status,
    },
    /// The stream failed while open: connection lost, reset or the server
    /// ended it with an error (retried).
    #[error("the push stream failed: {0}")]
    Stream(#[source] tonic::Status),
    /// The server ended the stream without an error, or our request side was
    /// dropped (retried).
    #[error("the push stream was closed")]
    Closed,
    /// Batches were outstanding and no acknowledgement came in time (retried:
    /// the stream is likely stuck; unacknowledged batches are sent again).
    #[error("no acknowledgement within {0:?}")]
    AckTimeout(Duration),
}

/// The exporter's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exponential backoff between connection attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub initial: Duration,
    /// The delay never grows past this.
    pub max: Duration,
    /// Randomise each delay within [delay/2, delay), so that the collectors of
    /// a cluster do not reconnect in step after an API server restart.
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            jitter: true,
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt + 1`, after `attempt` failures in a row
    /// (0 for the first failure).
    pub fn delay(&self, attempt: u32, rng: &mut u64) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let delay = self.initial.saturating_mul(factor).min(self.max);
        if !self.jitter {
            return delay;
        }
        // xorshift64: enough to spread reconnects; not for anything else.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let unit = (*rng >> 11) as f64 / (1u64 << 53) as f64;
        delay.mul_f64(0.5 + unit / 2.0)
    }
}

/// Exporter settings.
#[derive(Clone, Debug)]
pub struct ExporterConfig {
    /// The API server's gRPC endpoint: `host:port`, `https://host:port`
    /// (with `tls`) or `http://host:port`; port 4255 when it has none.
    pub endpoint: String,
    /// TLS: the CA the server's certificate must chain to, and the
    /// collector's certificate (its CN must be `node_name`). None: plaintext.
    pub tls: Option<ClientTlsFiles>,
    /// Allows plaintext to a non-loopback endpoint.
    pub insecure: bool,
    /// The node name batches are stamped with.
    pub node_name: String,
    /// A batch is sent once it holds this many flows.
    pub batch_size: usize,
    /// ... or once its flows' encoded size reaches this many bytes (a batch
    /// holds one flow at least); keep it below the server's message limit
    /// (the API server's `--max-message-bytes`, 4 MiB by default).
    pub max_batch_bytes: usize,
    /// ... or once its oldest flow has waited this long.
    pub batch_delay: Duration,
    /// At most this many flows are held, unsent or unacknowledged; must be at
    /// least `batch_size`.
    pub buffer_bound: usize,
    /// With batches outstanding, the stream is given up and opened again when no
    /// acknowledgement arrives for this long.
    pub ack_timeout: Duration,
    /// How long one attempt may take to connect and open the push stream.
    pub connect_timeout: Duration,
    /// The delays between connection attempts.
    pub backoff: Backoff,
    /// Append the ids of acknowledged flows to this file (a bench setting:
    /// see the module's documentation). None: no log.
    pub acked_ids_log: Option<PathBuf>,
}

impl ExporterConfig {
    /// Settings with defaults that work for a node agent: batches of 500 flows,
    /// 1 MiB or 1 s, 100 000 flows held, 30 s for an acknowledgement.
    pub fn new(endpoint: impl Into<String>, node_name: impl Into<String>) -> Self {
        ExporterConfig {
            endpoint: endpoint.into(),
            tls: None,
            insecure: false,
            node_name: node_name.into(),
            batch_size: 500,
            max_batch_bytes: 1 << 20,
            batch_delay: Duration::from_secs(1),
            buffer_bound: 100_000,
            ack_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            acked_ids_log: None,
        }
    }
}

/// The state of the connection to the API server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnectionState {
    /// Waiting out a backoff delay after a failure.
    #[default]
    Disconnected = 0,
    /// A connection attempt is under way.
    Connecting = 1,
    /// The push stream is open.
    Connected = 2,
}

/// Live counters of an exporter, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct ExportCounters {
    flows_sent: AtomicU64,
    flows_acked: AtomicU64,
    batches_resent: AtomicU64,
    reconnects: AtomicU64,
    flows_dropped: AtomicU64,
    flows_refused: AtomicU64,
    batches_refused: AtomicU64,
    /// Flows of the batches refused whole (settled without an ack).
    flows_in_refused_batches: AtomicU64,
    buffered: AtomicU64,
    state: AtomicU8,
    /// Woken when flows are acknowledged or dropped.
    progress: Notify,
}

/// A snapshot of [`ExportCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Flows sent for the first time (resends are not counted again).
    pub flows_sent: u64,
    /// Flows the server acknowledged as durable.
    pub flows_acked: u64,
    /// Batches sent again on a new stream because they were not acknowledged.
    pub batches_resent: u64,
    /// Push streams opened after the first one.
    pub reconnects: u64,
    /// Flows dropped because the buffer was full.
    pub flows_dropped: u64,
    /// Flows the server refused and will never store: those its
    /// acknowledgements counted as refused (invalid, or set aside by its
    /// store) and those of the batches it refused whole.
    pub flows_refused: u64,
    /// Batches the server refused whole ([`is_permanent`]), dropped.
    pub batches_refused: u64,
    /// Flows held now: not yet sent, or sent and not yet acknowledged.
    pub buffered: u64,
    /// The connection's state now.
    pub state: ConnectionState,
}

impl ExportCounters {
    /// The counters now.
    pub fn snapshot(&self) -> ExportStats {
        ExportStats {
            flows_sent: self.flows_sent.load(Ordering::Relaxed),
            flows_acked: self.flows_acked.load(Ordering::Relaxed),
            batches_resent: self.batches_resent.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            flows_dropped: self.flows_dropped.load(Ordering::Relaxed),
            flows_refused: self.flows_refused.load(Ordering::Relaxed),
            batches_refused: self.batches_refused.load(Ordering::Relaxed),
            buffered: self.buffered.load(Ordering::Relaxed),
            state: match self.state.load(Ordering::Relaxed) {
                1 => ConnectionState::Connecting,
                2 => ConnectionState::Connected,
                _ => ConnectionState::Disconnected,
            },
        }
    }

    /// Flows settled since the exporter started: acknowledged, dropped by
    /// the buffer, or in batches the server refused whole.
    pub fn settled(&self) -> u64 {
        let s = self.snapshot();
        s.flows_acked + s.flows_dropped + self.flows_in_refused_batches.load(Ordering::Relaxed)
    }

    /// Waits until at least `flows` flows in all are [settled](Self::settled).
    pub async fn wait_done(&self, flows: u64) {
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.settled() >= flows {
                return;
            }
            progress.await;
        }
    }

    fn set_state(&self, state: ConnectionState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// What the exporter holds: records not yet in a batch, and sent batches not
/// yet acknowledged, within the bound.
struct Buffer {
    node_name: String,
    bound: usize,
    batch_size: usize,
    max_batch_bytes: usize,
    unsent: VecDeque<pb::Flow>,
    unacked: VecDeque<SentBatch>,
    unacked_flows: usize,
    next_sequence: u64,
    /// Drops since the buffer was last below its bound, for one log line per
    /// episode rather than one per flow.
    dropping: u64,
    counters: Arc<ExportCounters>,
    /// Where acknowledged ids go, when asked.
    acked_log: Option<AckedIdsLog>,
}

/// A batch sent and not yet acknowledged: encoded once when it is made, and
/// sent again as those bytes after a reconnect.
struct SentBatch {
    sequence: u64,
    /// How many flows it holds.
    flows: usize,
    /// The `FlowBatch` message, encoded.
    encoded: Bytes,
    /// Its flows' ids, kept only for the acknowledged-id log.
    ids: Vec<String>,
}

/// The acknowledged-id log: an append-only file of flow ids, one per line.
struct AckedIdsLog {
    path: PathBuf,
    file: std::fs::File,
    /// Whether a write failed already (logged once, then the log is off).
    failed: bool,
}

impl AckedIdsLog {
    fn open(path: &Path) -> std::io::Result<AckedIdsLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(AckedIdsLog {
            path: path.to_path_buf(),
            file,
            failed: false,
        })
    }

    /// Appends the ids of `batches` and, when `refused` > 0, a refusal line
    /// for batch `sequence`, in one write.
    fn record<'a>(
        &mut self,
        batches: impl Iterator<Item = &'a SentBatch>,
        sequence: u64,
        refused: u64,
    ) {
        if self.failed {
            return;
        }
        let mut text = String::new();
        for batch in batches {
            for id in &batch.ids {
                text.push_str(id);
                text.push('\n');
            }
        }
        if refused > 0 {
            text.push_str(&format!("{REFUSED_PREFIX}{sequence} {refused}\n"));
        }
        if let Err(error) = self.file.write_all(text.as_bytes()) {
            tracing::warn!(path = %self.path.display(), %error, "the acknowledged-id log cannot be written: no more ids are recorded");
            self.failed = true;
        }
    }
}

/// How a line of the acknowledged-id log that counts refused flows starts.
const REFUSED_PREFIX: &str = "!refused ";

/// What an acknowledged-id log holds ([`read_acked_ids`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckedIds {
    /// The ids, in the order they were acknowledged (an id may repeat if the
    /// server acknowledged a resent batch again after a restart).
    pub ids: Vec<String>,
    /// Flows the acknowledgements counted as refused, in all.
    pub refused: u64,
    /// Whether the last line was torn (its writer was killed mid-write) and
    /// left out.
    pub torn_line: bool,
}

/// Reads an acknowledged-id log. A last line without its newline is a write
/// cut short by a kill and is left out; a refusal line that does not parse is
/// an error naming the line.
pub fn read_acked_ids(text: &str) -> std::result::Result<AckedIds, String> {
    let mut out = AckedIds::default();
    let mut lines: Vec<&str> = text.split('\n').collect();
    // After the last newline: empty, or a torn line.
    let last = lines.pop().unwrap_or_default();
    out.torn_line = !last.is_empty();
    for (number, line) in lines.into_iter().enumerate() {
        if let Some(rest) = line.strip_prefix(REFUSED_PREFIX) {
            let refused = rest
                .split_once(' ')
                .and_then(|(_, n)| n.parse::<u64>().ok())
                .ok_or_else(|| {
                    format!("line {}: {line:?} is not `!refused SEQUENCE N`", number + 1)
                })?;
            out.refused += refused;
        } else if !line.is_empty() {
            out.ids.push(line.to_string());
        }
    }
    Ok(out)
}

impl Buffer {
    fn len(&self) -> usize {
        self.unsent.len() + self.unacked_flows
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn update_gauge(&self) {
        self.counters
            .buffered
            .store(self.len() as u64, Ordering::Relaxed);
    }

    /// Takes one flow from the pipeline, dropping the oldest unsent one if full.
    fn push(&mut self, flow: pb::Flow) {
        if self.len() >= self.bound {
            if self.dropping == 0 {
                tracing::warn!(
                    bound = self.bound,
                    unacked = self.unacked_flows,
                    "export buffer full, dropping the oldest unsent flows"
                );
            }
            self.dropping += 1;
            ExportCounters::add(&self.counters.flows_dropped, 1);
            self.counters.progress.notify_waiters();
            if self.unsent.pop_front().is_none() {
                // Everything held is in sent batches: the newcomer is the only
                // unsent record, hence the oldest.
                return;
            }
        } else if self.dropping > 0 {
            tracing::info!(
                dropped = self.dropping,
                "export buffer below its bound again"
            );
            self.dropping = 0;
        }
        self.unsent.push_back(flow);
        self.update_gauge();
    }

    /// A new batch from the unsent records, encoded: a full one, or with
    /// `partial` any that are left. The batch is kept as unacknowledged (the
    /// returned bytes share its buffer).
    fn take_batch(&mut self, partial: bool) -> Option<Bytes> {
        if self.unsent.is_empty() || (!partial && self.unsent.len() < self.batch_size) {
            return None;
        }
        let mut n = 0;
        let mut bytes = 0usize;
        for flow in self.unsent.iter().take(self.batch_size) {
            let len = flow.encoded_len();
            if n > 0 && bytes.saturating_add(len) > self.max_batch_bytes {
                break;
            }
            n += 1;
            bytes = bytes.saturating_add(len);
        }
        let batch = pb::FlowBatch {
            node_name: self.node_name.clone(),
            sequence: self.next_sequence,
            flows: self.unsent.drain(..n).collect(),
        };
        let ids = match self.acked_log {
            Some(_) => batch.flows.iter().map(|f| f.id.clone()).collect(),
            None => Vec::new(),
        };
        let encoded = Bytes::from(batch.encode_to_vec());
        self.unacked.push_back(SentBatch {
            sequence: batch.sequence,
            flows: n,
            encoded: encoded.clone(),
            ids,
        });
        self.next_sequence += 1;
        self.unacked_flows += n;
        ExportCounters::add(&self.counters.flows_sent, n);
        Some(encoded)
    }

    /// Releases every batch up to `sequence`; `refused` of batch `sequence`'s
    /// flows were refused by the server.
    fn ack(&mut self, sequence: u64, refused: u64) {
        if refused > 0 {
            tracing::warn!(sequence, refused, "the API server refused flows of a batch");
            self.counters
                .flows_refused
                .fetch_add(refused, Ordering::Relaxed);
        }
        if let Some(log) = &mut self.acked_log {
            let released = self.unacked.iter().take_while(|b| b.sequence <= sequence);
            log.record(released, sequence, refused);
        }
        let mut acked = 0;
        while let Some(batch) = self.unacked.front()
            && batch.sequence <= sequence
        {
            acked += batch.flows;
            self.unacked.pop_front();
        }
        if sequence >= self.next_sequence {
            tracing::warn!(
                sequence,
                last_sent = self.next_sequence - 1,
                "acknowledgement of a batch never sent"
            );
        }
        self.unacked_flows -= acked;
        ExportCounters::add(&self.counters.flows_acked, acked);
        self.update_gauge();
        self.counters.progress.notify_waiters();
        tracing::debug!(sequence, flows = acked, "batches acknowledged");
    }

    /// Drops the first unacknowledged batch, which the server refused for
    /// good; returns its sequence.
    fn refuse_first(&mut self) -> Option<u64> {
        let batch = self.unacked.pop_front()?;
        let n = batch.flows;
        self.unacked_flows -= n;
        ExportCounters::add(&self.counters.flows_refused, n);
        ExportCounters::add(&self.counters.flows_in_refused_batches, n);
        ExportCounters::add(&self.counters.batches_refused, 1);
        self.update_gauge();
        self.counters.progress.notify_waiters();
        Some(batch.sequence)
    }
}

/// Whether a status ending the push stream refuses the first unacknowledged
/// batch for good (`ingest.proto`): sending it again cannot succeed.
pub fn is_permanent(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument
            | tonic::Code::OutOfRange
            | tonic::Code::PermissionDenied
            | tonic::Code::FailedPrecondition
    )
}

/// The open push stream: where batches go, where acknowledgements come from.
struct Stream {
    /// Encoded `FlowBatch` messages ([`EncodedBatchCodec`]).
    batches: mpsc::UnboundedSender<Bytes>,
    acks: tonic::Streaming<pb::Ack>,
}

/// Streams flows to the API server. Build with [`Exporter::new`], keep
/// [`Exporter::counters`] for the metrics (and [`Exporter::flusher`] to send
/// partial batches on demand), then [`Exporter::run`].
pub struct Exporter {
    config: ExporterConfig,
    target: Target,
    endpoint: Endpoint,
    counters: Arc<ExportCounters>,
    flush: Arc<Notify>,
}

/// Asks a running exporter to send what it holds now rather than at the end of
/// [`ExporterConfig::batch_delay`]; clones share the exporter.
#[derive(Clone, Debug)]
pub struct Flusher(Arc<Notify>);

impl Flusher {
    /// Sends the flows already handed to the exporter as soon as the stream is
    /// open (at once if it is). Returns at once.
    pub fn flush(&self) {
        self.0.notify_one();
    }
}

impl Exporter {
    /// Checks the settings and prepares the endpoint; does not connect.
    pub fn new(config: ExporterConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(Error::Config {
                field: "batch_size",
                reason: "must be at least 1",
            });
        }
        if config.buffer_bound < config.batch_size {
            return Err(Error::Config {
                field: "buffer_bound",
                reason: "must be at least batch_size",
            });
        }
        if config.backoff.initial.is_zero() || config.backoff.max < config.backoff.initial {
            return Err(Error::Config {
                field: "backoff",
                reason: "initial must be positive and at most max",
            });
        }
        let target = Target::new(
            &config.endpoint,
            netverdict_proto::ports::API_GRPC,
            config.tls.clone(),
            config.insecure,
        )?;
        let endpoint = target
            .endpoint()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(Exporter {
            config,
            target,
            endpoint,
            counters: Arc::default(),
            flush: Arc::default(),
        })
    }

    /// The live counters.
    pub fn counters(&self) -> Arc<ExportCounters> {
        self.counters.clone()
    }

    /// A handle to ask for a partial batch now.
    pub fn flusher(&self) -> Flusher {
        Flusher(self.flush.clone())
    }

    /// Runs until the pipeline's channel is closed and every flow held is
    /// acknowledged. With the server unreachable that may be never: callers
    /// that stop wrap this in a timeout, and what is still held is lost.
    pub async fn run(self, mut flows: mpsc::Receiver<pb::Flow>) {
        let mut buffer = Buffer {
            node_name: self.config.node_name.clone(),
            bound: self.config.buffer_bound,
            batch_size: self.config.batch_size,
            max_batch_bytes: self.config.max_batch_bytes,
            unsent: VecDeque::new(),
            unacked: VecDeque::new(),
            unacked_flows: 0,
            next_sequence: 1,
            dropping: 0,
            counters: self.counters.clone(),
            acked_log: None,
        };
        if let Some(path) = &self.config.acked_ids_log {
            match AckedIdsLog::open(path) {
                Ok(log) => buffer.acked_log = Some(log),
                Err(error) => tracing::warn!(
                    path = %path.display(),
                    %error,
                    "the acknowledged-id log cannot be opened: no ids are recorded"
                ),
            }
        }
        let mut input_open = true;
        let mut failures = 0u32;
        let mut connected_before = false;
        let mut rng = jitter_seed(&self.config.node_name);
        loop {
            self.counters.set_state(ConnectionState::Connecting);
            let connect = connect(
                &self.target,
                self.endpoint.clone(),
                self.config.connect_timeout,
            );
            tokio::pin!(connect);
            let connected = loop {
                tokio::select! {
                    result = &mut connect => break result,
                    flow = flows.recv(), if input_open => match flow {
                        Some(flow) => buffer.push(flow),
                        None => input_open = false,
                    },
                }
            };
            let error = match connected {
                Ok(stream) => {
                    failures = 0;
                    if connected_before {
                        ExportCounters::add(&self.counters.reconnects, 1);
                    }
                    connected_before = true;
                    self.counters.set_state(ConnectionState::Connected);
                    match self
                        .session(&mut buffer, &mut flows, &mut input_open, stream)
                        .await
                    {
                        Ok(()) => {
                            self.counters.set_state(ConnectionState::Disconnected);
                            tracing::info!("export finished: every flow acknowledged");
                            return;
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            self.counters.set_state(ConnectionState::Disconnected);
            let delay = self.config.backoff.delay(failures, &mut rng);
            failures = failures.saturating_add(1);
            tracing::warn!(
                error = %with_causes(&error),
                endpoint = %self.config.endpoint,
                failures,
                retry_in = ?delay,
                unacked_batches = buffer.unacked.len(),
                buffered = buffer.len(),
                "export stream down, reconnecting after backoff"
            );
            let until = Instant::now() + delay;
            loop {
                tokio::select! {
                    () = sleep_until(until) => break,
                    flow = flows.recv(), if input_open => match flow {
                        Some(flow) => buffer.push(flow),
                        None => input_open = false,
                    },
                }
            }
            if !input_open && buffer.is_empty() {
                return;
            }
        }
    }

    /// One push stream: sends the unacknowledged batches again, then new ones,
    /// until the stream fails (`Err`) or the input is closed and everything is
    /// acknowledged (`Ok`).
    async fn session(
        &self,
        buffer: &mut Buffer,
        flows: &mut mpsc::Receiver<pb::Flow>,
        input_open: &mut bool,
        mut stream: Stream,
    ) -> Result<()> {
        let resent = buffer.unacked.len();
        for batch in &buffer.unacked {
            stream
                .batches
                .send(batch.encoded.clone())
                .map_err(|_| Error::Closed)?;
        }
        ExportCounters::add(&self.counters.batches_resent, resent);
        tracing::info!(
            endpoint = %self.config.endpoint,
            resent_batches = resent,
            buffered = buffer.len(),
            "export stream open"
        );
        let mut last_progress = Instant::now();
        let mut batch_deadline: Option<Instant> = None;
        let mut flush_partial = false;
        loop {
            let had_unacked = !buffer.unacked.is_empty();
            while let Some(batch) = buffer.take_batch(flush_partial || !*input_open) {
                stream.batches.send(batch).map_err(|_| Error::Closed)?;
            }
            flush_partial = false;
            if !had_unacked && !buffer.unacked.is_empty() {
                last_progress = Instant::now();
            }
            if !*input_open && buffer.is_empty() {
                return Ok(());
            }
            if buffer.unsent.is_empty() {
                batch_deadline = None;
            } else if batch_deadline.is_none() {
                batch_deadline = Some(Instant::now() + self.config.batch_delay);
            }
            let ack_deadline =
                (!buffer.unacked.is_empty()).then(|| last_progress + self.config.ack_timeout);
            tokio::select! {
                flow = flows.recv(), if *input_open => match flow {
                    Some(flow) => buffer.push(flow),
                    None => *input_open = false,
                },
                ack = stream.acks.message() => match ack {
                    Ok(Some(ack)) => {
                        buffer.ack(ack.sequence, ack.refused);
                        last_progress = Instant::now();
                    }
                    Ok(None) => return Err(Error::Closed),
                    Err(status) if is_permanent(&status) => {
                        return Err(match buffer.refuse_first() {
                            Some(sequence) => Error::BatchRefused { sequence, status },
                            None => Error::Stream(status),
                        });
                    }
                    Err(status) => return Err(Error::Stream(status)),
                },
                () = sleep_opt(batch_deadline) => {
                    flush_partial = true;
                    batch_deadline = None;
                }
                () = self.flush.notified() => {
                    // What the pipeline handed over before asking belongs to
                    // this flush.
                    while *input_open {
                        match flows.try_recv() {
                            Ok(flow) => buffer.push(flow),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => *input_open = false,
                        }
                    }
                    flush_partial = true;
                    batch_deadline = None;
                }
                () = sleep_opt(ack_deadline) => {
                    return Err(Error::AckTimeout(self.config.ack_timeout));
                }
            }
        }
    }
}

/// The push stream's codec: sends `FlowBatch` messages encoded already
/// ([`Buffer::take_batch`]), reads `Ack`s.
struct EncodedBatchCodec;

impl Codec for EncodedBatchCodec {
    type Encode = Bytes;
    type Decode = pb::Ack;
    type Encoder = EncodedBatchCodec;
    type Decoder = EncodedBatchCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedBatchCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedBatchCodec
    }
}

impl Encoder for EncodedBatchCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for EncodedBatchCodec {
    type Item = pb::Ack;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::Ack>, tonic::Status> {
        pb::Ack::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("decoding an Ack: {e}")))
    }
}

/// Connects and opens the push stream, within `timeout`.
async fn connect(target: &Target, endpoint: Endpoint, timeout: Duration) -> Result<Stream> {
    let open = async {
        let channel = target.connect(endpoint).await.map_err(Error::Connect)?;
        // `Ingest.Push` as the generated client calls it, but with batches
        // encoded already: a batch is encoded once, however often it is sent.
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.map_err(|e| {
            Error::Refused(tonic::Status::unknown(format!("service not ready: {e}")))
        })?;
        let (batches, rx) = mpsc::unbounded_channel();
        let mut request = UnboundedReceiverStream::new(rx).into_streaming_request();
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new("netverdict.v1.Ingest", "Push"));
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/netverdict.v1.Ingest/Push");
        let acks = client
            .streaming(request, path, EncodedBatchCodec)
            .await
            .map_err(Error::Refused)?
            .into_inner();
        Ok(Stream { batches, acks })
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| Error::ConnectTimeout(timeout))?
}

/// The error and its causes, so that a refused TLS handshake says why (an
/// untrusted or expired certificate), not only "transport error".
fn with_causes(error: &Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn jitter_seed(node_name: &str) -> u64 {
    // Only the low bits matter for a seed: wrapping is fine.
    let nanos = UnixNanos::now().as_i128() as u64;
    let name = node_name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (nanos ^ name) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: false,
        };
        let mut rng = 1;
        let delays: Vec<_> = (0..6).map(|a| backoff.delay(a, &mut rng)).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        assert_eq!(backoff.delay(u32::MAX, &mut rng), Duration::from_secs(1));
    }

    #[test]
    fn jittered_backoff_stays_within_half_and_full() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: true,
        };
        let mut rng = jitter_seed("node");
        for attempt in 0..10 {
            let full = Backoff {
                jitter: false,
                ..backoff
            }
            .delay(attempt, &mut rng);
            let d = backoff.delay(attempt, &mut rng);
            assert!(d >= full / 2 && d <= full, "{d:?} vs {full:?}");
        }
    }

    #[test]
    fn the_acked_id_log_keeps_ids_and_refusals_and_leaves_a_torn_line_out() {
        let dir = std::env::temp_dir().join(format!("nv-acked-{}", std::process::id()));
        let mut log = AckedIdsLog::open(&dir).unwrap();
        let batch = |sequence: u64, ids: &[&str]| SentBatch {
            sequence,
            flows: ids.len(),
            encoded: Bytes::new(),
            ids: ids.iter().map(|id| (*id).to_string()).collect(),
        };
        let batches = [batch(1, &["n/1/1", "n/1/2"]), batch(2, &["n/1/3"])];
        log.record(batches.iter(), 2, 1);
        drop(log);
        let mut text = std::fs::read_to_string(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(text, "n/1/1\nn/1/2\nn/1/3\n!refused 2 1\n");
        text.push_str("n/2/");
        let read = read_acked_ids(&text).unwrap();
        assert_eq!(read.ids, ["n/1/1", "n/1/2", "n/1/3"]);
        assert_eq!(read.refused, 1);
        assert!(read.torn_line);
        assert!(!read_acked_ids("a\n").unwrap().torn_line);
        let bad = read_acked_ids("a\n!refused x\n").unwrap_err();
        assert!(bad.contains("line 2"), "{bad}");
    }

    #[test]
    fn config_is_checked() {
        let mut config = ExporterConfig::new("http://127.0.0.1:1", "n");
        config.buffer_bound = config.batch_size - 1;
        assert!(matches!(
            Exporter::new(config),
            Err(Error::Config {
                field: "buffer_bound",
                ..
            })
        ));
        assert!(matches!(
            Exporter::new(ExporterConfig::new("not a uri", "n")),
            Err(Error::Endpoint(_))
        ));
        // Plaintext off loopback needs `insecure`.
        let remote = ExporterConfig::new("http://netverdict-api:4255", "n");
        assert!(matches!(
            Exporter::new(remote.clone()),
            Err(Error::Endpoint(
                netverdict_tls::client::Error::PlaintextToRemote { .. }
            ))
        ));
        assert!(
            Exporter::new(ExporterConfig {
                insecure: true,
                ..remote
            })
            .is_ok()
        );
    }
}
