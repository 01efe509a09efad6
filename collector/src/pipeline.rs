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
use crate::policy_verdicts::PolicyVerdicts;
use crate::resolved_names::{ResolvedNames, ResolvedNamesConfig};
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
    /// What the open aggregation records may take, estimated; past it the
    /// records whose windows end first are closed early (counted).
    pub aggregation_max_bytes: usize,
    /// What correlation may hold (attempts waiting for their outcome, queries
    /// for their response, drops and NATs for their attempt), estimated;
    /// past it the oldest eighth is reported as it is (counted).
    pub correlation_max_bytes: usize,
    /// How often `run` expires held flows and flushes aggregation windows.
    pub tick: Duration,
    /// Only events of these network namespaces (inode numbers), when set: the
    /// pods of a lab, or of one node agent's containers. Others are counted as
    /// ignored.
    pub netns: Option<rustc_hash::FxHashSet<u32>>,
    /// Policies with their own `policy_verdicts` series; past it, `_other`.
    pub max_policy_series: usize,
    /// The names of outside addresses, as the pods resolved them.
    pub resolved_names: ResolvedNamesConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            node_name: "node".into(),
            timeouts: Timeouts::default(),
            windows: Windows::default(),
            ring_capacity: 10_000,
            aggregation_max_bytes: crate::aggregate::DEFAULT_MAX_BYTES,
            correlation_max_bytes: crate::correlate::DEFAULT_MAX_BYTES,
            tick: Duration::from_millis(500),
            netns: None,
            max_policy_series: crate::policy_verdicts::DEFAULT_MAX_POLICIES,
            resolved_names: ResolvedNamesConfig::default(),
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
    /// Attempts by the policies that decided them, direction and verdict.
    pub policy_verdicts: PolicyVerdicts,
}

/// How many protobuf `Verdict` values there are.
pub const VERDICTS: usize = <pb::Verdict as EnumName>::ALL.len();
/// How many protobuf `Outcome` values there are.
pub const OUTCOMES: usize = <pb::Outcome as EnumName>::ALL.len();
/// How many protobuf `Mismatch` values there are.
pub const MISMATCHES: usize = <pb::Mismatch as EnumName>::ALL.len();

/// A flow and its place in the ring's history (the number of flows pushed
/// before it).
pub type Sequenced = (u64, Arc<pb::Flow>);

/// The last flows, bounded, written by the pipeline and read by any number of
/// readers that never wait for it.
///
/// The pipeline [`push`](Self::push)es flows, then [`publish`](Self::publish)es
/// them (at the end of each tick and flush, and whenever a ring's worth is
/// waiting): the ring's content becomes a new immutable [`RingSnapshot`]
/// behind an `Arc`, swapped in under a lock held only to replace or clone that
/// `Arc`, and the new flows go to followers. Readers ([`RingReader`]) take
/// the last snapshot and filter or copy it at their leisure; the pipeline's
/// own lock is never involved.
#[derive(Debug)]
pub struct FlowRing {
    flows: VecDeque<Arc<pb::Flow>>,
    capacity: usize,
    /// Flows pushed since the ring was made: the next flow's sequence number.
    pushed: u64,
    evicted: u64,
    /// Flows pushed since the last publish.
    unpublished: Vec<Sequenced>,
    shared: Arc<RingShared>,
}

#[derive(Debug)]
struct RingShared {
    snapshot: std::sync::RwLock<Arc<RingSnapshot>>,
    followers: broadcast::Sender<Sequenced>,
}

/// The ring's content when it was last published.
#[derive(Debug, Default)]
pub struct RingSnapshot {
    flows: Vec<Arc<pb::Flow>>,
    /// The sequence number of the first flow published after this snapshot.
    next: u64,
    evicted: u64,
}

impl RingSnapshot {
    /// The flows held, oldest first.
    pub fn flows(&self) -> impl DoubleEndedIterator<Item = &pb::Flow> + ExactSizeIterator {
        self.flows.iter().map(|f| &**f)
    }

    /// The flow at `index` (0 is the oldest).
    pub fn get(&self, index: usize) -> Option<&pb::Flow> {
        self.flows.get(index).map(|f| &**f)
    }

    /// How many flows are held.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// How many flows had been evicted to make room.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

/// Reads a [`FlowRing`] from anywhere, without waiting for its writer.
#[derive(Clone, Debug)]
pub struct RingReader {
    shared: Arc<RingShared>,
}

impl RingReader {
    /// The ring as last published.
    pub fn snapshot(&self) -> Arc<RingSnapshot> {
        self.shared
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The ring as last published and every flow published after it, each
    /// once: the follower subscribes before the snapshot is taken and skips
    /// what the snapshot already holds.
    pub fn follow(&self) -> (Arc<RingSnapshot>, RingFollower) {
        let receiver = self.shared.followers.subscribe();
        let snapshot = self.snapshot();
        let follower = RingFollower {
            receiver,
            next: snapshot.next,
        };
        (snapshot, follower)
    }
}

/// The flows published after a snapshot ([`RingReader::follow`]).
#[derive(Debug)]
pub struct RingFollower {
    receiver: broadcast::Receiver<Sequenced>,
    next: u64,
}

impl RingFollower {
    /// The next flow; `Lagged` when the follower fell so far behind that
    /// flows were missed (it holds as many as the ring, at least 16).
    pub async fn recv(&mut self) -> Result<Arc<pb::Flow>, broadcast::error::RecvError> {
        loop {
            let (seq, flow) = self.receiver.recv().await?;
            if seq >= self.next {
                return Ok(flow);
            }
        }
    }
}

impl FlowRing {
    pub fn new(capacity: usize) -> Self {
        let (followers, _) = broadcast::channel(capacity.clamp(16, 65_536));
        FlowRing {
            flows: VecDeque::with_capacity(capacity.min(65_536)),
            capacity: capacity.max(1),
            pushed: 0,
            evicted: 0,
            unpublished: Vec::new(),
            shared: Arc::new(RingShared {
                snapshot: std::sync::RwLock::new(Arc::default()),
                followers,
            }),
        }
    }

    /// A reader of this ring.
    pub fn reader(&self) -> RingReader {
        RingReader {
            shared: self.shared.clone(),
        }
    }

    /// Adds a flow, evicting the oldest when full; readers see it once
    /// published (at once when a ring's worth is waiting).
    pub fn push(&mut self, flow: pb::Flow) {
        if self.flows.len() == self.capacity {
            self.flows.pop_front();
            self.evicted += 1;
        }
        let flow = Arc::new(flow);
        self.unpublished.push((self.pushed, flow.clone()));
        self.pushed += 1;
        self.flows.push_back(flow);
        if self.unpublished.len() >= self.capacity {
            self.publish();
        }
    }

    /// Makes the flows pushed so far visible to readers: a new snapshot,
    /// then the new flows to followers (in that order, so that a follower
    /// that subscribed in between finds them in its snapshot).
    pub fn publish(&mut self) {
        if self.unpublished.is_empty() {
            return;
        }
        let snapshot = Arc::new(RingSnapshot {
            flows: self.flows.iter().cloned().collect(),
            next: self.pushed,
            evicted: self.evicted,
        });
        *self
            .shared
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = snapshot;
        for flow in self.unpublished.drain(..) {
            // No follower is not an error.
            let _ = self.shared.followers.send(flow);
        }
    }

    /// The flows held, oldest first (published or not).
    pub fn flows(&self) -> impl Iterator<Item = &pb::Flow> {
        self.flows.iter().map(|f| &**f)
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

/// What the stages that hold flows hold, and what their bounds made them let
/// go of ([`Pipeline::held`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Flows correlation holds (attempts, queries, drops waiting for them).
    pub correlation_flows: u64,
    /// What they take, estimated.
    pub correlation_bytes: u64,
    /// Flows correlation reported before their outcome to stay within its
    /// bound, since start.
    pub correlation_evicted: u64,
    /// Open aggregation records.
    pub aggregation_records: u64,
    /// What they take, estimated.
    pub aggregation_bytes: u64,
    /// Records closed before their window ended to stay within the bound,
    /// since start.
    pub aggregation_evicted: u64,
}

/// How much longer than correlation holds a flow the policy sets a change
/// replaced are kept.
const POLICY_RETENTION_MARGIN: Duration = Duration::from_secs(30);

/// The stages and their state.
#[derive(Debug)]
pub struct Pipeline {
    config: PipelineConfig,
    state: SharedState,
    correlator: Correlator,
    annotator: Annotator,
    aggregator: Aggregator,
    /// What addresses the pods' DNS answers named.
    names: ResolvedNames,
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
        // A flow is judged by the policies in effect when it started, however
        // long correlation held it (a query waiting for its answer when a
        // default-deny lands): the state keeps the sets changes replace for
        // that long, and a tick and a margin more.
        let held = config
            .timeouts
            .longest()
            .saturating_add(config.tick)
            .saturating_add(POLICY_RETENTION_MARGIN);
        state.update(|s| s.set_policy_retention(held));
        Pipeline {
            correlator: Correlator::with_bound(
                config.timeouts.clone(),
                config.correlation_max_bytes,
            ),
            annotator: Annotator::new(config.node_name.clone()),
            aggregator: Aggregator::new(config.windows.clone(), config.aggregation_max_bytes),
            // A flow annotated late is named by the answers of its start.
            names: ResolvedNames::new(config.resolved_names.clone(), held),
            ring: FlowRing::new(config.ring_capacity),
            counters: PipelineCounters {
                policy_verdicts: PolicyVerdicts::with_cap(config.max_policy_series),
                ..Default::default()
            },
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

    /// The resolved-names map's counters and how many pairs it holds.
    pub fn resolved_names(&self) -> (crate::resolved_names::ResolvedNamesStats, usize) {
        (self.names.stats(), self.names.len())
    }

    /// The correlation stage's counters.
    pub fn correlation(&self) -> &crate::correlate::CorrelationStats {
        self.correlator.stats()
    }

    /// What the stages that hold flows hold now, and what their bounds made
    /// them let go of.
    pub fn held(&self) -> Held {
        Held {
            correlation_flows: self.correlator.pending() as u64,
            correlation_bytes: self.correlator.bytes() as u64,
            correlation_evicted: self.correlator.stats().evicted,
            aggregation_records: self.aggregator.open() as u64,
            aggregation_bytes: self.aggregator.bytes() as u64,
            aggregation_evicted: self.aggregator.evicted(),
        }
    }

    pub fn ring(&self) -> &FlowRing {
        &self.ring
    }

    /// Takes one item of the probes' stream; returns the records it closed
    /// early (also added to the ring).
    pub fn push(&mut self, item: &StreamItem) -> Vec<pb::Flow> {
        match item {
            StreamItem::Event(event) => {
                if let Some(netns) = &self.config.netns
                    && !netns.contains(&event.meta().netns)
                {
                    self.counters.events_ignored += 1;
                    return Vec::new();
                }
                self.counters.events += 1;
                match event {
                    netverdict_ebpf::Event::Drop { reason, .. } => {
                        let reason = reason.clone().unwrap_or_else(|| Arc::from("UNKNOWN"));
                        *self.counters.drops_by_reason.entry(reason).or_default() += 1;
                    }
                    // An answer names addresses for the client it goes to.
                    netverdict_ebpf::Event::Dns {
                        meta,
                        tuple,
                        message,
                    } if message.response && !message.records.is_empty() => {
                        if let Some(name) = &message.name {
                            let addresses = message.resolved_addresses();
                            self.names
                                .learn(tuple.dst.ip(), name, &addresses, meta.time);
                        }
                    }
                    _ => {}
                }
                self.correlator.push(event, &mut self.observations);
                let mut closed = Vec::new();
                self.annotate_pending(&mut closed);
                if !closed.is_empty() {
                    return self.render(closed);
                }
            }
            StreamItem::Lost { kind, count, cause } => {
                self.counters.events_lost = self.counters.events_lost.saturating_add(*count);
                let by_kind = match cause {
                    LossCause::RingBufferFull => &mut self.counters.lost.ring_buffer_full,
                    LossCause::DecodeError => &mut self.counters.lost.decode_errors,
                };
                let slot = match kind {
                    EventKind::Tcp => &mut by_kind.tcp,
                    EventKind::Drop => &mut by_kind.drop,
                    EventKind::Udp => &mut by_kind.udp,
                    EventKind::Dns => &mut by_kind.dns,
                    EventKind::Nat => &mut by_kind.nat,
                    EventKind::Icmp => &mut by_kind.icmp,
                    EventKind::Unknown => &mut by_kind.unknown,
                };
                *slot = slot.saturating_add(*count);
            }
        }
        Vec::new()
    }

    /// Closes what timed out and what finished its aggregation window by `now`;
    /// returns the records rendered (also added to the ring).
    pub fn tick(&mut self, now: SystemTime) -> Vec<pb::Flow> {
        self.correlator.expire(now, &mut self.observations);
        self.names.expire(now);
        let mut done = Vec::new();
        self.annotate_pending(&mut done);
        self.aggregator.flush(now, &mut done);
        let flows = self.render(done);
        self.ring.publish();
        flows
    }

    /// Closes every open aggregation window now (what correlation still holds,
    /// such as a TCP attempt waiting for its outcome, stays held); returns the
    /// records rendered (also added to the ring).
    pub fn flush_windows(&mut self) -> Vec<pb::Flow> {
        let mut done = Vec::new();
        self.annotate_pending(&mut done);
        self.aggregator.flush_all(&mut done);
        let flows = self.render(done);
        self.ring.publish();
        flows
    }

    /// Closes everything held (at shutdown).
    pub fn finish(&mut self) -> Vec<pb::Flow> {
        self.correlator.expire_all(&mut self.observations);
        let mut done = Vec::new();
        self.annotate_pending(&mut done);
        self.aggregator.flush_all(&mut done);
        let flows = self.render(done);
        self.ring.publish();
        flows
    }

    /// Annotates what correlation completed and aggregates it; records the
    /// aggregator's bound closed early go to `closed`.
    fn annotate_pending(&mut self, closed: &mut Vec<Annotated>) {
        if self.observations.is_empty() {
            return;
        }
        let state = self.state.read();
        for obs in self.observations.drain(..) {
            self.counters.annotated += 1;
            let names = &mut self.names;
            let annotated = self
                .annotator
                .annotate_named(&state, obs, |src, dst, at| names.lookup(src, dst, at));
            self.aggregator.push(annotated, closed);
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
            self.counters.policy_verdicts.count(&flow);
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
                // Records the bounds closed early, usually none.
                Some(Ok(item)) => pipeline.lock().await.push(&item),
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
                        let mut records = Vec::new();
                        while let Ok(item) = events.try_recv() {
                            match item {
                                Ok(item) => records.extend(pipeline.push(&item)),
                                Err(e) => {
                                    failed = Some(e);
                                    break;
                                }
                            }
                        }
                        records.extend(pipeline.flush_windows());
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
                    let mut records = Vec::new();
                    {
                        let mut pipeline = pipeline.lock().await;
                        while let Ok(Ok(item)) = events.try_recv() {
                            records.extend(pipeline.push(&item));
                        }
                    }
                    send(&export, records).await;
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use netverdict_ebpf::{Event, FiveTuple, IpProtocol, Meta, TrafficDirection};
    use netverdict_proto::time::UnixNanos;

    use super::*;

    /// A UDP flow to a port of its own (flows to one port would be merged).
    fn udp(time: SystemTime, port: u16) -> StreamItem {
        StreamItem::Event(Event::Udp {
            meta: Meta {
                time,
                mono_ns: 1,
                netns: 4026532000,
                ifindex: None,
                direction: TrafficDirection::Egress,
            },
            tuple: FiveTuple {
                protocol: IpProtocol::Udp,
                src: SocketAddr::new("10.244.0.7".parse().unwrap(), 40000),
                dst: SocketAddr::new("10.244.0.2".parse().unwrap(), port),
            },
            packets: 1,
            bytes: 64,
        })
    }

    #[test]
    fn kernel_loss_counts_saturate() {
        let mut pipeline = Pipeline::new(PipelineConfig::default(), SharedState::default());
        for _ in 0..2 {
            pipeline.push(&StreamItem::Lost {
                kind: EventKind::Dns,
                count: u64::MAX - 1,
                cause: LossCause::RingBufferFull,
            });
        }
        assert_eq!(pipeline.counters().events_lost, u64::MAX);
        assert_eq!(pipeline.counters().lost.ring_buffer_full.dns, u64::MAX);
    }

    #[test]
    fn the_first_and_last_moments_a_clock_holds_never_panic() {
        let last = SystemTime::UNIX_EPOCH + Duration::new(i64::MAX as u64, 999_999_999);
        let first =
            SystemTime::UNIX_EPOCH - Duration::new(i64::MAX as u64, 0) - Duration::from_secs(1);
        let mut pipeline = Pipeline::new(PipelineConfig::default(), SharedState::default());
        let mut flows = Vec::new();
        for (i, time) in [first, last, SystemTime::UNIX_EPOCH]
            .into_iter()
            .enumerate()
        {
            flows.extend(pipeline.push(&udp(time, 5000 + i as u16)));
            flows.extend(pipeline.tick(SystemTime::now()));
        }
        flows.extend(pipeline.finish());
        assert_eq!(flows.len(), 3, "{flows:#?}");
        let seen: Vec<UnixNanos> = flows
            .iter()
            .map(|f| UnixNanos::from_timestamp(f.first_seen.as_ref().unwrap()))
            .collect();
        assert!(seen.contains(&UnixNanos::EPOCH));
        assert!(seen.contains(&UnixNanos::from_system(last)));
        // The first moment is before any Timestamp: it saturates.
        assert!(seen.iter().any(|t| t.as_i128() < 0));
    }
}
