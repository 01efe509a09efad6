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
//! `UNAVAILABLE` after the acknowledgements of the batches before the failed
//! one: the collector reconnects and sends every unacknowledged batch again,
//! with the same flow ids, which the store then holds once. On shutdown the
//! server stops reading, acknowledges what it is inserting, then ends the
//! stream.
//!
//! Flows no store can take (`netverdict_proto::validate::check_storable`: no
//! id, no storable `last_seen`, an out-of-range port or an unknown enum
//! number) are dropped before the insert, logged with their id and field and
//! counted, so one bad record cannot wedge a collector resending it forever. New flows are also
//! broadcast to follow streams (only when someone follows).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::FuturesOrdered;
use futures::{FutureExt, Stream, StreamExt};
use netverdict_proto::v1 as pb;
use netverdict_proto::validate::check_storable;
use pb::ingest_server::{Ingest, IngestServer};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::store::{Store, StoreError};

/// Batches of one stream being inserted at once, at most (flows are bounded
/// across streams by [`super::ApiConfig::max_in_flight_flows`]).
pub const MAX_IN_FLIGHT: usize = 256;

/// The Ingest service.
pub struct IngestService<S> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> IngestService<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        IngestService { shared }
    }

    /// Wrapped for `tonic::transport::Server::add_service`, accepting large batches.
    pub fn into_server(self) -> IngestServer<Self> {
        IngestServer::new(self).max_decoding_message_size(64 * 1024 * 1024)
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
        let mut inbound = request.into_inner();
        let shared = self.shared.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let metrics = &shared.metrics;
            metrics.ingest_streams.inc();
            let _open = on_drop(|| {
                metrics.ingest_streams.dec();
            });
            let mut shutdown = shared.shutdown.clone();
            let max_permits = u32::try_from(shared.max_in_flight_flows).unwrap_or(u32::MAX);
            let mut node = String::new();
            let mut in_flight = FuturesOrdered::new();
            // A batch read but not yet admitted, and its wait for permits.
            let mut waiting: Option<Waiting> = None;
            let mut reading = true;
            let mut stopping = false;
            loop {
                if !reading && in_flight.is_empty() && (waiting.is_none() || stopping) {
                    if stopping {
                        let _ = tx
                            .send(Err(Status::unavailable("API server shutting down")))
                            .await;
                    }
                    return;
                }
                tokio::select! {
                    // Acknowledgements first: they free room for more batches.
                    biased;
                    Some((sequence, result)) = in_flight.next() => {
                        let result: Result<(), Status> = result;
                        let ack = result.map(|()| pb::Ack { sequence });
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
                        match message {
                            Ok(Some(batch)) => {
                                if let Some(bound) = &bound_node
                                    && let Err(status) = super::authz::check_batch(bound, &batch)
                                {
                                    tracing::warn!(?peer, %status, "ingest refused");
                                    let _ = tx.send(Err(status)).await;
                                    return;
                                }
                                if node != batch.node_name {
                                    node.clone_from(&batch.node_name);
                                    tracing::info!(node, ?peer, "collector connected");
                                }
                                let permits = u32::try_from(batch.flows.len())
                                    .unwrap_or(u32::MAX)
                                    .min(max_permits);
                                let wait = Box::pin(
                                    shared.in_flight_flows.clone().acquire_many_owned(permits),
                                );
                                waiting = Some(Waiting::new(
                                    batch,
                                    wait,
                                    &metrics.ingest_batches_waiting,
                                ));
                            }
                            Ok(None) => {
                                tracing::debug!(node, ?peer, "ingest stream ended by the collector");
                                reading = false;
                            }
                            Err(status) => {
                                tracing::info!(node, ?peer, %status, "ingest stream failed");
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A batch's wait for its share of [`super::ApiConfig::max_in_flight_flows`].
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

/// Stores one batch; Err ends the stream without acknowledging it.
async fn handle<S: Store>(shared: &Shared<S>, batch: pb::FlowBatch) -> Result<(), Status> {
    let metrics = &shared.metrics;
    metrics.ingest_batches.inc();
    metrics.ingest_flows.inc_by(batch.flows.len() as u64);
    let mut flows = batch.flows;
    flows.retain(|flow| match check_storable(flow) {
        Ok(()) => true,
        Err(e) => {
            metrics.ingest_invalid_flows.inc();
            tracing::warn!(
                node = batch.node_name,
                sequence = batch.sequence,
                flow = flow.id,
                field = e.field,
                problem = %e.problem,
                "flow rejected"
            );
            false
        }
    });
    if flows.is_empty() {
        return Ok(());
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
            Ok(())
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
