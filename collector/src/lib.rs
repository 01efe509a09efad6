//! netverdict's node agent. Kernel events flow one way through small stages:
//!
//! 1. source: decoded events from the eBPF probes (`netverdict-ebpf`);
//! 2. [`correlate`]: attempts joined with outcomes and drops, DNS queries with
//!    responses, into observations;
//! 3. [`annotate`]: endpoints resolved against the cluster state (pods, Services
//!    after DNAT, nodes, the world), the policy verdict and its explanation, the
//!    kernel's outcome and any mismatch;
//! 4. [`aggregate`]: repeated attempts merged per window, then rendered as
//!    protobuf flows once per record;
//! 5. [`export`]: flows streamed to the API server in acknowledged batches,
//!    buffered within a bound while it is unreachable; and a ring of recent
//!    flows ([`pipeline`]) served by the [`observer`] gRPC API.
//!
//! [`policy_verdicts`] counts, per policy, the attempts it allowed and denied
//! (for `/metrics`).
//!
//! [`fuzzing`] (feature `fuzzing`, and in unit tests) holds the cargo-fuzz
//! targets' entry points for kernel records and DNS messages.
//!
//! [`agent`] wires them all (with the Observer and `/metrics` servers) into one
//! running node agent: [`agent::Agent::start`].
//!
//! The cluster state the annotator reads is kept by `netverdict-cluster`: a
//! source (Kubernetes watches, manifest files, a lab) started with
//! [`netverdict_cluster::start`] keeps the policy engine's
//! [`ClusterState`](netverdict_policy::ClusterState) equal to the cluster's,
//! shared with readers through a [`SharedState`](netverdict_cluster::SharedState).

pub mod agent;
pub mod aggregate;
pub mod annotate;
pub mod correlate;
pub mod enforcement;
pub mod export;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod metrics;
pub mod observer;
pub mod pipeline;
pub mod policy_verdicts;
pub mod resolved_names;
