//! netverdict's NetworkPolicy engine: what standard Kubernetes NetworkPolicy
//! (networking.k8s.io/v1) says about any flow in a cluster, and why.
//!
//! Plain values in, a verdict and its reasons out; no I/O beyond reading the
//! manifest files it is pointed at, no async runtime, no Kubernetes client.
//!
//! - [`manifest`] reads YAML/JSON manifests into k8s-openapi objects;
//! - [`model`] validates them into the engine's model (errors name the field);
//! - [`state`] keeps the cluster incrementally, with the indexes the engine needs;
//! - [`engine`] decides flows (cached, label-indexed), [`verdict`] is its answer;
//! - [`explain`] renders answers for people and machines;
//! - [`lint`] finds the pitfalls of a policy set before any traffic flows.

mod cache;
pub mod engine;
pub mod error;
pub mod explain;
pub mod lint;
pub mod manifest;
pub mod model;
pub mod selector;
pub mod state;
pub mod synthetic;
pub mod verdict;

pub use engine::{Endpoint, Flow};
pub use error::{FieldError, FlowError, LoadError, LoadErrors, ObjectError};
pub use explain::{Explanation, explain};
pub use manifest::{K8sObject, Manifests};
pub use model::{Direction, PodKey, PolicyKey, Protocol};
pub use state::{ClusterState, DEFAULT_DEPARTED_RETENTION, Holder, LoadOptions, ObjectKind};
pub use verdict::{DirectionVerdict, Status, Verdict};
