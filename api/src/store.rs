//! The store interface: what ingest writes and what queries read. Two stores
//! implement it: ClickHouse for real deployments and a bounded in-memory store
//! for the demo and single nodes. Both answer every query the same way; the
//! server around them (ingest, follow streams, cluster state) is shared.

use std::future::Future;
use std::time::SystemTime;

use netverdict_proto::filter::{Filter, FilterSet, LabelSelector};
use netverdict_proto::time::TimeWindow;
use netverdict_proto::v1 as pb;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A flow no store can store (`netverdict_proto::validate`; names the
    /// flow id and field).
    #[error(transparent)]
    InvalidFlow(#[from] netverdict_proto::validate::FlowError),
    /// The backend failed; the operation may be retried.
    #[error("{backend}: {message}")]
    Backend {
        /// Which store ("clickhouse", "spool", "memory").
        backend: &'static str,
        /// What went wrong, with context.
        message: String,
    },
    /// The store has no room now (the ClickHouse spool is full): nothing was
    /// stored or acknowledged; the caller keeps the flows and tries later.
    #[error("{backend}: {message}")]
    Full {
        /// Which store part is full ("spool").
        backend: &'static str,
        /// What is full, with its figures.
        message: String,
    },
}

/// The result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What an insert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Flows newly stored (or spooled to disk for a later store).
    pub stored: usize,
    /// Flows skipped because a flow with the same id was already stored.
    pub duplicates: usize,
    /// Flows the backend refused and set aside for a person (ClickHouse's
    /// `dead_letters`): never stored, and sending them again cannot help.
    pub rejected: usize,
}

/// A flow query: the observer API's `GetFlows` without `follow`, its filters
/// and window already compiled (stores never parse a request's values).
#[derive(Debug, Clone, Default)]
pub struct FlowQuery {
    /// The include and exclude filters.
    pub filters: FilterSet,
    /// Flows whose `last_seen` is in this window.
    pub window: TimeWindow,
    /// The most flows to return; 0 means no limit.
    pub limit: usize,
    /// The oldest `limit` flows instead of the newest.
    pub first: bool,
}

/// A report query (`netverdict denied`, `netverdict dns`), its values
/// already compiled.
#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    /// Flows whose `last_seen` is in this window.
    pub window: TimeWindow,
    /// Flows with an endpoint in one of these namespaces; empty means all.
    pub namespaces: Vec<String>,
    /// Flows where one of these selectors holds on an endpoint's labels;
    /// empty means all.
    pub labels: Vec<LabelSelector>,
    /// The most groups to return.
    pub limit: usize,
}

impl ReportQuery {
    /// The flows that take part, as the one flow filter every store applies
    /// (its `namespace` and `labels` dimensions: either endpoint).
    pub fn flow_filter(&self) -> Filter {
        Filter {
            namespace: self.namespaces.clone(),
            labels: self.labels.clone(),
            ..Filter::default()
        }
    }
}

/// What a store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStatus {
    /// Flow records stored.
    pub flows_stored: u64,
    /// Flow records evicted or expired (memory bound, retention).
    pub flows_dropped: u64,
    /// The oldest and newest `last_seen` stored.
    pub oldest: Option<SystemTime>,
    /// The newest `last_seen` stored.
    pub newest: Option<SystemTime>,
    /// Flow records the backend rejected and set aside (ClickHouse's
    /// `dead_letters`).
    pub flows_dead_lettered: u64,
}

/// A flow store. Every flow is a `pb::Flow` whose `id` ("node/run/sequence") is
/// unique: storing a flow twice is a no-op, so a retried batch is stored once.
pub trait Store: Send + Sync + 'static {
    /// Stores flows; returns once they are durable (for ClickHouse: inserted,
    /// or spooled to local disk while the server is unreachable). Flows already
    /// stored are skipped and counted as duplicates. Ingest passes only flows
    /// that `netverdict_proto::validate::check_storable` accepts; a batch
    /// holding another is refused whole with [`StoreError::InvalidFlow`].
    fn insert(&self, flows: Vec<pb::Flow>) -> impl Future<Output = Result<InsertOutcome>> + Send;

    /// Flows matching a query, ordered by `last_seen` ascending (oldest first),
    /// at most `limit` of them (the newest ones unless `first`).
    fn flows(&self, query: &FlowQuery) -> impl Future<Output = Result<Vec<pb::Flow>>> + Send;

    /// Denied flows grouped by source and destination workload, protocol,
    /// destination port and denying policies, the largest count first.
    fn denied(
        &self,
        query: &ReportQuery,
    ) -> impl Future<Output = Result<Vec<pb::DeniedGroup>>> + Send;

    /// DNS queries that were dropped, unanswered or answered with an error,
    /// grouped by pod, name, type, outcome and rcode, the largest count first.
    fn dns_failures(
        &self,
        query: &ReportQuery,
    ) -> impl Future<Output = Result<Vec<pb::DnsFailure>>> + Send;

    /// What the store holds.
    fn status(&self) -> impl Future<Output = Result<StoreStatus>> + Send;

    /// Registers the store's own metrics (the server's registry prefix
    /// applies); stores without any keep the default.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let _ = registry;
    }
}
