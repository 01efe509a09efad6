//! What-if replay: flows decided before and after a rollout (policies added,
//! replaced, deleted), grouped by workload, DNS denials first; the groups
//! agree with a plain comparison of the two states' scanned verdicts.

use std::path::Path;

use netverdict_policy::manifest::Manifests;
use netverdict_policy::synthetic::{self, Size};
use netverdict_policy::whatif::{Error, Party, ReplayFlow, Rollout, WhatIf, parse_policy_key};
use netverdict_policy::{ClusterState, Connection, Endpoint, LoadOptions, PolicyKey, Protocol};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels: {app: web}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9, uid: rs-1, controller: true}]
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-2
  namespace: shop
  labels: {app: web}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9, uid: rs-1, controller: true}]
status: {podIP: 10.1.0.2}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-7d9
  namespace: shop
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: d-1, controller: true}]
spec: {selector: {matchLabels: {app: web}}}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: shop, labels: {app: db}}
status: {podIP: 10.1.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns-1, namespace: kube-system, labels: {k8s-app: kube-dns}}
status: {podIP: 10.1.0.53}
---
apiVersion: v1
kind: Pod
metadata: {name: scraper-1, namespace: kube-system, labels: {app: scraper}}
status: {podIP: 10.1.0.9}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 5432}]
"#;

/// An egress default deny for the shop and the one egress it means to keep.
const ROLLOUT: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: no-egress, namespace: shop}
spec: {podSelector: {}, policyTypes: [Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-to-db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]
"#;

fn cluster() -> ClusterState {
    let mut m = Manifests::default();
    m.read_str(Path::new("cluster.yaml"), CLUSTER);
    let (state, errors) = ClusterState::from_manifests(m, &LoadOptions::default());
    assert!(errors.is_empty(), "{errors:?}");
    state
}

fn rollout(text: &str, delete: &[&str]) -> Rollout {
    let mut m = Manifests::default();
    m.read_str(Path::new("rollout.yaml"), text);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    Rollout {
        apply: m.objects,
        delete: delete
            .iter()
            .map(|d| parse_policy_key(d).unwrap())
            .collect(),
    }
}

fn flow(state: &ClusterState, src: &str, dst: &str, port: u16, protocol: Protocol) -> ReplayFlow {
    let conn = Connection::new(src.parse().unwrap(), dst.parse().unwrap(), port, protocol);
    ReplayFlow::of_connection(state, conn)
}

fn workload(namespace: &str, workload: &str) -> Party {
    Party::Workload {
        namespace: namespace.into(),
        workload: workload.into(),
    }
}

#[test]
fn a_default_deny_rollout_lists_dns_first_then_denials_then_allows() {
    let whatif = WhatIf::new(cluster(), &rollout(ROLLOUT, &["shop/db-from-web"])).unwrap();
    let before = whatif.before();
    let mut replay = whatif.replay();
    for _ in 0..3 {
        replay.add(flow(before, "shop/web-1", "10.1.0.53", 53, Protocol::Udp));
    }
    replay.add(flow(
        before,
        "10.1.0.2",
        "kube-system/coredns-1",
        53,
        Protocol::Udp,
    ));
    replay.add(flow(
        before,
        "shop/db-1",
        "kube-system/coredns-1",
        53,
        Protocol::Tcp,
    ));
    replay.add(flow(before, "shop/web-1", "shop/db-1", 5432, Protocol::Tcp)); // stays allowed
    replay.add(flow(
        before,
        "shop/web-2",
        "203.0.113.5",
        443,
        Protocol::Tcp,
    ));
    // Denied by db-from-web before; allowed once it is deleted.
    replay.add(flow(
        before,
        "kube-system/scraper-1",
        "shop/db-1",
        5432,
        Protocol::Tcp,
    ));
    replay.add(flow(before, "shop/nope", "shop/db-1", 5432, Protocol::Tcp)); // no such pod
    let changes = replay.finish();
    assert_eq!(changes.flows, 9);
    assert_eq!(changes.unresolved, 1);
    assert!(changes.any_newly_denied());
    let summary: Vec<(String, String, u16, &str, &str, u64)> = changes
        .changes
        .iter()
        .map(|c| {
            (
                c.src.to_string(),
                c.dst.to_string(),
                c.port,
                c.before,
                c.after,
                c.count,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "shop/Deployment/web".into(),
                "kube-system/Pod/coredns-1".into(),
                53,
                "allow",
                "deny",
                4
            ),
            (
                "shop/Pod/db-1".into(),
                "kube-system/Pod/coredns-1".into(),
                53,
                "allow",
                "deny",
                1
            ),
            (
                "shop/Deployment/web".into(),
                "203.0.113.5".into(),
                443,
                "allow",
                "deny",
                1
            ),
            (
                "kube-system/Pod/scraper-1".into(),
                "shop/Pod/db-1".into(),
                5432,
                "deny",
                "allow",
                1
            ),
        ]
    );
    let web_dns = &changes.changes[0];
    assert!(web_dns.dns);
    assert_eq!(web_dns.flows, 4);
    assert_eq!(
        web_dns.denied_by,
        [
            PolicyKey::network_policy("shop", "no-egress"),
            PolicyKey::network_policy("shop", "web-to-db")
        ]
    );
    assert!(web_dns.reason.contains("no-egress"), "{}", web_dns.reason);
    assert!(!changes.changes[2].dns);
    assert!(changes.changes[3].denied_by.is_empty());
    // The cluster as it is was not touched.
    assert_eq!(whatif.before().policy_count(), 1);
    assert_eq!(whatif.after().policy_count(), 2);
}

#[test]
fn a_candidate_replaces_the_policy_of_its_name() {
    // db-from-web again, now also from the scraper.
    let replacement = CLUSTER[CLUSTER.find("apiVersion: networking.k8s.io/v1").unwrap()..]
        .replace("- from: [{podSelector: {matchLabels: {app: web}}}]", "- from: [{podSelector: {matchLabels: {app: web}}}, {namespaceSelector: {}, podSelector: {matchLabels: {app: scraper}}}]");
    let whatif = WhatIf::new(cluster(), &rollout(&replacement, &[])).unwrap();
    assert_eq!(whatif.after().policy_count(), 1);
    let mut replay = whatif.replay();
    replay.add(flow(
        whatif.before(),
        "kube-system/scraper-1",
        "shop/db-1",
        5432,
        Protocol::Tcp,
    ));
    replay.add(flow(
        whatif.before(),
        "shop/web-1",
        "shop/db-1",
        5432,
        Protocol::Tcp,
    ));
    let changes = replay.finish();
    assert_eq!(changes.changes.len(), 1);
    assert_eq!(
        changes.changes[0].src,
        workload("kube-system", "Pod/scraper-1")
    );
    assert!(!changes.any_newly_denied());
    assert_eq!(
        changes.changes[0].allowed_by,
        [PolicyKey::network_policy("shop", "db-from-web")]
    );
}

#[test]
fn bad_rollouts_name_what_is_wrong() {
    let err = WhatIf::new(cluster(), &rollout("", &["shop/missing"])).unwrap_err();
    assert!(matches!(err, Error::UnknownPolicy(_)));
    assert_eq!(
        err.to_string(),
        "shop/missing: no such policy in the cluster"
    );
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\nstatus: {podIP: 10.9.9.9}\n";
    let err = WhatIf::new(cluster(), &rollout(pod, &[])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("rollout.yaml (document 1): Pod shop/p: not a policy"),
        "{err}"
    );
    let bad = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b, namespace: shop}\n\
               spec:\n  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/33}}]}]\n";
    let err = WhatIf::new(cluster(), &rollout(bad, &[])).unwrap_err();
    assert!(
        err.to_string()
            .contains("NetworkPolicy shop/b: spec.egress[0].to[0].ipBlock.cidr"),
        "{err}"
    );
    for name in ["nope", "a/b/c", "/x", "AdminNetworkPolicy/"] {
        assert!(parse_policy_key(name).is_err(), "{name}");
    }
    assert_eq!(
        parse_policy_key("AdminNetworkPolicy/deny-all")
            .unwrap()
            .to_string(),
        "AdminNetworkPolicy/deny-all"
    );
}

/// On the synthetic cluster, with a rollout that adds egress default denies
/// and deletes policies, the changed counts equal a flow-by-flow comparison
/// of both states' verdicts computed by scanning every policy.
#[test]
fn replay_agrees_with_a_scan_of_both_states() {
    let size = Size {
        namespaces: 20,
        pods: 400,
        policies: 80,
    };
    let mut before = ClusterState::new();
    for object in synthetic::cluster(size, 3) {
        before.apply(&object).unwrap();
    }
    let deny: String = (0..5)
        .map(|i| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny-egress, namespace: ns-{i}}}\n\
                 spec: {{podSelector: {{}}, policyTypes: [Egress]}}\n---\n"
            )
        })
        .collect();
    let deleted: Vec<String> = before
        .policies()
        .iter()
        .step_by(7)
        .map(|p| p.key.to_string())
        .collect();
    let deleted: Vec<&str> = deleted.iter().map(String::as_str).collect();
    let whatif = WhatIf::new(before, &rollout(&deny, &deleted)).unwrap();
    let flows = synthetic::connections(size, 5_000, 5);
    let mut replay = whatif.replay();
    let (mut denied, mut allowed) = (0u64, 0u64);
    for conn in &flows {
        let b = whatif.before().verdict_by_scan(conn).unwrap().allowed;
        let a = whatif.after().verdict_by_scan(conn).unwrap().allowed;
        denied += (b && !a) as u64;
        allowed += (!b && a) as u64;
        replay.add(ReplayFlow::of_connection(whatif.before(), conn.clone()));
    }
    let changes = replay.finish();
    let sum = |newly_denied: bool| -> u64 {
        changes
            .changes
            .iter()
            .filter(|c| c.newly_denied() == newly_denied)
            .map(|c| c.count)
            .sum()
    };
    assert!(
        denied > 0 && allowed > 0,
        "the rollout changes flows both ways"
    );
    assert_eq!(sum(true), denied);
    assert_eq!(sum(false), allowed);
    assert_eq!(changes.unresolved, 0);
    // Each group's flows share its parties, port and verdicts.
    for c in &changes.changes {
        let example = Connection::new(
            c.example_src.parse::<Endpoint>().unwrap(),
            c.example_dst.parse().unwrap(),
            c.port,
            c.protocol,
        );
        assert_eq!(Party::of_endpoint(whatif.before(), &example.src), c.src);
        assert_eq!(whatif.after().verdict(&example).unwrap().as_str(), c.after);
    }
}

/// The seed cluster (with its Services) and policies, as the lab applies them
/// to namespace `default`.
fn seed_yaml(policies: &[&str]) -> String {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/examples/seed");
    let mut yaml = std::fs::read_to_string(seed.join("cluster.yaml")).expect("seed");
    for p in policies {
        let policy =
            std::fs::read_to_string(seed.join(format!("policies/{p}.yaml"))).expect("seed policy");
        yaml.push_str("\n---\n");
        yaml.push_str(&policy.replacen("metadata:\n", "metadata:\n  namespace: default\n", 1));
    }
    yaml
}

#[test]
fn flows_to_a_service_address_are_judged_at_its_backends() {
    let mut m = Manifests::default();
    m.read_str(Path::new("seed.yaml"), &seed_yaml(&[]));
    let (before, errors) = ClusterState::from_manifests(m, &LoadOptions::default());
    assert!(errors.is_empty(), "{errors:?}");
    let policies = seed_yaml(&["default-deny", "allow-dns-egress"]);
    let policies = policies
        .split("\n---\n")
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n---\n");
    let whatif = WhatIf::new(before, &rollout(&policies, &[])).unwrap();
    let before = whatif.before();
    let mut replay = whatif.replay();
    // DNS to the kube-dns Service address (as a flows file records it, before
    // DNAT): allow-dns-egress allows its backends, so nothing changes.
    replay.add(flow(
        before,
        "default/np-client",
        "10.96.0.10",
        53,
        Protocol::Udp,
    ));
    // The api Service: its backend in default is now isolated.
    replay.add(flow(
        before,
        "shop/np-client",
        "10.96.1.10",
        8080,
        Protocol::Tcp,
    ));
    let changes = replay.finish();
    assert_eq!((changes.flows, changes.unresolved), (2, 0));
    assert_eq!(changes.changes.len(), 1, "{:#?}", changes.changes);
    let change = &changes.changes[0];
    assert_eq!(change.src, workload("shop", "Pod/np-client"));
    assert_eq!(
        change.dst,
        workload("default", "Pod/api"),
        "the backend, not the Service's address"
    );
    assert_eq!(change.port, 8080);
    assert!(change.newly_denied());
}
