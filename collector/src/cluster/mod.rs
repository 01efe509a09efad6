//! Cluster state sources: what keeps the policy engine's [`ClusterState`] equal to
//! the cluster's while flows are being annotated.
//!
//! How data flows through this module:
//!
//! ```text
//!  kube: one kube-rs watcher per kind ─┐                       ┌─> SharedState (RwLock<ClusterState>)
//!        (Namespace, Pod, NetworkPolicy,├─> mpsc ─> writer task ┤     read by the annotator (verdict(&self))
//!         Service, EndpointSlice, Node) ┘   (Tracker: apply,    └─> SourceMetrics (counters, invalid objects)
//!                                            delete, re-list diff)
//!  manifests: poll files ─> parse + validate all ─> Tracker diff ─> SharedState
//! ```
//!
//! - [`shared`]: the state handle shared by one writer (a source) and many readers;
//! - [`tracker`]: applies objects to the state the same way for every source: what
//!   each kind holds, re-list/reload as a diff (objects not in a new full list are
//!   deleted), invalid objects reported and removed;
//! - [`kube`]: the Kubernetes source (watchers, bookmarks, backoff, `410 Gone`);
//! - [`manifests`]: the manifest source (`--cluster PATH...`, reloaded on change);
//! - [`metrics`]: counters a source keeps (encoded by [`crate::metrics`]).
//!
//! One source feeds one [`SharedState`]: a source deletes only objects it gave
//! the state, but two sources giving the same object would overwrite each other.
//!
//! Wiring a source and reading verdicts:
//!
//! ```no_run
//! # async fn run(flow: netverdict_policy::Connection) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use netverdict_collector::cluster::SharedState;
//! use netverdict_collector::cluster::kube::{self, ClientOptions, KubeSource, KubeSourceConfig};
//!
//! let state = SharedState::default();
//! let client = kube::client(&ClientOptions::default()).await?; // kubeconfig or in-cluster
//! let source = KubeSource::spawn(client, state.clone(), KubeSourceConfig::default());
//! source.wait_synced(Duration::from_secs(60)).await?;
//! let verdict = state.read().verdict(&flow)?; // readers never wait for the network
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
pub mod manifests;
pub mod metrics;
pub mod shared;
pub mod tracker;

pub use metrics::{InvalidObject, KindCounts, MetricsSnapshot, SourceMetrics};
pub use shared::SharedState;
pub use tracker::ObjectRef;

use netverdict_policy::ObjectKind;

/// Every kind of object the sources keep, in a fixed order (metrics use it).
pub const KINDS: [ObjectKind; 6] = [
    ObjectKind::Namespace,
    ObjectKind::Pod,
    ObjectKind::NetworkPolicy,
    ObjectKind::Service,
    ObjectKind::EndpointSlice,
    ObjectKind::Node,
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
    }
}

/// The position of a kind in [`KINDS`].
pub(crate) fn kind_index(kind: ObjectKind) -> usize {
    match kind {
        ObjectKind::Namespace => 0,
        ObjectKind::Pod => 1,
        ObjectKind::NetworkPolicy => 2,
        ObjectKind::Service => 3,
        ObjectKind::EndpointSlice => 4,
        ObjectKind::Node => 5,
    }
}
