//! Conformance of the policy engine to standard Kubernetes NetworkPolicy, written
//! from the API documentation and modelled on the upstream e2e `netpol` suite:
//! namespaces x, y, z each holding pods a, b, c (labels `pod=<name>`, namespace
//! labels `ns=<name>` plus `kubernetes.io/metadata.name`), every pod serving
//! ports 80 and 81 on TCP, UDP and SCTP under the names `serve-<port>-<proto>`.
//!
//! Each case applies policies and states the full 9x9 reachability matrix it
//! expects (start from everything allowed, then mark the cells the policies
//! change, as the upstream `Reachability` helper does); the engine must agree on
//! every pair, whether the destination is named as a pod or by its IP, and its
//! cached, uncached and scanning evaluations must agree with each other.
//! Further cases cover what the e2e model cannot show: policyTypes defaulting,
//! IPv6 ipBlocks and address families, host-network pods, node-local and
//! external traffic, reused and finished pods' addresses, and explanations of
//! cached verdicts.

use crate::common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{apply_yaml, consistent_verdict};
use netverdict_policy::{
    ClusterState, Connection, Endpoint, ObjectKind, PodKey, Protocol, Status, explain,
};

use Protocol::{Icmp, Sctp, Tcp, Udp};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

// ---- the model ---------------------------------------------------------------

/// `x/a` and friends, in matrix order.
fn all_pods() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

fn index_of(list: &[&str], item: &str) -> u8 {
    list.iter().position(|x| *x == item).expect("model name") as u8 + 1
}

/// The IPv4 address of a model pod: x/a is 10.0.1.1, y/c is 10.0.2.3...
fn ip4(pod: &str) -> Ipv4Addr {
    let (ns, name) = pod.split_once('/').expect("ns/pod");
    Ipv4Addr::new(10, 0, index_of(&NAMESPACES, ns), index_of(&PODS, name))
}

/// The IPv6 address of a model pod: x/a is fd00:0:0:1::1.
fn ip6(pod: &str) -> Ipv6Addr {
    let (ns, name) = pod.split_once('/').expect("ns/pod");
    Ipv6Addr::new(
        0xfd00,
        0,
        0,
        index_of(&NAMESPACES, ns).into(),
        0,
        0,
        0,
        index_of(&PODS, name).into(),
    )
}

fn key(pod: &str) -> PodKey {
    let (ns, name) = pod.split_once('/').expect("ns/pod");
    PodKey::new(ns, name)
}

/// A pod manifest on node-1 serving 80 and 81 on every protocol, dual-stack.
fn pod_yaml(ns: &str, name: &str, extra_labels: &[(&str, &str)]) -> String {
    let pod = format!("{ns}/{name}");
    let mut labels = format!("    pod: {name}\n");
    for (k, v) in extra_labels {
        let _ = writeln!(labels, "    {k}: {v}");
    }
    let mut ports = String::new();
    for port in [80, 81] {
        for proto in ["TCP", "UDP", "SCTP"] {
            let _ = writeln!(
                ports,
                "    - {{name: serve-{port}-{}, containerPort: {port}, protocol: {proto}}}",
                proto.to_lowercase()
            );
        }
    }
    format!(
        "---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels:
{labels}spec:
  nodeName: node-1
  containers:
  - name: cont
    image: agnhost
    ports:
{ports}status:
  podIP: {v4}
  podIPs:
  - ip: {v4}
  - ip: {v6}
",
        v4 = ip4(&pod),
        v6 = ip6(&pod),
    )
}

fn namespace_yaml(ns: &str, extra_labels: &[(&str, &str)]) -> String {
    let mut labels = format!("    ns: {ns}\n");
    for (k, v) in extra_labels {
        let _ = writeln!(labels, "    {k}: {v}");
    }
    format!("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n{labels}")
}

/// The e2e model cluster, and the policies applied to it so far (for messages).
struct Model {
    state: ClusterState,
    applied: Vec<String>,
}

impl Model {
    fn new() -> Model {
        let mut yaml = String::new();
        for ns in NAMESPACES {
            yaml.push_str(&namespace_yaml(ns, &[]));
            for pod in PODS {
                yaml.push_str(&pod_yaml(ns, pod, &[]));
            }
        }
        let mut state = ClusterState::new();
        apply_yaml(&mut state, &yaml);
        Model {
            state,
            applied: Vec::new(),
        }
    }

    /// Applies policies (or any objects) given as YAML.
    fn apply(&mut self, yaml: &str) -> &mut Self {
        apply_yaml(&mut self.state, yaml);
        self.applied.push(yaml.trim().to_string());
        self
    }

    fn delete_policy(&mut self, ns: &str, name: &str) -> &mut Self {
        assert!(
            self.state.delete(ObjectKind::NetworkPolicy, ns, name),
            "policy {ns}/{name} was not there"
        );
        self.applied.push(format!("(deleted policy {ns}/{name})"));
        self
    }

    /// Re-applies a model pod with extra labels.
    fn label_pod(&mut self, pod: &str, labels: &[(&str, &str)]) -> &mut Self {
        let (ns, name) = pod.split_once('/').expect("ns/pod");
        self.apply(&pod_yaml(ns, name, labels))
    }

    /// Re-applies a model namespace with extra labels.
    fn label_namespace(&mut self, ns: &str, labels: &[(&str, &str)]) -> &mut Self {
        self.apply(&namespace_yaml(ns, labels))
    }

    fn flow(&self, src: Endpoint, dst: Endpoint, port: u16, protocol: Protocol) -> bool {
        consistent_verdict(&self.state, &Connection::new(src, dst, port, protocol))
    }

    /// Checks every pair of model pods on one port and protocol, naming both
    /// endpoints as pods and again by IPv4 address.
    fn check(&self, port: u16, protocol: Protocol, expected: &Reachability) {
        self.check_addressed(port, protocol, expected, Addressing::PodNames);
        self.check_addressed(port, protocol, expected, Addressing::Ipv4);
    }

    fn check_addressed(
        &self,
        port: u16,
        protocol: Protocol,
        expected: &Reachability,
        addressing: Addressing,
    ) {
        let pods = all_pods();
        let mut actual = Reachability::new(true);
        let mut report = String::new();
        for src in &pods {
            for dst in &pods {
                let endpoint = |pod: &str| match addressing {
                    Addressing::PodNames => Endpoint::Pod(key(pod)),
                    Addressing::Ipv4 => Endpoint::Ip(IpAddr::V4(ip4(pod))),
                    Addressing::Ipv6 => Endpoint::Ip(IpAddr::V6(ip6(pod))),
                };
                let flow = Connection::new(endpoint(src), endpoint(dst), port, protocol);
                let allowed = consistent_verdict(&self.state, &flow);
                actual.expect(src, dst, allowed);
                if allowed != expected.get(src, dst) {
                    let verdict = self.state.verdict(&flow).expect("valid flow");
                    let _ = writeln!(
                        report,
                        "{src} -> {dst}: expected {}, engine says:\n{}\n",
                        if expected.get(src, dst) {
                            "allow"
                        } else {
                            "deny"
                        },
                        explain(&self.state, &flow, &verdict)
                    );
                }
            }
        }
        assert!(
            report.is_empty(),
            "{protocol}/{port} ({addressing:?}): reachability differs\n\
             policies:\n{}\n\nexpected:\n{}\nactual:\n{}\n{report}",
            self.applied.join("\n---\n"),
            expected.table(),
            actual.table()
        );
    }
}

#[derive(Clone, Copy, Debug)]
enum Addressing {
    PodNames,
    Ipv4,
    Ipv6,
}

/// An expected reachability matrix over the model pods. Patterns name pods as
/// `x/a`, a namespace as `x/*`, a pod name in every namespace as `*/a`, or all
/// pods as `*`. A pod can always reach itself, whatever is set.
#[derive(Clone)]
struct Reachability {
    cells: BTreeMap<(String, String), bool>,
}

fn pattern_matches(pattern: &str, pod: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let (pns, pname) = pattern.split_once('/').expect("pattern ns/pod");
    let (ns, name) = pod.split_once('/').expect("ns/pod");
    (pns == "*" || pns == ns) && (pname == "*" || pname == name)
}

impl Reachability {
    fn new(default: bool) -> Reachability {
        let pods = all_pods();
        let cells = pods
            .iter()
            .flat_map(|s| pods.iter().map(move |d| ((s.clone(), d.clone()), default)))
            .collect();
        Reachability { cells }
    }

    /// Sets every cell from a pod matching `from` to a pod matching `to`.
    fn expect(&mut self, from: &str, to: &str, allowed: bool) -> &mut Self {
        let mut hit = false;
        for ((s, d), cell) in self.cells.iter_mut() {
            if pattern_matches(from, s) && pattern_matches(to, d) {
                *cell = allowed;
                hit = true;
            }
        }
        assert!(hit, "pattern {from} -> {to} matches no cell");
        self
    }

    /// Everything into `to` (its ingress).
    fn expect_all_ingress(&mut self, to: &str, allowed: bool) -> &mut Self {
        self.expect("*", to, allowed)
    }

    /// Everything out of `from` (its egress).
    fn expect_all_egress(&mut self, from: &str, allowed: bool) -> &mut Self {
        self.expect(from, "*", allowed)
    }

    fn get(&self, from: &str, to: &str) -> bool {
        from == to || self.cells[&(from.to_string(), to.to_string())]
    }

    /// The matrix as the upstream suite prints it: `.` allowed, `X` denied.
    fn table(&self) -> String {
        let pods = all_pods();
        let mut out = String::from("     ");
        for d in &pods {
            let _ = write!(out, "{d:>4}");
        }
        out.push('\n');
        for s in &pods {
            let _ = write!(out, "{s:>4} ");
            for d in &pods {
                let _ = write!(out, "{:>4}", if self.get(s, d) { "." } else { "X" });
            }
            out.push('\n');
        }
        out
    }
}

/// A NetworkPolicy manifest from its namespace, name and `spec` body (YAML
/// indented by four spaces).
fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"
    )
}

fn all_allowed() -> Reachability {
    Reachability::new(true)
}

// ---- default deny and allow all ----------------------------------------------

#[test]
fn default_deny_ingress() {
    let mut m = Model::new();
    m.apply(&policy("x", "deny-ingress", "    podSelector: {}\n"));
    let mut r = all_allowed();
    r.expect_all_ingress("x/*", false);
    for protocol in Protocol::ALL {
        m.check(80, protocol, &r);
        m.check(81, protocol, &r);
    }
}

// ---- ICMP --------------------------------------------------------------------

/// Ping has no port, and NetworkPolicy ports cannot name ICMP: isolation
/// denies it, a rule with ports (even every port of a protocol) never admits
/// it, a rule without ports admits it from its peers, as every protocol.
#[test]
fn icmp_is_admitted_only_by_rules_without_ports() {
    let mut m = Model::new();
    m.apply(&policy("x", "deny-ingress", "    podSelector: {}\n"));
    let mut isolated = all_allowed();
    isolated.expect_all_ingress("x/*", false);
    m.check(0, Icmp, &isolated);
    m.apply(&policy(
        "x",
        "allow-tcp-and-dns",
        "    podSelector: {}\n    ingress:\n    - ports:\n      - protocol: TCP\n      - {protocol: UDP, port: 53}\n",
    ));
    m.check(80, Tcp, &all_allowed());
    m.check(0, Icmp, &isolated);
    m.apply(&policy(
        "x",
        "allow-from-y",
        "    podSelector: {}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels: {ns: y}\n",
    ));
    let mut from_y = isolated.clone();
    from_y.expect("y/*", "x/*", true);
    m.check(0, Icmp, &from_y);
    // Egress alike: a default deny egress with a DNS rule stops ping.
    m.apply(&policy(
        "z",
        "egress-dns-only",
        "    podSelector: {}\n    policyTypes: [Egress]\n    egress:\n    - ports:\n      - {protocol: UDP, port: 53}\n",
    ));
    from_y.expect_all_egress("z/*", false);
    m.check(0, Icmp, &from_y);
}

/// The admin tiers alike: a Deny rule with ports never matches ping, one
/// without ports does.
#[test]
fn admin_rules_match_icmp_only_without_ports() {
    let mut m = Model::new();
    m.apply(concat!(
        "apiVersion: policy.networking.k8s.io/v1alpha1\n",
        "kind: AdminNetworkPolicy\n",
        "metadata: {name: deny-into-x}\n",
        "spec:\n",
        "  priority: 10\n",
        "  subject:\n",
        "    namespaces: {matchLabels: {ns: x}}\n",
        "  ingress:\n",
        "  - action: Deny\n",
        "    from: [{namespaces: {matchLabels: {ns: y}}}]\n",
        "    ports: [{portNumber: {protocol: TCP, port: 80}}]\n",
        "  - action: Deny\n",
        "    from: [{namespaces: {matchLabels: {ns: z}}}]\n",
    ));
    let mut tcp = all_allowed();
    tcp.expect("y/*", "x/*", false).expect("z/*", "x/*", false);
    m.check(80, Tcp, &tcp);
    let mut icmp = all_allowed();
    icmp.expect("z/*", "x/*", false);
    m.check(0, Icmp, &icmp);
}

#[test]
fn a_policy_port_cannot_name_icmp() {
    let mut state = ClusterState::default();
    let objects = common::objects(&policy(
        "x",
        "icmp",
        "    podSelector: {}\n    ingress:\n    - ports:\n      - protocol: ICMP\n",
    ));
    let err = state.apply(&objects[0]).unwrap_err().to_string();
    assert!(
        err.contains("ingress[0].ports[0].protocol") && err.contains("\"ICMP\""),
        "{err}"
    );
}

#[test]
fn default_deny_ingress_with_explicit_empty_rules() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "deny-ingress",
        "    podSelector: {}\n    policyTypes: [Ingress]\n    ingress: []\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/*", false);
    m.check(80, Tcp, &r);
}

#[test]
fn default_deny_egress() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "deny-egress",
        "    podSelector: {}\n    policyTypes: [Egress]\n",
    ));
    let mut r = all_allowed();
    r.expect_all_egress("x/*", false);
    m.check(80, Tcp, &r);
    m.check(81, Udp, &r);
}

#[test]
fn default_deny_all() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "deny-all",
        "    podSelector: {}\n    policyTypes: [Ingress, Egress]\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/*", false);
    r.expect_all_egress("x/*", false);
    for protocol in Protocol::ALL {
        m.check(80, protocol, &r);
    }
}

#[test]
fn allow_all_ingress_with_empty_rule() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "allow-all",
        "    podSelector: {}\n    ingress:\n    - {}\n",
    ));
    m.check(80, Tcp, &all_allowed());
    // An allow-all policy overrides a default deny: policies are additive.
    m.apply(&policy("x", "deny-ingress", "    podSelector: {}\n"));
    m.check(80, Tcp, &all_allowed());
    m.check(81, Sctp, &all_allowed());
}

#[test]
fn allow_all_egress_with_empty_rule() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "deny-all",
        "    podSelector: {}\n    policyTypes: [Ingress, Egress]\n",
    ));
    m.apply(&policy(
        "x",
        "allow-all-egress",
        "    podSelector: {}\n    policyTypes: [Egress]\n    egress:\n    - {}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/*", false);
    m.check(80, Tcp, &r);
}

#[test]
fn allow_all_ingress_for_one_target_over_namespace_default_deny() {
    let mut m = Model::new();
    m.apply(&policy("x", "deny-ingress", "    podSelector: {}\n"));
    m.apply(&policy(
        "x",
        "allow-a",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - {}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/b", false)
        .expect_all_ingress("x/c", false);
    m.check(80, Tcp, &r);
    m.check(81, Udp, &r);
}

// ---- pod and namespace selectors -----------------------------------------------

#[test]
fn allow_from_pod_in_same_namespace_by_pod_selector() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "allow-x-b",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - podSelector:\n          matchLabels: {pod: b}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false);
    // podSelector alone means the policy's namespace only: y/b and z/b stay out.
    r.expect("x/b", "x/a", true);
    m.check(80, Tcp, &r);
}

#[test]
fn deny_ingress_from_other_namespaces() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "same-namespace",
        "    podSelector: {}\n    ingress:\n    - from:\n      - podSelector: {}\n",
    ));
    let mut r = all_allowed();
    r.expect("y/*", "x/*", false).expect("z/*", "x/*", false);
    m.check(80, Tcp, &r);
}

#[test]
fn allow_from_namespace_by_namespace_selector() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "allow-ns-y",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels: {ns: y}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("y/*", "x/a", true);
    m.check(80, Tcp, &r);
}

#[test]
fn namespace_selector_on_default_namespace_label() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "allow-ns-y",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels:\n            kubernetes.io/metadata.name: y\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("y/*", "x/a", true);
    m.check(80, Tcp, &r);
}

#[test]
fn namespace_selector_match_expressions_not_in_default_label() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "allow-not-y",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchExpressions:\n          - {key: kubernetes.io/metadata.name, operator: NotIn, values: [y]}\n",
    ));
    let mut r = all_allowed();
    r.expect("y/*", "x/a", false);
    m.check(80, Tcp, &r);
}

#[test]
fn namespace_selector_match_expressions_in() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "allow-in-y",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchExpressions:\n          - {key: ns, operator: In, values: [y]}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("y/*", "x/a", true);
    m.check(80, Tcp, &r);
}

#[test]
fn pod_selector_match_expressions() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "allow-b",
        "    podSelector:\n      matchExpressions:\n      - {key: pod, operator: In, values: [a]}\n    ingress:\n    - from:\n      - podSelector:\n          matchExpressions:\n          - {key: pod, operator: In, values: [b]}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true);
    m.check(80, Tcp, &r);
}

#[test]
fn selector_operators_exists_and_does_not_exist() {
    let mut m = Model::new();
    m.label_pod("x/b", &[("tier", "web")]);
    m.label_pod("y/c", &[("tier", "db")]);
    // Selects the pods of x without a tier label (x/a, x/c); admits from any
    // namespace the pods that have one (x/b, y/c).
    m.apply(&policy(
        "x",
        "tiers",
        "    podSelector:\n      matchExpressions:\n      - {key: tier, operator: DoesNotExist}\n    ingress:\n    - from:\n      - namespaceSelector: {}\n        podSelector:\n          matchExpressions:\n          - {key: tier, operator: Exists}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect_all_ingress("x/c", false)
        .expect("x/b", "x/a", true)
        .expect("x/b", "x/c", true)
        .expect("y/c", "x/a", true)
        .expect("y/c", "x/c", true);
    m.check(80, Tcp, &r);
}

#[test]
fn pod_selector_not_in_matches_pods_without_the_label() {
    let mut m = Model::new();
    m.label_pod("x/b", &[("env", "prod")]);
    m.label_pod("x/c", &[("env", "dev")]);
    // env NotIn (dev) holds for x/a (no env label) and x/b (prod), not x/c.
    m.apply(&policy(
        "x",
        "not-dev",
        "    podSelector:\n      matchExpressions:\n      - {key: env, operator: NotIn, values: [dev]}\n    policyTypes: [Ingress]\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect_all_ingress("x/b", false);
    m.check(80, Tcp, &r);
}

#[test]
fn pod_selector_or_namespace_selector_in_separate_peers() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "or",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchExpressions:\n          - {key: ns, operator: NotIn, values: [x]}\n      - podSelector:\n          matchLabels: {pod: b}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true)
        .expect("y/*", "x/a", true)
        .expect("z/*", "x/a", true);
    m.check(80, Tcp, &r);
}

#[test]
fn pod_selector_and_namespace_selector_in_one_peer() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "and",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchExpressions:\n          - {key: ns, operator: NotIn, values: [x]}\n        podSelector:\n          matchLabels: {pod: b}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("y/b", "x/a", true)
        .expect("z/b", "x/a", true);
    m.check(80, Tcp, &r);
}

#[test]
fn multiple_pod_and_namespace_selectors() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "and-in",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchExpressions:\n          - {key: ns, operator: NotIn, values: [x]}\n        podSelector:\n          matchExpressions:\n          - {key: pod, operator: In, values: [b, c]}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("y/b", "x/a", true)
        .expect("y/c", "x/a", true)
        .expect("z/b", "x/a", true)
        .expect("z/c", "x/a", true);
    m.check(80, Tcp, &r);
}

#[test]
fn any_of_several_pod_selectors() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "b-or-c",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - podSelector:\n          matchLabels: {pod: b}\n      - podSelector:\n          matchLabels: {pod: c}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true)
        .expect("x/c", "x/a", true);
    m.check(80, Tcp, &r);
}

#[test]
fn pod_in_other_namespace_by_pod_and_namespace_selector() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "y-a-only",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels: {ns: y}\n        podSelector:\n          matchLabels: {pod: a}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("y/a", "x/a", true);
    m.check(80, Tcp, &r);
}

#[test]
fn empty_namespace_selector_means_all_namespaces() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "all-ns-b",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector: {}\n        podSelector:\n          matchLabels: {pod: b}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("*/b", "x/a", true);
    m.check(80, Tcp, &r);

    m.apply(&policy(
        "x",
        "all-ns",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector: {}\n",
    ));
    m.check(80, Tcp, &all_allowed());
}

// ---- ports and protocols ------------------------------------------------------

#[test]
fn ingress_on_numbered_port() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "y-on-81",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels: {ns: y}\n      ports:\n      - port: 81\n",
    ));
    let mut r80 = all_allowed();
    r80.expect_all_ingress("x/a", false);
    m.check(80, Tcp, &r80);
    let mut r81 = all_allowed();
    r81.expect_all_ingress("x/a", false)
        .expect("y/*", "x/a", true);
    m.check(81, Tcp, &r81);
    // The port's protocol defaults to TCP: UDP/81 is not allowed.
    m.check(81, Udp, &r80);
}

#[test]
fn stacked_policies_with_overlapping_pod_selectors() {
    let mut m = Model::new();
    for port in [80, 81] {
        m.apply(&policy(
            "x",
            &format!("y-on-{port}"),
            &format!(
                "    podSelector:\n      matchLabels: {{pod: a}}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels: {{ns: y}}\n      ports:\n      - port: {port}\n"
            ),
        ));
    }
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("y/*", "x/a", true);
    m.check(80, Tcp, &r);
    m.check(81, Tcp, &r);
}

#[test]
fn ingress_on_one_named_port() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "allow-81",
        "    podSelector: {}\n    ingress:\n    - ports:\n      - port: serve-81-tcp\n",
    ));
    m.check(81, Tcp, &all_allowed());
    let mut r80 = all_allowed();
    r80.expect_all_ingress("x/*", false);
    m.check(80, Tcp, &r80);
    // serve-81-tcp is a TCP port: UDP/81 is not allowed.
    m.check(81, Udp, &r80);
}

#[test]
fn ingress_from_namespace_on_one_named_port() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "y-on-80",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels: {ns: y}\n      ports:\n      - port: serve-80-tcp\n",
    ));
    let mut r80 = all_allowed();
    r80.expect_all_ingress("x/a", false)
        .expect("y/*", "x/a", true);
    m.check(80, Tcp, &r80);
    let mut r81 = all_allowed();
    r81.expect_all_ingress("x/a", false);
    m.check(81, Tcp, &r81);
}

#[test]
fn egress_on_one_named_port() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "egress-80",
        "    podSelector: {}\n    policyTypes: [Egress]\n    egress:\n    - ports:\n      - port: serve-80-tcp\n",
    ));
    m.check(80, Tcp, &all_allowed());
    let mut r81 = all_allowed();
    r81.expect_all_egress("x/*", false);
    m.check(81, Tcp, &r81);
}

#[test]
fn named_port_resolves_with_its_protocol() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "udp-80",
        "    podSelector: {}\n    ingress:\n    - ports:\n      - {port: serve-80-udp, protocol: UDP}\n",
    ));
    let mut denied = all_allowed();
    denied.expect_all_ingress("x/*", false);
    m.check(80, Udp, &all_allowed());
    m.check(80, Tcp, &denied);
    m.check(80, Sctp, &denied);

    // Without a protocol the rule is about TCP, and the pods have no TCP port
    // named serve-80-udp: the rule matches nothing.
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "tcp-serve-80-udp",
        "    podSelector: {}\n    ingress:\n    - ports:\n      - port: serve-80-udp\n",
    ));
    m.check(80, Tcp, &denied);
    m.check(80, Udp, &denied);
}

#[test]
fn end_port_range() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "range",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - ports:\n      - {protocol: TCP, port: 80, endPort: 81}\n    - ports:\n      - {protocol: UDP, port: 81, endPort: 90}\n",
    ));
    let mut denied = all_allowed();
    denied.expect_all_ingress("x/a", false);
    for port in [80, 81] {
        m.check(port, Tcp, &all_allowed());
    }
    for port in [79, 82, 1000] {
        m.check(port, Tcp, &denied);
    }
    m.check(80, Udp, &denied);
    for port in [81, 85, 90] {
        m.check(port, Udp, &all_allowed());
    }
    m.check(91, Udp, &denied);
    m.check(81, Sctp, &denied);
}

#[test]
fn sctp_rule_is_not_a_tcp_rule() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "sctp-81",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - ports:\n      - {protocol: SCTP, port: 81}\n",
    ));
    let mut denied = all_allowed();
    denied.expect_all_ingress("x/a", false);
    m.check(81, Sctp, &all_allowed());
    m.check(81, Tcp, &denied);
    m.check(81, Udp, &denied);
    m.check(80, Sctp, &denied);
}

#[test]
fn udp_only_rule_denies_tcp() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "udp-81",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - ports:\n      - {protocol: UDP, port: 81}\n",
    ));
    let mut denied = all_allowed();
    denied.expect_all_ingress("x/a", false);
    m.check(81, Udp, &all_allowed());
    m.check(81, Tcp, &denied);
}

#[test]
fn protocol_without_port_allows_every_port_of_it() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "any-udp",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels: {ns: y}\n      ports:\n      - protocol: UDP\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("y/*", "x/a", true);
    m.check(80, Udp, &r);
    m.check(81, Udp, &r);
    let mut denied = all_allowed();
    denied.expect_all_ingress("x/a", false);
    m.check(80, Tcp, &denied);
    m.check(80, Sctp, &denied);
}

#[test]
fn udp_and_sctp_default_deny_and_namespace_rules() {
    for (protocol, name) in [(Udp, "UDP"), (Sctp, "SCTP")] {
        let mut m = Model::new();
        m.apply(&policy("x", "deny-ingress", "    podSelector: {}\n"));
        let mut r = all_allowed();
        r.expect_all_ingress("x/*", false);
        m.check(80, protocol, &r);
        m.apply(&policy(
            "x",
            "y-on-81",
            &format!(
                "    podSelector:\n      matchLabels: {{pod: a}}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels: {{ns: y}}\n        podSelector:\n          matchLabels: {{pod: b}}\n      ports:\n      - {{protocol: {name}, port: 81}}\n"
            ),
        ));
        m.check(80, protocol, &r);
        r.expect("y/b", "x/a", true);
        m.check(81, protocol, &r);
    }
}

// ---- ipBlock ---------------------------------------------------------------------

#[test]
fn egress_to_server_in_cidr_block() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "to-y-b",
        &format!(
            "    podSelector:\n      matchLabels: {{pod: a}}\n    policyTypes: [Egress]\n    egress:\n    - to:\n      - ipBlock:\n          cidr: {}/32\n",
            ip4("y/b")
        ),
    ));
    let mut r = all_allowed();
    r.expect_all_egress("x/a", false).expect("x/a", "y/b", true);
    m.check(80, Tcp, &r);
}

#[test]
fn egress_to_cidr_with_except() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "to-pods-but-y-b",
        &format!(
            "    podSelector:\n      matchLabels: {{pod: a}}\n    policyTypes: [Egress]\n    egress:\n    - to:\n      - ipBlock:\n          cidr: 10.0.0.0/16\n          except: [{}/32]\n",
            ip4("y/b")
        ),
    ));
    let mut r = all_allowed();
    r.expect("x/a", "y/b", false);
    m.check(80, Tcp, &r);
}

#[test]
fn ip_in_both_cidr_and_except_of_different_peers_is_allowed() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "overlap",
        &format!(
            "    podSelector:\n      matchLabels: {{pod: a}}\n    policyTypes: [Egress]\n    egress:\n    - to:\n      - ipBlock:\n          cidr: 10.0.0.0/16\n          except: [{ip}/32]\n    - to:\n      - ipBlock:\n          cidr: {ip}/32\n",
            ip = ip4("y/b")
        ),
    ));
    m.check(80, Tcp, &all_allowed());
}

#[test]
fn ingress_from_cidr_with_except() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "from-y-but-c",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - ipBlock:\n          cidr: 10.0.2.0/24\n          except: [10.0.2.3/32]\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("y/a", "x/a", true)
        .expect("y/b", "x/a", true);
    m.check(80, Tcp, &r);
}

#[test]
fn ipv6_cidr_with_except() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "from-y-v6",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - ipBlock:\n          cidr: fd00:0:0:2::/64\n          except: ['fd00:0:0:2::2/128']\n",
    ));
    let mut r6 = all_allowed();
    r6.expect_all_ingress("x/a", false)
        .expect("y/a", "x/a", true)
        .expect("y/c", "x/a", true);
    m.check_addressed(80, Tcp, &r6, Addressing::Ipv6);
    // Over IPv4 the pods' addresses are outside the IPv6 block.
    let mut r4 = all_allowed();
    r4.expect_all_ingress("x/a", false);
    m.check(80, Tcp, &r4);
    // A pod named without address talks over the family of the other end's
    // address: y/a may only send to x's IPv6 range, and reaches x/a by name when
    // the flow starts from its IPv6 address.
    m.apply(&policy(
        "y",
        "to-x-v6",
        "    podSelector:\n      matchLabels: {pod: a}\n    policyTypes: [Egress]\n    egress:\n    - to:\n      - ipBlock: {cidr: 'fd00:0:0:1::/64'}\n",
    ));
    let y_a_to_x_a =
        |src: IpAddr| Connection::new(Endpoint::Ip(src), Endpoint::Pod(key("x/a")), 80, Tcp);
    assert!(consistent_verdict(
        &m.state,
        &y_a_to_x_a(IpAddr::V6(ip6("y/a")))
    ));
    assert!(!consistent_verdict(
        &m.state,
        &y_a_to_x_a(IpAddr::V4(ip4("y/a")))
    ));
    r6.expect_all_egress("y/a", false)
        .expect("y/a", "x/*", true);
    m.check_addressed(80, Tcp, &r6, Addressing::Ipv6);
}

#[test]
fn ip_block_and_external_addresses() {
    let mut m = Model::new();
    let outside: IpAddr = "203.0.113.7".parse().unwrap();
    let other: IpAddr = "198.51.100.1".parse().unwrap();
    m.apply(&policy(
        "x",
        "from-net",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - ipBlock:\n          cidr: 203.0.113.0/24\n      - namespaceSelector: {}\n",
    ));
    let into = |ip: IpAddr| Connection::new(Endpoint::Ip(ip), Endpoint::Pod(key("x/a")), 80, Tcp);
    assert!(consistent_verdict(&m.state, &into(outside)));
    // Pod selectors (even "every pod of every namespace") never match an
    // address outside the cluster.
    assert!(!consistent_verdict(&m.state, &into(other)));
    // External sources reach unisolated pods; external destinations are reached
    // from pods that are not isolated for egress.
    let to_b = Connection::new(Endpoint::Ip(other), Endpoint::Pod(key("x/b")), 80, Tcp);
    assert!(consistent_verdict(&m.state, &to_b));
    let out_of_a = Connection::new(Endpoint::Pod(key("x/a")), Endpoint::Ip(other), 80, Tcp);
    assert!(consistent_verdict(&m.state, &out_of_a));
}

#[test]
fn egress_pod_selector_does_not_match_external_addresses() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "to-pods",
        "    podSelector:\n      matchLabels: {pod: a}\n    policyTypes: [Egress]\n    egress:\n    - to:\n      - namespaceSelector: {}\n        podSelector: {}\n    - to:\n      - ipBlock: {cidr: 0.0.0.0/0, except: [8.8.8.0/24]}\n",
    ));
    let out = |ip: &str| {
        Connection::new(
            Endpoint::Pod(key("x/a")),
            Endpoint::Ip(ip.parse().unwrap()),
            53,
            Udp,
        )
    };
    assert!(!consistent_verdict(&m.state, &out("8.8.8.8")));
    assert!(consistent_verdict(&m.state, &out("1.1.1.1")));
    m.check(80, Tcp, &all_allowed());
}

// ---- combinations of directions and policies ----------------------------------------

#[test]
fn ingress_and_egress_in_one_policy() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "a-with-b",
        "    podSelector:\n      matchLabels: {pod: a}\n    policyTypes: [Ingress, Egress]\n    ingress:\n    - from:\n      - podSelector:\n          matchLabels: {pod: b}\n    egress:\n    - to:\n      - podSelector:\n          matchLabels: {pod: b}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect_all_egress("x/a", false)
        .expect("x/b", "x/a", true)
        .expect("x/a", "x/b", true);
    m.check(80, Tcp, &r);
}

#[test]
fn egress_denied_on_client_side_even_if_server_allows() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "a-to-y-b",
        "    podSelector:\n      matchLabels: {pod: a}\n    policyTypes: [Egress]\n    egress:\n    - to:\n      - namespaceSelector:\n          matchLabels: {ns: y}\n        podSelector:\n          matchLabels: {pod: b}\n",
    ));
    m.apply(&policy(
        "y",
        "from-x-a",
        "    podSelector: {}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels: {ns: x}\n        podSelector:\n          matchLabels: {pod: a}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_egress("x/a", false)
        .expect_all_ingress("y/*", false)
        .expect("x/a", "y/b", true);
    m.check(80, Tcp, &r);
}

#[test]
fn ingress_and_egress_isolation_are_independent() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "a-no-egress",
        "    podSelector:\n      matchLabels: {pod: a}\n    policyTypes: [Egress]\n",
    ));
    m.apply(&policy(
        "x",
        "b-no-ingress",
        "    podSelector:\n      matchLabels: {pod: b}\n    policyTypes: [Ingress]\n",
    ));
    let mut r = all_allowed();
    r.expect_all_egress("x/a", false)
        .expect_all_ingress("x/b", false);
    m.check(80, Tcp, &r);
}

#[test]
fn ingress_allow_all_takes_precedence_over_narrower_policies() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "y-on-81",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels: {ns: y}\n      ports:\n      - port: 81\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false);
    m.check(80, Tcp, &r);
    m.apply(&policy(
        "x",
        "allow-all",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - {}\n",
    ));
    m.check(80, Tcp, &all_allowed());
    m.check(81, Tcp, &all_allowed());
}

#[test]
fn egress_allow_all_takes_precedence_over_narrower_policies() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "to-y-on-81",
        "    podSelector:\n      matchLabels: {pod: a}\n    policyTypes: [Egress]\n    egress:\n    - to:\n      - namespaceSelector:\n          matchLabels: {ns: y}\n      ports:\n      - port: 81\n",
    ));
    let mut r80 = all_allowed();
    r80.expect_all_egress("x/a", false);
    m.check(80, Tcp, &r80);
    let mut r81 = r80.clone();
    r81.expect("x/a", "y/*", true);
    m.check(81, Tcp, &r81);
    m.apply(&policy(
        "x",
        "allow-all-egress",
        "    podSelector:\n      matchLabels: {pod: a}\n    policyTypes: [Egress]\n    egress:\n    - {}\n",
    ));
    m.check(80, Tcp, &all_allowed());
}

// ---- policyTypes, from/to and ports defaulting -------------------------------------

#[test]
fn omitted_policy_types_with_egress_rules_mean_ingress_and_egress() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "egress-to-b",
        "    podSelector:\n      matchLabels: {pod: a}\n    egress:\n    - to:\n      - podSelector:\n          matchLabels: {pod: b}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect_all_egress("x/a", false)
        .expect("x/a", "x/b", true);
    m.check(80, Tcp, &r);
}

#[test]
fn omitted_policy_types_with_empty_egress_mean_ingress_only() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "empty-egress",
        "    podSelector:\n      matchLabels: {pod: a}\n    egress: []\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false);
    m.check(80, Tcp, &r);
}

#[test]
fn policy_types_override_the_rules_present() {
    let mut m = Model::new();
    // Egress rules of an Ingress-only policy are ignored, and vice versa.
    m.apply(&policy(
        "x",
        "ingress-only",
        "    podSelector:\n      matchLabels: {pod: a}\n    policyTypes: [Ingress]\n    ingress:\n    - from:\n      - podSelector:\n          matchLabels: {pod: b}\n    egress:\n    - to:\n      - podSelector:\n          matchLabels: {pod: b}\n",
    ));
    m.apply(&policy(
        "x",
        "egress-only",
        "    podSelector:\n      matchLabels: {pod: c}\n    policyTypes: [Egress]\n    ingress:\n    - {}\n    egress:\n    - to:\n      - podSelector:\n          matchLabels: {pod: b}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true)
        .expect_all_egress("x/c", false)
        .expect("x/c", "x/b", true);
    m.check(80, Tcp, &r);
}

#[test]
fn empty_policy_types_list_defaults_like_omitted() {
    // The API server defaults policyTypes when the list is empty, not only when
    // it is absent (`len(spec.policyTypes) == 0`): Ingress, plus Egress because
    // the policy has egress rules.
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "empty-types",
        "    podSelector:\n      matchLabels: {pod: a}\n    policyTypes: []\n    egress:\n    - to:\n      - podSelector:\n          matchLabels: {pod: b}\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect_all_egress("x/a", false)
        .expect("x/a", "x/b", true);
    m.check(80, Tcp, &r);
}

#[test]
fn missing_or_empty_from_allows_every_source() {
    for rule in [
        "    - ports:\n      - port: 81\n",
        "    - from: []\n      ports:\n      - port: 81\n",
    ] {
        let mut m = Model::new();
        m.apply(&policy(
            "x",
            "on-81",
            &format!("    podSelector:\n      matchLabels: {{pod: a}}\n    ingress:\n{rule}"),
        ));
        m.check(81, Tcp, &all_allowed());
        let mut r = all_allowed();
        r.expect_all_ingress("x/a", false);
        m.check(80, Tcp, &r);
    }
}

#[test]
fn missing_or_empty_to_allows_every_destination() {
    for to in [
        "    - ports: [{port: 81}]\n",
        "    - to: []\n      ports: [{port: 81}]\n",
    ] {
        let mut m = Model::new();
        m.apply(&policy(
            "x",
            "out-81",
            &format!("    podSelector: {{}}\n    policyTypes: [Egress]\n    egress:\n{to}"),
        ));
        m.check(81, Tcp, &all_allowed());
        let mut r = all_allowed();
        r.expect_all_egress("x/*", false);
        m.check(80, Tcp, &r);
    }
}

// ---- updates ---------------------------------------------------------------------

#[test]
fn deleting_policies_restores_access() {
    let mut m = Model::new();
    m.apply(&policy("x", "deny-ingress", "    podSelector: {}\n"));
    m.apply(&policy(
        "x",
        "deny-egress",
        "    podSelector: {}\n    policyTypes: [Egress]\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/*", false)
        .expect_all_egress("x/*", false);
    m.check(80, Tcp, &r);
    m.delete_policy("x", "deny-egress");
    let mut r = all_allowed();
    r.expect_all_ingress("x/*", false);
    m.check(80, Tcp, &r);
    m.delete_policy("x", "deny-ingress");
    m.check(80, Tcp, &all_allowed());
}

#[test]
fn updated_policy_is_enforced() {
    let mut m = Model::new();
    let allow_from = |pod: &str| {
        policy(
            "x",
            "allow",
            &format!(
                "    podSelector:\n      matchLabels: {{pod: a}}\n    ingress:\n    - from:\n      - podSelector:\n          matchLabels: {{pod: {pod}}}\n"
            ),
        )
    };
    m.apply(&allow_from("b"));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true);
    m.check(80, Tcp, &r);
    m.apply(&allow_from("c"));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("x/c", "x/a", true);
    m.check(80, Tcp, &r);
}

#[test]
fn ingress_from_updated_namespace() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "from-updated-ns",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels: {ns2: updated}\n",
    ));
    let mut denied = all_allowed();
    denied.expect_all_ingress("x/a", false);
    m.check(80, Tcp, &denied);
    m.label_namespace("y", &[("ns2", "updated")]);
    let mut r = denied.clone();
    r.expect("y/*", "x/a", true);
    m.check(80, Tcp, &r);
    m.label_namespace("y", &[]);
    m.check(80, Tcp, &denied);
}

#[test]
fn ingress_from_updated_pod() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "from-updated-pod",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - podSelector:\n          matchLabels: {pod2: updated}\n",
    ));
    let mut denied = all_allowed();
    denied.expect_all_ingress("x/a", false);
    m.check(80, Tcp, &denied);
    m.label_pod("x/b", &[("pod2", "updated")]);
    let mut r = denied.clone();
    r.expect("x/b", "x/a", true);
    m.check(80, Tcp, &r);
    m.label_pod("x/b", &[]);
    m.check(80, Tcp, &denied);
}

#[test]
fn ingress_denied_to_updated_pod() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "deny-isolated",
        "    podSelector:\n      matchLabels: {target: isolated}\n    policyTypes: [Ingress]\n",
    ));
    m.check(80, Tcp, &all_allowed());
    m.label_pod("x/a", &[("target", "isolated")]);
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false);
    m.check(80, Tcp, &r);
}

#[test]
fn deleted_namespace_keeps_only_its_name_label() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "from-ns-y",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels: {ns: y}\n      - namespaceSelector:\n          matchLabels:\n            kubernetes.io/metadata.name: z\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("y/*", "x/a", true)
        .expect("z/*", "x/a", true);
    m.check(80, Tcp, &r);
    assert!(m.state.delete(ObjectKind::Namespace, "", "y"));
    assert!(m.state.delete(ObjectKind::Namespace, "", "z"));
    r.expect("y/*", "x/a", false);
    m.check(80, Tcp, &r);
}

// ---- special traffic -------------------------------------------------------------

#[test]
fn pod_may_always_reach_itself() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "deny-all",
        "    podSelector: {}\n    policyTypes: [Ingress, Egress]\n",
    ));
    for protocol in Protocol::ALL {
        assert!(m.flow(
            Endpoint::Pod(key("x/a")),
            Endpoint::Pod(key("x/a")),
            80,
            protocol
        ));
        assert!(m.flow(
            Endpoint::Pod(key("x/a")),
            Endpoint::Ip(IpAddr::V4(ip4("x/a"))),
            80,
            protocol
        ));
    }
    assert!(!m.flow(
        Endpoint::Pod(key("x/a")),
        Endpoint::Pod(key("x/b")),
        80,
        Tcp
    ));
}

const NODES: &str = "
apiVersion: v1
kind: Node
metadata: {name: node-1}
status:
  addresses:
  - {type: InternalIP, address: 192.168.1.1}
---
apiVersion: v1
kind: Node
metadata: {name: node-2}
status:
  addresses:
  - {type: InternalIP, address: 192.168.1.2}
";

#[test]
fn traffic_between_pod_and_its_own_node_is_always_allowed() {
    let mut m = Model::new();
    m.apply(NODES);
    m.apply(&policy(
        "x",
        "deny-all",
        "    podSelector: {}\n    policyTypes: [Ingress, Egress]\n",
    ));
    let node1 = Endpoint::Ip("192.168.1.1".parse().unwrap());
    let node2 = Endpoint::Ip("192.168.1.2".parse().unwrap());
    let a = Endpoint::Pod(key("x/a"));
    assert!(m.flow(node1.clone(), a.clone(), 80, Tcp));
    assert!(m.flow(a.clone(), node1.clone(), 10250, Tcp));
    assert!(!m.flow(node2.clone(), a.clone(), 80, Tcp));
    assert!(!m.flow(a.clone(), node2.clone(), 80, Tcp));
    // Nodes are not pods: a pod that is not isolated reaches any node.
    assert!(m.flow(Endpoint::Pod(key("y/a")), node2, 80, Tcp));
}

#[test]
fn host_network_pods_are_never_selected() {
    let mut m = Model::new();
    m.apply(
        "apiVersion: v1
kind: Pod
metadata:
  name: h
  namespace: x
  labels: {pod: a}
spec:
  hostNetwork: true
  nodeName: node-2
  containers:
  - name: agent
    ports:
    - {name: serve-80-tcp, containerPort: 80}
status:
  podIP: 192.168.1.2
",
    );
    m.apply(&policy(
        "x",
        "deny-all-a",
        "    podSelector:\n      matchLabels: {pod: a}\n    policyTypes: [Ingress, Egress]\n",
    ));
    let h = Endpoint::Pod(key("x/h"));
    let b = Endpoint::Pod(key("x/b"));
    let a = Endpoint::Pod(key("x/a"));
    // x/h carries pod=a but runs in the host network: the policy does not
    // isolate it in either direction.
    assert!(m.flow(b.clone(), h.clone(), 80, Tcp));
    assert!(m.flow(h.clone(), b.clone(), 80, Tcp));
    let v = m
        .state
        .verdict(&Connection::new(b.clone(), h.clone(), 80, Tcp))
        .unwrap();
    assert_eq!(v.ingress.status, Status::HostNetwork);
    assert!(!v.ingress.isolated);
    // x/a is isolated; x/h (another node's address) is not admitted, not even
    // by a rule admitting every pod: host-network pods are not pods to
    // selectors (the API leaves this to implementations; netverdict's choice).
    assert!(!m.flow(h.clone(), a.clone(), 80, Tcp));
    m.apply(&policy(
        "x",
        "from-all-pods",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector: {}\n",
    ));
    assert!(!m.flow(h.clone(), a.clone(), 80, Tcp));
    assert!(m.flow(b.clone(), a.clone(), 80, Tcp));
    // ...unless an ipBlock holds the host address.
    m.apply(&policy(
        "x",
        "from-nodes",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - ipBlock: {cidr: 192.168.1.0/24}\n",
    ));
    assert!(m.flow(h, a, 80, Tcp));
}

#[test]
fn namespace_without_object_has_its_name_label() {
    let mut m = Model::new();
    m.apply(
        "apiVersion: v1
kind: Pod
metadata: {name: a, namespace: w, labels: {pod: a}}
status: {podIP: 10.9.0.1}
",
    );
    m.apply(&policy(
        "x",
        "from-w",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels:\n            kubernetes.io/metadata.name: w\n",
    ));
    assert!(m.flow(
        Endpoint::Pod(key("w/a")),
        Endpoint::Pod(key("x/a")),
        80,
        Tcp
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false);
    m.check(80, Tcp, &r);
}

#[test]
fn egress_named_port_resolves_against_the_destination_pod() {
    let mut m = Model::new();
    for (ns, port) in [("y", 8080), ("z", 9090)] {
        m.apply(&format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: {ns}
  labels: {{app: web}}
spec:
  containers:
  - name: web
    ports:
    - {{name: http, containerPort: {port}}}
status:
  podIP: 10.0.{n}.100
",
            n = if ns == "y" { 2 } else { 3 }
        ));
    }
    m.apply(&policy(
        "x",
        "to-http",
        "    podSelector:\n      matchLabels: {pod: a}\n    policyTypes: [Egress]\n    egress:\n    - to:\n      - namespaceSelector: {}\n      ports:\n      - port: http\n",
    ));
    let a = || Endpoint::Pod(key("x/a"));
    let y_web = || Endpoint::Pod(PodKey::new("y", "web"));
    let z_web = || Endpoint::Pod(PodKey::new("z", "web"));
    assert!(m.flow(a(), y_web(), 8080, Tcp));
    assert!(!m.flow(a(), y_web(), 9090, Tcp));
    assert!(m.flow(a(), z_web(), 9090, Tcp));
    assert!(!m.flow(a(), z_web(), 8080, Tcp));
    assert!(!m.flow(a(), y_web(), 8080, Udp));
    // An address outside the cluster has no named ports (netverdict's choice).
    let outside = || Endpoint::Ip("203.0.113.9".parse().unwrap());
    assert!(!m.flow(a(), outside(), 8080, Tcp));
    // Model pods define no port named http.
    let mut r = all_allowed();
    r.expect_all_egress("x/a", false);
    m.check(80, Tcp, &r);
}

// ---- explanations of cached verdicts -------------------------------------------------

/// Verdicts are cached per identity and IP class; what a cached verdict says
/// must still be about the flow asked, not the first flow of that class.
#[test]
fn explanation_names_the_flows_own_addresses() {
    let mut m = Model::new();
    m.apply(&policy(
        "x",
        "from-y",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - ipBlock: {cidr: 10.0.2.0/24}\n",
    ));
    for source in ["203.0.113.1", "198.51.100.7"] {
        let flow = Connection::new(
            Endpoint::Ip(source.parse().unwrap()),
            Endpoint::Pod(key("x/a")),
            80,
            Tcp,
        );
        let verdict = m.state.verdict(&flow).unwrap();
        assert!(!verdict.allowed);
        let text = explain(&m.state, &flow, &verdict).to_string();
        assert!(
            text.contains(&format!("{source} is outside")),
            "explanation of {source} -> x/a:\n{text}"
        );
    }
}

#[test]
fn namespace_name_label_is_always_the_namespace_name() {
    // The API server sets kubernetes.io/metadata.name to the namespace's name
    // whatever the manifest says, so a copied manifest cannot make namespace y
    // pass for z.
    let mut m = Model::new();
    m.apply(
        "apiVersion: v1
kind: Namespace
metadata:
  name: y
  labels: {ns: y, kubernetes.io/metadata.name: z}
",
    );
    m.apply(&policy(
        "x",
        "from-y",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - namespaceSelector:\n          matchLabels:\n            kubernetes.io/metadata.name: y\n",
    ));
    let mut r = all_allowed();
    r.expect_all_ingress("x/a", false)
        .expect("y/*", "x/a", true);
    m.check(80, Tcp, &r);
}

#[test]
fn local_node_addresses_and_node_updates() {
    let mut m = Model::new();
    m.apply(NODES);
    m.apply(&policy(
        "x",
        "deny-all",
        "    podSelector: {}\n    policyTypes: [Ingress, Egress]\n",
    ));
    let a = || Endpoint::Pod(key("x/a"));
    let node1 = || Endpoint::Ip("192.168.1.1".parse().unwrap());
    let agent = || Endpoint::Ip("192.168.9.9".parse().unwrap());
    assert!(m.flow(node1(), a(), 80, Tcp));
    assert!(!m.flow(agent(), a(), 80, Tcp));
    // An address declared as the local node's is every pod's node.
    m.state.set_local_node_ips(["192.168.9.9".parse().unwrap()]);
    assert!(m.flow(agent(), a(), 80, Tcp));
    assert!(m.flow(a(), agent(), 80, Tcp));
    // A node that goes away, or changes address, no longer vouches for it.
    assert!(m.state.delete(ObjectKind::Node, "", "node-1"));
    assert!(!m.flow(node1(), a(), 80, Tcp));
    m.apply(
        "apiVersion: v1
kind: Node
metadata: {name: node-1}
status:
  addresses:
  - {type: InternalIP, address: 192.168.1.11}
",
    );
    assert!(!m.flow(node1(), a(), 80, Tcp));
    assert!(m.flow(Endpoint::Ip("192.168.1.11".parse().unwrap()), a(), 80, Tcp));
}

#[test]
fn deleting_a_pod_keeps_other_pods_with_its_address() {
    // A finished pod keeps its status.podIP while a new pod gets the address,
    // and watches deliver their events in any order: when the old pod goes, the
    // address still belongs to the new one.
    let mut m = Model::new();
    let pod = |name: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: x, labels: {{pod: {name}}}}}
status: {{podIP: 10.0.1.50}}
"
        )
    };
    m.apply(&pod("old"));
    m.apply(&pod("new"));
    m.apply(&pod("old"));
    m.apply(&policy(
        "x",
        "from-new",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - podSelector:\n          matchLabels: {pod: new}\n",
    ));
    assert!(m.state.delete(ObjectKind::Pod, "x", "old"));
    let from_address = Connection::new(
        Endpoint::Ip("10.0.1.50".parse().unwrap()),
        Endpoint::Pod(key("x/a")),
        80,
        Tcp,
    );
    assert!(
        consistent_verdict(&m.state, &from_address),
        "{}",
        explain(
            &m.state,
            &from_address,
            &m.state.verdict(&from_address).unwrap()
        )
    );
}

#[test]
fn finished_pods_hold_no_address() {
    // A pod that has run to completion keeps status.podIP, but the address is
    // back in the pool and may already be another pod's: policies neither
    // select nor match the finished pod by it, whatever order the two come in.
    let finished = "apiVersion: v1
kind: Pod
metadata: {name: job, namespace: x, labels: {pod: job}}
status: {phase: Succeeded, podIP: 10.0.1.50}
";
    let running = "apiVersion: v1
kind: Pod
metadata: {name: new, namespace: x, labels: {pod: new}}
status: {phase: Running, podIP: 10.0.1.50}
";
    let from_new = policy(
        "x",
        "from-new",
        "    podSelector:\n      matchLabels: {pod: a}\n    ingress:\n    - from:\n      - podSelector:\n          matchLabels: {pod: new}\n",
    );
    let from_address = Connection::new(
        Endpoint::Ip("10.0.1.50".parse().unwrap()),
        Endpoint::Pod(key("x/a")),
        80,
        Tcp,
    );
    for order in [[finished, running], [running, finished]] {
        let mut m = Model::new();
        m.apply(&from_new);
        for pod in order {
            m.apply(pod);
        }
        let verdict = m.state.verdict(&from_address).unwrap();
        assert!(
            consistent_verdict(&m.state, &from_address),
            "{}",
            explain(&m.state, &from_address, &verdict)
        );
    }
    // Manifests (which require pod addresses) may list finished pods.
    let state = common::state_from_manifests(finished);
    assert_eq!(state.pod_count(), 1);
}
