//! netverdict's NetworkPolicy engine: what standard Kubernetes NetworkPolicy
//! (networking.k8s.io/v1) says about any flow in a cluster, and why.
//!
//! Plain values in, a verdict and its reasons out; no I/O beyond reading the
//! manifest files it is pointed at, no async runtime, no Kubernetes client.
//!
//! - [`manifest`] reads YAML/JSON manifests into k8s-openapi objects;
//! - [`model`] validates them into the engine's model (errors name the field);
//! - [`state`] keeps the cluster incrementally, with the indexes the engine needs;
//! - [`engine`] decides [`Connection`]s (cached, label-indexed), in tiers
//!   where cluster-scoped policy kinds will slot in; [`verdict`] is its answer;
//! - [`explain`](mod@explain) renders answers for people and machines;
//! - [`lint`] finds the pitfalls of a policy set before any traffic flows;
//! - [`fix`] writes the least-privilege NetworkPolicies that allow a denied flow;
//! - [`diagnose`] walks the debugging steps for one flow (what policy says of it);
//! - [`whatif`] replays flows against the cluster before and after a rollout;
//! - [`recommend`] writes a namespace's least-privilege NetworkPolicies from
//!   observed flows, and checks them by replay;
//! - `proto` (feature `proto`) converts verdicts to the netverdict.v1 protobuf types.

mod cache;
pub mod crd;
pub mod diagnose;
pub mod engine;
pub mod error;
pub mod explain;
pub mod fix;
pub mod lint;
pub mod manifest;
pub mod model;
pub mod proto;
pub mod recommend;
pub mod selector;
pub mod state;
pub mod synthetic;
pub mod verdict;
pub mod whatif;

pub use engine::{Connection, Endpoint};
pub use error::{ConnectionError, FieldError, LoadError, LoadErrors, ObjectError};
pub use explain::{Explanation, explain};
pub use manifest::{K8sObject, Manifests};
pub use model::{Direction, NetworkPolicy, PodKey, PolicyKey, PolicyKind, Protocol};
pub use state::{ClusterState, DEFAULT_DEPARTED_RETENTION, Holder, LoadOptions, ObjectKind};
pub use verdict::{DirectionVerdict, Status, Verdict};
