//! The cluster state: what keeps the policy engine's [`ClusterState`] equal to
//! the cluster's, for the node agent (which annotates flows with it) and the API
//! server (whose DNS report lists policy gaps from it). Neither depends on the
//! other for it: both call [`start`].
//!
//! How data flows through this crate:
//!
//! ```text
//!  kube: one kube-rs watcher per kind ─┐                       ┌─> SharedState (RwLock<ClusterState>)
//!        (Namespace, Pod, NetworkPolicy,├─> mpsc ─> writer task ┤     read by the annotator (verdict(&self))
//!         Service, EndpointSlice, Node, │   (Tracker: apply,    └─> SourceMetrics (counters, invalid objects,
//!         the admin policy CRDs,        │    delete, re-list diff)     kinds the RBAC forbids)
//!         ReplicaSet, Job)             ─┘
//!  manifests: poll files ─> parse + validate all ─> Tracker diff ─> SharedState
//!  lab: a running lab's objects, once at start ─────────────────> SharedState
//! ```
//!
//! - [`source`]: [`start`] turns a [`SourceConfig`] (which source, how long its
//!   initial sync may take and whether running late fails or warns) into a
//!   running [`ClusterHandle`];
//! - [`shared`]: the state handle shared by one writer (a source) and many readers;
//! - [`tracker`]: applies objects to the state the same way for every source: what
//!   each kind holds, re-list/reload as a diff (objects not in a new full list are
//!   deleted), invalid objects reported and removed;
//! - [`kube`]: the Kubernetes source (the client from a kubeconfig or in-cluster,
//!   watchers, bookmarks, backoff, `410 Gone`);
//! - [`manifests`]: the manifest source (`--cluster PATH...`, reloaded on change);
//! - `lab` (feature `lab`): the objects of a lab that is up (`--lab NAME`);
//! - [`metrics`]: counters a source keeps (the collector and the API server
//!   encode them).
//!
//! One source feeds one [`SharedState`]: a source deletes only objects it gave
//! the state, but two sources giving the same object would overwrite each other.
//!
//! Starting a source and reading verdicts:
//!
//! ```no_run
//! # async fn run(flow: netverdict_policy::Connection) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use netverdict_cluster::kube::{ClientOptions, KubeSourceConfig};
//! use netverdict_cluster::{Source, SourceConfig, SyncPolicy};
//!
//! let mut config = SourceConfig::new(Source::Kube {
//!     client: ClientOptions::default(), // kubeconfig or in-cluster
//!     config: KubeSourceConfig::default(),
//! });
//! config.sync = SyncPolicy::fail_after(Duration::from_secs(60));
//! let cluster = netverdict_cluster::start(config).await?;
//! let verdict = cluster.state().read().verdict(&flow)?; // readers never wait for the network
//! println!("{}", verdict.as_str());
//! # Ok(()) }
//! ```
//!
//! Invalid objects: an object the engine rejects (e.g. a NetworkPolicy with an
//! unparseable CIDR) is logged with its kind, name and field, counted, listed in
//! [`MetricsSnapshot::invalid`], and its previous version is removed from the
//! state; the rest of the cluster is unaffected (see [`tracker`] for why removal
//! rather than keeping the stale version). Manifests are all-or-nothing per load
//! instead: a bad file keeps the whole previous state (see [`manifests`]).
//!
//! [`ClusterState`]: netverdict_policy::ClusterState

pub mod kube;
#[cfg(feature = "lab")]
pub mod lab;
pub mod manifests;
pub mod metrics;
pub mod shared;
pub mod source;
pub mod tracker;

pub use metrics::{ForbiddenKind, InvalidObject, KindCounts, MetricsSnapshot, SourceMetrics};
pub use shared::SharedState;
pub use source::{ClusterHandle, Error, OnSyncTimeout, Source, SourceConfig, SyncPolicy, start};
pub use tracker::ObjectRef;

use netverdict_policy::ObjectKind;

/// How many kinds the sources keep.
pub const KIND_COUNT: usize = KINDS.len();

/// Every kind of object the sources keep, in a fixed order (metrics use it).
pub const KINDS: [ObjectKind; 11] = [
    ObjectKind::Namespace,
    ObjectKind::Pod,
    ObjectKind::NetworkPolicy,
    ObjectKind::Service,
    ObjectKind::EndpointSlice,
    ObjectKind::Node,
    ObjectKind::AdminNetworkPolicy,
    ObjectKind::BaselineAdminNetworkPolicy,
    ObjectKind::ClusterNetworkPolicy,
    ObjectKind::ReplicaSet,
    ObjectKind::Job,
];

/// The Kubernetes name of a kind (`Pod`, `NetworkPolicy`...).
pub fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Namespace => "Namespace",
        ObjectKind::Pod => "Pod",
        ObjectKind::NetworkPolicy => "NetworkPolicy",
        ObjectKind::Service => "Service",
        ObjectKind::EndpointSlice => "EndpointSlice",
        ObjectKind::Node => "Node",
        ObjectKind::AdminNetworkPolicy => "AdminNetworkPolicy",
        ObjectKind::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
        ObjectKind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
        ObjectKind::ReplicaSet => "ReplicaSet",
        ObjectKind::Job => "Job",
    }
}

/// The position of a kind in [`KINDS`] (arrays of per-kind counts use it).
pub fn kind_index(kind: ObjectKind) -> usize {
    match kind {
        ObjectKind::Namespace => 0,
        ObjectKind::Pod => 1,
        ObjectKind::NetworkPolicy => 2,
        ObjectKind::Service => 3,
        ObjectKind::EndpointSlice => 4,
        ObjectKind::Node => 5,
        ObjectKind::AdminNetworkPolicy => 6,
        ObjectKind::BaselineAdminNetworkPolicy => 7,
        ObjectKind::ClusterNetworkPolicy => 8,
        ObjectKind::ReplicaSet => 9,
        ObjectKind::Job => 10,
    }
}

/// The RBAC resource of a kind as `resource.group` (`pods`,
/// `replicasets.apps`): what a role must grant `list` and `watch` on.
pub fn kind_resource(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Namespace => "namespaces",
        ObjectKind::Pod => "pods",
        ObjectKind::NetworkPolicy => "networkpolicies.networking.k8s.io",
        ObjectKind::Service => "services",
        ObjectKind::EndpointSlice => "endpointslices.discovery.k8s.io",
        ObjectKind::Node => "nodes",
        ObjectKind::ReplicaSet => "replicasets.apps",
        ObjectKind::Job => "jobs.batch",
        ObjectKind::AdminNetworkPolicy => "adminnetworkpolicies.policy.networking.k8s.io",
        ObjectKind::BaselineAdminNetworkPolicy => {
            "baselineadminnetworkpolicies.policy.networking.k8s.io"
        }
        ObjectKind::ClusterNetworkPolicy => "clusternetworkpolicies.policy.networking.k8s.io",
    }
}
