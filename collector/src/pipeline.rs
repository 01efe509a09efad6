//! The pipeline: runs the stages in order over the probes' event stream —
//! correlate, annotate (against the shared cluster state), aggregate, render —
//! and keeps the last flows in a bounded ring that followers can subscribe to.
//! Lost kernel events and every stage's counters are kept for the metrics.
//!
//! `push` and `tick` are synchronous and take the time as an argument, so tests
//! drive the pipeline without a clock; `run` is the async loop around them, and
//! [`run_with_control`] also takes [`Control`] requests (flush now) from the agent.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use netverdict_ebpf::{EventKind, LossCause, LossCounters, StreamItem, stream::StreamError};
use netverdict_proto::names::EnumName;
use netverdict_proto::time::UnixNanos;
use netverdict_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::aggregate::{Aggregator, Windows};
use crate::annotate::{Annotated, Annotator};
use crate::correlate::{Correlator, Observation, Timeouts};
use netverdict_cluster::SharedState;

/// Pipeline settings.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// The node name flows are stamped with.
    pub node_name: String,
    pub timeouts: Timeouts,
    pub windows: Windows,
    /// How many recent flows the ring keeps.
    pub ring_capacity: usize,
    /// How often `run` expires held flows and flushes aggregation windows.
    pub tick: Duration,
    /// Only events of these network namespaces (inode numbers), when set: the
    /// pods of a lab, or of one node agent's containers. Others are counted as
    /// ignored.
    pub netns: Option<rustc_hash::FxHashSet<u32>>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            node_name: "node".into(),
            timeouts: Timeouts::default(),
            windows: Windows::default(),
            ring_capacity: 10_000,
            tick: Duration::from_millis(500),
            netns: None,
        }
    }
}

/// Counters of the pipeline, for the metrics endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounters {
    /// Kernel events taken.
    pub events: u64,
    /// Kernel events of network namespaces the pipeline does not watch.
    pub events_ignored: u64,
    /// Kernel events the probes or the decoder lost, as the stream reported them.
    pub events_lost: u64,
    /// The same losses by kind and cause (`ring_buffer_full`, `decode_errors`).
    pub lost: LossCounters,
    /// Observations annotated.
    pub annotated: u64,
    /// Records rendered (after aggregation).
    pub records: u64,
    /// Records by verdict (indexed by the protobuf `Verdict` value).
    pub by_verdict: [u64; VERDICTS],
    /// Records that are a second observation of a connection (not counted
    /// in `by_verdict`, `by_verdict_outcome` or the mismatches).
    pub counted_elsewhere: u64,
    /// Records whose kernel outcome contradicts the verdict.
    pub mismatches: u64,
    /// Records by verdict (as `by_verdict`) and outcome (indexed by the
    /// protobuf `Outcome` value).
    pub by_verdict_outcome: [[u64; OUTCOMES]; VERDICTS],
    /// Records by mismatch kind (indexed by the protobuf `Mismatch` value; 0,
    /// no mismatch, is not counted).
    pub mismatches_by_kind: [u64; MISMATCHES],
    /// Kernel drop events of the watched namespaces, by drop reason name (the
    /// kernel's enum: bounded). Unnamed reasons are `UNKNOWN`.
    pub drops_by_reason: BTreeMap<Arc<str>, u64>,
}

/// How many protobuf `Verdict` values there are.
pub const VERDICTS: usize = <pb::Verdict as EnumName>::ALL.len();
/// How many protobuf `Outcome` values there are.
pub const OUTCOMES: usize = <pb::Outcome as EnumName>::ALL.len();
/// How many protobuf `Mismatch` values there are.
pub const MISMATCHES: usize = <pb::Mismatch as EnumName>::ALL.len();

/// The last flows, bounded, with a broadcast for followers.
#[derive(Debug)]
pub struct FlowRing {
    flows: VecDeque<pb::Flow>,
    capacity: usize,
    followers: broadcast::Sender<pb::Flow>,
    evicted: u64,
}

impl FlowRing {
    pub fn new(capacity: usize) -> Self {
        let (followers, _) = broadcast::channel(capacity.clamp(16, 65_536));
        FlowRing {
            flows: VecDeque::with_capacity(capacity.min(65_536)),
            capacity: capacity.max(1),
            followers,
            evicted: 0,
        }
    }

    /// Adds a flow, evicting the oldest when full, and sends it to followers.
    pub fn push(&mut self, flow: pb::Flow) {
        if self.flows.len() == self.capacity {
            self.flows.pop_front();
            self.evicted += 1;
        }
        // No follower is not an error.
        let _ = self.followers.send(flow.clone());
        self.flows.push_back(flow);
    }

    /// The flows held, oldest first.
    pub fn flows(&self) -> impl Iterator<Item = &pb::Flow> {
        self.flows.iter()
    }

    /// New flows from now on (a slow follower is told how many it missed).
    pub fn subscribe(&self) -> broadcast::Receiver<pb::Flow> {
        self.followers.subscribe()
    }

    /// How many flows are held.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// How many flows were evicted to make room, since the ring was made.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

/// The stages and their state.
#[derive(Debug)]
pub struct Pipeline {
    config: PipelineConfig,
    state: SharedState,
    correlator: Correlator,
    annotator: Annotator,
    aggregator: Aggregator,
    ring: FlowRing,
    counters: PipelineCounters,
    next_id: u64,
    /// Distinguishes this run's flow ids from an earlier run's (whose sequence
    /// also started at 1): the start time in microseconds.
    run_id: u64,
    observations: Vec<Observation>,
}

impl Pipeline {
    pub fn new(config: PipelineConfig, state: SharedState) -> Self {
        Pipeline {
            correlator: Correlator::new(config.timeouts.clone()),
            annotator: Annotator::new(config.node_name.clone()),
            aggregator: Aggregator::new(config.windows.clone()),
            ring: FlowRing::new(config.ring_capacity),
            counters: PipelineCounters::default(),
            next_id: 0,
            run_id: u64::try_from(UnixNanos::now().as_i128() / 1000).unwrap_or_default(),
            observations: Vec::new(),
            config,
            state,
        }
    }

    pub fn counters(&self) -> &PipelineCounters {
        &self.counters
    }

    /// The correlation stage's counters.
    pub fn correlation(&self) -> &crate::correlate::CorrelationStats {
        self.correlator.stats()
    }

    pub fn ring(&self) -> &FlowRing {
        &self.ring
    }

    /// Takes one item of the probes' stream.
    pub fn push(&mut self, item: &StreamItem) {
        match item {
            StreamItem::Event(event) => {
                if let Some(netns) = &self.config.netns
                    && !netns.contains(&event.meta().netns)
                {
                    self.counters.events_ignored += 1;
                    return;
                }
                self.counters.events += 1;
                if let netverdict_ebpf::Event::Drop { reason, .. } = event {
                    let reason = reason.clone().unwrap_or_else(|| Arc::from("UNKNOWN"));
                    *self.counters.drops_by_reason.entry(reason).or_default() += 1;
                }
                self.correlator.push(event, &mut self.observations);
                self.annotate_pending();
            }
            StreamItem::Lost { kind, count, cause } => {
                self.counters.events_lost += count;
                let by_kind = match cause {
                    LossCause::RingBufferFull => &mut self.counters.lost.ring_buffer_full,
                    LossCause::DecodeError => &mut self.counters.lost.decode_errors,
                };
                *match kind {
                    EventKind::Tcp => &mut by_kind.tcp,
                    EventKind::Drop => &mut by_kind.drop,
                    EventKind::Udp => &mut by_kind.udp,
                    EventKind::Dns => &mut by_kind.dns,
                    EventKind::Nat => &mut by_kind.nat,
                    EventKind::Unknown => &mut by_kind.unknown,
                } += count;
            }
        }
    }

    /// Closes what timed out and what finished its aggregation window by `now`;
    /// returns the records rendered (also added to the ring).
    pub fn tick(&mut self, now: SystemTime) -> Vec<pb::Flow> {
        self.correlator.expire(now, &mut self.observations);
        self.annotate_pending();
        let mut done = Vec::new();
        self.aggregator.flush(now, &mut done);
        self.render(done)
    }

    /// Closes every open aggregation window now (what correlation still holds,
    /// such as a TCP attempt waiting for its outcome, stays held); returns the
    /// records rendered (also added to the ring).
    pub fn flush_windows(&mut self) -> Vec<pb::Flow> {
        self.annotate_pending();
        let mut done = Vec::new();
        self.aggregator.flush_all(&mut done);
        self.render(done)
    }

    /// Closes everything held (at shutdown).
    pub fn finish(&mut self) -> Vec<pb::Flow> {
        self.correlator.expire(
            SystemTime::now() + Duration::from_secs(86_400),
            &mut self.observations,
        );
        self.annotate_pending();
        let mut done = Vec::new();
        self.aggregator.flush_all(&mut done);
        self.render(done)
    }

    fn annotate_pending(&mut self) {
        if self.observations.is_empty() {
            return;
        }
        let state = self.state.read();
        for obs in self.observations.drain(..) {
            self.counters.annotated += 1;
            self.aggregator.push(self.annotator.annotate(&state, obs));
        }
    }

    fn render(&mut self, records: Vec<Annotated>) -> Vec<pb::Flow> {
        let mut out = Vec::with_capacity(records.len());
        for record in &records {
            self.next_id += 1;
            let flow = self.annotator.render(
                record,
                format!("{}/{}/{}", self.config.node_name, self.run_id, self.next_id),
            );
            self.counters.records += 1;
            if flow.counted_elsewhere {
                self.counters.counted_elsewhere += 1;
                self.ring.push(flow.clone());
                out.push(flow);
                continue;
            }
            let verdict = usize::try_from(flow.verdict() as i32).unwrap_or(0);
            self.counters.by_verdict[verdict.min(VERDICTS - 1)] += 1;
            let outcome = usize::try_from(flow.outcome() as i32).unwrap_or(0);
            self.counters.by_verdict_outcome[verdict.min(VERDICTS - 1)]
                [outcome.min(OUTCOMES - 1)] += 1;
            if flow.mismatch() != pb::Mismatch::None {
                self.counters.mismatches += 1;
                let kind = usize::try_from(flow.mismatch() as i32).unwrap_or(0);
                self.counters.mismatches_by_kind[kind.min(MISMATCHES - 1)] += 1;
            }
            self.ring.push(flow.clone());
            out.push(flow);
        }
        out
    }
}

/// A request to the running pipeline ([`run_with_control`]).
#[derive(Debug)]
pub enum Control {
    /// Take every event already delivered, close every open aggregation window
    /// now, hand the records to the exporter, and answer once they are in the
    /// ring and in the exporter's channel.
    Flush(oneshot::Sender<Flushed>),
    /// Take every event already delivered, then end as if the stream had
    /// ended (everything held is flushed).
    Stop,
}

/// The answer to [`Control::Flush`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Records this flush rendered.
    pub records: u64,
    /// Records handed to the exporter since the pipeline started, this flush's
    /// included: the exporter is done with them when its acknowledged plus
    /// dropped counts reach this.
    pub handed_to_export: u64,
}

/// Runs the pipeline over the probes' stream until it ends, sending every record
/// to `export` (when given). Ends with the stream's error, if any; what was held
/// is flushed either way.
pub async fn run(
    pipeline: &tokio::sync::Mutex<Pipeline>,
    events: mpsc::Receiver<Result<StreamItem, StreamError>>,
    export: Option<mpsc::Sender<pb::Flow>>,
) -> Result<(), StreamError> {
    let (_keep, control) = mpsc::channel(1);
    run_with_control(pipeline, events, export, control).await
}

/// [`run`], also serving [`Control`] requests. A closed control channel is
/// fine: the pipeline runs on until the stream ends.
pub async fn run_with_control(
    pipeline: &tokio::sync::Mutex<Pipeline>,
    mut events: mpsc::Receiver<Result<StreamItem, StreamError>>,
    export: Option<mpsc::Sender<pb::Flow>>,
    mut control: mpsc::Receiver<Control>,
) -> Result<(), StreamError> {
    let tick = pipeline.lock().await.config.tick;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut handed = 0u64;
    let mut control_open = true;
    let result = loop {
        let records = tokio::select! {
            item = events.recv() => match item {
                Some(Ok(item)) => {
                    pipeline.lock().await.push(&item);
                    continue;
                }
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
            _ = ticker.tick() => pipeline.lock().await.tick(SystemTime::now()),
            request = control.recv(), if control_open => match request {
                Some(Control::Flush(reply)) => {
                    let records = {
                        let mut pipeline = pipeline.lock().await;
                        // Events already delivered belong to this flush.
                        let mut failed = None;
                        while let Ok(item) = events.try_recv() {
                            match item {
                                Ok(item) => pipeline.push(&item),
                                Err(e) => {
                                    failed = Some(e);
                                    break;
                                }
                            }
                        }
                        let records = pipeline.flush_windows();
                        if let Some(e) = failed {
                            drop(pipeline);
                            send(&export, records).await;
                            break Err(e);
                        }
                        records
                    };
                    let n = records.len() as u64;
                    handed += send(&export, records).await;
                    // The agent may have stopped waiting.
                    let _ = reply.send(Flushed {
                        records: n,
                        handed_to_export: handed,
                    });
                    continue;
                }
                Some(Control::Stop) => {
                    let mut pipeline = pipeline.lock().await;
                    while let Ok(Ok(item)) = events.try_recv() {
                        pipeline.push(&item);
                    }
                    break Ok(());
                }
                None => {
                    control_open = false;
                    continue;
                }
            },
        };
        handed += send(&export, records).await;
    };
    let records = pipeline.lock().await.finish();
    send(&export, records).await;
    result
}

/// Hands records to the exporter; returns how many it took.
async fn send(export: &Option<mpsc::Sender<pb::Flow>>, records: Vec<pb::Flow>) -> u64 {
    let mut sent = 0;
    if let Some(tx) = export {
        for flow in records {
            if tx.send(flow).await.is_err() {
                break;
            }
            sent += 1;
        }
    }
    sent
}
