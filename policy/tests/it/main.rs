//! The policy crate's integration tests, in one binary: the NetworkPolicy
//! conformance cases, the Admin and Baseline tiers (conformance scenarios,
//! model, properties), lint, manifests, properties, recycled pod IPs and the
//! seed guide's scenario, one module each, with shared helpers in [`common`].

mod admin_conformance;
mod admin_model;
mod admin_properties;
mod common;
mod conformance;
mod lint;
mod manifests;
mod properties;
mod recycled_ip;
mod seed;
