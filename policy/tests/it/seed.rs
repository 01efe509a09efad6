//! The seed guide's requirements: its three lab policies on the example cluster,
//! both additive-allow truth tables, its study cards, its DNS advice, and the
//! explanation of a denied flow in the words the guide's debugging flow needs.

use std::path::Path;

use netverdict_policy::lint::{Severity, lint};
use netverdict_policy::{
    ClusterState, Connection, Endpoint, K8sObject, Manifests, PodKey, Protocol, Status, explain,
};

const SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/examples/seed");

fn seed(policies: &[&str]) -> ClusterState {
    let mut paths = vec![Path::new(SEED).join("cluster.yaml")];
    for p in policies {
        paths.push(Path::new(SEED).join("policies").join(format!("{p}.yaml")));
    }
    ClusterState::load_paths(&paths).unwrap_or_else(|e| panic!("{e}"))
}

fn pod(s: &str) -> Endpoint {
    let (ns, name) = s.split_once('/').unwrap();
    Endpoint::Pod(PodKey::new(ns, name))
}

fn flow(src: &str, dst: &str, port: u16, protocol: Protocol) -> Connection {
    Connection::new(pod(src), pod(dst), port, protocol)
}

fn allowed(state: &ClusterState, src: &str, dst: &str, port: u16, protocol: Protocol) -> bool {
    state
        .verdict(&flow(src, dst, port, protocol))
        .unwrap()
        .allowed
}

#[test]
fn without_policies_every_flow_is_allowed_and_no_pod_is_isolated() {
    let state = seed(&[]);
    for src in ["default/np-client", "shop/np-client", "default/api"] {
        for (port, proto) in [
            (8080, Protocol::Tcp),
            (5432, Protocol::Tcp),
            (53, Protocol::Udp),
        ] {
            let v = state
                .verdict(&flow(src, "default/api", port, proto))
                .unwrap();
            if src == "default/api" {
                assert_eq!(v.ingress.status, Status::SelfTraffic);
                continue;
            }
            assert!(v.allowed);
            assert_eq!(v.egress.status, Status::NotIsolated);
            assert_eq!(v.ingress.status, Status::NotIsolated);
        }
    }
}

/// The ingress truth table: not selected → allowed by default; selected and no
/// rule allows → denied; selected and a rule allows → allowed.
#[test]
fn ingress_truth_table() {
    let state = seed(&["api-from-web"]);
    // Not selected for ingress: np-client has no policy.
    let v = state
        .verdict(&flow(
            "default/api",
            "default/np-client",
            9999,
            Protocol::Tcp,
        ))
        .unwrap();
    assert!(v.allowed);
    assert_eq!(v.ingress.status, Status::NotIsolated);
    // Selected, no rule allows the source/port.
    let v = state
        .verdict(&flow(
            "default/np-client",
            "default/api",
            5432,
            Protocol::Tcp,
        ))
        .unwrap();
    assert!(!v.allowed);
    assert_eq!(v.ingress.status, Status::Denied);
    assert!(v.ingress.isolated);
    // Selected, a rule allows.
    let v = state
        .verdict(&flow(
            "default/np-client",
            "default/api",
            8080,
            Protocol::Tcp,
        ))
        .unwrap();
    assert!(v.allowed);
    assert_eq!(v.ingress.status, Status::Allowed);
    assert_eq!(v.ingress.allowed_by.len(), 1);
    assert_eq!(
        v.ingress.allowed_by[0].policy.to_string(),
        "default/api-from-web"
    );
    assert_eq!(v.ingress.allowed_by[0].rule, 0);
}

/// The egress truth table, the same rule applied independently.
#[test]
fn egress_truth_table() {
    let state = seed(&["allow-dns-egress"]);
    // Not selected for egress: shop/np-client (the policy is in default).
    let v = state
        .verdict(&flow("shop/np-client", "default/api", 8080, Protocol::Tcp))
        .unwrap();
    assert!(v.allowed);
    assert_eq!(v.egress.status, Status::NotIsolated);
    // Selected, no rule allows the destination/port.
    let v = state
        .verdict(&flow(
            "default/np-client",
            "default/api",
            8080,
            Protocol::Tcp,
        ))
        .unwrap();
    assert!(!v.allowed);
    assert_eq!(v.egress.status, Status::Denied);
    assert_eq!(
        v.ingress.status,
        Status::NotIsolated,
        "egress and ingress are decided independently"
    );
    // Selected, a rule allows.
    let v = state
        .verdict(&flow(
            "default/np-client",
            "kube-system/coredns",
            53,
            Protocol::Udp,
        ))
        .unwrap();
    assert!(v.allowed);
    assert_eq!(v.egress.status, Status::Allowed);
}

/// Policies are additive: api-from-web allows what default-deny alone denies.
#[test]
fn policies_are_additive() {
    let deny_only = seed(&["default-deny"]);
    let both = seed(&["default-deny", "api-from-web"]);
    let v = deny_only
        .verdict(&flow("shop/np-client", "default/api", 8080, Protocol::Tcp))
        .unwrap();
    assert_eq!(v.ingress.status, Status::Denied);
    let v = both
        .verdict(&flow(
            "default/np-client",
            "default/api",
            8080,
            Protocol::Tcp,
        ))
        .unwrap();
    assert_eq!(v.ingress.status, Status::Allowed, "{:?}", v.ingress);
    // The client's own egress is still isolated by default-deny.
    assert_eq!(v.egress.status, Status::Denied);
}

/// Study card: a Pod is isolated for ingress when at least one ingress
/// NetworkPolicy selects it; then only allowed ingress traffic is permitted.
#[test]
fn study_card_ingress_isolation() {
    // An egress-only policy selecting the pod does not isolate its ingress.
    let state = seed(&["allow-dns-egress"]);
    let v = state
        .verdict(&flow("shop/np-client", "default/api", 1234, Protocol::Tcp))
        .unwrap();
    assert!(!v.ingress.isolated);
    assert!(v.allowed);
    let state = seed(&["api-from-web"]);
    let v = state
        .verdict(&flow("shop/np-client", "default/api", 1234, Protocol::Tcp))
        .unwrap();
    assert!(v.ingress.isolated);
    assert!(!v.allowed);
}

/// Study card: default-deny egress breaks DNS unless UDP and TCP 53 to the
/// cluster DNS are allowed explicitly.
#[test]
fn study_card_default_deny_breaks_dns_until_allowed() {
    let broken = seed(&["default-deny"]);
    for proto in [Protocol::Udp, Protocol::Tcp] {
        let v = broken
            .verdict(&flow("default/np-client", "kube-system/coredns", 53, proto))
            .unwrap();
        assert!(!v.allowed);
        assert_eq!(v.egress.status, Status::Denied);
        assert_eq!(
            v.egress.without_rules.len(),
            1,
            "default-deny named as the isolating policy"
        );
    }
    let dns_finding: Vec<_> = lint(&broken)
        .into_iter()
        .filter(|f| f.code == "dns-egress-blocked")
        .collect();
    assert_eq!(dns_finding.len(), 1, "{dns_finding:?}");
    assert_eq!(dns_finding[0].severity, Severity::Warning);
    assert!(
        dns_finding[0].message.contains("UDP/53 and TCP/53"),
        "{}",
        dns_finding[0].message
    );
    assert!(
        dns_finding[0].message.contains("np-client"),
        "{}",
        dns_finding[0].message
    );

    let fixed = seed(&["default-deny", "allow-dns-egress"]);
    for proto in [Protocol::Udp, Protocol::Tcp] {
        let v = fixed
            .verdict(&flow("default/np-client", "kube-system/coredns", 53, proto))
            .unwrap();
        assert!(v.allowed, "{proto}");
    }
    // Only 53 is opened: other egress stays denied.
    assert!(!allowed(
        &fixed,
        "default/np-client",
        "kube-system/coredns",
        54,
        Protocol::Udp
    ));
    assert!(lint(&fixed).iter().all(|f| f.code != "dns-egress-blocked"));
}

/// Study card: namespaceSelector plus podSelector in one from item means both
/// must match.
#[test]
fn study_card_namespace_and_pod_selector_in_one_item_is_and() {
    let state = seed(&["api-from-web"]);
    // frontend in a team=web namespace: allowed.
    assert!(allowed(
        &state,
        "default/np-client",
        "default/api",
        8080,
        Protocol::Tcp
    ));
    // frontend in team=payments: namespace does not match.
    assert!(!allowed(
        &state,
        "shop/np-client",
        "default/api",
        8080,
        Protocol::Tcp
    ));
    // a team=web namespace pod that is not a frontend: pod does not match.
    let v = state
        .verdict(&flow(
            "kube-system/coredns",
            "default/api",
            8080,
            Protocol::Tcp,
        ))
        .unwrap();
    assert!(!v.allowed);
    let miss = v.ingress.nearest_miss.as_ref().unwrap();
    assert_eq!(
        miss.failures.len(),
        2,
        "both namespace and pod labels missing: {miss:?}"
    );

    // The same selectors as two items mean either may match.
    let mut or_state = seed(&[]);
    let mut m = Manifests::default();
    m.read_str(
        Path::new("or.yaml"),
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-web-or, namespace: default}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: web}}
    - podSelector: {matchLabels: {role: frontend}}
    ports: [{protocol: TCP, port: 8080}]
"#,
    );
    for o in &m.objects {
        or_state.apply(&o.object).unwrap();
    }
    // shop/np-client is a frontend but not in the policy's namespace: the
    // podSelector-only item admits only pods of `default`, and shop is not team=web.
    assert!(!allowed(
        &or_state,
        "shop/np-client",
        "default/api",
        8080,
        Protocol::Tcp
    ));
    // kube-system/coredns is no frontend, and kube-system is not team=web: denied.
    assert!(!allowed(
        &or_state,
        "kube-system/coredns",
        "default/api",
        8080,
        Protocol::Tcp
    ));
    // default/np-client matches both items.
    assert!(allowed(
        &or_state,
        "default/np-client",
        "default/api",
        8080,
        Protocol::Tcp
    ));
    let findings = lint(&or_state);
    assert!(
        findings.iter().any(|f| f.code == "peers-or-not-and"),
        "lint flags the OR: {findings:?}"
    );
}

/// The debugging flow's question: which policy denied it, and what to change.
#[test]
fn denial_names_the_isolating_policies_and_the_nearest_miss() {
    let state = seed(&["default-deny", "api-from-web"]);
    let f = flow("shop/np-client", "default/api", 8080, Protocol::Tcp);
    let v = state.verdict(&f).unwrap();
    assert!(!v.allowed);
    let names: Vec<String> = v
        .ingress
        .selected_by
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(names, ["default/api-from-web", "default/default-deny"]);
    let e = explain(&state, &f, &v);
    assert_eq!(
        e.reason,
        "ingress of default/api denied: isolated by default/api-from-web, default/default-deny; nearest miss: \
         rule 0 of default/api-from-web needs source namespace label team=web; namespace shop has team=payments"
    );
    // A port miss says which ports the rule allows.
    let f = flow("default/np-client", "default/api", 5432, Protocol::Tcp);
    let v = state.verdict(&f).unwrap();
    let text = explain(&state, &f, &v).to_string();
    assert!(
        text.contains("allows only port(s) TCP/8080; the flow is TCP/5432"),
        "{text}"
    );
    // A pure default-deny names the policy that allows nothing.
    let state = seed(&["default-deny"]);
    let f = flow("shop/np-client", "default/api", 8080, Protocol::Tcp);
    let v = state.verdict(&f).unwrap();
    let e = explain(&state, &f, &v);
    assert!(
        e.reason
            .contains("isolated by default/default-deny, which allow no ingress at all"),
        "{}",
        e.reason
    );
}

/// Every denied verdict names at least one isolating policy.
#[test]
fn no_denial_without_policies() {
    let state = seed(&["default-deny", "api-from-web", "allow-dns-egress"]);
    let pods: Vec<_> = state.pods().iter().map(|p| p.key.to_string()).collect();
    for src in &pods {
        for dst in &pods {
            for (port, proto) in [
                (8080, Protocol::Tcp),
                (53, Protocol::Udp),
                (5432, Protocol::Tcp),
            ] {
                let v = state.verdict(&flow(src, dst, port, proto)).unwrap();
                if !v.allowed {
                    assert!(!v.denied_by().is_empty(), "{src} -> {dst}: {v:?}");
                }
            }
        }
    }
}

#[test]
fn the_example_is_what_kubectl_would_list() {
    let m = Manifests::read_paths(&[Path::new(SEED)]);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    let count = |kind| m.objects.iter().filter(|o| o.object.kind() == kind).count();
    assert_eq!(count("Namespace"), 3);
    assert_eq!(count("Pod"), 4);
    assert_eq!(count("Service"), 2);
    assert_eq!(count("NetworkPolicy"), 3);
    assert!(matches!(m.objects[0].object, K8sObject::Namespace(_)));
}
