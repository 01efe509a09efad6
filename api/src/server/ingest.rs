//! `Ingest.Push`: collectors stream flow batches; each batch is inserted into
//! the store and acknowledged with its sequence number only after `insert`
//! returned Ok, so an acknowledged flow is durable (the collector then forgets
//! it).
//!
//! Up to [`MAX_IN_FLIGHT`] batches of one stream are inserted at once (so the
//! store can fold them into one write instead of paying a round trip per
//! batch), and acknowledged strictly in the order they arrived, so
//! acknowledging `sequence` also covers every earlier batch of the stream, as
//! the exporter expects. When the store fails, the stream ends with
//! `UNAVAILABLE` (`RESOURCE_EXHAUSTED` when the ClickHouse spool is full)
//! after the acknowledgements of the batches before the failed one: the
//! collector reconnects and sends every unacknowledged batch again, with the
//! same flow ids, which the store then holds once. A message the server
//! cannot read (above [`super::ApiConfig::max_message_bytes`]: `OUT_OF_RANGE`)
//! ends the stream the same way, after the batches before it are
//! acknowledged, and the exporter drops that batch for good. On shutdown the
//! server stops reading, acknowledges what it is inserting, then ends the
//! stream.
//!
//! Each flow is checked on its own (`netverdict_proto::validate`): one no
//! store can take (no id, no storable `last_seen`, an out-of-range port), or
//! whose `last_seen` is outside [`super::ApiConfig::time_bounds`] of this
//! server's clock, is refused, logged with its id and field, and counted; the
//! rest of the batch is stored, and the batch's `Ack` says how many were
//! refused (with those the store set aside), so one bad record never wedges a
//! collector. Enum numbers this build does not know (a newer collector) are
//! stored and counted, not refused. New flows are also broadcast to follow
//! streams (only when someone follows).
//!
//! Authorization comes before validation: on a connection whose client
//! certificate binds it to a node (`super::authz`), a batch naming another
//! node, or holding a flow that does, is not looked at further. The batches
//! before it are acknowledged, then the stream ends with `PERMISSION_DENIED`
//! (counted in `ingest_batches_denied`), which refuses that batch for good;
//! nothing of it is stored. A batch that passes has its flows validated one by
//! one as above: a malformed flow never ends the stream.
//!
//! Memory: the batches being inserted are bounded in bytes across streams
//! ([`super::ApiConfig::max_in_flight_bytes`]), each stream holds at most one
//! more batch read and waiting for room, and streams are bounded in number
//! ([`super::ApiConfig::max_streams`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::FuturesOrdered;
use futures::{FutureExt, Stream, StreamExt};
use netverdict_proto::time::UnixNanos;
use netverdict_proto::v1 as pb;
use netverdict_proto::validate::{FlowError, Validity, check_received, validate};
use pb::ingest_server::{Ingest, IngestServer};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::store::{Store, StoreError};

/// Batches of one stream being inserted at once, at most (bytes are bounded
/// across streams by [`super::ApiConfig::max_in_flight_bytes`]).
pub const MAX_IN_FLIGHT: usize = 256;

/// The Ingest service.
pub struct IngestService<S> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> IngestService<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        IngestService { shared }
    }

    /// Wrapped for `tonic::transport::Server::add_service`, accepting
    /// batches up to [`super::ApiConfig::max_message_bytes`].
    pub fn into_server(self) -> IngestServer<Self> {
        let max = self.shared.config.max_message_bytes;
        IngestServer::new(self).max_decoding_message_size(max)
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<pb::Ack, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> Ingest for IngestService<S> {
    type PushStream = AckStream;

    async fn push(
        &self,
        request: Request<Streaming<pb::FlowBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let peer = netverdict_tls::Peer::of(&request).map(|p| p.addr);
        // The node a collector's certificate binds its pushes to (none when
        // the connection is not authenticated by certificate).
        let bound_node = netverdict_tls::authz::bound_node(netverdict_tls::Peer::of(&request))
            .map(str::to_string);
        let Ok(stream_permit) = self.shared.streams.clone().try_acquire_owned() else {
            self.shared.metrics.ingest_streams_refused.inc();
            let max = self.shared.config.max_streams;
            tracing::warn!(?peer, max, "ingest stream refused: too many open");
            return Err(Status::resource_exhausted(format!(
                "this API server takes {max} ingest streams at once (max_streams) and all are open; retry later"
            )));
        };
        let mut inbound = request.into_inner();
        let shared = self.shared.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let _stream_permit = stream_permit;
            let metrics = &shared.metrics;
            metrics.ingest_streams.inc();
            let _open = on_drop(|| {
                metrics.ingest_streams.dec();
            });
            let mut shutdown = shared.shutdown.clone();
            let max_permits = u32::try_from(shared.config.max_in_flight_bytes).unwrap_or(u32::MAX);
            let mut node = String::new();
            let mut in_flight = FuturesOrdered::new();
            // A batch read but not yet admitted, and its wait for permits.
            let mut waiting: Option<Waiting> = None;
            let mut reading = true;
            let mut stopping = false;
            // Why reading stopped, sent once the batches before are acknowledged.
            let mut read_error: Option<Status> = None;
            loop {
                if !reading && in_flight.is_empty() && (waiting.is_none() || stopping) {
                    if stopping {
                        let _ = tx
                            .send(Err(Status::unavailable("API server shutting down")))
                            .await;
                    } else if let Some(status) = read_error {
                        let _ = tx.send(Err(status)).await;
                    }
                    return;
                }
                tokio::select! {
                    // Acknowledgements first: they free room for more batches.
                    biased;
                    Some((sequence, result)) = in_flight.next() => {
                        let result: Result<u64, Status> = result;
                        let ack = result.map(|refused| pb::Ack { sequence, refused });
                        let failed = ack.is_err();
                        if tx.send(ack).await.is_err() || failed {
                            return;
                        }
                    }
                    () = crate::server::stopped(&mut shutdown), if !stopping => {
                        stopping = true;
                        reading = false;
                    }
                    permit = wait_for(&mut waiting), if waiting.is_some() && !stopping => {
                        if let Some(mut admitted) = waiting.take() {
                            let batch = std::mem::take(&mut admitted.batch);
                            drop(admitted);
                            let sequence = batch.sequence;
                            in_flight.push_back(handle(&shared, batch).map(move |result| {
                                drop(permit);
                                (sequence, result)
                            }));
                        }
                    }
                    message = inbound.message(),
                        if reading && waiting.is_none() && in_flight.len() < MAX_IN_FLIGHT =>
                    {
                        // Authorization first, before any flow is looked
                        // at: the batches before are acknowledged, then the
                        // stream ends with PERMISSION_DENIED, so this batch
                        // is the first unacknowledged one (the exporter
                        // drops it for good), and nothing of it is stored.
                        let denied = match (&message, &bound_node) {
                            (Ok(Some(batch)), Some(bound)) => {
                                super::authz::check_batch(bound, batch).err()
                            }
                            _ => None,
                        };
                        match (message, denied) {
                            (Ok(Some(_)), Some(status)) => {
                                metrics.ingest_batches_denied.inc();
                                tracing::warn!(?peer, %status, "ingest refused");
                                reading = false;
                                read_error = Some(status);
                            }
                            (Ok(Some(batch)), None) => {
                                if node != batch.node_name {
                                    node.clone_from(&batch.node_name);
                                    tracing::info!(node, ?peer, "collector connected");
                                }
                                let permits = u32::try_from(batch.encoded_len())
                                    .unwrap_or(u32::MAX)
                                    .clamp(1, max_permits);
                                let wait = Box::pin(
                                    shared.in_flight_bytes.clone().acquire_many_owned(permits),
                                );
                                waiting = Some(Waiting::new(
                                    batch,
                                    wait,
                                    &metrics.ingest_batches_waiting,
                                ));
                            }
                            (Ok(None), _) => {
                                tracing::debug!(node, ?peer, "ingest stream ended by the collector");
                                reading = false;
                            }
                            (Err(status), _) => {
                                // Acknowledge what came before, then say why.
                                tracing::info!(node, ?peer, %status, "ingest stream failed");
                                reading = false;
                                read_error = Some(status);
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A batch's wait for its share of [`super::ApiConfig::max_in_flight_bytes`].
type PermitWait =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, tokio::sync::AcquireError>> + Send>>;

/// A batch read from a stream and waiting for its permits; counted in
/// `ingest_batches_waiting` until admitted or dropped.
struct Waiting {
    batch: pb::FlowBatch,
    wait: PermitWait,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Waiting {
    fn new(
        batch: pb::FlowBatch,
        wait: PermitWait,
        gauge: &prometheus_client::metrics::gauge::Gauge,
    ) -> Waiting {
        gauge.inc();
        Waiting {
            batch,
            wait,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Waits for the permits of the waiting batch (the semaphore is never closed).
async fn wait_for(waiting: &mut Option<Waiting>) -> Option<OwnedSemaphorePermit> {
    match waiting {
        Some(w) => w.wait.as_mut().await.ok(),
        None => std::future::pending().await,
    }
}

/// Why ingest refuses one flow.
fn refusal(
    shared_bounds: &netverdict_proto::validate::TimeBounds,
    now: UnixNanos,
    flow: &pb::Flow,
) -> Result<bool, FlowError> {
    let unknown_enums = match validate(flow) {
        Validity::Invalid(e) => return Err(e),
        Validity::UnknownEnums(_) => true,
        Validity::Valid => false,
    };
    check_received(flow, now, shared_bounds)?;
    Ok(unknown_enums)
}

/// Stores one batch; Ok holds how many of its flows were refused (invalid,
/// or set aside by the store); Err ends the stream without acknowledging it.
async fn handle<S: Store>(shared: &Shared<S>, batch: pb::FlowBatch) -> Result<u64, Status> {
    let metrics = &shared.metrics;
    metrics.ingest_batches.inc();
    metrics.ingest_flows.inc_by(batch.flows.len() as u64);
    let now = UnixNanos::now();
    let mut refused = 0u64;
    let mut flows = batch.flows;
    flows.retain(|flow| match refusal(&shared.config.time_bounds, now, flow) {
        Ok(unknown_enums) => {
            if unknown_enums {
                metrics.ingest_unknown_enum_flows.inc();
            }
            true
        }
        Err(e) => {
            refused += 1;
            // One line per batch at warn; the others at debug.
            if refused == 1 {
                tracing::warn!(
                    node = batch.node_name,
                    sequence = batch.sequence,
                    flow = flow.id,
                    field = e.field,
                    problem = %e.problem,
                    "flow refused"
                );
            } else {
                tracing::debug!(flow = flow.id, field = e.field, problem = %e.problem, "flow refused");
            }
            false
        }
    });
    metrics.ingest_invalid_flows.inc_by(refused);
    if flows.is_empty() {
        return Ok(refused);
    }
    let followed: Option<Vec<Arc<pb::Flow>>> =
        (shared.flows.receiver_count() > 0).then(|| flows.iter().cloned().map(Arc::new).collect());
    let started = Instant::now();
    let result = shared.store.insert(flows).await;
    metrics
        .store_insert_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(outcome) => {
            metrics.ingest_duplicates.inc_by(outcome.duplicates as u64);
            metrics
                .ingest_rejected_flows
                .inc_by(outcome.rejected as u64);
            // A batch sent again holds flows followers have seen; a partly
            // duplicate batch (rare) is sent whole.
            if outcome.stored > 0
                && let Some(flows) = followed
            {
                for flow in flows {
                    // No follower left is fine.
                    let _ = shared.flows.send(flow);
                }
            }
            Ok(refused + outcome.rejected as u64)
        }
        Err(e) => {
            metrics.store_insert_errors.inc();
            tracing::warn!(
                node = batch.node_name,
                sequence = batch.sequence,
                error = %e,
                "store insert failed; batch not acknowledged"
            );
            Err(match e {
                StoreError::InvalidFlow(_) => Status::invalid_argument(e.to_string()),
                StoreError::Full { .. } => Status::resource_exhausted(e.to_string()),
                StoreError::Backend { .. } => Status::unavailable(e.to_string()),
            })
        }
    }
}

/// Runs `f` when dropped.
pub(crate) fn on_drop<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
