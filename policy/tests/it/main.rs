//! The policy crate's integration tests, in one binary: the NetworkPolicy
//! conformance cases, the Admin and Baseline tiers (conformance scenarios,
//! model, properties), diagnose and its fix, lint, manifests, verdicts by the policies of a past time, properties, recycled pod IPs, the
//! seed guide's scenario, what-if replay and `recommend`, one module each, with shared helpers in [`common`].

mod admin_conformance;
mod admin_model;
mod admin_properties;
mod common;
mod conformance;
mod diagnose;
mod lint;
mod manifests;
mod policies_at_a_time;
mod properties;
mod recommend;
mod recycled_ip;
mod seed;
mod whatif;
