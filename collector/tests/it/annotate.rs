//! Annotation on the seed guide's cluster: endpoints, Service DNAT, verdicts with
//! the responsible policies, mismatches and DNS.

use std::time::{Duration, SystemTime};

use netverdict_collector::correlate::{DnsSeen, Observation};
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
