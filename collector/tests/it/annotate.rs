//! Annotation on the seed guide's cluster: endpoints, Service DNAT, verdicts with
//! the responsible policies, mismatches and DNS.

use std::time::{Duration, SystemTime};

use netverdict_collector::correlate::{DnsSeen, Observation, SeenBy, TrafficDirection};
use netverdict_policy::{ClusterState, Protocol};
use netverdict_proto::v1 as pb;
use netverdict_testing::observation::{addr, annotated, observation};
use netverdict_testing::seed::cluster as seed;

fn obs(src: &str, dst: &str, protocol: Protocol, outcome: pb::Outcome) -> Observation {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    observation(src, dst, protocol, outcome, t)
}

/// Annotates and renders, as the collector does per record.
fn annotate(state: &ClusterState, o: &Observation) -> pb::Flow {
    annotated(state, o.clone(), "lab-node", "lab-node/1".into())
}

fn names(refs: &[pb::PolicyRef]) -> Vec<String> {
    refs.iter()
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect()
}

#[test]
fn a_denied_connection_through_a_service_names_the_backend_and_the_policies() {
    let state = seed(&["default-deny", "api-from-web"]);
    let mut o = obs(
        "10.244.2.20:40000",
        "10.96.1.10:8080",
        Protocol::Tcp,
        pb::Outcome::Dropped,
    );
    o.backend = Some(addr("10.244.1.10:8080"));
    o.drops = 3;
    o.drop_reason = Some("NETFILTER_DROP".into());
    let f = annotate(&state, &o);
    let src = f.source.as_ref().unwrap();
    let dst = f.destination.as_ref().unwrap();
    assert_eq!(
        (src.namespace.as_str(), src.pod_name.as_str()),
        ("shop", "np-client")
    );
    assert_eq!(src.kind(), pb::EndpointKind::Pod);
    assert_eq!(
        (dst.namespace.as_str(), dst.pod_name.as_str(), dst.port),
        ("default", "api", 8080)
    );
    assert_eq!(dst.labels.get("app").map(String::as_str), Some("api"));
    assert_eq!(f.service, "default/api");
    assert_eq!(f.verdict(), pb::Verdict::Denied);
    assert_eq!(
        names(&f.denied_by),
        ["default/api-from-web", "default/default-deny"]
    );
    assert_eq!(f.mismatch(), pb::Mismatch::None, "denied and dropped agree");
    let ingress = f.ingress.as_ref().unwrap();
    assert_eq!(ingress.status(), pb::PolicyStatus::Denied);
    assert_eq!(
        ingress
            .nearest_miss
            .as_ref()
            .unwrap()
            .policy
            .as_ref()
            .unwrap()
            .name,
        "api-from-web"
    );
    assert_eq!(
        ingress.failures[0].description,
        "needs source namespace label team=web; namespace shop has team=payments"
    );
    assert_eq!(f.drop_reason, "NETFILTER_DROP");
    assert_eq!(f.drop_count, 3);
}

#[test]
fn a_service_flow_without_drops_resolves_to_a_backend_and_its_target_port() {
    let state = seed(&[]);
    let o = obs(
        "10.244.2.20:40001",
        "10.96.1.10:5432",
        Protocol::Tcp,
        pb::Outcome::Established,
    );
    let f = annotate(&state, &o);
    let dst = f.destination.as_ref().unwrap();
    assert_eq!((dst.pod_name.as_str(), dst.port), ("api", 5432));
    assert_eq!(f.verdict(), pb::Verdict::Allowed);
    assert_eq!(f.mismatch(), pb::Mismatch::None);
}

#[test]
fn mismatches_in_both_directions() {
    // Denied by policy, yet established: is NetworkPolicy enforced?
    let state = seed(&["default-deny"]);
    let o = obs(
        "10.244.2.20:40002",
        "10.244.1.10:8080",
        Protocol::Tcp,
        pb::Outcome::Established,
    );
    let f = annotate(&state, &o);
    assert_eq!(f.verdict(), pb::Verdict::Denied);
    assert_eq!(f.mismatch(), pb::Mismatch::AllowedThoughDenied);
    // Allowed by policy, yet nftables dropped it.
    let state = seed(&[]);
    let mut o = obs(
        "10.244.2.20:40003",
        "10.244.1.10:8080",
        Protocol::Tcp,
        pb::Outcome::Dropped,
    );
    o.drop_reason = Some("NETFILTER_DROP".into());
    let f = annotate(&state, &o);
    assert_eq!(f.verdict(), pb::Verdict::Allowed);
    assert_eq!(f.mismatch(), pb::Mismatch::DroppedThoughAllowed);
}

#[test]
fn dns_flows_say_whether_egress_allows_the_cluster_dns() {
    let mut o = obs(
        "10.244.1.20:50000",
        "10.96.0.10:53",
        Protocol::Udp,
        pb::Outcome::Dropped,
    );
    o.drop_reason = Some("NETFILTER_DROP".into());
    o.dns = Some(DnsSeen {
        id: 7,
        query: Some("api.default.svc.cluster.local".into()),
        qtype: Some(1),
        rcode: None,
        answers: 0,
    });
    let broken = seed(&["default-deny"]);
    let f = annotate(&broken, &o);
    assert_eq!(f.service, "kube-system/kube-dns");
    assert_eq!(f.destination.as_ref().unwrap().pod_name, "coredns");
    assert_eq!(f.verdict(), pb::Verdict::Denied);
    let dns = f.dns.as_ref().unwrap();
    assert_eq!(dns.query, "api.default.svc.cluster.local");
    assert_eq!(dns.qtype, "A");
    assert!(!dns.egress_allows_cluster_dns);
    assert_eq!(names(&f.denied_by), ["default/default-deny"]);

    let fixed = seed(&["default-deny", "allow-dns-egress"]);
    o.outcome = pb::Outcome::Answered;
    o.drop_reason = None;
    let f = annotate(&fixed, &o);
    assert_eq!(f.verdict(), pb::Verdict::Allowed);
    assert!(f.dns.as_ref().unwrap().egress_allows_cluster_dns);
    assert_eq!(names(&f.allowed_by), ["default/allow-dns-egress"]);
}

#[test]
fn addresses_outside_the_cluster_are_the_world() {
    let state = seed(&["default-deny"]);
    let o = obs(
        "10.244.1.20:40004",
        "203.0.113.9:443",
        Protocol::Tcp,
        pb::Outcome::NoAnswer,
    );
    let f = annotate(&state, &o);
    assert_eq!(
        f.destination.as_ref().unwrap().kind(),
        pb::EndpointKind::World
    );
    assert_eq!(f.verdict(), pb::Verdict::Denied);
    assert_eq!(
        f.egress.as_ref().unwrap().status(),
        pb::PolicyStatus::Denied
    );
    assert_eq!(
        f.ingress.as_ref().unwrap().status(),
        pb::PolicyStatus::NotAPod
    );
}

/// Two nodes; `client` on node-a; `api-0`..`api-2` behind the Service
/// `api` (10.96.7.7:80 → 8080), only `api-2` admitting the client.
const TWO_NODES: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: app, labels: {kubernetes.io/metadata.name: app}}}
- {apiVersion: v1, kind: Node, metadata: {name: node-a}, status: {addresses: [{type: InternalIP, address: 10.249.0.1}]}}
- {apiVersion: v1, kind: Node, metadata: {name: node-b}, status: {addresses: [{type: InternalIP, address: 10.249.0.2}]}}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: app, labels: {app: client}}
  spec: {nodeName: node-a, containers: [{name: c, image: x}]}
  status: {podIP: 10.250.0.2}
- apiVersion: v1
  kind: Pod
  metadata: {name: api-0, namespace: app, labels: {app: api, slot: "0"}}
  spec: {nodeName: node-b, containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}
  status: {podIP: 10.250.0.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: api-1, namespace: app, labels: {app: api, slot: "1"}}
  spec: {nodeName: node-a, containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}
  status: {podIP: 10.250.0.11}
- apiVersion: v1
  kind: Pod
  metadata: {name: api-2, namespace: app, labels: {app: api, slot: "2"}}
  spec: {nodeName: node-b, containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}
  status: {podIP: 10.250.0.12}
- apiVersion: v1
  kind: Service
  metadata: {name: api, namespace: app}
  spec:
    clusterIP: 10.96.7.7
    selector: {app: api}
    ports: [{port: 80, protocol: TCP, targetPort: 8080}]
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: only-slot-2, namespace: app}
  spec:
    podSelector: {matchLabels: {app: api, slot: "2"}}
    policyTypes: [Ingress]
    ingress:
    - from: [{podSelector: {matchLabels: {app: client}}}]
      ports: [{port: 8080}]
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny-slots-0-1, namespace: app}
  spec:
    podSelector: {matchExpressions: [{key: slot, operator: In, values: ["0", "1"]}]}
    policyTypes: [Ingress]
"#;

fn two_nodes() -> ClusterState {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    std::fs::write(&path, TWO_NODES).unwrap();
    ClusterState::load_paths(&[path]).unwrap()
}

/// Annotates and renders on `node`.
fn on(node: &str, state: &ClusterState, o: &Observation) -> pb::Flow {
    annotated(state, o.clone(), node, format!("{node}/1"))
}

#[test]
fn service_traffic_is_judged_at_the_backend_the_kernel_chose_and_never_guessed() {
    let state = two_nodes();
    let mut o = obs(
        "10.250.0.2:40000",
        "10.96.7.7:80",
        Protocol::Tcp,
        pb::Outcome::Established,
    );
    // Three backends, no NAT seen: the backend is not known, and said so.
    let f = on("node-a", &state, &o);
    assert_eq!(f.service, "app/api");
    assert_eq!(f.verdict(), pb::Verdict::Unspecified);
    assert!(
        f.reason.contains(
            "the Service app/api has 3 backends and which one this flow reached is not known"
        ),
        "{}",
        f.reason
    );
    let dst = f.destination.as_ref().unwrap();
    assert_eq!(
        (dst.kind(), dst.ip.as_str(), dst.port, dst.pod_name.as_str()),
        (pb::EndpointKind::Unspecified, "10.96.7.7", 80, "")
    );
    assert_eq!(f.mismatch(), pb::Mismatch::None);
    // The kernel's NAT names the backend: api-2 admits the client...
    o.backend = Some(addr("10.250.0.12:8080"));
    let f = on("node-a", &state, &o);
    assert_eq!(f.destination.as_ref().unwrap().pod_name, "api-2");
    assert_eq!(f.verdict(), pb::Verdict::Allowed);
    assert_eq!(f.mismatch(), pb::Mismatch::None);
    // ... api-0 does not: established there is a mismatch.
    o.backend = Some(addr("10.250.0.10:8080"));
    let f = on("node-a", &state, &o);
    assert_eq!(f.destination.as_ref().unwrap().pod_name, "api-0");
    assert_eq!(f.verdict(), pb::Verdict::Denied);
    assert_eq!(f.mismatch(), pb::Mismatch::AllowedThoughDenied);
}

#[test]
fn a_connection_seen_at_both_ends_has_one_record_of_account() {
    let state = two_nodes();
    // client (node-a) -> api-2 (node-b), allowed and established.
    let connect = obs(
        "10.250.0.2:40001",
        "10.250.0.12:8080",
        Protocol::Tcp,
        pb::Outcome::Established,
    );
    let mut accept = connect.clone();
    accept.direction = TrafficDirection::Ingress;
    accept.seen_by = SeenBy::ResponderSocket;
    let source = on("node-a", &state, &connect);
    let destination = on("node-b", &state, &accept);
    assert_eq!(source.observation_point(), pb::ObservationPoint::Source);
    assert!(!source.counted_elsewhere);
    assert_eq!(
        destination.observation_point(),
        pb::ObservationPoint::Destination
    );
    assert!(destination.counted_elsewhere);
    assert_eq!(source.verdict(), destination.verdict());

    // Denied at api-0's ingress on node-b: the client saw no answer (the
    // record of account), node-b saw the drops (a second observation, with
    // no mismatch of its own).
    let mut no_answer = obs(
        "10.250.0.2:40002",
        "10.250.0.10:8080",
        Protocol::Tcp,
        pb::Outcome::NoAnswer,
    );
    let f = on("node-a", &state, &no_answer);
    assert_eq!(
        (f.verdict(), f.counted_elsewhere),
        (pb::Verdict::Denied, false)
    );
    no_answer.seen_by = SeenBy::Packets;
    no_answer.direction = TrafficDirection::Ingress;
    no_answer.outcome = pb::Outcome::Dropped;
    no_answer.drops = 2;
    no_answer.drop_reason = Some("TC_EGRESS".into());
    let f = on("node-b", &state, &no_answer);
    assert_eq!(f.observation_point(), pb::ObservationPoint::Destination);
    assert!(f.counted_elsewhere);
    assert_eq!(f.drop_reason, "TC_EGRESS");
    // A node holding neither end: transit, never counted.
    let f = on("node-c", &state, &no_answer);
    assert_eq!(f.observation_point(), pb::ObservationPoint::Transit);
    assert!(f.counted_elsewhere);
    // From outside the cluster, only the destination's node saw it: it counts.
    let mut world = no_answer.clone();
    world.src = addr("203.0.113.9:5555");
    let f = on("node-b", &state, &world);
    assert_eq!(f.observation_point(), pb::ObservationPoint::Destination);
    assert!(!f.counted_elsewhere);
    // Packets of a pod with no known node are taken as this node's.
    let seed_flow = annotate(
        &seed(&[]),
        &obs(
            "10.244.2.20:40005",
            "10.244.1.10:8080",
            Protocol::Tcp,
            pb::Outcome::Established,
        ),
    );
    assert_eq!(seed_flow.observation_point(), pb::ObservationPoint::Source);
}

#[test]
fn drops_by_any_enforcing_datapath_and_unanswered_allowed_flows_are_mismatches() {
    let state = seed(&[]);
    let dropped = |reason: &str, location: Option<&str>| {
        let mut o = obs(
            "10.244.2.20:40006",
            "10.244.1.10:8080",
            Protocol::Tcp,
            pb::Outcome::Dropped,
        );
        o.drops = 1;
        o.drop_reason = Some(reason.into());
        o.drop_location = location.map(Into::into);
        annotate(&state, &o).mismatch()
    };
    for reason in [
        "NETFILTER_DROP",
        "TC_INGRESS",
        "TC_EGRESS",
        "XDP",
        "BPF_CGROUP_EGRESS",
    ] {
        assert_eq!(
            dropped(reason, None),
            pb::Mismatch::DroppedThoughAllowed,
            "{reason}"
        );
    }
    assert_eq!(
        dropped("NOT_SPECIFIED", Some("skb_do_redirect")),
        pb::Mismatch::DroppedThoughAllowed
    );
    // Dropped by the stack, not by a filter: only the weaker mismatch.
    assert_eq!(
        dropped("NOT_SPECIFIED", Some("veth_xmit")),
        pb::Mismatch::NoAnswerThoughAllowed
    );
    assert_eq!(
        dropped("NEIGH_FAILED", None),
        pb::Mismatch::NoAnswerThoughAllowed
    );
    // A TCP packet the stack dropped with no attempt seen (a late reply to a
    // closed socket, from the Service address to the client's port): no
    // attempt went unanswered. A filter's drop of it still counts.
    let late_reply = |reason: &str| {
        let mut o = obs(
            "10.96.1.10:5432",
            "10.244.1.20:51240",
            Protocol::Tcp,
            pb::Outcome::Dropped,
        );
        o.seen_by = SeenBy::Packets;
        o.drops = 2;
        o.drop_reason = Some(reason.into());
        annotate(&state, &o).mismatch()
    };
    assert_eq!(late_reply("NOT_SPECIFIED"), pb::Mismatch::None);
    assert_eq!(
        late_reply("NETFILTER_DROP"),
        pb::Mismatch::DroppedThoughAllowed
    );
    // No answer, no drop, the peer exists: the weaker mismatch.
    let silent = obs(
        "10.244.2.20:40007",
        "10.244.1.10:8080",
        Protocol::Tcp,
        pb::Outcome::NoAnswer,
    );
    assert_eq!(
        annotate(&state, &silent).mismatch(),
        pb::Mismatch::NoAnswerThoughAllowed
    );
    // No peer (an address outside the cluster): nothing to say.
    let outside = obs(
        "10.244.2.20:40008",
        "203.0.113.9:443",
        Protocol::Tcp,
        pb::Outcome::NoAnswer,
    );
    assert_eq!(annotate(&state, &outside).mismatch(), pb::Mismatch::None);
    // Refused is an answer.
    let refused = obs(
        "10.244.2.20:40009",
        "10.244.1.10:9999",
        Protocol::Tcp,
        pb::Outcome::Refused,
    );
    assert_eq!(annotate(&state, &refused).mismatch(), pb::Mismatch::None);
}

/// Flows name each pod's workload from its owner references: two pods of
/// one Deployment (one labelled, one not) are one workload, a CronJob's pod
/// its CronJob, and a bare pod itself.
#[test]
fn endpoints_name_the_workload_their_owners_make() {
    let mut state = seed(&[]);
    let objects = r#"
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: ReplicaSet
  metadata:
    name: web-7d9f
    namespace: default
    ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: u1, controller: true}]
  spec: {selector: {matchLabels: {pod-template-hash: 7d9f}}}
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-7d9f-a
    namespace: default
    labels: {pod-template-hash: 7d9f}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9f, uid: u2, controller: true}]
  spec: {containers: [{name: c, image: i}]}
  status: {podIP: 10.244.3.1, podIPs: [{ip: 10.244.3.1}]}
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-7d9f-b
    namespace: default
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9f, uid: u2, controller: true}]
  spec: {containers: [{name: c, image: i}]}
  status: {podIP: 10.244.3.2, podIPs: [{ip: 10.244.3.2}]}
"#;
    let mut manifests = netverdict_policy::Manifests::default();
    manifests.read_str(std::path::Path::new("owners.yaml"), objects);
    assert!(manifests.errors.is_empty(), "{:?}", manifests.errors);
    for object in &manifests.objects {
        state.apply(&object.object).expect("valid object");
    }
    let a = annotate(
        &state,
        &obs(
            "10.244.3.1:40000",
            "10.244.3.2:80",
            Protocol::Tcp,
            pb::Outcome::Established,
        ),
    );
    assert_eq!(a.source.as_ref().unwrap().workload, "Deployment/web");
    assert_eq!(a.destination.as_ref().unwrap().workload, "Deployment/web");
    let b = annotate(
        &state,
        &obs(
            "10.244.2.20:40000",
            "10.244.3.1:80",
            Protocol::Tcp,
            pb::Outcome::Established,
        ),
    );
    assert_eq!(b.source.as_ref().unwrap().workload, "Pod/np-client");
}
