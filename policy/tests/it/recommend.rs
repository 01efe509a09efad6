//! `recommend`: a namespace's least-privilege NetworkPolicies from observed
//! flows (workloads by shared labels, DNS as observed, outside addresses as
//! commented ipBlocks, denied flows left out) and the check by replay, which
//! passes on every synthetic cluster and fails, naming the flow and the
//! policy, when an Admin-tier deny or an unlabelled pod stands in the way;
//! whatever the recommendation allows beyond the observed flows differs from
//! one only in what labels cannot tell apart.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1 as net;
use netverdict_policy::recommend::{Error, Recommendation, Recommender};
use netverdict_policy::synthetic::{self, Size};
use netverdict_policy::whatif::ReplayFlow;
use netverdict_policy::{ClusterState, Connection, Direction, Endpoint, Protocol, Status};

use crate::common::{apply_yaml, objects, state_from_manifests};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 192.168.0.10}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-7d9
  namespace: shop
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: d-1, controller: true}]
spec: {selector: {matchLabels: {app: web}}}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-5c4
  namespace: shop
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: d-1, controller: true}]
spec: {selector: {matchLabels: {app: web}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels: {app: web, version: v1, pod-template-hash: 7d9}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9, uid: rs-1, controller: true}]
spec: {nodeName: node-a}
status: {podIP: 10.1.0.1}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-2
  namespace: shop
  labels: {app: web, version: v2, pod-template-hash: 5c4}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5c4, uid: rs-2, controller: true}]
spec: {nodeName: node-a}
status: {podIP: 10.1.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: shop, labels: {app: db}}
spec: {nodeName: node-a}
status: {podIP: 10.1.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: idle-1, namespace: shop, labels: {app: idle}}
status: {podIP: 10.1.0.4}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns-1, namespace: kube-system, labels: {k8s-app: kube-dns}}
status: {podIP: 10.1.0.53}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.10
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
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

fn flow(state: &ClusterState, src: &str, dst: &str, port: u16, protocol: Protocol) -> ReplayFlow {
    let conn = Connection::new(src.parse().unwrap(), dst.parse().unwrap(), port, protocol);
    ReplayFlow::of_connection(state, conn)
}

fn observed(mut flow: ReplayFlow, allowed: bool) -> ReplayFlow {
    flow.observed_allowed = Some(allowed);
    flow
}

fn named(mut flow: ReplayFlow, name: &str) -> ReplayFlow {
    flow.connection = flow.connection.with_destination_names(&[name]);
    flow
}

/// The shop's observed flows: DNS over both protocols (one through the
/// kube-dns Service address), web to db, web to two outside addresses (one
/// with a name), the node and a scraper into web, a denied one, one of
/// another namespace.
fn shop_flows(state: &ClusterState) -> Vec<ReplayFlow> {
    vec![
        flow(state, "shop/web-1", "10.1.0.53", 53, Protocol::Udp),
        flow(state, "shop/web-2", "10.96.0.10", 53, Protocol::Tcp),
        flow(state, "shop/web-1", "shop/db-1", 5432, Protocol::Tcp),
        flow(state, "shop/web-2", "shop/db-1", 5432, Protocol::Tcp),
        named(
            flow(state, "shop/web-1", "203.0.113.7", 443, Protocol::Tcp),
            "api.example.com",
        ),
        flow(state, "shop/web-2", "198.51.100.9", 443, Protocol::Tcp),
        flow(
            state,
            "kube-system/scraper-1",
            "shop/web-2",
            9090,
            Protocol::Tcp,
        ),
        flow(state, "192.168.0.10", "shop/web-1", 8080, Protocol::Tcp),
        observed(
            flow(state, "shop/db-1", "198.51.100.9", 8080, Protocol::Tcp),
            false,
        ),
        flow(
            state,
            "kube-system/scraper-1",
            "kube-system/coredns-1",
            53,
            Protocol::Udp,
        ),
    ]
}

fn recommend(state: &ClusterState, namespace: &str, flows: Vec<ReplayFlow>) -> Recommendation {
    let mut recommender = Recommender::new(state, namespace).unwrap();
    for f in flows {
        recommender.add(f);
    }
    recommender.finish().unwrap()
}

fn json(policy: &net::NetworkPolicy) -> serde_json::Value {
    serde_json::to_value(policy).unwrap()
}

#[test]
fn one_policy_per_workload_and_direction_allowing_what_was_seen() {
    let state = state_from_manifests(CLUSTER);
    let rec = recommend(&state, "shop", shop_flows(&state));

    let names: Vec<(&str, Direction, String)> = rec
        .policies
        .iter()
        .map(|p| {
            (
                p.workload.as_str(),
                p.direction,
                p.policy.metadata.name.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (
                "Deployment/web",
                Direction::Ingress,
                "recommended-web-ingress".to_string()
            ),
            (
                "Deployment/web",
                Direction::Egress,
                "recommended-web-egress".to_string()
            ),
            (
                "Pod/db-1",
                Direction::Ingress,
                "recommended-db-1-ingress".to_string()
            ),
        ]
    );

    // web is selected by what both revisions share: not version, not the hash.
    let web_egress = json(&rec.policies[1].policy);
    assert_eq!(
        web_egress["spec"]["podSelector"],
        serde_json::json!({"matchLabels": {"app": "web"}})
    );
    assert_eq!(
        web_egress["spec"]["policyTypes"],
        serde_json::json!(["Egress"])
    );
    assert_eq!(
        web_egress["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "netverdict-recommend"
    );
    // DNS to the kube-dns pods on both protocols seen (one through the
    // Service address), db on 5432 alone, the two outside addresses on 443.
    assert_eq!(
        web_egress["spec"]["egress"],
        serde_json::json!([
            {
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
                }],
                "ports": [{"protocol": "TCP", "port": 53}, {"protocol": "UDP", "port": 53}]
            },
            {
                "to": [
                    {"ipBlock": {"cidr": "198.51.100.9/32"}},
                    {"ipBlock": {"cidr": "203.0.113.7/32"}}
                ],
                "ports": [{"protocol": "TCP", "port": 443}]
            },
            {
                "to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                "ports": [{"protocol": "TCP", "port": 5432}]
            }
        ])
    );
    let web_ingress = json(&rec.policies[0].policy);
    assert_eq!(
        web_ingress["spec"]["ingress"],
        serde_json::json!([
            {
                "from": [{"ipBlock": {"cidr": "192.168.0.10/32"}}],
                "ports": [{"protocol": "TCP", "port": 8080}]
            },
            {
                "from": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"app": "scraper"}}
                }],
                "ports": [{"protocol": "TCP", "port": 9090}]
            }
        ])
    );
    // db's only egress was denied: it gets no egress policy (the default
    // deny keeps it shut); its ingress from web is 5432 only.
    let db_ingress = json(&rec.policies[2].policy);
    assert_eq!(
        db_ingress["spec"]["ingress"],
        serde_json::json!([{
            "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
            "ports": [{"protocol": "TCP", "port": 5432}]
        }])
    );
    let deny = json(&rec.default_deny);
    assert_eq!(deny["metadata"]["name"], "recommended-default-deny");
    assert_eq!(deny["spec"]["podSelector"], serde_json::json!({}));
    assert_eq!(
        deny["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert_eq!(rec.objects().len(), 4);
    assert_eq!(
        rec.objects().last().unwrap().metadata.name.as_deref(),
        Some("recommended-default-deny"),
        "the default deny comes last"
    );

    // What each address is: the name the flow gave, a node, else the address.
    assert_eq!(
        rec.address_comments,
        BTreeMap::from([
            ("192.168.0.10/32".to_string(), "node node-a".to_string()),
            ("198.51.100.9/32".to_string(), "198.51.100.9".to_string()),
            ("203.0.113.7/32".to_string(), "api.example.com".to_string()),
        ])
    );
    assert_eq!(rec.tally.flows, 10);
    assert_eq!(rec.tally.allowed, 8);
    assert_eq!(rec.tally.denied, 1);
    assert_eq!(rec.tally.elsewhere, 1);
    assert_eq!(rec.tally.unresolved, 0);
    assert!(
        rec.notes
            .iter()
            .any(|n| n.contains("Pod/idle-1") && n.contains("default deny isolates")),
        "{:?}",
        rec.notes
    );

    // The check: every allowed flow stays allowed, shop's policy set aside.
    assert!(rec.check.passed(), "{:#?}", rec.check);
    assert_eq!((rec.check.flows, rec.check.stay_allowed), (8, 8));
    assert_eq!(
        rec.check
            .replaced
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["shop/db-from-web"]
    );
    assert_eq!(rec.check.denied_now_allowed, 0);

    // And nothing more: db's denied egress, web on another port, idle, a
    // third address, db to web: all denied on shop's side.
    let (after, _) = rec.applied_to(&state).unwrap();
    for (src, dst, port) in [
        ("shop/db-1", "198.51.100.9", 8080),
        ("shop/web-1", "shop/db-1", 5433),
        ("shop/web-1", "198.51.100.10", 443),
        ("shop/idle-1", "10.1.0.53", 53),
        ("shop/db-1", "shop/web-1", 8080),
        ("kube-system/scraper-1", "shop/web-1", 8080),
    ] {
        let conn = Connection::new(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            port,
            Protocol::Tcp,
        );
        let verdict = after.verdict(&conn).unwrap();
        assert!(!verdict.allowed, "{src} -> {dst}:{port} is allowed");
    }
    // The same recommendation twice: the same objects (stable output).
    let again = recommend(&state, "shop", shop_flows(&state));
    assert_eq!(
        rec.objects().iter().map(|p| json(p)).collect::<Vec<_>>(),
        again.objects().iter().map(|p| json(p)).collect::<Vec<_>>()
    );
}

#[test]
fn a_pod_gone_is_stood_for_by_its_workload_and_a_workload_gone_is_counted() {
    let state = state_from_manifests(CLUSTER);
    let gone_pod = |name: &str, ip: &str| -> ReplayFlow {
        // As the API server's flows name a pod the cluster has replaced.
        let mut f = flow(&state, ip, "shop/db-1", 5432, Protocol::Tcp);
        f.connection.src = Endpoint::Ip(ip.parse().unwrap());
        f.src = netverdict_policy::whatif::Party::Workload {
            namespace: "shop".into(),
            workload: name.into(),
        };
        f.observed_allowed = Some(true);
        f
    };
    let rec = recommend(
        &state,
        "shop",
        vec![
            gone_pod("Deployment/web", "10.1.0.77"),
            gone_pod("Deployment/batch", "10.1.0.78"),
        ],
    );
    assert_eq!(rec.tally.allowed, 1);
    assert_eq!(rec.tally.unresolved, 1);
    assert!(
        rec.notes
            .iter()
            .any(|n| n.contains("shop/Deployment/batch") && n.contains("no pod of it")),
        "{:?}",
        rec.notes
    );
    let names: Vec<String> = rec
        .policies
        .iter()
        .map(|p| p.policy.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        ["recommended-web-egress", "recommended-db-1-ingress"],
        "web's flow still counts: a pod of web stands for the one gone"
    );
    assert!(rec.check.passed(), "{:#?}", rec.check);
}

#[test]
fn the_check_fails_naming_what_no_networkpolicy_can_allow() {
    let mut state = state_from_manifests(CLUSTER);
    // An Admin-tier deny of shop's egress to one address, added after that
    // flow was seen allowed; and an unlabelled pod that talked.
    apply_yaml(
        &mut state,
        r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: no-exfil}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}
  egress:
  - name: deny-example
    action: Deny
    to: [{networks: [203.0.113.0/24]}]
---
apiVersion: v1
kind: Pod
metadata: {name: debug, namespace: shop}
status: {podIP: 10.1.0.66}
"#,
    );
    let rec = recommend(
        &state,
        "shop",
        vec![
            observed(
                flow(&state, "shop/web-1", "203.0.113.7", 443, Protocol::Tcp),
                true,
            ),
            // Seen before db-from-web was applied.
            observed(
                flow(&state, "shop/debug", "shop/db-1", 5432, Protocol::Tcp),
                true,
            ),
            flow(&state, "shop/web-1", "shop/db-1", 5432, Protocol::Tcp),
        ],
    );
    assert!(!rec.check.passed());
    assert_eq!((rec.check.flows, rec.check.stay_allowed), (3, 1));
    let failures: Vec<(&str, &str, &[Direction])> = rec
        .check
        .failures
        .iter()
        .map(|f| (f.src.as_str(), f.dst.as_str(), f.directions.as_slice()))
        .collect();
    assert_eq!(
        failures,
        [
            (
                "shop/debug",
                "shop/db-1",
                &[Direction::Egress, Direction::Ingress][..]
            ),
            ("shop/web-1", "203.0.113.7", &[Direction::Egress][..]),
        ],
        "{:#?}",
        rec.check.failures
    );
    assert!(
        rec.check.failures[1].reason.contains("no-exfil"),
        "{}",
        rec.check.failures[1].reason
    );
    assert!(
        rec.notes
            .iter()
            .any(|n| n.contains("shop/debug") && n.contains("no labels")),
        "{:?}",
        rec.notes
    );
}

#[test]
fn an_unknown_namespace_is_an_error_naming_it() {
    let state = state_from_manifests(CLUSTER);
    let err = Recommender::new(&state, "nope").unwrap_err();
    assert!(matches!(err, Error::UnknownNamespace(ref n) if n == "nope"));
    assert!(err.to_string().contains("\"nope\""), "{err}");
}

/// A pod's labels without the per-pod hash: what a selector can tell apart.
fn class(
    state: &ClusterState,
    endpoint: &Endpoint,
) -> Option<(String, BTreeSet<(String, String)>)> {
    let pod = state.endpoint_pod(endpoint)?;
    Some((
        pod.key.namespace.clone(),
        pod.labels
            .iter()
            .filter(|(k, _)| k.as_str() != "pod-template-hash")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    ))
}

/// What a connection's end is, as the recommendation can tell: its pod's
/// label class, or its address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Pod(String, BTreeSet<(String, String)>),
    Address(IpAddr),
}

fn seen(state: &ClusterState, endpoint: &Endpoint) -> Seen {
    match (class(state, endpoint), endpoint) {
        (Some((ns, labels)), _) => Seen::Pod(ns, labels),
        (None, Endpoint::Ip(ip)) => Seen::Address(*ip),
        (None, Endpoint::Pod(key)) => panic!("{key}: no such pod"),
    }
}

/// On synthetic clusters (their own policies deciding which flows were
/// allowed), for every namespace: every allowed flow stays allowed with the
/// recommendation in place of the namespace's policies, and any other flow
/// it allows on the namespace's side matches an observed one in everything
/// labels can tell: the workload classes (or addresses) of both ends, the
/// port and the protocol.
#[test]
fn on_synthetic_clusters_the_check_passes_and_nothing_more_is_allowed() {
    let size = Size {
        namespaces: 4,
        pods: 40,
        policies: 16,
    };
    // Probe sides allowed, and observed flows denied: the property is not vacuous.
    let (mut probes_allowed, mut denied) = (0u64, 0u64);
    for seed in 0..4u64 {
        let mut state = ClusterState::new();
        for object in synthetic::cluster(size, seed) {
            state.apply(&object).unwrap();
        }
        let observed = synthetic::connections(size, 300, seed);
        let probes = synthetic::connections(size, 600, seed + 1000);
        for ns in 0..size.namespaces {
            let namespace = format!("ns-{ns}");
            let mut recommender = Recommender::new(&state, &namespace).unwrap();
            for conn in &observed {
                recommender.add(ReplayFlow::of_connection(&state, conn.clone()));
            }
            let rec = recommender.finish().unwrap();
            assert!(
                rec.check.passed(),
                "seed {seed} {namespace}: {:#?}",
                rec.check.failures
            );
            assert!(
                rec.tally.allowed > 0,
                "seed {seed} {namespace}: {:?}",
                rec.tally
            );
            denied += rec.tally.denied;

            let (after, _) = rec.applied_to(&state).unwrap();
            let ours = |e: &Endpoint| {
                state
                    .endpoint_pod(e)
                    .is_some_and(|p| p.key.namespace == namespace)
            };
            let allowed_sides: BTreeSet<(Direction, Seen, Seen, u16)> = observed
                .iter()
                .filter(|c| state.verdict(c).unwrap().allowed)
                .flat_map(|c| {
                    let key = |d| (d, seen(&state, &c.src), seen(&state, &c.dst), c.port);
                    [
                        ours(&c.src).then(|| key(Direction::Egress)),
                        ours(&c.dst).then(|| key(Direction::Ingress)),
                    ]
                })
                .flatten()
                .collect();
            for probe in &probes {
                let verdict = after.verdict(probe).unwrap();
                for (direction, end) in [
                    (Direction::Egress, &probe.src),
                    (Direction::Ingress, &probe.dst),
                ] {
                    let side = verdict.direction(direction);
                    if !ours(end) || side.status == Status::Denied {
                        continue;
                    }
                    probes_allowed += 1;
                    let key = (
                        direction,
                        seen(&state, &probe.src),
                        seen(&state, &probe.dst),
                        probe.port,
                    );
                    assert!(
                        allowed_sides.contains(&key)
                            || matches!(side.status, Status::SelfTraffic | Status::NodeLocal),
                        "seed {seed} {namespace}: {probe:?} allowed on its {direction} ({:?}) though nothing like it was observed",
                        side.status
                    );
                }
            }
        }
    }
    assert!(
        probes_allowed > 100 && denied > 100,
        "{probes_allowed} probe sides allowed, {denied} observed flows denied"
    );
}

#[test]
fn recommended_policies_read_back_as_manifests() {
    let state = state_from_manifests(CLUSTER);
    let rec = recommend(&state, "shop", shop_flows(&state));
    let yaml: String = rec
        .objects()
        .iter()
        .map(|p| format!("---\n{}", serde_yaml_ng::to_string(&json(p)).unwrap()))
        .collect();
    let read = objects(&yaml);
    assert_eq!(read.len(), 4);
    let mut state_with = state.clone();
    for object in &read {
        state_with.apply(object).unwrap();
    }
    assert_eq!(state_with.policy_count(), state.policy_count() + 4);
}
