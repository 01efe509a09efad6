//! The Kubernetes source against the in-process API double: initial list,
//! watch events, re-lists after `410 Gone`, bookmarks, invalid objects, config,
//! `403 Forbidden` named as the permission to grant, pods' owner workloads.

use std::time::Duration;

use crate::support::{self, FakeApiServer, wait_converged};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use netverdict_cluster::SharedState;
use netverdict_cluster::kube::{ClientOptions, KubeSource, KubeSourceConfig};
use netverdict_policy::{Connection, Endpoint, ObjectKind, Protocol};
use netverdict_testing::apiserver::CRD_PATHS;
use netverdict_testing::objects::*;
use netverdict_testing::wait_until;

const WAIT: Duration = Duration::from_secs(10);

/// The kinds that watch on the double: every kind but the three admin policy
/// kinds, whose CustomResourceDefinitions it does not install by default.
const WATCHING: usize = netverdict_cluster::KIND_COUNT - 3;

/// A small cluster with every kind.
fn populate(server: &FakeApiServer) {
    server.apply(&namespace("shop", &[("team", "shop")]));
    server.apply(&namespace("ops", &[("team", "ops")]));
    server.apply(&pod("shop", "api", &[("app", "api")], "10.0.0.1"));
    server.apply(&pod("shop", "db", &[("app", "db")], "10.0.0.2"));
    server.apply(&pod("shop", "web", &[("app", "web")], "10.0.0.3"));
    server.apply(&pod("ops", "probe", &[("app", "probe")], "10.0.1.1"));
    server.apply(&allow_from("shop", "db-from-api", "db", "api", 5432));
    server.apply(&deny_all("ops", "deny-all"));
    server.apply(&service("shop", "db", "10.96.0.10", "db"));
    server.apply(&endpoint_slice("shop", "db-abc", "db", "db", "10.0.0.2"));
    server.apply(&node("node-a", "192.168.1.10"));
}

/// Starts a source with small pages (so lists paginate) against `server`.
async fn start(server: &FakeApiServer) -> (SharedState, KubeSource) {
    support::init_tracing();
    let shared = SharedState::default();
    let config = KubeSourceConfig {
        page_size: Some(2),
        ..KubeSourceConfig::default()
    };
    let source = KubeSource::spawn(server.client(), shared.clone(), config);
    source
        .wait_synced(WAIT)
        .await
        .expect("initial lists complete");
    (shared, source)
}

fn ip(s: &str) -> Endpoint {
    Endpoint::Ip(s.parse().expect("IP"))
}

fn allowed(shared: &SharedState, src: &str, dst: &str, port: u16) -> bool {
    let flow = Connection::new(ip(src), ip(dst), port, Protocol::Tcp);
    shared.read().verdict(&flow).expect("verdict").allowed
}

#[tokio::test]
async fn initial_list_equals_the_server_with_pagination() {
    let server = FakeApiServer::start().await;
    populate(&server);
    let (shared, source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;
    // Four pods in pages of two (plus the continue page): the list paginated.
    assert!(
        server.count_requests("LIST /api/v1/pods") >= 2,
        "{:#?}",
        server.requests()
    );
    let state = shared.read();
    assert_eq!(state.pod_count(), 4);
    assert_eq!(state.policy_count(), 2);
    assert_eq!(state.services().len(), 1);
    assert_eq!(state.endpoint_slices().len(), 1);
    assert_eq!(state.nodes().len(), 1);
    assert_eq!(state.namespaces().len(), 2);
    let metrics = source.metrics().snapshot();
    assert_eq!(metrics.kind(ObjectKind::Pod).applied, 4);
    assert_eq!(metrics.kind(ObjectKind::Pod).lists, 1);
    assert_eq!(metrics.total().rejected, 0);
}

#[tokio::test]
async fn empty_cluster_syncs() {
    let server = FakeApiServer::start().await;
    let (shared, source) = start(&server).await;
    assert!(source.is_synced());
    assert_eq!(shared.read().pod_count(), 0);
}

#[tokio::test]
async fn added_modified_and_deleted_objects_are_applied() {
    let server = FakeApiServer::start().await;
    populate(&server);
    let (shared, source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;

    server.apply(&pod("shop", "cache", &[("app", "cache")], "10.0.0.4"));
    server.apply(&namespace("shop", &[("team", "shop"), ("tier", "gold")]));
    server.apply(&node("node-a", "192.168.1.11"));
    server.delete::<Service>("shop", "db");
    server.delete::<EndpointSlice>("shop", "db-abc");
    server.delete::<NetworkPolicy>("ops", "deny-all");
    server.delete::<Pod>("ops", "probe");
    wait_converged(&shared, &server, WAIT).await;

    let state = shared.read();
    assert!(state.service("shop", "db").is_none());
    assert_eq!(
        state
            .namespace_label_map("shop")
            .get("tier")
            .map(String::as_str),
        Some("gold")
    );
    let metrics = source.metrics().snapshot();
    // No re-list was needed for plain watch events.
    assert_eq!(metrics.kind(ObjectKind::Pod).lists, 1);
    assert_eq!(metrics.kind(ObjectKind::Pod).deleted, 1);
    assert_eq!(metrics.kind(ObjectKind::Service).deleted, 1);
}

#[tokio::test]
async fn a_label_change_changes_a_verdict() {
    let server = FakeApiServer::start().await;
    populate(&server);
    let (shared, _source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;
    // web -> db:5432 is denied (only app=api may reach db), api -> db allowed.
    assert!(!allowed(&shared, "10.0.0.3", "10.0.0.2", 5432));
    assert!(allowed(&shared, "10.0.0.1", "10.0.0.2", 5432));

    server.apply(&pod("shop", "web", &[("app", "api")], "10.0.0.3"));
    wait_until(
        "web relabelled app=api to be allowed to db",
        WAIT,
        async || allowed(&shared, "10.0.0.3", "10.0.0.2", 5432),
    )
    .await;

    // And a policy change (cached verdicts must not survive it).
    server.apply(&allow_from("shop", "db-from-api", "db", "nobody", 5432));
    wait_until(
        "api denied once the policy no longer names it",
        WAIT,
        async || !allowed(&shared, "10.0.0.1", "10.0.0.2", 5432),
    )
    .await;
}

/// The crux: objects deleted and changed while the watch was down, history
/// compacted so the resumed watch gets `410 Gone` → re-list → exactly equal.
#[tokio::test]
async fn converges_after_a_forced_410() {
    let server = FakeApiServer::start().await;
    populate(&server);
    let (shared, source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;
    let lists_before = server.count_requests("LIST /api/v1/pods");

    server.pause_watches();
    server.delete::<Pod>("shop", "api");
    server.apply(&pod(
        "shop",
        "web",
        &[("app", "web"), ("version", "2")],
        "10.0.0.3",
    ));
    server.apply(&pod("shop", "new", &[("app", "new")], "10.0.0.9"));
    server.delete::<NetworkPolicy>("ops", "deny-all");
    server.apply(&allow_from("shop", "db-from-api", "db", "web", 5432));
    server.delete::<Namespace>("", "ops");
    server.delete::<Node>("", "node-a");
    server.delete::<Service>("shop", "db");
    server.delete::<EndpointSlice>("shop", "db-abc");
    server.compact();
    server.resume_watches();

    wait_converged(&shared, &server, WAIT).await;
    assert!(
        server.count_requests("LIST /api/v1/pods") > lists_before,
        "no re-list: {:#?}",
        server.requests()
    );
    {
        let state = shared.read();
        assert!(
            state
                .pod(&netverdict_policy::PodKey::new("shop", "api"))
                .is_none()
        );
        assert!(
            state
                .policy(&netverdict_policy::PolicyKey::network_policy(
                    "ops", "deny-all"
                ))
                .is_none()
        );
        assert!(state.nodes().is_empty());
    }
    let metrics = source.metrics().snapshot();
    let pods = metrics.kind(ObjectKind::Pod);
    assert!(pods.relists() >= 1, "{pods:?}");
    assert!(pods.watch_errors >= 1, "{pods:?}");
    // After the re-list the watch resumes: later events still arrive.
    server.apply(&pod("shop", "after", &[("app", "after")], "10.0.0.10"));
    wait_converged(&shared, &server, WAIT).await;
}

/// Same, when the API server answers the watch request itself with HTTP 410
/// (kube-rs alone would retry the expired resourceVersion forever).
#[tokio::test]
async fn converges_after_a_410_answered_to_the_watch_request() {
    let server = FakeApiServer::start().await;
    populate(&server);
    server.set_gone_as_http_status(true);
    let (shared, source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;

    server.pause_watches();
    server.delete::<Pod>("shop", "db");
    server.apply(&namespace("shop", &[("team", "payments")]));
    server.compact();
    server.resume_watches();

    wait_converged(&shared, &server, WAIT).await;
    let pods = source.metrics().snapshot().kind(ObjectKind::Pod);
    assert!(pods.lists >= 2 && pods.watch_errors >= 1, "{pods:?}");
    server.apply(&pod("shop", "after", &[("app", "after")], "10.0.0.10"));
    wait_converged(&shared, &server, WAIT).await;
}

/// A `410` inside a live watch stream (the watch fell out of the window).
#[tokio::test]
async fn an_expired_watch_relists() {
    let server = FakeApiServer::start().await;
    populate(&server);
    let (shared, source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;
    // Every kind is watching (a watch starts just after its list).
    server.wait_requests("WATCH ", WATCHING, WAIT).await;

    server.expire_watches();
    server.apply(&pod("ops", "probe", &[("app", "probe2")], "10.0.1.1"));
    server.delete::<Pod>("shop", "web");
    wait_converged(&shared, &server, WAIT).await;
    wait_until("every installed kind re-listed", WAIT, async || {
        source
            .metrics()
            .snapshot()
            .kinds
            .iter()
            .filter(|(_, c)| !c.not_installed)
            .all(|(_, c)| c.lists >= 2)
    })
    .await;
    wait_converged(&shared, &server, WAIT).await;
}

/// A dropped connection resumes from the last resourceVersion without a re-list.
#[tokio::test]
async fn a_dropped_watch_resumes_without_relisting() {
    let server = FakeApiServer::start().await;
    populate(&server);
    let (shared, source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;
    let lists = server.count_requests("LIST ");
    let watches = server.count_requests("WATCH /api/v1/pods");

    server.pause_watches();
    server.delete::<Pod>("shop", "api");
    server.apply(&pod("shop", "db", &[("app", "db"), ("v", "2")], "10.0.0.2"));
    server.resume_watches();
    wait_converged(&shared, &server, WAIT).await;
    server
        .wait_requests("WATCH /api/v1/pods", watches + 1, WAIT)
        .await;
    assert_eq!(
        server.count_requests("LIST "),
        lists,
        "{:#?}",
        server.requests()
    );
    assert_eq!(source.metrics().snapshot().kind(ObjectKind::Pod).lists, 1);
}

#[tokio::test]
async fn bookmarks_do_not_disturb() {
    let server = FakeApiServer::start().await;
    populate(&server);
    let (shared, source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;
    let version = shared.version();

    for _ in 0..5 {
        server.bookmark();
    }
    server.apply(&pod("shop", "cache", &[("app", "cache")], "10.0.0.4"));
    server.bookmark();
    server.delete::<Pod>("shop", "cache");
    server.bookmark();
    server.apply(&pod("shop", "cache2", &[("app", "cache")], "10.0.0.5"));
    wait_converged(&shared, &server, WAIT).await;
    // Bookmarks are not updates: the state changed only for the three events.
    assert!(
        shared.version() <= version + 3,
        "{} -> {}",
        version,
        shared.version()
    );
    let metrics = source.metrics().snapshot();
    assert_eq!(metrics.total().watch_errors, 0);
    assert!(
        metrics.kinds.iter().all(|(_, c)| c.lists == 1),
        "{metrics:?}"
    );
    assert!(
        server.bookmarks_sent() >= 6,
        "watches did not ask for bookmarks"
    );
}

/// What bookmarks are for: a kind with no events of its own keeps a current
/// resourceVersion, so after a disconnect and a compaction it resumes its watch
/// instead of re-listing.
#[tokio::test]
async fn bookmarks_keep_a_quiet_watch_resumable() {
    let server = FakeApiServer::start().await;
    populate(&server);
    let (shared, source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;
    server.wait_requests("WATCH ", WATCHING, WAIT).await;
    let watches = server.count_requests("WATCH ");

    // Namespaces change; pods, policies... stay quiet while the revision moves on.
    for i in 0..3 {
        server.apply(&namespace(
            "shop",
            &[("team", "shop"), ("rev", &i.to_string())],
        ));
    }
    wait_converged(&shared, &server, WAIT).await;
    server.bookmark();
    wait_until("a bookmark sent to every watch", WAIT, async || {
        server.bookmarks_sent() >= 6
    })
    .await;
    server.compact();
    server.drop_watches();

    server
        .wait_requests("WATCH ", watches + WATCHING, WAIT)
        .await;
    server.apply(&pod("shop", "after", &[("app", "after")], "10.0.0.10"));
    wait_converged(&shared, &server, WAIT).await;
    let metrics = source.metrics().snapshot();
    assert!(
        metrics.kinds.iter().all(|(_, c)| c.lists == 1),
        "a kind re-listed: {metrics:?}"
    );
    assert_eq!(metrics.total().watch_errors, 0, "{metrics:?}");
}

#[tokio::test]
async fn an_invalid_object_is_counted_reported_and_does_not_stop_the_rest() {
    let server = FakeApiServer::start().await;
    populate(&server);
    server.apply(&egress_cidr("shop", "bad-cidr", "10.0.0.0/33"));
    let (shared, source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;

    let metrics = source.metrics().snapshot();
    assert_eq!(metrics.kind(ObjectKind::NetworkPolicy).rejected, 1);
    assert_eq!(metrics.invalid.len(), 1, "{:?}", metrics.invalid);
    let invalid = &metrics.invalid[0];
    assert_eq!(
        (invalid.namespace.as_str(), invalid.name.as_str()),
        ("shop", "bad-cidr")
    );
    assert!(
        invalid.error.error.field.contains("cidr"),
        "{}",
        invalid.error
    );
    assert!(
        invalid
            .error
            .to_string()
            .contains("NetworkPolicy shop/bad-cidr"),
        "{}",
        invalid.error
    );
    assert_eq!(shared.read().policy_count(), 2);

    // Later events still apply.
    server.apply(&pod("shop", "cache", &[("app", "cache")], "10.0.0.4"));
    wait_converged(&shared, &server, WAIT).await;

    // A valid policy updated to an invalid version leaves the state (it no
    // longer exists in that form), and is reported.
    server.apply(&egress_cidr("shop", "egress", "10.1.0.0/16"));
    wait_until("valid egress policy applied", WAIT, async || {
        shared.read().policy_count() == 3
    })
    .await;
    server.apply(&egress_cidr("shop", "egress", "not-a-cidr"));
    wait_converged(&shared, &server, WAIT).await;
    assert_eq!(shared.read().policy_count(), 2);
    assert_eq!(source.metrics().snapshot().invalid.len(), 2);

    // Fixed, it comes back and is no longer listed as invalid; deleted, the
    // invalid one is forgotten.
    server.apply(&egress_cidr("shop", "egress", "10.2.0.0/16"));
    server.delete::<NetworkPolicy>("shop", "bad-cidr");
    wait_converged(&shared, &server, WAIT).await;
    wait_until("no invalid objects left", WAIT, async || {
        source.metrics().snapshot().invalid.is_empty()
    })
    .await;
    assert_eq!(shared.read().policy_count(), 3);
    assert_eq!(
        source
            .metrics()
            .snapshot()
            .kind(ObjectKind::NetworkPolicy)
            .rejected,
        2
    );
}

#[tokio::test]
async fn a_kubeconfig_file_configures_the_client() {
    let server = FakeApiServer::start().await;
    populate(&server);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
         users:\n- name: me\n  user:\n    token: t0ken\ncontexts:\n- name: other\n  context:\n    cluster: nowhere\n    user: me\n\
         - name: fake\n  context:\n    cluster: fake\n    user: me\ncurrent-context: other\n",
        server.url()
    );
    std::fs::write(&path, kubeconfig).expect("write kubeconfig");
    let options = ClientOptions {
        kubeconfig: Some(path.clone()),
        context: Some("fake".into()),
    };
    let client = netverdict_cluster::kube::client(&options)
        .await
        .expect("client from kubeconfig");
    let shared = SharedState::default();
    let source = KubeSource::spawn(client, shared.clone(), KubeSourceConfig::default());
    source.wait_synced(WAIT).await.expect("synced");
    wait_converged(&shared, &server, WAIT).await;

    let missing = ClientOptions {
        kubeconfig: Some(dir.path().join("missing")),
        context: None,
    };
    let Err(error) = netverdict_cluster::kube::client(&missing).await else {
        panic!("a missing kubeconfig must fail");
    };
    assert!(error.to_string().contains("missing"), "{error}");
}

/// The counters a scrape encodes (the collector's `/metrics` renders them,
/// tested there): what the initial list applied, one list per kind, nothing
/// invalid.
#[tokio::test]
async fn metrics_count_what_the_lists_applied() {
    let server = FakeApiServer::start().await;
    populate(&server);
    let (shared, source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;
    let metrics = source.metrics().snapshot();
    assert_eq!(metrics.kind(ObjectKind::Pod).applied, 4, "{metrics:?}");
    assert_eq!(metrics.kind(ObjectKind::Node).lists, 1, "{metrics:?}");
    assert_eq!(metrics.total().rejected, 0, "{metrics:?}");
    assert!(metrics.invalid.is_empty(), "{metrics:?}");
}

/// A list whose next page is refused (`410 Expired` continue token) is
/// abandoned and started over: half a list never reaches the state.
#[tokio::test]
async fn an_expired_list_continuation_restarts_the_list() {
    let server = FakeApiServer::start().await;
    populate(&server);
    server.expire_next_continue();
    let (shared, source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;
    let metrics = source.metrics().snapshot();
    assert!(metrics.total().watch_errors >= 1, "{metrics:?}");
    assert_eq!(metrics.kind(ObjectKind::Pod).applied, 4, "{metrics:?}");
    assert!(
        metrics.kinds.iter().all(|(_, c)| c.lists == 1),
        "{metrics:?}"
    );
}

/// A bigger cluster (2,000 pods, 200 policies, pages of 500) through an initial
/// list, a watch gap with churn, and a forced 410, while a reader keeps asking
/// for verdicts on another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_cluster_converges_after_a_forced_410() {
    support::init_tracing();
    let server = FakeApiServer::start().await;
    for n in 0..10 {
        server.apply(&namespace(&format!("ns{n}"), &[("n", &n.to_string())]));
    }
    for i in 0..2000u32 {
        let ip = format!("10.1.{}.{}", i / 250, i % 250 + 1);
        let app = format!("app{}", i % 50);
        server.apply(&pod(
            &format!("ns{}", i % 10),
            &format!("pod{i}"),
            &[("app", &app)],
            &ip,
        ));
    }
    for p in 0..200u32 {
        server.apply(&allow_from(
            &format!("ns{}", p % 10),
            &format!("policy{p}"),
            &format!("app{}", p % 50),
            &format!("app{}", (p + 1) % 50),
            8080,
        ));
    }
    let shared = SharedState::default();
    let source = KubeSource::spawn(server.client(), shared.clone(), KubeSourceConfig::default());
    source.wait_synced(WAIT).await.expect("synced");
    wait_converged(&shared, &server, WAIT).await;

    let reader_state = shared.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader_stop = stop.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut verdicts = 0u64;
        while !reader_stop.load(std::sync::atomic::Ordering::Relaxed) {
            for i in 0..50u32 {
                let flow = Connection::new(
                    ip(&format!("10.1.0.{}", i + 1)),
                    ip(&format!("10.1.1.{}", i + 1)),
                    8080,
                    Protocol::Tcp,
                );
                // Pods may be gone mid-churn: an error is an answer too.
                let _ = reader_state.read().verdict(&flow);
                verdicts += 1;
            }
        }
        verdicts
    });

    server.pause_watches();
    for i in (0..2000u32).step_by(7) {
        server.delete::<Pod>(&format!("ns{}", i % 10), &format!("pod{i}"));
    }
    for p in (0..200u32).step_by(3) {
        server.apply(&deny_all(&format!("ns{}", p % 10), &format!("policy{p}")));
    }
    server.compact();
    server.resume_watches();
    wait_converged(&shared, &server, Duration::from_secs(30)).await;
    assert_eq!(shared.read().pod_count(), 2000 - 2000_usize.div_ceil(7));
    assert_eq!(shared.read().policy_count(), 200);
    assert_eq!(source.metrics().snapshot().total().rejected, 0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let verdicts = reader.await.expect("reader");
    assert!(verdicts > 0);
}

#[tokio::test]
async fn stopping_the_source_freezes_the_state() {
    let server = FakeApiServer::start().await;
    populate(&server);
    let (shared, mut source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;
    // Running: `stopped` does not resolve.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), source.stopped())
            .await
            .is_err()
    );
    source.shutdown().await;
    let before = support::summary(&shared.read());
    server.delete::<Pod>("shop", "api");
    server.bookmark();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(support::summary(&shared.read()), before);
}

/// A kind the agent may not list keeps the source from being synced, is named
/// by `wait_synced`, doesn't hold the other kinds back, and is picked up once
/// allowed.
#[tokio::test]
async fn a_forbidden_kind_is_named_and_picked_up_once_allowed() {
    support::init_tracing();
    let server = FakeApiServer::start().await;
    populate(&server);
    server.forbid::<EndpointSlice>(true);
    let shared = SharedState::default();
    let source = KubeSource::spawn(server.client(), shared.clone(), KubeSourceConfig::default());
    let error = source
        .wait_synced(Duration::from_millis(500))
        .await
        .expect_err("EndpointSlices cannot be listed");
    // The error names the permission to grant, and what the server said.
    let text = error.to_string();
    assert!(
        text.contains("grant list and watch on endpointslices (apiGroups [\"discovery.k8s.io\"])"),
        "{text}"
    );
    assert!(text.contains("endpointslices is forbidden: User"), "{text}");
    assert!(!text.contains("pods"), "{text}");
    let refused = source.metrics().snapshot().forbidden;
    assert_eq!(
        refused.iter().map(|f| f.kind).collect::<Vec<_>>(),
        [ObjectKind::EndpointSlice],
        "{refused:?}"
    );
    wait_until("the other kinds applied", WAIT, async || {
        shared.read().pod_count() == 4
    })
    .await;
    assert!(
        source
            .metrics()
            .snapshot()
            .kind(ObjectKind::EndpointSlice)
            .watch_errors
            >= 1
    );

    server.forbid::<EndpointSlice>(false);
    source
        .wait_synced(Duration::from_secs(30))
        .await
        .expect("synced once allowed");
    wait_converged(&shared, &server, WAIT).await;
    assert!(source.metrics().snapshot().forbidden.is_empty());
}

/// Pods resolve to their workloads through the ReplicaSets and Jobs the
/// source watches (Deployments and CronJobs are named by the owner
/// references, never read), and follow their owners' changes.
#[tokio::test]
async fn pods_resolve_to_their_workloads_through_owner_references() {
    let server = FakeApiServer::start().await;
    server.apply(&namespace("shop", &[]));
    server.apply(&deployment("shop", "web"));
    server.apply(&replica_set("shop", "web-7d9f", Some("web")));
    let rs = ("apps/v1", "ReplicaSet", "web-7d9f");
    server.apply(&owned_pod(
        "shop",
        "web-7d9f-a",
        &[("app", "web")],
        "10.0.0.1",
        rs,
    ));
    server.apply(&owned_pod("shop", "web-7d9f-b", &[], "10.0.0.2", rs));
    server.apply(&job("shop", "backup-2890", Some("backup")));
    let job_ref = ("batch/v1", "Job", "backup-2890");
    server.apply(&owned_pod(
        "shop",
        "backup-2890-x",
        &[],
        "10.0.0.3",
        job_ref,
    ));
    let sts = ("apps/v1", "StatefulSet", "db");
    server.apply(&owned_pod(
        "shop",
        "db-0",
        &[("app", "db")],
        "10.0.0.4",
        sts,
    ));
    server.apply(&pod("shop", "debug", &[], "10.0.0.5"));
    let (shared, source) = start(&server).await;
    wait_converged(&shared, &server, WAIT).await;
    let workload = |name: &str| {
        let state = shared.read();
        let pod = state
            .pod(&netverdict_policy::PodKey::new("shop", name))
            .unwrap_or_else(|| panic!("pod {name}"))
            .clone();
        netverdict_policy::model::workload_name(state.workload_of(&pod).as_deref(), &pod.key)
    };
    // Two pods, with and without labels, are one Deployment.
    assert_eq!(workload("web-7d9f-a"), "Deployment/web");
    assert_eq!(workload("web-7d9f-b"), "Deployment/web");
    assert_eq!(workload("backup-2890-x"), "CronJob/backup");
    assert_eq!(workload("db-0"), "StatefulSet/db");
    assert_eq!(workload("debug"), "Pod/debug");
    let metrics = source.metrics().snapshot();
    assert_eq!(
        metrics.kind(ObjectKind::ReplicaSet).applied,
        1,
        "{metrics:?}"
    );
    assert_eq!(metrics.kind(ObjectKind::Job).applied, 1, "{metrics:?}");

    // A ReplicaSet orphaned (its Deployment deleted with --cascade=orphan)
    // is its pods' workload; deleted, its pods name it still.
    server.apply(&replica_set("shop", "web-7d9f", None));
    wait_converged(&shared, &server, WAIT).await;
    assert_eq!(workload("web-7d9f-a"), "ReplicaSet/web-7d9f");
    server.apply(&replica_set("shop", "web-7d9f", Some("web")));
    wait_converged(&shared, &server, WAIT).await;
    assert_eq!(workload("web-7d9f-a"), "Deployment/web");
    assert!(server.delete::<k8s_openapi::api::batch::v1::Job>("shop", "backup-2890"));
    wait_converged(&shared, &server, WAIT).await;
    assert_eq!(workload("backup-2890-x"), "Job/backup-2890");
}

/// One-shot commands list each kind once, page by page; a refused kind is
/// an error naming every permission missing, not just the first.
#[tokio::test]
async fn listing_once_reads_every_kind_and_names_what_is_forbidden() {
    let server = FakeApiServer::start().await;
    populate(&server);
    server.apply(&replica_set("shop", "web-1", Some("web")));
    let objects =
        netverdict_cluster::kube::list_once(&server.client(), &netverdict_cluster::KINDS, 2)
            .await
            .expect("listed");
    let expected = support::summary(&support::expected_state(&server));
    let mut listed = netverdict_policy::ClusterState::new();
    for object in &objects {
        let _ = listed.apply(object);
    }
    assert_eq!(support::summary(&listed), expected);
    assert!(server.count_requests("LIST /api/v1/pods") >= 2, "paginated");

    server.forbid::<Pod>(true);
    server.forbid::<k8s_openapi::api::apps::v1::ReplicaSet>(true);
    let error =
        netverdict_cluster::kube::list_once(&server.client(), &netverdict_cluster::KINDS, 2)
            .await
            .expect_err("forbidden");
    let text = error.to_string();
    assert!(
        text.contains(
            "cannot list pods at cluster scope: grant list and watch on pods (apiGroups [\"\"])"
        ),
        "{text}"
    );
    assert!(text.contains("cannot list replicasets.apps at cluster scope: grant list and watch on replicasets (apiGroups [\"apps\"])"), "{text}");
    // Only the kinds asked for are listed.
    let objects =
        netverdict_cluster::kube::list_once(&server.client(), &[ObjectKind::Namespace], 2)
            .await
            .expect("namespaces are permitted");
    assert_eq!(objects.len(), 2);
}

/// The RBAC access each request path and method needs, as the API server's
/// authorizer derives it.
#[test]
fn requests_map_to_the_rbac_access_they_need() {
    use hyper::Method;
    use netverdict_testing::apiserver::access_of;
    let show =
        |method: Method, path: &str, watch: bool| access_of(&method, path, watch).to_string();
    assert_eq!(
        show(Method::GET, "/api/v1/pods", false),
        "list pods cluster-wide"
    );
    assert_eq!(
        show(Method::GET, "/api/v1/pods", true),
        "watch pods cluster-wide"
    );
    assert_eq!(
        show(Method::GET, "/api/v1/namespaces/shop/pods", false),
        "list pods in namespace shop"
    );
    assert_eq!(
        show(Method::GET, "/api/v1/namespaces/shop/secrets/db", false),
        "get secrets in namespace shop"
    );
    assert_eq!(
        show(Method::GET, "/api/v1/namespaces/shop", false),
        "get namespaces cluster-wide"
    );
    assert_eq!(
        show(Method::GET, "/api/v1/namespaces/shop/pods/web/log", false),
        "get pods/log in namespace shop"
    );
    assert_eq!(
        show(
            Method::GET,
            "/apis/networking.k8s.io/v1/networkpolicies",
            true
        ),
        "watch networkpolicies.networking.k8s.io cluster-wide"
    );
    assert_eq!(
        show(
            Method::POST,
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            false
        ),
        "create certificatesigningrequests.certificates.k8s.io cluster-wide"
    );
    assert_eq!(
        show(Method::PATCH, "/api/v1/nodes/node-a/status", false),
        "patch nodes/status cluster-wide"
    );
    assert_eq!(
        show(Method::DELETE, "/api/v1/namespaces/x/pods", false),
        "deletecollection pods in namespace x"
    );
    assert_eq!(
        show(Method::GET, "/version", false),
        "get /version (non-resource URL)"
    );
    assert_eq!(
        show(Method::GET, "/apis", false),
        "get /apis (non-resource URL)"
    );
}

/// Lists and watches of the kinds asked for, cluster-wide, and nothing else:
/// what RBAC must grant the component that runs the source.
#[tokio::test]
async fn the_source_asks_only_list_and_watch_of_its_kinds() {
    use std::collections::BTreeSet;
    support::init_tracing();
    for kinds in [
        netverdict_cluster::KINDS.to_vec(),
        vec![
            ObjectKind::Namespace,
            ObjectKind::Pod,
            ObjectKind::NetworkPolicy,
            ObjectKind::Service,
        ],
    ] {
        let server = FakeApiServer::start().await;
        populate(&server);
        server.install_crds(true);
        let shared = SharedState::default();
        let config = KubeSourceConfig {
            kinds: kinds.clone(),
            ..KubeSourceConfig::default()
        };
        let source = KubeSource::spawn(server.client(), shared.clone(), config);
        source
            .wait_synced(WAIT)
            .await
            .expect("initial lists complete");
        // Re-lists after an expired watch, and reconnects, ask for nothing new.
        server.wait_requests("WATCH", kinds.len(), WAIT).await;
        server.expire_watches();
        server.wait_requests("WATCH", 2 * kinds.len(), WAIT).await;
        server.wait_requests("LIST", 2 * kinds.len(), WAIT).await;
        let resources = |k: &ObjectKind| match k {
            ObjectKind::Namespace => "namespaces",
            ObjectKind::Pod => "pods",
            ObjectKind::NetworkPolicy => "networkpolicies.networking.k8s.io",
            ObjectKind::Service => "services",
            ObjectKind::EndpointSlice => "endpointslices.discovery.k8s.io",
            ObjectKind::Node => "nodes",
            ObjectKind::ReplicaSet => "replicasets.apps",
            ObjectKind::Job => "jobs.batch",
            ObjectKind::AdminNetworkPolicy => "adminnetworkpolicies.policy.networking.k8s.io",
            ObjectKind::BaselineAdminNetworkPolicy => {
                "baselineadminnetworkpolicies.policy.networking.k8s.io"
            }
            ObjectKind::ClusterNetworkPolicy => "clusternetworkpolicies.policy.networking.k8s.io",
        };
        let want: BTreeSet<String> = kinds
            .iter()
            .flat_map(|k| {
                ["list", "watch"].map(|verb| format!("{verb} {} cluster-wide", resources(k)))
            })
            .collect();
        let got: BTreeSet<String> = server.accesses().iter().map(|a| a.to_string()).collect();
        assert_eq!(got, want, "kinds {kinds:?}");
        // The state holds only the watched kinds.
        let has_nodes = !shared.read().nodes().is_empty();
        assert_eq!(
            has_nodes,
            kinds.contains(&ObjectKind::Node),
            "nodes in the state"
        );
        source.shutdown().await;
    }
}

/// The network-policy-api CRDs missing (lists answer 404) is said once per
/// kind (the not-installed gauge), does not keep the source from syncing nor
/// make it retry in a loop; once installed, their policies are watched.
#[tokio::test]
async fn admin_policy_crds_not_installed_then_installed() {
    support::init_tracing();
    let server = FakeApiServer::start().await;
    populate(&server);
    let shared = SharedState::default();
    let config = KubeSourceConfig {
        not_installed_retry: Duration::from_millis(300),
        ..KubeSourceConfig::default()
    };
    let source = KubeSource::spawn(server.client(), shared.clone(), config);
    source
        .wait_synced(WAIT)
        .await
        .expect("synced without the CRDs");
    let kinds = [
        ObjectKind::AdminNetworkPolicy,
        ObjectKind::BaselineAdminNetworkPolicy,
        ObjectKind::ClusterNetworkPolicy,
    ];
    wait_until("the three kinds marked not installed", WAIT, async || {
        let m = source.metrics().snapshot();
        kinds.iter().all(|k| m.kind(*k).not_installed)
    })
    .await;
    let m = source.metrics().snapshot();
    assert!(
        kinds.iter().all(|k| m.kind(*k).watch_errors == 0),
        "a 404 is no error: {m:?}"
    );
    // Listed again every retry period, not in a loop.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let tries = server.count_requests(&format!("NOTFOUND {}", CRD_PATHS[0]));
    assert!(
        (1..=4).contains(&tries),
        "{tries} tries in ~0.7 s: {:#?}",
        server.requests()
    );
    assert!(allowed(&shared, "10.0.0.3", "10.0.0.1", 80));

    // Installed, with a policy denying web -> api: picked up on the next try.
    server.install_crds(true);
    server.apply_value(
        CRD_PATHS[0],
        serde_json::json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
            "metadata": {"name": "deny-web"},
            "spec": {"priority": 1,
                "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "api"}}}},
                "ingress": [{"name": "no-web", "action": "Deny",
                    "from": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}}]}]}}),
    );
    server.apply_value(
        CRD_PATHS[2],
        serde_json::json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "baseline"},
            "spec": {"tier": "Baseline", "priority": 1, "subject": {"namespaces": {}},
                "egress": [{"action": "Deny", "to": [{"networks": ["203.0.113.0/24"]}]}]}}),
    );
    wait_converged(&shared, &server, WAIT).await;
    assert_eq!(shared.read().admin_policy_count(), 2);
    assert!(!allowed(&shared, "10.0.0.3", "10.0.0.1", 80));
    assert!(!allowed(&shared, "10.0.0.3", "203.0.113.9", 443));
    let m = source.metrics().snapshot();
    assert!(kinds.iter().all(|k| !m.kind(*k).not_installed), "{m:?}");
    // Watched: a deletion is applied.
    assert!(server.delete_at(CRD_PATHS[0], "", "deny-web"));
    wait_converged(&shared, &server, WAIT).await;
    assert!(allowed(&shared, "10.0.0.3", "10.0.0.1", 80));
}
