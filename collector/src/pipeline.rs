//! The pipeline: runs the stages in order over the probes' event stream —
//! correlate, annotate (against the shared cluster state), aggregate, render —
//! and keeps the last flows in a bounded ring that followers can subscribe to.
//! Lost kernel events and every stage's counters are kept for the metrics.
//!
//! `push` and `tick` are synchronous and take the time as an argument, so tests
//! drive the pipeline without a clock; `run` is the async loop around them.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use netverdict_ebpf::{StreamItem, stream::StreamError};
use netverdict_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc};

use crate::aggregate::{Aggregator, Windows};
use crate::annotate::{Annotated, Annotator};
use crate::cluster::SharedState;
use crate::correlate::{Correlator, Observation, Timeouts};

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
    /// Observations annotated.
    pub annotated: u64,
    /// Records rendered (after aggregation).
    pub records: u64,
    /// Records by verdict: allowed, denied, not evaluated.
    pub by_verdict: [u64; 3],
    /// Records whose kernel outcome contradicts the verdict.
    pub mismatches: u64,
}

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
            run_id: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or_default(),
            observations: Vec::new(),
            config,
            state,
        }
    }

    pub fn counters(&self) -> &PipelineCounters {
        &self.counters
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
                self.correlator.push(event, &mut self.observations);
                self.annotate_pending();
            }
            StreamItem::Lost { count, .. } => self.counters.events_lost += count,
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
            self.counters.by_verdict[match flow.verdict() {
                pb::Verdict::Allowed => 0,
                pb::Verdict::Denied => 1,
                pb::Verdict::Unspecified => 2,
            }] += 1;
            if flow.mismatch() != pb::Mismatch::None {
                self.counters.mismatches += 1;
            }
            self.ring.push(flow.clone());
            out.push(flow);
        }
        out
    }
}

/// Runs the pipeline over the probes' stream until it ends, sending every record
/// to `export` (when given). Ends with the stream's error, if any; what was held
/// is flushed either way.
pub async fn run(
    pipeline: &tokio::sync::Mutex<Pipeline>,
    mut events: mpsc::Receiver<Result<StreamItem, StreamError>>,
    export: Option<mpsc::Sender<pb::Flow>>,
) -> Result<(), StreamError> {
    let tick = pipeline.lock().await.config.tick;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
        };
        send(&export, records).await;
    };
    let records = pipeline.lock().await.finish();
    send(&export, records).await;
    result
}

async fn send(export: &Option<mpsc::Sender<pb::Flow>>, records: Vec<pb::Flow>) {
    if let Some(tx) = export {
        for flow in records {
            if tx.send(flow).await.is_err() {
                return;
            }
        }
    }
}
