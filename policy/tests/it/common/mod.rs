//! Helpers shared by the conformance and property suites: turning YAML text into
//! objects and cluster state, and comparing the engine's three evaluation paths.
#![allow(
    dead_code,
    reason = "each test crate compiles this module and uses a different part of it"
)]

use std::path::Path;

use netverdict_policy::{ClusterState, Connection, K8sObject, LoadOptions, Manifests};

/// Parses YAML (possibly multi-document) into objects; panics on any error.
pub fn objects(yaml: &str) -> Vec<K8sObject> {
    let mut manifests = Manifests::default();
    manifests.read_str(Path::new("test.yaml"), yaml);
    assert!(
        manifests.errors.is_empty(),
        "manifest errors: {:?}\n{yaml}",
        manifests.errors
    );
    manifests.objects.into_iter().map(|s| s.object).collect()
}

/// Applies every object of `yaml` to `state`; panics if one is rejected.
pub fn apply_yaml(state: &mut ClusterState, yaml: &str) {
    for object in objects(yaml) {
        if let Err(e) = state.apply(&object) {
            panic!("object rejected: {e}\n{yaml}");
        }
    }
}

/// Builds a state from manifest text as `netverdict` does from files; panics on
/// any load error.
pub fn state_from_manifests(yaml: &str) -> ClusterState {
    let mut manifests = Manifests::default();
    manifests.read_str(Path::new("cluster.yaml"), yaml);
    let (state, errors) = ClusterState::from_manifests(manifests, &LoadOptions::default());
    assert!(errors.is_empty(), "load errors: {errors:?}");
    state
}

/// Evaluates `flow` three ways (cached, uncached, by scanning every policy) and
/// panics unless they agree (explanations included); returns the decision.
pub fn consistent_verdict(state: &ClusterState, flow: &Connection) -> bool {
    let cached = state.verdict(flow).expect("valid flow");
    let uncached = state.verdict_uncached(flow).expect("valid flow");
    let scanned = state.verdict_by_scan(flow).expect("valid flow");
    assert_eq!(
        *cached, uncached,
        "cached and uncached verdicts differ for {flow:?}"
    );
    assert_eq!(
        uncached, scanned,
        "indexed and scanned verdicts differ for {flow:?}"
    );
    cached.allowed
}
