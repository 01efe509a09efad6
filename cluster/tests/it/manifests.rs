//! The manifest source: initial load, reload on change as a diff, bad files
//! keeping the previous state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{self, summary, wait_equal};
use netverdict_cluster::SharedState;
use netverdict_cluster::manifests::{Error, ManifestOptions, ManifestSource, ReloadReport};
use netverdict_policy::{ClusterState, Connection, Endpoint, ObjectKind, Protocol};
use netverdict_testing::objects::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn value<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("serialize")
}

/// Writes objects as a `kind: List` JSON file (what `kubectl get -o json` prints).
fn write_list(path: &Path, objects: &[Value]) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(path, serde_json::to_string_pretty(&list).expect("json"))
        .expect("write manifest");
}

fn shop(db_from: &str) -> Vec<Value> {
    vec![
        value(&namespace("shop", &[("team", "shop")])),
        value(&pod("shop", "api", &[("app", "api")], "10.0.0.1")),
        value(&pod("shop", "db", &[("app", "db")], "10.0.0.2")),
        value(&pod("shop", "web", &[("app", "web")], "10.0.0.3")),
        value(&allow_from("shop", "db-ingress", "db", db_from, 5432)),
        value(&service("shop", "db", "10.96.0.10", "db")),
    ]
}

const INFRA_YAML: &str = "\
apiVersion: v1
kind: Node
metadata:
  name: node-a
status:
  addresses:
  - type: InternalIP
    address: 192.168.1.10
---
apiVersion: v1
kind: Namespace
metadata:
  name: ops
  labels:
    team: ops
";

struct Fixture {
    dir: tempfile::TempDir,
    shop: PathBuf,
    infra: PathBuf,
}

fn fixture() -> Fixture {
    support::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let shop_path = dir.path().join("shop.json");
    let infra = dir.path().join("infra.yaml");
    write_list(&shop_path, &shop("api"));
    std::fs::write(&infra, INFRA_YAML).expect("write");
    Fixture {
        dir,
        shop: shop_path,
        infra,
    }
}

fn options(paths: &[&Path]) -> ManifestOptions {
    let mut options = ManifestOptions::new(paths.iter().copied());
    options.poll_interval = Duration::from_millis(20);
    options
}

/// What the engine's own loader makes of the same paths.
fn loaded(paths: &[&Path]) -> ClusterState {
    ClusterState::load_paths(paths).expect("manifests load")
}

async fn wait_report(source: &ManifestSource, attempt: u64) -> Arc<ReloadReport> {
    let mut reports = source.reports();
    let found = tokio::time::timeout(WAIT, reports.wait_for(|r| r.attempt >= attempt)).await;
    match found {
        Ok(Ok(report)) => report.clone(),
        _ => panic!(
            "no load attempt {attempt} within {WAIT:?}; last: {:?}",
            source.reports().borrow()
        ),
    }
}

fn allowed(shared: &SharedState, src: &str, dst: &str, port: u16) -> bool {
    let ip = |s: &str| Endpoint::Ip(s.parse().expect("IP"));
    let flow = Connection::new(ip(src), ip(dst), port, Protocol::Tcp);
    shared.read().verdict(&flow).expect("verdict").allowed
}

#[tokio::test]
async fn the_initial_load_equals_the_files() {
    let f = fixture();
    let shared = SharedState::default();
    let source = ManifestSource::start(options(&[f.dir.path()]), shared.clone()).expect("start");
    assert_eq!(summary(&shared.read()), summary(&loaded(&[f.dir.path()])));
    let report = source.reports().borrow().clone();
    assert_eq!(report.attempt, 1);
    assert_eq!(report.outcome.as_ref().expect("loaded").applied, 8);
    assert_eq!(source.metrics().snapshot().reloads, 1);
}

#[tokio::test]
async fn a_changed_file_is_reloaded_as_a_diff() {
    let f = fixture();
    let shared = SharedState::default();
    let source =
        ManifestSource::start(options(&[&f.shop, &f.infra]), shared.clone()).expect("start");
    assert!(allowed(&shared, "10.0.0.1", "10.0.0.2", 5432));
    assert!(!allowed(&shared, "10.0.0.3", "10.0.0.2", 5432));

    // The policy now admits web instead of api; pod api is gone; a pod is added.
    let mut objects = shop("web");
    objects.remove(1);
    objects.push(value(&pod(
        "shop",
        "cache",
        &[("app", "cache")],
        "10.0.0.4",
    )));
    write_list(&f.shop, &objects);

    let report = wait_report(&source, 2).await;
    let outcome = report.outcome.as_ref().expect("reload applied");
    assert_eq!((outcome.applied, outcome.deleted), (2, 1), "{outcome:?}");
    assert_eq!(outcome.unchanged, 6, "{outcome:?}");
    wait_equal(&shared, &loaded(&[&f.shop, &f.infra]), WAIT).await;
    assert!(allowed(&shared, "10.0.0.3", "10.0.0.2", 5432));
    let metrics = source.metrics().snapshot();
    assert_eq!(metrics.kind(ObjectKind::Pod).deleted, 1);
    assert_eq!(metrics.reloads, 2);
}

#[tokio::test]
async fn a_bad_file_keeps_the_previous_state_and_is_reported() {
    let f = fixture();
    let shared = SharedState::default();
    let source = ManifestSource::start(options(&[f.dir.path()]), shared.clone()).expect("start");
    let before = summary(&shared.read());

    // Broken YAML: nothing of the new files applies.
    std::fs::write(
        &f.infra,
        "apiVersion: v1\nkind: Node\nmetadata: [unclosed\n",
    )
    .expect("write");
    let report = wait_report(&source, 2).await;
    let errors = report.outcome.as_ref().expect_err("syntax error reported");
    assert!(errors.to_string().contains("infra.yaml"), "{errors}");
    assert_eq!(summary(&shared.read()), before);

    // The broken file restored: a load of its own (waited for, so the next
    // change cannot be picked up by the same poll or by a separate one).
    std::fs::write(&f.infra, INFRA_YAML).expect("write");
    let report = wait_report(&source, 3).await;
    assert!(report.outcome.is_ok(), "{report:?}");
    assert_eq!(summary(&shared.read()), before);

    // An invalid object (bad CIDR) among valid changes: still nothing applies.
    let mut objects = shop("api");
    objects.push(value(&egress_cidr("shop", "bad", "10.0.0.0/99")));
    objects.remove(1);
    write_list(&f.shop, &objects);
    let report = wait_report(&source, 4).await;
    let errors = report
        .outcome
        .as_ref()
        .expect_err("invalid object reported");
    let text = errors.to_string();
    assert!(
        text.contains("shop.json")
            && text.contains("NetworkPolicy shop/bad")
            && text.contains("cidr"),
        "{text}"
    );
    assert_eq!(summary(&shared.read()), before);
    let metrics = source.metrics().snapshot();
    assert_eq!(metrics.reload_failures, 2);

    // Fixed: the diff applies.
    objects.pop();
    write_list(&f.shop, &objects);
    let report = wait_report(&source, 5).await;
    assert!(report.outcome.is_ok(), "{report:?}");
    wait_equal(&shared, &loaded(&[f.dir.path()]), WAIT).await;
    assert!(
        shared
            .read()
            .pod(&netverdict_policy::PodKey::new("shop", "api"))
            .is_none()
    );
}

#[tokio::test]
async fn files_added_to_and_removed_from_a_directory() {
    let f = fixture();
    let shared = SharedState::default();
    let source = ManifestSource::start(options(&[f.dir.path()]), shared.clone()).expect("start");

    let extra = f.dir.path().join("sub").join("extra.json");
    std::fs::create_dir_all(extra.parent().expect("parent")).expect("mkdir");
    write_list(
        &extra,
        &[
            value(&deny_all("ops", "deny-all")),
            value(&pod("ops", "probe", &[], "10.0.1.1")),
        ],
    );
    wait_report(&source, 2).await;
    wait_equal(&shared, &loaded(&[f.dir.path()]), WAIT).await;
    assert_eq!(shared.read().policy_count(), 2);

    std::fs::remove_file(&f.infra).expect("remove");
    std::fs::remove_file(&extra).expect("remove");
    wait_report(&source, 3).await;
    wait_equal(&shared, &loaded(&[f.dir.path()]), WAIT).await;
    assert!(shared.read().nodes().is_empty());
    assert_eq!(shared.read().policy_count(), 1);
}

#[tokio::test]
async fn an_unchanged_file_is_not_reloaded() {
    let f = fixture();
    let shared = SharedState::default();
    let source = ManifestSource::start(options(&[f.dir.path()]), shared.clone()).expect("start");
    let version = shared.version();
    // Rewritten with the same content: same fingerprint, no load.
    write_list(&f.shop, &shop("api"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(source.reports().borrow().attempt, 1);
    assert_eq!(shared.version(), version);
}

#[tokio::test]
async fn errors_in_the_initial_load_fail_the_start() {
    let f = fixture();
    std::fs::write(&f.infra, "apiVersion: v1\nkind: Node\nmetadata:\n  name: n\nstatus:\n  addresses:\n  - type: InternalIP\n    address: 999.1.1.1\n").expect("write");
    let shared = SharedState::default();
    let Err(error) = ManifestSource::start(options(&[f.dir.path()]), shared.clone()) else {
        panic!("invalid manifests must fail the start");
    };
    assert!(matches!(error, Error::Load(_)), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("infra.yaml") && text.contains("Node n"),
        "{text}"
    );
    assert_eq!(shared.read().pod_count(), 0);

    let Err(error) = ManifestSource::start(options(&[Path::new("-")]), SharedState::default())
    else {
        panic!("stdin cannot be watched");
    };
    assert!(matches!(error, Error::Stdin), "{error:?}");
    let Err(error) = ManifestSource::start(
        options(&[f.dir.path().join("nope").as_path()]),
        SharedState::default(),
    ) else {
        panic!("a missing path fails");
    };
    assert!(error.to_string().contains("nope"), "{error}");
}

#[tokio::test]
async fn pods_without_ips_need_require_pod_ips_off() {
    let f = fixture();
    let pending: Value = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "shop", "name": "pending"}, "spec": {"containers": []}});
    write_list(&f.dir.path().join("pending.json"), &[pending]);
    let Err(error) = ManifestSource::start(options(&[f.dir.path()]), SharedState::default()) else {
        panic!("a pod without IP is refused by default");
    };
    assert!(error.to_string().contains("shop/pending"), "{error}");

    let mut lab = options(&[f.dir.path()]);
    lab.require_pod_ips = false;
    let shared = SharedState::default();
    let _source = ManifestSource::start(lab, shared.clone()).expect("start");
    assert!(
        shared
            .read()
            .pod(&netverdict_policy::PodKey::new("shop", "pending"))
            .is_some()
    );
}
