//! Time-aware IP attribution: a recycled pod IP resolves to the pod that held
//! it at the flow's time, verdicts on a departed pod are its own (and not
//! cached), and departed pods are forgotten after the retention.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use netverdict_policy::{ClusterState, Connection, Endpoint, K8sObject, ObjectKind, Protocol};
use proptest::prelude::*;

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
}

fn object(json: serde_json::Value) -> K8sObject {
    let mut m = netverdict_policy::Manifests::default();
    m.read_str(std::path::Path::new("test"), &json.to_string());
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    m.objects.remove(0).object
}

fn pod(ns: &str, name: &str, app: &str, ip: &str) -> K8sObject {
    object(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
        "status": {"podIP": ip},
    }))
}

/// Ingress to app=db only from app=api.
fn db_policy() -> K8sObject {
    object(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "default", "name": "db-from-api"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}],
        },
    }))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const RECYCLED: &str = "10.244.0.7";

/// Pod A (app=api) holds 10.244.0.7 from t=10, is deleted at t=20; pod B
/// (app=web) gets the same IP at t=25.
fn recycled() -> ClusterState {
    let mut state = ClusterState::new();
    state.set_time(t(0));
    state.apply(&db_policy()).unwrap();
    state
        .apply(&pod("default", "db", "db", "10.244.0.2"))
        .unwrap();
    state.set_time(t(10));
    state.apply(&pod("default", "a", "api", RECYCLED)).unwrap();
    state.set_time(t(20));
    assert!(state.delete(ObjectKind::Pod, "default", "a"));
    state.set_time(t(25));
    state.apply(&pod("default", "b", "web", RECYCLED)).unwrap();
    state
}

fn holder(state: &ClusterState, at: SystemTime) -> Option<String> {
    state
        .pod_by_ip_at(ip(RECYCLED), at)
        .map(|p| p.key.to_string())
}

fn to_db(state: &ClusterState, at: SystemTime) -> bool {
    let flow = Connection::new(
        Endpoint::Ip(ip(RECYCLED)),
        Endpoint::Ip(ip("10.244.0.2")),
        5432,
        Protocol::Tcp,
    );
    state.verdict_at(&flow, at).unwrap().allowed
}

#[test]
fn a_recycled_ip_resolves_to_the_pod_that_held_it_at_the_time() {
    let state = recycled();
    assert_eq!(holder(&state, t(12)).as_deref(), Some("default/a"));
    assert_eq!(holder(&state, t(19)).as_deref(), Some("default/a"));
    assert_eq!(holder(&state, t(25)).as_deref(), Some("default/b"));
    assert_eq!(holder(&state, t(90)).as_deref(), Some("default/b"));
    // Between A's deletion and B's creation, or before anyone: the current
    // holder (watches lag the kernel; nothing better is known).
    assert_eq!(holder(&state, t(22)).as_deref(), Some("default/b"));
    assert_eq!(holder(&state, t(1)).as_deref(), Some("default/b"));
    assert!(!state.holder_at(ip(RECYCLED), t(12)).unwrap().current);
    assert!(state.holder_at(ip(RECYCLED), t(30)).unwrap().current);
    // Now-resolution is unchanged: the current holder.
    assert_eq!(
        state.pod_by_ip(ip(RECYCLED)).unwrap().key.to_string(),
        "default/b"
    );
}

#[test]
fn verdicts_at_a_time_judge_the_pod_of_that_time_and_departed_ones_are_not_cached() {
    let state = recycled();
    assert!(to_db(&state, t(15)), "A (app=api) may reach the db");
    let cached = state.cached_verdicts();
    assert!(!to_db(&state, t(30)), "B (app=web) may not");
    assert_eq!(
        state.cached_verdicts(),
        cached + 1,
        "B's verdict is cached, A's was not"
    );
    // The departed pod's verdict again: still right after B's was cached.
    assert!(to_db(&state, t(15)));
}

#[test]
fn departed_pods_are_pruned_after_the_retention() {
    let mut state = recycled();
    state.set_departed_retention(Duration::from_secs(60));
    assert_eq!(state.departed_count(), 1);
    assert_eq!(state.prune_departed(t(79)), 0);
    assert_eq!(holder(&state, t(15)).as_deref(), Some("default/a"));
    assert_eq!(state.prune_departed(t(80)), 1);
    assert_eq!(state.departed_count(), 0);
    assert_eq!(holder(&state, t(15)).as_deref(), Some("default/b"));
}

#[test]
fn an_update_that_changes_nothing_keeps_the_holding_and_a_label_change_splits_it() {
    let mut state = ClusterState::new();
    state.set_time(t(10));
    state.apply(&pod("default", "a", "api", RECYCLED)).unwrap();
    state.set_time(t(20));
    state.apply(&pod("default", "a", "api", RECYCLED)).unwrap();
    assert_eq!(state.departed_count(), 0);
    assert!(state.holder_at(ip(RECYCLED), t(15)).unwrap().current);
    state.set_time(t(30));
    state.apply(&pod("default", "a", "web", RECYCLED)).unwrap();
    let then = state.pod_by_ip_at(ip(RECYCLED), t(15)).unwrap();
    assert_eq!(then.labels.get("app").map(String::as_str), Some("api"));
    let now = state.pod_by_ip_at(ip(RECYCLED), t(35)).unwrap();
    assert_eq!(now.labels.get("app").map(String::as_str), Some("web"));
}

#[test]
fn a_new_holder_applied_before_the_old_one_is_deleted_takes_over_from_then() {
    let mut state = ClusterState::new();
    state.set_time(t(10));
    state.apply(&pod("default", "a", "api", RECYCLED)).unwrap();
    state.set_time(t(20));
    state.apply(&pod("default", "b", "web", RECYCLED)).unwrap();
    state.set_time(t(21));
    state.delete(ObjectKind::Pod, "default", "a");
    assert_eq!(holder(&state, t(15)).as_deref(), Some("default/a"));
    assert_eq!(holder(&state, t(20)).as_deref(), Some("default/b"));
    assert_eq!(holder(&state, t(40)).as_deref(), Some("default/b"));
}

proptest! {
    /// A sequence of pods taking the same IP in turn (each deleted before the
    /// next is added): every time inside a holding resolves to its pod, and
    /// at most the per-IP bound of past holders is kept.
    #[test]
    fn each_time_resolves_to_the_holder_of_its_interval(
        gaps in proptest::collection::vec((1u64..50, 0u64..10), 1..30)
    ) {
        let mut state = ClusterState::new();
        let mut now = 0u64;
        let mut holdings = Vec::new();
        for (i, (held, gap)) in gaps.iter().enumerate() {
            let name = format!("p{i}");
            state.set_time(t(now));
            state.apply(&pod("default", &name, "x", RECYCLED)).unwrap();
            let from = now;
            now += held;
            state.set_time(t(now));
            if i + 1 < gaps.len() {
                state.delete(ObjectKind::Pod, "default", &name);
            }
            holdings.push((name, from, now));
            now += gap;
        }
        let kept = holdings.len().saturating_sub(1).min(16);
        prop_assert_eq!(state.departed_count(), kept);
        let first_kept = holdings.len() - 1 - kept;
        for (i, (name, from, until)) in holdings.iter().enumerate() {
            if i < first_kept {
                continue;
            }
            for at in [*from, (from + until) / 2, until - 1] {
                let want = format!("default/{name}");
                prop_assert_eq!(holder(&state, t(at)), Some(want));
            }
        }
    }
}
