//! Verdicts at a past time judge by the policies in effect then: a collector
//! holds a flow until its outcome (a DNS query until its answer or timeout),
//! and a policy rolled out meanwhile must not rewrite the flow's verdict.

use std::time::{Duration, SystemTime};

use netverdict_policy::{ClusterState, Connection, Endpoint, K8sObject, ObjectKind, Protocol};
use serde_json::json;

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
}

fn object(value: serde_json::Value) -> K8sObject {
    let mut m = netverdict_policy::Manifests::default();
    m.read_str(std::path::Path::new("test"), &value.to_string());
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    m.objects.remove(0).object
}

fn pod(name: &str, ip: &str) -> K8sObject {
    object(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "default", "name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
        "status": {"podIP": ip},
    }))
}

fn default_deny() -> K8sObject {
    object(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "default", "name": "default-deny"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }))
}

fn db_from_api() -> K8sObject {
    object(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "default", "name": "db-from-api"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}],
        },
    }))
}

/// An admin Deny of everything into the db, over any NetworkPolicy.
fn admin_deny() -> K8sObject {
    object(json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
        "metadata": {"name": "lockdown"},
        "spec": {
            "priority": 10,
            "subject": {"pods": {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"app": "db"}},
            }},
            "ingress": [{"name": "all", "action": "Deny", "from": [{"namespaces": {}}]}],
        },
    }))
}

/// api → db on 5432, at `at`.
fn api_to_db(state: &ClusterState, at: SystemTime) -> bool {
    let conn = Connection::new(
        Endpoint::Ip("10.244.0.3".parse().unwrap()),
        Endpoint::Ip("10.244.0.2".parse().unwrap()),
        5432,
        Protocol::Tcp,
    );
    state.verdict_at(&conn, at).unwrap().allowed
}

/// No policy until t=10, default-deny from 10, the db's allow from 20, the
/// admin Deny from 30 until its deletion at 40.
fn rollout(retention: Duration) -> ClusterState {
    let mut state = ClusterState::new();
    state.set_policy_retention(retention);
    state.set_time(t(0));
    state.apply(&pod("db", "10.244.0.2")).unwrap();
    state.apply(&pod("api", "10.244.0.3")).unwrap();
    state.set_time(t(10));
    state.apply(&default_deny()).unwrap();
    state.set_time(t(20));
    state.apply(&db_from_api()).unwrap();
    state.set_time(t(30));
    state.apply(&admin_deny()).unwrap();
    state.set_time(t(40));
    assert!(state.delete(ObjectKind::AdminNetworkPolicy, "", "lockdown"));
    state
}

#[test]
fn a_flow_is_judged_by_the_policies_in_effect_when_it_started() {
    let state = rollout(Duration::from_secs(150));
    assert_eq!(state.earlier_policy_sets(), 4);
    let verdicts: Vec<bool> = [5, 10, 15, 20, 25, 30, 35, 40, 45]
        .map(|s| api_to_db(&state, t(s)))
        .into();
    assert_eq!(
        verdicts,
        [true, false, false, true, true, false, false, true, true],
        "no policy, default-deny, the db's allow, the admin Deny, its deletion"
    );
    // A verdict by a replaced set is not cached; the current one is.
    let state = rollout(Duration::from_secs(150));
    let cached = state.cached_verdicts();
    api_to_db(&state, t(15));
    assert_eq!(state.cached_verdicts(), cached);
    api_to_db(&state, t(45));
    assert_eq!(state.cached_verdicts(), cached + 1);
}

#[test]
fn without_retention_every_time_is_judged_by_the_current_policies() {
    let state = rollout(Duration::ZERO);
    assert_eq!(state.earlier_policy_sets(), 0);
    for s in [5, 15, 35, 45] {
        assert!(api_to_db(&state, t(s)), "t={s}");
    }
}

#[test]
fn replaced_sets_are_forgotten_after_the_retention() {
    let mut state = rollout(Duration::from_secs(60));
    // The sets replaced at 10 and 20 ended more than 60 s before t=85.
    state.prune_departed(t(85));
    assert_eq!(state.earlier_policy_sets(), 2);
    // Before the oldest set kept, the oldest set kept stands in: the db's
    // allow (in effect from 20 to 30).
    assert!(api_to_db(&state, t(5)));
    assert!(!api_to_db(&state, t(35)));
    state.prune_departed(t(200));
    assert_eq!(state.earlier_policy_sets(), 0);
    assert!(api_to_db(&state, t(35)), "judged by the current set");
}
