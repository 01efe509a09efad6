//! Test support of the cluster crate's tests: comparing the state a source
//! keeps with what the Kubernetes API double (`netverdict_testing::apiserver`)
//! or the manifests hold (object builders are `netverdict_testing::objects`).

use std::time::Duration;

use netverdict_cluster::SharedState;
use netverdict_policy::{ClusterState, Manifests};

pub use netverdict_testing::apiserver::FakeApiServer;

/// Logs to the test output (`RUST_LOG` filters, default info of the cluster sources).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "netverdict_cluster=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The state as sorted lines, one per object with the fields the engine uses:
/// two states describe the same cluster when their summaries are equal.
pub fn summary(state: &ClusterState) -> Vec<String> {
    let mut out = Vec::new();
    for ns in state.namespaces() {
        out.push(format!("Namespace {} labels={:?}", ns.name, ns.labels));
    }
    for pod in state.pods() {
        out.push(format!(
            "Pod {} labels={:?} ips={:?} node={:?} host_network={} ports={:?} workload={}",
            pod.key,
            pod.labels,
            pod.ips,
            pod.node,
            pod.host_network,
            pod.ports,
            netverdict_policy::model::workload_name(state.workload_of(pod).as_deref(), &pod.key)
        ));
    }
    for controller in state.controllers() {
        out.push(format!(
            "{} {}/{} owner={:?}",
            controller.kind.as_str(),
            controller.namespace,
            controller.name,
            controller.owner
        ));
    }
    for policy in state.policies() {
        out.push(format!("NetworkPolicy {} {:?}", policy.key, policy));
    }
    for svc in state.services() {
        out.push(format!("Service {}/{} {:?}", svc.namespace, svc.name, svc));
    }
    for slice in state.endpoint_slices() {
        out.push(format!(
            "EndpointSlice {}/{} {:?}",
            slice.namespace, slice.name, slice
        ));
    }
    for node in state.nodes() {
        out.push(format!(
            "Node {} labels={:?} ips={:?}",
            node.name, node.labels, node.ips
        ));
    }
    for policy in state.admin_policies() {
        out.push(format!("{} {:?}", policy.key, policy));
    }
    out.sort();
    out
}

/// The state the engine builds from the server's current objects (invalid ones
/// left out): what a source must converge to.
pub fn expected_state(server: &FakeApiServer) -> ClusterState {
    let list = serde_json::json!({"kind": "List", "apiVersion": "v1", "items": server.objects()});
    let mut manifests = Manifests::default();
    manifests.read_str(std::path::Path::new("server"), &list.to_string());
    assert!(
        manifests.errors.is_empty(),
        "server objects unreadable: {:?}",
        manifests.errors
    );
    let mut state = ClusterState::new();
    for object in manifests.objects {
        let _ = state.apply(&object.object);
    }
    state
}

/// Lines only in `expected` (-) or only in `actual` (+).
pub fn diff(expected: &[String], actual: &[String]) -> String {
    let mut out = String::new();
    for line in expected.iter().filter(|l| !actual.contains(l)) {
        out.push_str(&format!("  - {line}\n"));
    }
    for line in actual.iter().filter(|l| !expected.contains(l)) {
        out.push_str(&format!("  + {line}\n"));
    }
    out
}

/// Waits until the shared state describes exactly `expected`, or fails after
/// `timeout` with the difference.
pub async fn wait_equal(shared: &SharedState, expected: &ClusterState, timeout: Duration) {
    let want = summary(expected);
    if shared
        .wait_for(timeout, |s| summary(s) == want)
        .await
        .is_err()
    {
        let got = summary(&shared.read());
        panic!(
            "cluster state not equal to the expected one after {timeout:?} (- missing, + unexpected):\n{}",
            diff(&want, &got)
        );
    }
}

/// Waits until the shared state equals what the server holds.
pub async fn wait_converged(shared: &SharedState, server: &FakeApiServer, timeout: Duration) {
    wait_equal(shared, &expected_state(server), timeout).await;
}
