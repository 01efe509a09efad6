//! The collector's least privilege (as root: it loads the eBPF probes): run as
//! deployed against the Kubernetes API double, it asks for exactly what the
//! roles of every deploy overlay grant its service account (see `rbac`).

use netverdict_testing::require_root;

use crate::rbac::{assert_granted_exactly, record, service_account};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collectors_role_grants_exactly_what_it_asks() {
    if !require_root() {
        return;
    }
    let account = service_account(
        "DaemonSet",
        "netverdict-collector",
        "collector",
        |args| match ["--cluster", "--lab", "--kubeconfig"]
            .iter()
            .find(|f| args.iter().any(|a| a == *f))
        {
            Some(flag) => Err(format!(
                "run with {flag}, not from the in-cluster configuration"
            )),
            None => Ok(()),
        },
    );
    let asked = record(
        &[
            "collector",
            "--node-name",
            "node-a",
            "--observer-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        "netverdict collector: observer on",
    )
    .await;
    assert!(!asked.is_empty());
    assert_granted_exactly("netverdict collector", &account, &asked);
}
