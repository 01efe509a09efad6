//! The Observer gRPC service over the collector's ring of recent flows.
//!
//! `GetFlows` compiles the request's filters once ([`FilterSet`]) and its
//! window ([`TimeWindow`], `[since, until)` on `last_seen`, as the API server's
//! stores apply it); a bad value of either is `INVALID_ARGUMENT` naming the
//! field and the value. It takes the matching held flows in the window and,
//! with `follow`, the flows published after them, each exactly once
//! ([`RingReader::follow`]: the subscription is made before the snapshot is
//! taken, and what the snapshot holds is skipped).
//!
//! The service reads the ring through a [`RingReader`]: the last published
//! snapshot, taken without waiting for the pipeline (whose lock a request
//! never touches), filtered and copied in the request's own task. Parallel
//! requests therefore cannot starve event handling.
//!
//! A follower that falls behind the broadcast (it holds as many flows as the
//! ring, at least 16) is not silently skipped ahead: its stream ends with
//! `RESOURCE_EXHAUSTED`, naming how many flows it missed, and the client can
//! reconnect with `since`. Each such end is counted ([`ObserverService::lagged`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use netverdict_proto::filter::FilterSet;
use netverdict_proto::time::{TimeWindow, UnixNanos};
use netverdict_proto::v1 as pb;
use pb::observer_server::{Observer, ObserverServer};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::pipeline::{RingFollower, RingReader, RingSnapshot};

/// How many flows `GetFlows` sends when `number` is 0 and `follow` is not set.
pub const DEFAULT_NUMBER: u64 = 20;

/// The Observer service of one collector. Clones share the ring and the
/// lag counter, so one can be kept to read [`lagged`](Self::lagged).
#[derive(Debug, Clone)]
pub struct ObserverService {
    ring: RingReader,
    lagged: Arc<AtomicU64>,
}

impl ObserverService {
    /// A service reading `ring`.
    pub fn new(ring: RingReader) -> Self {
        ObserverService {
            ring,
            lagged: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The service, wrapped for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> ObserverServer<Self> {
        ObserverServer::new(self)
    }

    /// How many follow streams ended because the follower fell behind.
    pub fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }
}

type FlowStream = Pin<Box<dyn Stream<Item = Result<pb::GetFlowsResponse, Status>> + Send>>;

/// The positions in `snapshot` of the flows a request asks for: matching,
/// the first or last `limit` of them (all when None), oldest first.
fn pick(
    snapshot: &RingSnapshot,
    filters: &FilterSet,
    window: &TimeWindow,
    limit: Option<usize>,
    first: bool,
) -> Vec<usize> {
    let matching = snapshot
        .flows()
        .enumerate()
        .filter(|(_, f)| window.contains_flow(f) && filters.matches(f))
        .map(|(i, _)| i);
    match (limit, first) {
        (Some(n), true) => matching.take(n).collect(),
        (Some(n), false) => {
            let mut last: Vec<usize> = matching.rev().take(n).collect();
            last.reverse();
            last
        }
        (None, _) => matching.collect(),
    }
}

#[tonic::async_trait]
impl Observer for ObserverService {
    type GetFlowsStream = FlowStream;

    async fn get_flows(
        &self,
        request: Request<pb::GetFlowsRequest>,
    ) -> Result<Response<FlowStream>, Status> {
        let req = request.into_inner();
        let filters = FilterSet::compile(&req.include, &req.exclude)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if req.first && req.follow {
            return Err(Status::invalid_argument(
                "first and follow together: follow continues after the last flows",
            ));
        }
        let window = TimeWindow::from_request(req.since.as_ref(), req.until.as_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A follow starts from now unless history is asked for (number or
        // since), as on the API server (observer.proto).
        let limit = match (req.number, req.follow, req.since.is_some()) {
            (0, false, _) => Some(DEFAULT_NUMBER),
            (0, true, false) => Some(0),
            (0, true, true) => None,
            (n, _, _) => Some(n),
        };
        let limit = limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let (snapshot, follower) = if req.follow {
            let (snapshot, follower) = self.ring.follow();
            (snapshot, Some(follower))
        } else {
            (self.ring.snapshot(), None)
        };
        let (tx, rx) = mpsc::channel(64);
        let lagged = self.lagged.clone();
        let first = req.first;
        tokio::spawn(async move {
            for i in pick(&snapshot, &filters, &window, limit, first) {
                let Some(flow) = snapshot.get(i) else {
                    continue;
                };
                let response = pb::GetFlowsResponse {
                    flow: Some(flow.clone()),
                };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
            drop(snapshot);
            if let Some(follower) = follower {
                follow(follower, filters, window, tx, lagged).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn server_status(
        &self,
        _request: Request<pb::ServerStatusRequest>,
    ) -> Result<Response<pb::ServerStatusResponse>, Status> {
        let ring = self.ring.snapshot();
        let oldest = ring
            .flows()
            .filter_map(|f| f.first_seen.as_ref())
            .min_by_key(|t| UnixNanos::from_timestamp(t))
            .cloned();
        let newest = ring
            .flows()
            .filter_map(|f| f.last_seen.as_ref())
            .max_by_key(|t| UnixNanos::from_timestamp(t))
            .cloned();
        Ok(Response::new(pb::ServerStatusResponse {
            flows_stored: ring.len() as u64,
            flows_dropped: ring.evicted(),
            oldest,
            newest,
            ..Default::default()
        }))
    }
}

/// Sends new matching flows until the client goes away or the ring closes; a
/// lagging follower's stream ends with `RESOURCE_EXHAUSTED`.
async fn follow(
    mut follower: RingFollower,
    filters: FilterSet,
    window: TimeWindow,
    tx: mpsc::Sender<Result<pb::GetFlowsResponse, Status>>,
    lagged: Arc<AtomicU64>,
) {
    loop {
        let received = tokio::select! {
            received = follower.recv() => received,
            () = tx.closed() => return,
        };
        match received {
            Ok(flow) => {
                if window.contains_flow(&flow)
                    && filters.matches(&flow)
                    && tx
                        .send(Ok(pb::GetFlowsResponse {
                            flow: Some((*flow).clone()),
                        }))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                lagged.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(missed, "observer follower fell behind; ending its stream");
                let _ = tx
                    .send(Err(Status::resource_exhausted(format!(
                        "follower fell behind: {missed} flows missed; reconnect with since"
                    ))))
                    .await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Pipeline, PipelineConfig};
    use netverdict_cluster::SharedState;
    use tokio::sync::Mutex;

    #[tokio::test]
    async fn serves_a_shared_pipeline() {
        let pipeline = Pipeline::new(PipelineConfig::default(), SharedState::default());
        let service = ObserverService::new(pipeline.ring().reader());
        let status = service
            .server_status(Request::new(pb::ServerStatusRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((status.flows_stored, status.flows_dropped), (0, 0));
        assert_eq!(status.oldest, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn get_flows_answers_while_the_pipeline_holds_its_lock() {
        let pipeline = Arc::new(Mutex::new(Pipeline::new(
            PipelineConfig::default(),
            SharedState::default(),
        )));
        let service = ObserverService::new(pipeline.lock().await.ring().reader());
        // The pipeline busy with a long batch of events.
        let _busy = pipeline.lock().await;
        let request = pb::GetFlowsRequest {
            number: 100,
            ..Default::default()
        };
        let reply = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            service.get_flows(Request::new(request)),
        )
        .await;
        assert!(reply.is_ok(), "GetFlows waited for the pipeline's lock");
        let status = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            service.server_status(Request::new(pb::ServerStatusRequest {})),
        )
        .await;
        assert!(
            status.is_ok(),
            "ServerStatus waited for the pipeline's lock"
        );
    }
}
