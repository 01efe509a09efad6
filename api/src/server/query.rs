//! `Query`: the incident views. `Denied` is the store's grouping of denied
//! flows; `DnsReport` joins the pods whose egress policies block DNS (from the
//! current cluster state, before any traffic) with the store's failed queries.

use std::sync::Arc;

use netverdict_proto::filter::LabelSelector;
use netverdict_proto::v1 as pb;
use pb::query_server::{Query, QueryServer};
use tonic::{Request, Response, Status};

use super::Shared;
use super::observer::request_window;
use crate::report::dns_policy_gaps;
use crate::store::{ReportQuery, Store};

/// How many groups a report returns when the request's limit is 0.
pub const DEFAULT_LIMIT: usize = 1000;

/// The Query service.
pub struct QueryService<S> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> QueryService<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        QueryService { shared }
    }

    /// Wrapped for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> QueryServer<Self> {
        QueryServer::new(self)
    }
}

/// The store query of a report request; a bad value is INVALID_ARGUMENT
/// naming the field and the value, and a `limit` above `max_groups` (the
/// server's [`super::ApiConfig::max_report_groups`]) is one too.
pub fn report_query(req: &pb::ReportRequest, max_groups: usize) -> Result<ReportQuery, Status> {
    let labels = req
        .labels
        .iter()
        .map(|v| LabelSelector::parse("labels", v))
        .collect::<Result<_, _>>()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let limit = match req.limit {
        0 => DEFAULT_LIMIT.min(max_groups),
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    if limit > max_groups {
        return Err(Status::invalid_argument(format!(
            "limit: {} is above this server's cap of {max_groups} groups per report \
             (max_report_groups)",
            req.limit
        )));
    }
    Ok(ReportQuery {
        window: request_window(req.since.as_ref(), req.until.as_ref())?,
        namespaces: req.namespace.clone(),
        labels,
        limit,
    })
}

#[tonic::async_trait]
impl<S: Store> Query for QueryService<S> {
    async fn denied(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::DeniedResponse>, Status> {
        let query = report_query(request.get_ref(), self.shared.config.max_report_groups)?;
        let groups = self
            .shared
            .store
            .denied(&query)
            .await
            .map_err(|e| Status::unavailable(format!("denied report failed: {e}")))?;
        Ok(Response::new(pb::DeniedResponse { groups }))
    }

    async fn dns_report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::DnsReportResponse>, Status> {
        let query = report_query(request.get_ref(), self.shared.config.max_report_groups)?;
        let policy_gaps = dns_policy_gaps(&self.shared.cluster.read(), &query);
        let failures = self
            .shared
            .store
            .dns_failures(&query)
            .await
            .map_err(|e| Status::unavailable(format!("DNS report failed: {e}")))?;
        Ok(Response::new(pb::DnsReportResponse {
            policy_gaps,
            failures,
        }))
    }
}
