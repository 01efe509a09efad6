//! `Observer` over the store: `GetFlows` answers from the store, then with
//! `follow` sends newly ingested flows from the ingest broadcast, filtered the
//! same way; `ServerStatus` reports what the store holds.
//!
//! A follower subscribes to the broadcast *before* the store query, so no flow
//! ingested in between is missed; flows that the query already returned are
//! skipped when they come again through the broadcast.
//!
//! The broadcast is bounded ([`super::ApiConfig::follow_buffer`]) and ingest
//! never waits for followers: a follower that falls behind has its stream ended
//! with `RESOURCE_EXHAUSTED`, naming how many flows it missed (reconnect with
//! `since`), and is counted in `netverdict_api_follow_lagged_total`.
//!
//! Time windows follow the store's [`FlowQuery`]: `since` and `until` bound
//! `last_seen` (`[since, until)`).
//!
//! Bounds: `number` above [`super::ApiConfig::max_query_flows`] is refused
//! with `INVALID_ARGUMENT`; without `number`, a request reads
//! [`DEFAULT_NUMBER`] flows, and a follow request reads none (it starts from
//! now: `netverdict observe -f` never loads the store) unless it sets
//! `since`, when it reads the window up to the cap (more is an error asking
//! for a number or a later `since`).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use netverdict_proto::filter::FilterSet;
use netverdict_proto::time::{TimeWindow, timestamp};
use netverdict_proto::v1 as pb;
use pb::observer_server::{Observer, ObserverServer};
use rustc_hash::FxHashSet;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::Shared;
use super::ingest::on_drop;
use crate::store::{FlowQuery, Store};

/// How many flows `GetFlows` sends when `number` is 0 and `follow` is not set.
pub const DEFAULT_NUMBER: u64 = 20;

/// The Observer service over the store.
pub struct ObserverService<S> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> ObserverService<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        ObserverService { shared }
    }

    /// Wrapped for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> ObserverServer<Self> {
        ObserverServer::new(self)
    }
}

/// The window of a request's `since` and `until`, or INVALID_ARGUMENT naming
/// the field and the value.
pub(crate) fn request_window(
    since: Option<&prost_types::Timestamp>,
    until: Option<&prost_types::Timestamp>,
) -> Result<TimeWindow, Status> {
    TimeWindow::from_request(since, until).map_err(|e| Status::invalid_argument(e.to_string()))
}

type FlowStream = Pin<Box<dyn Stream<Item = Result<pb::GetFlowsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> Observer for ObserverService<S> {
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
        let window = request_window(req.since.as_ref(), req.until.as_ref())?;
        let cap = self.shared.config.max_query_flows;
        let number = usize::try_from(req.number).unwrap_or(usize::MAX);
        if number > cap {
            return Err(Status::invalid_argument(format!(
                "number: {} is above this server's cap of {cap} flows per request (max_query_flows)",
                req.number
            )));
        }
        // How many stored flows to send first, and whether more than that
        // matching is an error (a follow from `since` asked for all of them).
        let (limit, whole_window) = match (number, req.follow, req.since.is_some()) {
            (0, false, _) => ((DEFAULT_NUMBER as usize).min(cap), false),
            (0, true, false) => (0, false),
            (0, true, true) => (cap, true),
            (n, _, _) => (n, false),
        };
        let follower = req.follow.then(|| self.shared.flows.subscribe());
        let mut query = FlowQuery {
            filters,
            window,
            // One more than the cap tells a window holding more.
            limit: if whole_window { cap + 1 } else { limit },
            first: req.first,
        };
        let history = if limit == 0 {
            Vec::new()
        } else {
            self.shared
                .store
                .flows(&query)
                .await
                .map_err(|e| Status::unavailable(format!("store query failed: {e}")))?
        };
        if whole_window && history.len() > cap {
            return Err(Status::invalid_argument(format!(
                "more than {cap} stored flows match since the requested time \
                 (this server's cap per request, max_query_flows): set number \
                 (at most {cap}) or a later since"
            )));
        }
        query.limit = limit;
        let (tx, rx) = mpsc::channel(256);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let seen: FxHashSet<String> = if follower.is_some() {
                history.iter().map(|f| f.id.clone()).collect()
            } else {
                FxHashSet::default()
            };
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
                follow(&shared, follower, &query, seen, tx).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn server_status(
        &self,
        _request: Request<pb::ServerStatusRequest>,
    ) -> Result<Response<pb::ServerStatusResponse>, Status> {
        let status = self
            .shared
            .store
            .status()
            .await
            .map_err(|e| Status::unavailable(format!("store status failed: {e}")))?;
        let refused = self.shared.metrics.ingest_invalid_flows.get();
        Ok(Response::new(pb::ServerStatusResponse {
            flows_stored: status.flows_stored,
            flows_dropped: status.flows_dropped.saturating_add(refused),
            oldest: status.oldest.map(timestamp),
            newest: status.newest.map(timestamp),
            flows_refused: refused,
            flows_dead_lettered: status.flows_dead_lettered,
        }))
    }
}

/// Sends new flows matching `query`'s filters and window until the client
/// goes away, the server stops, or the follower falls behind.
async fn follow<S>(
    shared: &Shared<S>,
    mut follower: broadcast::Receiver<Arc<pb::Flow>>,
    query: &FlowQuery,
    mut seen: FxHashSet<String>,
    tx: mpsc::Sender<Result<pb::GetFlowsResponse, Status>>,
) {
    let metrics = &shared.metrics;
    metrics.follow_subscribers.inc();
    let _open = on_drop(|| {
        metrics.follow_subscribers.dec();
    });
    let mut shutdown = shared.shutdown.clone();
    loop {
        let received = tokio::select! {
            received = follower.recv() => received,
            () = tx.closed() => return,
            () = crate::server::stopped(&mut shutdown) => {
                let _ = tx.send(Err(Status::unavailable("API server shutting down"))).await;
                return;
            }
        };
        match received {
            Ok(flow) => {
                if !seen.is_empty() && seen.remove(&flow.id) {
                    continue;
                }
                if query.window.contains_flow(&flow)
                    && query.filters.matches(&flow)
                    && tx
                        .send(Ok(pb::GetFlowsResponse {
                            flow: Some(Arc::unwrap_or_clone(flow)),
                        }))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                metrics.follow_lagged.inc();
                tracing::warn!(missed, "follower fell behind; ending its stream");
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
