//! `netverdict_cluster::start`: each source through the one entry point, the
//! node's IPs set on the state, and the sync policy: a late Kubernetes sync
//! fails under `Fail` and is a warning under `Warn` (the source goes on and
//! completes its lists).

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use netverdict_cluster::kube::{ClientOptions, KubeSourceConfig};
use netverdict_cluster::manifests::ManifestOptions;
use netverdict_cluster::{
    ClusterHandle, Error, SharedState, Source, SourceConfig, SyncPolicy, kube,
};
use netverdict_policy::ObjectKind;
use serde_json::json;

use crate::support::{self, FakeApiServer, wait_converged};
use netverdict_testing::objects::*;
use netverdict_testing::wait_until;

const WAIT: Duration = Duration::from_secs(10);

fn node_ip() -> IpAddr {
    "169.254.1.1".parse().expect("IP")
}

/// A server holding a small cluster, and a kubeconfig for it in `dir`.
async fn server_and_kubeconfig(dir: &tempfile::TempDir) -> (FakeApiServer, Source) {
    support::init_tracing();
    let server = FakeApiServer::start().await;
    server.apply(&namespace("shop", &[("team", "shop")]));
    server.apply(&pod("shop", "api", &[("app", "api")], "10.0.0.1"));
    server.apply(&pod("shop", "db", &[("app", "db")], "10.0.0.2"));
    server.apply(&allow_from("shop", "db-from-api", "db", "api", 5432));
    server.apply(&endpoint_slice("shop", "db-abc", "db", "db", "10.0.0.2"));
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path);
    let source = Source::Kube {
        client: ClientOptions {
            kubeconfig: Some(path),
            context: None,
        },
        config: KubeSourceConfig::default(),
    };
    (server, source)
}

/// Whether `stopped` stays pending for a while (a running source, or one with
/// nothing to run).
async fn keeps_running(handle: &mut ClusterHandle) -> bool {
    tokio::time::timeout(Duration::from_millis(50), handle.stopped())
        .await
        .is_err()
}

#[tokio::test]
async fn the_kubernetes_source_starts_from_a_kubeconfig_with_the_node_ips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, source) = server_and_kubeconfig(&dir).await;
    let mut config = SourceConfig::new(source);
    config.local_node_ips = vec![node_ip()];
    let mut handle = netverdict_cluster::start(config).await.expect("started");
    assert_eq!(handle.name(), "kube");
    assert!(handle.is_synced());
    wait_converged(handle.state(), &server, WAIT).await;
    assert!(handle.state().read().is_node_ip(node_ip()));
    let metrics = handle.metrics().expect("the source counts").snapshot();
    assert_eq!(metrics.kind(ObjectKind::Pod).applied, 2, "{metrics:?}");
    assert!(keeps_running(&mut handle).await);

    // Shut down, the state keeps what it had.
    let state = handle.state().clone();
    handle.shutdown().await;
    assert_eq!(state.read().pod_count(), 2);
}

#[tokio::test]
async fn a_refused_sync_fails_under_the_fail_policy_naming_the_permission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, source) = server_and_kubeconfig(&dir).await;
    server.forbid::<EndpointSlice>(true);
    let mut config = SourceConfig::new(source);
    config.sync = SyncPolicy::fail_after(Duration::from_millis(300));
    let error = netverdict_cluster::start(config)
        .await
        .expect_err("EndpointSlices cannot be listed");
    match &error {
        // Late because refused: the error names the permission to grant.
        Error::Kube(kube::Error::Forbidden { refused }) => {
            let kinds: Vec<_> = refused.iter().map(|f| f.kind).collect();
            assert_eq!(
                kinds,
                [netverdict_policy::ObjectKind::EndpointSlice],
                "{error}"
            );
        }
        other => panic!("expected a refused sync, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .contains("grant list and watch on endpointslices"),
        "{error}"
    );
}

#[tokio::test]
async fn a_late_sync_is_a_warning_under_the_warn_policy_and_completes_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, source) = server_and_kubeconfig(&dir).await;
    server.forbid::<EndpointSlice>(true);
    let mut config = SourceConfig::new(source);
    config.sync = SyncPolicy::warn_after(Duration::from_millis(300));
    let handle = netverdict_cluster::start(config)
        .await
        .expect("started despite the late sync");
    assert!(!handle.is_synced());
    // The other kinds are served meanwhile.
    wait_until("the pods applied", WAIT, async || {
        handle.state().read().pod_count() == 2
    })
    .await;
    server.forbid::<EndpointSlice>(false);
    wait_until("the source synced", Duration::from_secs(30), async || {
        handle.is_synced()
    })
    .await;
    wait_converged(handle.state(), &server, WAIT).await;
}

#[tokio::test]
async fn manifests_start_loaded_and_invalid_ones_fail_naming_the_file() {
    support::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("cluster.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        serde_json::to_value(namespace("shop", &[])).expect("json"),
        serde_json::to_value(pod("shop", "api", &[("app", "api")], "10.0.0.1")).expect("json"),
    ]});
    std::fs::write(&good, list.to_string()).expect("write");
    let mut config = SourceConfig::new(Source::Manifests(ManifestOptions::new([&good])));
    config.local_node_ips = vec![node_ip()];
    let mut handle = netverdict_cluster::start(config).await.expect("loaded");
    assert_eq!(handle.name(), "manifests");
    assert!(handle.is_synced());
    assert_eq!(handle.state().read().pod_count(), 1);
    assert!(handle.state().read().is_node_ip(node_ip()));
    assert_eq!(
        handle
            .metrics()
            .expect("the source counts")
            .snapshot()
            .reloads,
        1
    );
    assert!(keeps_running(&mut handle).await);

    let bad = dir.path().join("bad.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        serde_json::to_value(egress_cidr("shop", "bad-cidr", "10.0.0.0/99")).expect("json"),
    ]});
    std::fs::write(&bad, list.to_string()).expect("write");
    let config = SourceConfig::new(Source::Manifests(ManifestOptions::new([&bad])));
    let error = netverdict_cluster::start(config)
        .await
        .expect_err("an invalid CIDR");
    assert!(matches!(error, Error::Manifests(_)), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("bad.json") && text.contains("bad-cidr"),
        "{text}"
    );
}

#[tokio::test]
async fn a_shared_state_stays_the_callers_and_gets_the_node_ips() {
    let state = SharedState::default();
    let mut config = SourceConfig::new(Source::Shared(state.clone()));
    config.local_node_ips = vec![node_ip()];
    let mut handle = netverdict_cluster::start(config).await.expect("started");
    assert_eq!(handle.name(), "shared");
    assert!(handle.metrics().is_none());
    assert!(handle.is_synced());
    assert!(state.read().is_node_ip(node_ip()));
    // The caller's updates are the handle's state.
    state
        .update(|s| {
            s.apply(&netverdict_policy::K8sObject::Pod(Box::new(pod(
                "shop",
                "api",
                &[],
                "10.0.0.1",
            ))))
        })
        .expect("a valid pod");
    assert_eq!(handle.state().read().pod_count(), 1);
    assert!(keeps_running(&mut handle).await);
}
