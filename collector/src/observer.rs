//! The Observer gRPC service over the collector's ring of recent flows.
//!
//! `GetFlows` compiles the request's filters once ([`FilterSet`]) and its
//! window ([`TimeWindow`], `[since, until)` on `last_seen`, as the API server's
//! stores apply it); a bad value of either is `INVALID_ARGUMENT` naming the
//! field and the value. It takes the matching held flows in the window and,
//! with `follow`, subscribes to new
//! flows *under the same lock* as the snapshot, so a follower sees every flow
//! exactly once: held ones from the snapshot, later ones from the broadcast.
//!
//! A follower that falls behind the broadcast (it holds as many flows as the
//! ring, at least 16) is not silently skipped ahead: its stream ends with
//! `RESOURCE_EXHAUSTED`, naming how many flows it missed, and the client can
//! reconnect with `since`. Each such end is counted ([`ObserverService::lagged`]).
//!
//! The service reads the ring through [`RingSource`], a one-method seam: the
//! daemon shares its [`Pipeline`], tests share a bare [`FlowRing`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use netverdict_proto::filter::FilterSet;
use netverdict_proto::time::{TimeWindow, UnixNanos};
use netverdict_proto::v1 as pb;
use pb::observer_server::{Observer, ObserverServer};
use tokio::sync::{Mutex, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::pipeline::{FlowRing, Pipeline};

/// How many flows `GetFlows` sends when `number` is 0 and `follow` is not set.
pub const DEFAULT_NUMBER: u64 = 20;

/// Gives the service brief access to a ring of flows.
pub trait RingSource: Send + Sync + 'static {
    /// Runs `f` on the ring while holding whatever lock guards it.
    fn with_ring<R: Send>(
        &self,
        f: impl FnOnce(&FlowRing) -> R + Send,
    ) -> impl Future<Output = R> + Send;
}

impl RingSource for Arc<Mutex<Pipeline>> {
    async fn with_ring<R: Send>(&self, f: impl FnOnce(&FlowRing) -> R + Send) -> R {
        f(self.lock().await.ring())
    }
}

impl RingSource for Arc<Mutex<FlowRing>> {
    async fn with_ring<R: Send>(&self, f: impl FnOnce(&FlowRing) -> R + Send) -> R {
        f(&*self.lock().await)
    }
}

/// The Observer service of one collector. Clones share the source and the
/// lag counter, so one can be kept to read [`lagged`](Self::lagged).
#[derive(Debug, Clone)]
pub struct ObserverService<S> {
    source: S,
    lagged: Arc<AtomicU64>,
}

impl<S: RingSource> ObserverService<S> {
    /// A service reading `source`.
    pub fn new(source: S) -> Self {
        ObserverService {
            source,
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

#[tonic::async_trait]
impl<S: RingSource> Observer for ObserverService<S> {
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
        let (history, follower) = {
            let (filters, window) = (&filters, &window);
            self.source
                .with_ring(move |ring| {
                    let mut matching = ring
                        .flows()
                        .filter(|f| window.contains_flow(f) && filters.matches(f));
                    let history: Vec<pb::Flow> = match (limit, req.first) {
                        (Some(n), true) => matching.by_ref().take(n).cloned().collect(),
                        (Some(n), false) => {
                            let all: Vec<&pb::Flow> = matching.collect();
                            all[all.len().saturating_sub(n)..]
                                .iter()
                                .map(|f| (*f).clone())
                                .collect()
                        }
                        (None, _) => matching.cloned().collect(),
                    };
                    (history, req.follow.then(|| ring.subscribe()))
                })
                .await
        };
        let (tx, rx) = mpsc::channel(64);
        let lagged = self.lagged.clone();
        tokio::spawn(async move {
            for flow in history {
                if tx
                    .send(Ok(pb::GetFlowsResponse { flow: Some(flow) }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
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
        let status = self
            .source
            .with_ring(|ring| {
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
                pb::ServerStatusResponse {
                    flows_stored: ring.len() as u64,
                    flows_dropped: ring.evicted(),
                    oldest,
                    newest,
                    ..Default::default()
                }
            })
            .await;
        Ok(Response::new(status))
    }
}

/// Sends new matching flows until the client goes away or the ring closes; a
/// lagging follower's stream ends with `RESOURCE_EXHAUSTED`.
async fn follow(
    mut follower: broadcast::Receiver<pb::Flow>,
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
                        .send(Ok(pb::GetFlowsResponse { flow: Some(flow) }))
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
    use crate::pipeline::PipelineConfig;
    use netverdict_cluster::SharedState;

    #[tokio::test]
    async fn serves_a_shared_pipeline() {
        let pipeline = Pipeline::new(PipelineConfig::default(), SharedState::default());
        let service = ObserverService::new(Arc::new(Mutex::new(pipeline)));
        let status = service
            .server_status(Request::new(pb::ServerStatusRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((status.flows_stored, status.flows_dropped), (0, 0));
        assert_eq!(status.oldest, None);
    }
}
