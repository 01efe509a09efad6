//! Conformance of the Admin and Baseline tiers to the network-policy-api
//! project's conformance scenarios (AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy in v1alpha1, ClusterNetworkPolicy in v1alpha2),
//! written here as cases from the scenarios' descriptions: the same cluster
//! (four "house" namespaces of two pods each, serving TCP 80 `web` and 8080,
//! UDP 53 `dns` and 5353, SCTP 9003 and 9005; and host-network "centaur"
//! pods on other nodes labelled `kubernetes.io/os: linux`), the same policies,
//! the same edits between steps (rules swapped, actions and priorities
//! changed, a rule inserted, a NetworkPolicy deleted) and the same expected
//! connections.
//!
//! Every scenario runs twice: with its policies as v1alpha1 kinds, and as
//! v1alpha2 ClusterNetworkPolicies (Admin tier for the ANPs, Baseline tier for
//! the BANP, `Accept` for `Allow`, `protocols` for `ports`). Each connection is
//! checked cached, uncached and by scan (they must agree), and where a
//! scenario names the rule that decides, the verdict must name it too.
//!
//! One choice where upstream's clusters differ from this one: traffic between
//! a pod and its own node is always allowed here (as for NetworkPolicy), so
//! the host-network servers run on nodes other than the clients'.

use crate::common::consistent_verdict;
use netverdict_policy::model::Tier;
use netverdict_policy::{
    ClusterState, Connection, Endpoint, K8sObject, ObjectKind, PodKey, Protocol, Verdict,
};
use serde_json::{Value, json};

use Protocol::{Sctp, Tcp, Udp};

const HOUSES: [(&str, &str); 4] = [
    ("gryffindor", "harry-potter"),
    ("slytherin", "draco-malfoy"),
    ("hufflepuff", "cedric-diggory"),
    ("ravenclaw", "luna-lovegood"),
];

fn ns(house: &str) -> String {
    format!("network-policy-conformance-{house}")
}

/// `gryffindor`, 0 → `network-policy-conformance-gryffindor/harry-potter-0`.
fn pod(house: &str, i: u8) -> PodKey {
    let (_, person) = HOUSES.iter().find(|(h, _)| *h == house).expect("a house");
    PodKey::new(ns(house), format!("{person}-{i}"))
}

fn pod_ip(house: &str, i: u8) -> String {
    let h = HOUSES.iter().position(|(x, _)| *x == house).expect("house") + 1;
    format!("10.0.{h}.{}", i + 1)
}

/// The centaurs (host-network, forbidden forest) hold node-2's and node-3's
/// addresses.
const CENTAUR_1_IP: &str = "192.168.0.3";

fn objects(values: &[Value]) -> Vec<K8sObject> {
    let text: String = values
        .iter()
        .map(|v| format!("---\n{}", serde_yaml_ng::to_string(v).expect("yaml")))
        .collect();
    crate::common::objects(&text)
}

fn apply(state: &mut ClusterState, values: &[Value]) {
    for o in objects(values) {
        if let Err(e) = state.apply(&o) {
            panic!("rejected: {e}\n{values:#?}");
        }
    }
}

fn cluster() -> ClusterState {
    let mut v = Vec::new();
    for (i, node) in ["node-1", "node-2", "node-3"].iter().enumerate() {
        v.push(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "labels": {"kubernetes.io/os": "linux"}},
            "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.0.{}", i + 1)}]}}));
    }
    for house in HOUSES.iter().map(|(h, _)| *h).chain(["forbidden-forrest"]) {
        v.push(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns(house), "labels": {"conformance-house": house}}}));
    }
    for (house, _) in HOUSES {
        for i in 0..2 {
            let key = pod(house, i);
            v.push(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": key.name, "namespace": key.namespace,
                             "labels": {"conformance-house": house}},
                "spec": {"nodeName": "node-1", "containers": [
                    {"name": "s80", "ports": [{"containerPort": 80, "protocol": "TCP", "name": "web"}]},
                    {"name": "s53", "ports": [{"containerPort": 53, "protocol": "UDP", "name": "dns"}]}]},
                "status": {"podIP": pod_ip(house, i)}}));
        }
    }
    for i in 0..2u8 {
        v.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("centaur-{i}"), "namespace": ns("forbidden-forrest"),
                         "labels": {"conformance-house": "forbidden-forrest"}},
            "spec": {"nodeName": format!("node-{}", i + 2), "hostNetwork": true,
                     "containers": [{"name": "c", "ports": [
                        {"containerPort": 36363, "protocol": "TCP", "name": "web-36363"}]}]},
            "status": {"podIP": format!("192.168.0.{}", i + 2)}}));
    }
    let mut state = ClusterState::new();
    apply(&mut state, &v);
    state
}

// ---- policies, written once, rendered in both API versions ------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Action {
    Allow,
    Deny,
    Pass,
}

#[derive(Clone, Debug)]
enum Peer {
    /// Namespaces by `kubernetes.io/metadata.name`.
    Namespace(&'static str),
    /// Pods of a house (namespace and pod label `conformance-house`).
    House(&'static str),
    /// Nodes labelled `kubernetes.io/os: linux`.
    LinuxNodes,
    Networks(Vec<String>),
}

#[derive(Clone, Debug)]
enum Port {
    Number(Protocol, u16),
    Range(Protocol, u16, u16),
    Named(&'static str),
}

#[derive(Clone, Debug)]
struct Rule {
    name: String,
    action: Action,
    peers: Vec<Peer>,
    ports: Vec<Port>,
}

fn rule(name: &str, action: Action, peers: Vec<Peer>, ports: Vec<Port>) -> Rule {
    Rule {
        name: name.to_string(),
        action,
        peers,
        ports,
    }
}

#[derive(Clone, Debug)]
enum Subject {
    Namespace(&'static str),
    House(&'static str),
}

#[derive(Clone, Debug)]
struct Policy {
    name: String,
    /// Admin (an AdminNetworkPolicy) or Baseline (the BaselineAdminNetworkPolicy).
    tier: Tier,
    priority: u32,
    subject: Subject,
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
}

/// The API version policies are written in.
#[derive(Clone, Copy, Debug)]
enum Dialect {
    /// AdminNetworkPolicy and BaselineAdminNetworkPolicy.
    V1alpha1,
    /// ClusterNetworkPolicy.
    V1alpha2,
}

fn house_selector(house: &str) -> Value {
    json!({"namespaceSelector": {"matchLabels": {"conformance-house": house}},
           "podSelector": {"matchLabels": {"conformance-house": house}}})
}

impl Policy {
    fn render(&self, dialect: Dialect) -> Value {
        let subject = match &self.subject {
            Subject::Namespace(h) => {
                json!({"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": ns(h)}}})
            }
            Subject::House(h) => json!({"pods": house_selector(h)}),
        };
        let rules = |rules: &[Rule], field: &str| -> Vec<Value> {
            rules
                .iter()
                .map(|r| self.render_rule(r, field, dialect))
                .collect()
        };
        let mut spec = json!({"subject": subject});
        if !self.ingress.is_empty() {
            spec["ingress"] = json!(rules(&self.ingress, "from"));
        }
        if !self.egress.is_empty() {
            spec["egress"] = json!(rules(&self.egress, "to"));
        }
        match (dialect, self.tier) {
            (Dialect::V1alpha1, Tier::Baseline) => json!({
                "apiVersion": "policy.networking.k8s.io/v1alpha1",
                "kind": "BaselineAdminNetworkPolicy",
                "metadata": {"name": "default"}, "spec": spec}),
            (Dialect::V1alpha1, _) => {
                spec["priority"] = json!(self.priority);
                json!({"apiVersion": "policy.networking.k8s.io/v1alpha1",
                       "kind": "AdminNetworkPolicy",
                       "metadata": {"name": self.name}, "spec": spec})
            }
            (Dialect::V1alpha2, tier) => {
                spec["priority"] = json!(self.priority);
                spec["tier"] = json!(if tier == Tier::Baseline {
                    "Baseline"
                } else {
                    "Admin"
                });
                json!({"apiVersion": "policy.networking.k8s.io/v1alpha2",
                       "kind": "ClusterNetworkPolicy",
                       "metadata": {"name": self.name}, "spec": spec})
            }
        }
    }

    fn render_rule(&self, r: &Rule, field: &str, dialect: Dialect) -> Value {
        let action = match (r.action, dialect) {
            (Action::Allow, Dialect::V1alpha1) => "Allow",
            (Action::Allow, Dialect::V1alpha2) => "Accept",
            (Action::Deny, _) => "Deny",
            (Action::Pass, _) => "Pass",
        };
        let peers: Vec<Value> = r
            .peers
            .iter()
            .map(|p| match p {
                Peer::Namespace(h) => {
                    json!({"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": ns(h)}}})
                }
                Peer::House(h) => json!({"pods": house_selector(h)}),
                Peer::LinuxNodes => {
                    json!({"nodes": {"matchLabels": {"kubernetes.io/os": "linux"}}})
                }
                Peer::Networks(n) => json!({"networks": n}),
            })
            .collect();
        let mut out = json!({"name": r.name, "action": action});
        out[field] = json!(peers);
        if !r.ports.is_empty() {
            let ports: Vec<Value> = r
                .ports
                .iter()
                .map(|p| match (p, dialect) {
                    (Port::Number(proto, n), Dialect::V1alpha1) => {
                        json!({"portNumber": {"protocol": proto.as_str(), "port": n}})
                    }
                    (Port::Range(proto, a, b), Dialect::V1alpha1) => {
                        json!({"portRange": {"protocol": proto.as_str(), "start": a, "end": b}})
                    }
                    (Port::Named(name), Dialect::V1alpha1) => json!({"namedPort": name}),
                    (Port::Number(proto, n), Dialect::V1alpha2) => {
                        json!({proto.as_str().to_lowercase(): {"destinationPort": {"number": n}}})
                    }
                    (Port::Range(proto, a, b), Dialect::V1alpha2) => json!({
                        proto.as_str().to_lowercase(): {"destinationPort": {"range": {"start": a, "end": b}}}}),
                    (Port::Named(name), Dialect::V1alpha2) => json!({"destinationNamedPort": name}),
                })
                .collect();
            let key = match dialect {
                Dialect::V1alpha1 => "ports",
                Dialect::V1alpha2 => "protocols",
            };
            out[key] = json!(ports);
        }
        out
    }

    fn rules_mut(&mut self, egress: bool) -> &mut Vec<Rule> {
        if egress {
            &mut self.egress
        } else {
            &mut self.ingress
        }
    }
}

// ---- a scenario in progress ---------------------------------------------------

struct Run {
    state: ClusterState,
    dialect: Dialect,
    scenario: &'static str,
}

/// Where a connection goes: a pod of a house, or an address.
enum To {
    Pod(&'static str, u8),
    Ip(String),
}

impl Run {
    fn new(scenario: &'static str, dialect: Dialect) -> Run {
        Run {
            state: cluster(),
            dialect,
            scenario,
        }
    }

    fn apply(&mut self, policy: &Policy) {
        apply(&mut self.state, &[policy.render(self.dialect)]);
    }

    fn verdict(&self, from: (&str, u8), to: &To, protocol: Protocol, port: u16) -> (bool, Verdict) {
        let dst = match to {
            To::Pod(h, i) => Endpoint::Pod(pod(h, *i)),
            To::Ip(ip) => Endpoint::Ip(ip.parse().expect("ip")),
        };
        let conn = Connection::new(Endpoint::Pod(pod(from.0, from.1)), dst, port, protocol);
        let allowed = consistent_verdict(&self.state, &conn);
        let verdict = (*self.state.verdict(&conn).expect("valid")).clone();
        (allowed, verdict)
    }

    /// Checks one connection; `rule`, when given, is the admin rule that
    /// must decide (or pass) it.
    #[track_caller]
    fn expect(
        &self,
        from: (&str, u8),
        to: To,
        protocol: Protocol,
        port: u16,
        allowed: bool,
        rule: Option<&str>,
    ) {
        let (actual, verdict) = self.verdict(from, &to, protocol, port);
        let conn = format!(
            "{} -> {} {protocol}/{port}",
            pod(from.0, from.1),
            match &to {
                To::Pod(h, i) => pod(h, *i).to_string(),
                To::Ip(ip) => ip.clone(),
            }
        );
        assert_eq!(
            actual,
            allowed,
            "{} ({:?}): {conn}: expected {}, got {:#?}",
            self.scenario,
            self.dialect,
            if allowed { "allowed" } else { "denied" },
            verdict
        );
        if let Some(name) = rule {
            let named = [&verdict.egress, &verdict.ingress].iter().any(|d| {
                [&d.admin_rule, &d.baseline_rule]
                    .into_iter()
                    .flatten()
                    .any(|r| r.name.as_deref() == Some(name))
            });
            assert!(
                named,
                "{} ({:?}): {conn}: no direction names rule {name}: {verdict:#?}",
                self.scenario, self.dialect
            );
        }
    }
}

fn both(f: impl Fn(Dialect)) {
    f(Dialect::V1alpha1);
    f(Dialect::V1alpha2);
}

// ---- the rule-ordering scenarios (TCP, UDP, SCTP; ingress and egress) -----------

/// One protocol's ordering scenario: the subject house, the house every
/// rule of the first three matches ("everything"), the house with per-port
/// rules and the one allowed on one port only.
struct Ordering {
    name: &'static str,
    egress: bool,
    protocol: Protocol,
    priority: u32,
    subject: &'static str,
    everything: &'static str,
    /// The house denied (then passed) on `port_a`.
    ported: &'static str,
    /// The house allowed on `port_h`, denied elsewhere.
    allowed: &'static str,
    port_a: u16,
    port_a_other: u16,
    port_h: u16,
    port_h_other: u16,
}

const ORDERINGS: [Ordering; 6] = [
    Ordering {
        name: "ingress-tcp",
        egress: false,
        protocol: Tcp,
        priority: 3,
        subject: "gryffindor",
        everything: "ravenclaw",
        ported: "slytherin",
        allowed: "hufflepuff",
        port_a: 80,
        port_a_other: 8080,
        port_h: 80,
        port_h_other: 8080,
    },
    Ordering {
        name: "egress-tcp",
        egress: true,
        protocol: Tcp,
        priority: 6,
        subject: "gryffindor",
        everything: "ravenclaw",
        ported: "slytherin",
        allowed: "hufflepuff",
        port_a: 80,
        port_a_other: 8080,
        port_h: 8080,
        port_h_other: 80,
    },
    Ordering {
        name: "ingress-udp",
        egress: false,
        protocol: Udp,
        priority: 4,
        subject: "hufflepuff",
        everything: "ravenclaw",
        ported: "slytherin",
        allowed: "gryffindor",
        port_a: 5353,
        port_a_other: 53,
        port_h: 53,
        port_h_other: 5353,
    },
    Ordering {
        name: "egress-udp",
        egress: true,
        protocol: Udp,
        priority: 7,
        subject: "hufflepuff",
        everything: "ravenclaw",
        ported: "slytherin",
        allowed: "gryffindor",
        port_a: 5353,
        port_a_other: 53,
        port_h: 53,
        port_h_other: 5353,
    },
    Ordering {
        name: "ingress-sctp",
        egress: false,
        protocol: Sctp,
        priority: 5,
        subject: "ravenclaw",
        everything: "gryffindor",
        ported: "slytherin",
        allowed: "hufflepuff",
        port_a: 9003,
        port_a_other: 9005,
        port_h: 9003,
        port_h_other: 9005,
    },
    Ordering {
        name: "egress-sctp",
        egress: true,
        protocol: Sctp,
        priority: 8,
        subject: "ravenclaw",
        everything: "gryffindor",
        ported: "slytherin",
        allowed: "hufflepuff",
        port_a: 9003,
        port_a_other: 9005,
        port_h: 9003,
        port_h_other: 9005,
    },
];

impl Ordering {
    fn peer(&self, house: &'static str) -> Vec<Peer> {
        vec![Peer::Namespace(house)]
    }

    /// The Admin-tier policy (rules 0-6) or the Baseline one (no Pass rules).
    fn policy(&self, tier: Tier) -> Policy {
        let p = self.protocol;
        let mut rules = vec![
            rule(
                "allow-everything",
                Action::Allow,
                self.peer(self.everything),
                vec![],
            ),
            rule(
                "deny-everything",
                Action::Deny,
                self.peer(self.everything),
                vec![],
            ),
            rule(
                "pass-everything",
                Action::Pass,
                self.peer(self.everything),
                vec![],
            ),
            rule(
                "deny-at-port",
                Action::Deny,
                self.peer(self.ported),
                vec![Port::Number(p, self.port_a)],
            ),
            rule(
                "pass-at-port",
                Action::Pass,
                self.peer(self.ported),
                vec![Port::Number(p, self.port_a)],
            ),
            rule(
                "allow-at-port",
                Action::Allow,
                self.peer(self.allowed),
                vec![Port::Number(p, self.port_h)],
            ),
            rule(
                "deny-everything-else",
                Action::Deny,
                self.peer(self.allowed),
                vec![],
            ),
        ];
        if tier == Tier::Baseline {
            rules.retain(|r| r.action != Action::Pass);
        }
        let (ingress, egress) = if self.egress {
            (vec![], rules)
        } else {
            (rules, vec![])
        };
        Policy {
            name: self.name.to_string(),
            tier,
            priority: self.priority,
            subject: Subject::Namespace(self.subject),
            ingress,
            egress,
        }
    }

    /// A connection between pod `i` of `house` and pod `j` of the subject, in
    /// the scenario's direction (the subject is the server for ingress).
    #[track_caller]
    fn check(
        &self,
        run: &Run,
        house: &'static str,
        (i, j): (u8, u8),
        port: u16,
        allowed: bool,
        rule: Option<&str>,
    ) {
        if self.egress {
            run.expect(
                (self.subject, j),
                To::Pod(house, i),
                self.protocol,
                port,
                allowed,
                rule,
            );
        } else {
            run.expect(
                (house, i),
                To::Pod(self.subject, j),
                self.protocol,
                port,
                allowed,
                rule,
            );
        }
    }
}

#[test]
fn admin_network_policy_rule_ordering_per_protocol_and_direction() {
    for o in &ORDERINGS {
        both(|dialect| {
            let mut run = Run::new(o.name, dialect);
            let mut policy = o.policy(Tier::Admin);
            run.apply(&policy);
            // Allow before Deny: everything allowed.
            o.check(
                &run,
                o.everything,
                (0, 0),
                o.port_a,
                true,
                Some("allow-everything"),
            );
            o.check(
                &run,
                o.everything,
                (1, 0),
                o.port_a_other,
                true,
                Some("allow-everything"),
            );
            // Allowed at one port, denied on the others.
            o.check(
                &run,
                o.allowed,
                (0, 1),
                o.port_h,
                true,
                Some("allow-at-port"),
            );
            o.check(
                &run,
                o.allowed,
                (1, 1),
                o.port_h_other,
                false,
                Some("deny-everything-else"),
            );
            // Deny before Allow.
            policy.rules_mut(o.egress).swap(0, 1);
            run.apply(&policy);
            o.check(
                &run,
                o.everything,
                (0, 1),
                o.port_a,
                false,
                Some("deny-everything"),
            );
            o.check(
                &run,
                o.everything,
                (1, 1),
                o.port_a_other,
                false,
                Some("deny-everything"),
            );
            // Denied at one port; no rule matches the others.
            o.check(
                &run,
                o.ported,
                (0, 0),
                o.port_a,
                false,
                Some("deny-at-port"),
            );
            o.check(&run, o.ported, (1, 0), o.port_a_other, true, None);
            // Pass first: no NetworkPolicy, no baseline: allowed.
            policy.rules_mut(o.egress).swap(0, 2);
            run.apply(&policy);
            o.check(
                &run,
                o.everything,
                (0, 0),
                o.port_a,
                true,
                Some("pass-everything"),
            );
            o.check(
                &run,
                o.everything,
                (1, 0),
                o.port_a_other,
                true,
                Some("pass-everything"),
            );
            // Pass before Deny at the port.
            policy.rules_mut(o.egress).swap(3, 4);
            run.apply(&policy);
            o.check(&run, o.ported, (0, 0), o.port_a, true, Some("pass-at-port"));
            o.check(&run, o.ported, (1, 0), o.port_a_other, true, None);
        });
    }
}

#[test]
fn baseline_admin_network_policy_rule_ordering_per_protocol_and_direction() {
    for o in &ORDERINGS {
        both(|dialect| {
            let mut run = Run::new(o.name, dialect);
            let mut policy = o.policy(Tier::Baseline);
            run.apply(&policy);
            o.check(
                &run,
                o.everything,
                (0, 0),
                o.port_a,
                true,
                Some("allow-everything"),
            );
            o.check(
                &run,
                o.everything,
                (1, 0),
                o.port_a_other,
                true,
                Some("allow-everything"),
            );
            o.check(
                &run,
                o.allowed,
                (0, 1),
                o.port_h,
                true,
                Some("allow-at-port"),
            );
            o.check(
                &run,
                o.allowed,
                (1, 1),
                o.port_h_other,
                false,
                Some("deny-everything-else"),
            );
            policy.rules_mut(o.egress).swap(0, 1);
            run.apply(&policy);
            o.check(
                &run,
                o.everything,
                (0, 1),
                o.port_a,
                false,
                Some("deny-everything"),
            );
            o.check(
                &run,
                o.everything,
                (1, 1),
                o.port_a_other,
                false,
                Some("deny-everything"),
            );
            o.check(
                &run,
                o.ported,
                (0, 0),
                o.port_a,
                false,
                Some("deny-at-port"),
            );
            o.check(&run, o.ported, (1, 0), o.port_a_other, true, None);
        });
    }
}

// ---- both directions and every protocol in one policy --------------------------

fn gress_policy(tier: Tier) -> Policy {
    let all = |a: u16, b: u16, c: u16| {
        vec![
            Port::Number(Tcp, a),
            Port::Number(Udp, b),
            Port::Number(Sctp, c),
        ]
    };
    let rules = |hufflepuff_ports: Vec<Port>| {
        let mut r = vec![
            rule(
                "allow-everything",
                Action::Allow,
                vec![Peer::Namespace("ravenclaw")],
                vec![],
            ),
            rule(
                "deny-everything",
                Action::Deny,
                vec![Peer::Namespace("ravenclaw")],
                vec![],
            ),
            rule(
                "pass-everything",
                Action::Pass,
                vec![Peer::Namespace("ravenclaw")],
                vec![],
            ),
            rule(
                "deny-at-ports",
                Action::Deny,
                vec![Peer::Namespace("slytherin")],
                all(80, 53, 9003),
            ),
            rule(
                "pass-at-ports",
                Action::Pass,
                vec![Peer::Namespace("slytherin")],
                all(80, 53, 9003),
            ),
            rule(
                "allow-at-ports",
                Action::Allow,
                vec![Peer::Namespace("hufflepuff")],
                hufflepuff_ports,
            ),
            rule(
                "deny-everything-else",
                Action::Deny,
                vec![Peer::Namespace("hufflepuff")],
                vec![],
            ),
        ];
        if tier == Tier::Baseline {
            r.retain(|r| r.action != Action::Pass);
        }
        r
    };
    Policy {
        name: "gress-rules".into(),
        tier,
        priority: 15,
        subject: Subject::Namespace("gryffindor"),
        ingress: rules(all(80, 5353, 9003)),
        egress: rules(all(8080, 5353, 9003)),
    }
}

#[test]
fn gress_rules_across_protocols() {
    for tier in [Tier::Admin, Tier::Baseline] {
        both(|dialect| {
            let mut run = Run::new("gress-rules", dialect);
            let mut policy = gress_policy(tier);
            run.apply(&policy);
            let (g, r) = ("gryffindor", "ravenclaw");
            for (proto, port) in [(Tcp, 80), (Udp, 53), (Sctp, 9003)] {
                run.expect(
                    (g, 0),
                    To::Pod(r, 0),
                    proto,
                    port,
                    true,
                    Some("allow-everything"),
                );
                run.expect(
                    (r, 1),
                    To::Pod(g, 0),
                    proto,
                    port,
                    true,
                    Some("allow-everything"),
                );
            }
            for (proto, yes, no) in [(Tcp, 8080, 80), (Udp, 5353, 53), (Sctp, 9003, 9005)] {
                run.expect(
                    (g, 0),
                    To::Pod("hufflepuff", 1),
                    proto,
                    yes,
                    true,
                    Some("allow-at-ports"),
                );
                run.expect(
                    (g, 1),
                    To::Pod("hufflepuff", 1),
                    proto,
                    no,
                    false,
                    Some("deny-everything-else"),
                );
            }
            for (proto, yes, no) in [(Tcp, 80, 8080), (Udp, 5353, 53), (Sctp, 9003, 9005)] {
                run.expect(
                    ("hufflepuff", 0),
                    To::Pod(g, 1),
                    proto,
                    yes,
                    true,
                    Some("allow-at-ports"),
                );
                run.expect(
                    ("hufflepuff", 1),
                    To::Pod(g, 1),
                    proto,
                    no,
                    false,
                    Some("deny-everything-else"),
                );
            }
            policy.egress.swap(0, 1);
            policy.ingress.swap(0, 1);
            run.apply(&policy);
            for (proto, port) in [(Tcp, 80), (Udp, 53), (Sctp, 9003)] {
                run.expect(
                    (g, 0),
                    To::Pod(r, 1),
                    proto,
                    port,
                    false,
                    Some("deny-everything"),
                );
                run.expect(
                    (r, 1),
                    To::Pod(g, 1),
                    proto,
                    port,
                    false,
                    Some("deny-everything"),
                );
            }
            for (proto, denied, other) in [(Tcp, 80, 8080), (Udp, 53, 5353), (Sctp, 9003, 9005)] {
                run.expect(
                    (g, 0),
                    To::Pod("slytherin", 0),
                    proto,
                    denied,
                    false,
                    Some("deny-at-ports"),
                );
                run.expect((g, 1), To::Pod("slytherin", 0), proto, other, true, None);
                run.expect(
                    ("slytherin", 0),
                    To::Pod(g, 0),
                    proto,
                    denied,
                    false,
                    Some("deny-at-ports"),
                );
                run.expect(("slytherin", 1), To::Pod(g, 0), proto, other, true, None);
            }
            if tier == Tier::Baseline {
                return;
            }
            policy.egress.swap(0, 2);
            policy.ingress.swap(0, 2);
            run.apply(&policy);
            for (proto, port) in [(Tcp, 80), (Udp, 5353), (Sctp, 9003)] {
                run.expect(
                    (g, 0),
                    To::Pod(r, 0),
                    proto,
                    port,
                    true,
                    Some("pass-everything"),
                );
            }
            for (proto, port) in [(Tcp, 80), (Udp, 53), (Sctp, 9003)] {
                run.expect(
                    (r, 1),
                    To::Pod(g, 0),
                    proto,
                    port,
                    true,
                    Some("pass-everything"),
                );
            }
            policy.egress.swap(3, 4);
            policy.ingress.swap(3, 4);
            run.apply(&policy);
            for (proto, a, b) in [(Tcp, 80, 8080), (Udp, 53, 5353), (Sctp, 9003, 9005)] {
                run.expect(
                    (g, 0),
                    To::Pod("slytherin", 0),
                    proto,
                    a,
                    true,
                    Some("pass-at-ports"),
                );
                run.expect((g, 1), To::Pod("slytherin", 0), proto, b, true, None);
                run.expect(
                    ("slytherin", 0),
                    To::Pod(g, 0),
                    proto,
                    a,
                    true,
                    Some("pass-at-ports"),
                );
                run.expect(("slytherin", 1), To::Pod(g, 0), proto, b, true, None);
            }
        });
    }
}

// ---- priorities, and the tiers together -----------------------------------------

fn house_to_house(name: &str, tier: Tier, priority: u32, action: Action) -> Policy {
    let r = |dir: &str| {
        let verb = match action {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Pass => "pass",
        };
        vec![rule(
            &format!("{verb}-all-{dir}-slytherin"),
            action,
            vec![Peer::House("slytherin")],
            vec![],
        )]
    };
    Policy {
        name: name.into(),
        tier,
        priority,
        subject: Subject::House("gryffindor"),
        ingress: r("ingress-from"),
        egress: r("egress-to"),
    }
}

#[test]
fn priority_decides_between_admin_policies() {
    both(|dialect| {
        let mut run = Run::new("priority-field", dialect);
        run.apply(&house_to_house(
            "priority-50-example",
            Tier::Admin,
            50,
            Action::Deny,
        ));
        let mut pass = house_to_house(
            "old-priority-60-new-priority-40-example",
            Tier::Admin,
            60,
            Action::Pass,
        );
        run.apply(&pass);
        run.apply(&house_to_house(
            "default",
            Tier::Baseline,
            10,
            Action::Allow,
        ));
        let (g, s) = ("gryffindor", "slytherin");
        run.expect(
            (s, 0),
            To::Pod(g, 0),
            Tcp,
            80,
            false,
            Some("deny-all-ingress-from-slytherin"),
        );
        run.expect(
            (s, 1),
            To::Pod(g, 0),
            Tcp,
            8080,
            false,
            Some("deny-all-ingress-from-slytherin"),
        );
        run.expect(
            (g, 0),
            To::Pod(s, 0),
            Tcp,
            80,
            false,
            Some("deny-all-egress-to-slytherin"),
        );
        run.expect(
            (g, 1),
            To::Pod(s, 0),
            Tcp,
            8080,
            false,
            Some("deny-all-egress-to-slytherin"),
        );
        // The Pass now comes first: the baseline allows.
        pass.priority = 40;
        run.apply(&pass);
        run.expect(
            (s, 0),
            To::Pod(g, 0),
            Tcp,
            80,
            true,
            Some("allow-all-ingress-from-slytherin"),
        );
        run.expect(
            (s, 1),
            To::Pod(g, 0),
            Tcp,
            8080,
            true,
            Some("pass-all-ingress-from-slytherin"),
        );
        run.expect(
            (g, 0),
            To::Pod(s, 0),
            Tcp,
            80,
            true,
            Some("allow-all-egress-to-slytherin"),
        );
        run.expect(
            (g, 1),
            To::Pod(s, 0),
            Tcp,
            8080,
            true,
            Some("pass-all-egress-to-slytherin"),
        );
    });
}

#[test]
fn admin_pass_network_policy_then_baseline() {
    both(|dialect| {
        let mut run = Run::new("anp-np-banp", dialect);
        let ns_rule = |name: &str, action| {
            vec![rule(
                name,
                action,
                vec![Peer::Namespace("slytherin")],
                vec![],
            )]
        };
        let mut anp = Policy {
            name: "pass-example".into(),
            tier: Tier::Admin,
            priority: 10,
            subject: Subject::Namespace("gryffindor"),
            ingress: ns_rule("deny-all-ingress-from-slytherin", Action::Deny),
            egress: ns_rule("deny-all-egress-to-slytherin", Action::Deny),
        };
        run.apply(&anp);
        apply(
            &mut run.state,
            &[json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "allow-gress-from-to-slytherin-to-gryffindor", "namespace": ns("gryffindor")},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"conformance-house": "slytherin"}}}]}],
                "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"conformance-house": "slytherin"}}}]}]}})],
        );
        run.apply(&Policy {
            name: "default".into(),
            tier: Tier::Baseline,
            priority: 10,
            subject: Subject::Namespace("gryffindor"),
            ingress: ns_rule("deny-all-ingress-from-slytherin", Action::Deny),
            egress: ns_rule("deny-all-egress-to-slytherin", Action::Deny),
        });
        let (g, s) = ("gryffindor", "slytherin");
        run.expect(
            (s, 0),
            To::Pod(g, 0),
            Tcp,
            80,
            false,
            Some("deny-all-ingress-from-slytherin"),
        );
        run.expect(
            (g, 1),
            To::Pod(s, 0),
            Tcp,
            8080,
            false,
            Some("deny-all-egress-to-slytherin"),
        );
        anp.ingress[0].action = Action::Pass;
        run.apply(&anp);
        run.expect(
            (s, 0),
            To::Pod(g, 0),
            Tcp,
            80,
            true,
            Some("deny-all-ingress-from-slytherin"),
        );
        run.expect((s, 1), To::Pod(g, 0), Tcp, 8080, true, None);
        // The Pass names the ANP and gives NetworkPolicy's outcome.
        let (_, v) = run.verdict((s, 0), &To::Pod(g, 0), Tcp, 80);
        assert_eq!(v.ingress.tier, Some(Tier::NetworkPolicy));
        let pass = v.ingress.admin_rule.as_ref().expect("the passing rule");
        assert_eq!(pass.policy.name(), "pass-example");
        assert_eq!(pass.action_name(), "Pass");
        assert_eq!(v.ingress.allowed_by.len(), 1, "{v:#?}");
        anp.egress[0].action = Action::Pass;
        run.apply(&anp);
        run.expect((g, 0), To::Pod(s, 0), Tcp, 80, true, None);
        run.expect((g, 1), To::Pod(s, 0), Tcp, 8080, true, None);
        // Without the NetworkPolicy, the baseline decides.
        assert!(run.state.delete(
            ObjectKind::NetworkPolicy,
            &ns("gryffindor"),
            "allow-gress-from-to-slytherin-to-gryffindor"
        ));
        run.expect(
            (s, 0),
            To::Pod(g, 0),
            Tcp,
            80,
            false,
            Some("deny-all-ingress-from-slytherin"),
        );
        run.expect(
            (g, 1),
            To::Pod(s, 0),
            Tcp,
            8080,
            false,
            Some("deny-all-egress-to-slytherin"),
        );
        let (_, v) = run.verdict((s, 0), &To::Pod(g, 0), Tcp, 80);
        assert_eq!(v.ingress.tier, Some(Tier::Baseline));
        assert_eq!(v.denied_by().len(), 1);
        assert_eq!(v.denied_by()[0].1, Tier::Baseline);
    });
}

// ---- CIDR, node and named-port peers ---------------------------------------------

#[test]
fn egress_to_networks() {
    for tier in [Tier::Admin, Tier::Baseline] {
        both(|dialect| {
            let mut run = Run::new("inline-cidr-as-peers", dialect);
            let mut policy = Policy {
                name: "inline-cidr-as-peers-example".into(),
                tier,
                priority: 85,
                subject: Subject::House("gryffindor"),
                ingress: vec![],
                egress: vec![
                    rule(
                        "allow-egress-to-slytherin",
                        Action::Allow,
                        vec![Peer::House("slytherin")],
                        vec![],
                    ),
                    rule(
                        "deny-egress-to-internet",
                        Action::Deny,
                        vec![Peer::Networks(vec!["0.0.0.0/0".into(), "::/0".into()])],
                        vec![],
                    ),
                ],
            };
            run.apply(&policy);
            let g = ("gryffindor", 1);
            for (proto, port) in [(Tcp, 80), (Udp, 53), (Sctp, 9003)] {
                run.expect(
                    g,
                    To::Pod("ravenclaw", 0),
                    proto,
                    port,
                    false,
                    Some("deny-egress-to-internet"),
                );
                run.expect(
                    g,
                    To::Pod("hufflepuff", 0),
                    proto,
                    port,
                    false,
                    Some("deny-egress-to-internet"),
                );
                run.expect(
                    g,
                    To::Pod("slytherin", 0),
                    proto,
                    port,
                    true,
                    Some("allow-egress-to-slytherin"),
                );
            }
            policy.egress.insert(
                0,
                rule(
                    "allow-egress-to-specific-podIPs",
                    Action::Allow,
                    vec![Peer::Networks(vec![
                        format!("{}/32", pod_ip("ravenclaw", 0)),
                        format!("{}/32", pod_ip("hufflepuff", 0)),
                    ])],
                    vec![],
                ),
            );
            run.apply(&policy);
            for (proto, port) in [(Tcp, 80), (Udp, 53), (Sctp, 9003)] {
                for house in ["ravenclaw", "hufflepuff"] {
                    run.expect(
                        g,
                        To::Pod(house, 0),
                        proto,
                        port,
                        true,
                        Some("allow-egress-to-specific-podIPs"),
                    );
                    run.expect(
                        g,
                        To::Pod(house, 1),
                        proto,
                        port,
                        false,
                        Some("deny-egress-to-internet"),
                    );
                }
            }
            // The deny's nearest miss is the CIDR allow, which names the address.
            let (_, v) = run.verdict(g, &To::Pod("ravenclaw", 1), Tcp, 80);
            let miss = v
                .egress
                .admin_nearest_miss
                .as_ref()
                .expect("a nearest miss");
            assert_eq!(
                miss.rule.name.as_deref(),
                Some("allow-egress-to-specific-podIPs")
            );
            assert_eq!(miss.failures[0].kind(), "outside_cidr");
        });
    }
}

#[test]
fn egress_to_nodes() {
    both(|dialect| {
        let mut run = Run::new("node-and-cidr-as-peers", dialect);
        run.apply(&Policy {
            name: "node-and-cidr-as-peers-example".into(),
            tier: Tier::Admin,
            priority: 75,
            subject: Subject::House("gryffindor"),
            ingress: vec![],
            egress: vec![
                rule(
                    "allow-egress-to-36363-on-nodes",
                    Action::Allow,
                    vec![Peer::LinuxNodes],
                    vec![Port::Number(Tcp, 36363)],
                ),
                rule(
                    "pass-egress-to-34345-on-nodes",
                    Action::Pass,
                    vec![Peer::LinuxNodes],
                    vec![Port::Number(Udp, 34345)],
                ),
                rule(
                    "deny-egress-to-slytherin-and-nodes-and-internet",
                    Action::Deny,
                    vec![
                        Peer::House("slytherin"),
                        Peer::LinuxNodes,
                        Peer::Networks(vec!["0.0.0.0/0".into(), "::/0".into()]),
                    ],
                    vec![],
                ),
            ],
        });
        let centaur = || To::Ip(CENTAUR_1_IP.into());
        run.expect(
            ("gryffindor", 0),
            centaur(),
            Tcp,
            36363,
            true,
            Some("allow-egress-to-36363-on-nodes"),
        );
        run.expect(
            ("gryffindor", 1),
            centaur(),
            Udp,
            34345,
            true,
            Some("pass-egress-to-34345-on-nodes"),
        );
        let deny = Some("deny-egress-to-slytherin-and-nodes-and-internet");
        run.expect(("gryffindor", 1), centaur(), Tcp, 36364, false, deny);
        run.expect(("gryffindor", 1), centaur(), Udp, 34346, false, deny);
        run.expect(("gryffindor", 1), centaur(), Sctp, 9003, false, deny);
        // The node peer is the one that matched (index 1, not the networks).
        let (_, v) = run.verdict(("gryffindor", 1), &centaur(), Tcp, 36364);
        assert_eq!(v.egress.admin_rule.as_ref().map(|r| r.peer), Some(1));
        // Relabelled, the node no longer matches the nodes peer (no stale cache).
        apply(
            &mut run.state,
            &[json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-3", "labels": {"kubernetes.io/os": "windows"}},
            "status": {"addresses": [{"type": "InternalIP", "address": CENTAUR_1_IP}]}})],
        );
        let (allowed, v) = run.verdict(("gryffindor", 0), &centaur(), Tcp, 36363);
        assert!(!allowed, "{v:#?}");
        assert_eq!(
            v.egress.admin_rule.as_ref().map(|r| r.peer),
            Some(2),
            "the networks peer"
        );
        let miss = v.egress.admin_nearest_miss.as_ref().expect("nearest miss");
        assert_eq!(
            miss.rule.name.as_deref(),
            Some("allow-egress-to-36363-on-nodes")
        );
        assert_eq!(miss.failures[0].kind(), "node_label");
    });
    both(|dialect| {
        let mut run = Run::new("baseline node-and-cidr-as-peers", dialect);
        run.apply(&Policy {
            name: "default".into(),
            tier: Tier::Baseline,
            priority: 10,
            subject: Subject::Namespace("gryffindor"),
            ingress: vec![],
            egress: vec![
                rule(
                    "allow-egress-to-36363-on-nodes",
                    Action::Allow,
                    vec![Peer::LinuxNodes],
                    vec![Port::Range(Tcp, 36363, 36364)],
                ),
                rule(
                    "deny-egress-to-nodes-and-internet",
                    Action::Deny,
                    vec![
                        Peer::LinuxNodes,
                        Peer::Networks(vec!["0.0.0.0/0".into(), "::/0".into()]),
                    ],
                    vec![],
                ),
            ],
        });
        let centaur = || To::Ip(CENTAUR_1_IP.into());
        run.expect(
            ("gryffindor", 0),
            centaur(),
            Tcp,
            36363,
            true,
            Some("allow-egress-to-36363-on-nodes"),
        );
        run.expect(
            ("gryffindor", 1),
            centaur(),
            Tcp,
            36364,
            true,
            Some("allow-egress-to-36363-on-nodes"),
        );
        run.expect(
            ("gryffindor", 1),
            centaur(),
            Udp,
            34346,
            false,
            Some("deny-egress-to-nodes-and-internet"),
        );
        run.expect(
            ("gryffindor", 1),
            centaur(),
            Sctp,
            9003,
            false,
            Some("deny-egress-to-nodes-and-internet"),
        );
    });
}

#[test]
fn named_ports() {
    both(|dialect| {
        // ANP egress-tcp, rule 5 on the `web` named port (TCP 80).
        let o = &ORDERINGS[1];
        let mut run = Run::new("egress named port", dialect);
        let mut policy = o.policy(Tier::Admin);
        policy.egress[5].ports = vec![Port::Named("web")];
        run.apply(&policy);
        run.expect(
            ("gryffindor", 0),
            To::Pod("hufflepuff", 1),
            Tcp,
            80,
            true,
            Some("allow-at-port"),
        );
        run.expect(
            ("gryffindor", 1),
            To::Pod("hufflepuff", 1),
            Tcp,
            8080,
            false,
            Some("deny-everything-else"),
        );
        // ANP ingress-udp, rule 5 on the `dns` named port (UDP 53).
        let o = &ORDERINGS[2];
        let mut run = Run::new("ingress named port", dialect);
        let mut policy = o.policy(Tier::Admin);
        policy.ingress[5].ports = vec![Port::Named("dns")];
        run.apply(&policy);
        run.expect(
            ("gryffindor", 0),
            To::Pod("hufflepuff", 1),
            Udp,
            53,
            true,
            Some("allow-at-port"),
        );
        run.expect(
            ("gryffindor", 1),
            To::Pod("hufflepuff", 1),
            Udp,
            5353,
            false,
            Some("deny-everything-else"),
        );
        // BANP egress-udp (rule 3 `dns`) and ingress-tcp (rule 3 `web`).
        let o = &ORDERINGS[3];
        let mut run = Run::new("baseline egress named port", dialect);
        let mut policy = o.policy(Tier::Baseline);
        policy.egress[3].ports = vec![Port::Named("dns")];
        run.apply(&policy);
        run.expect(
            ("hufflepuff", 0),
            To::Pod("gryffindor", 1),
            Udp,
            53,
            true,
            Some("allow-at-port"),
        );
        run.expect(
            ("hufflepuff", 1),
            To::Pod("gryffindor", 1),
            Udp,
            5353,
            false,
            Some("deny-everything-else"),
        );
        let o = &ORDERINGS[0];
        let mut run = Run::new("baseline ingress named port", dialect);
        let mut policy = o.policy(Tier::Baseline);
        policy.ingress[3].ports = vec![Port::Named("web")];
        run.apply(&policy);
        run.expect(
            ("hufflepuff", 0),
            To::Pod("gryffindor", 1),
            Tcp,
            80,
            true,
            Some("allow-at-port"),
        );
        run.expect(
            ("hufflepuff", 1),
            To::Pod("gryffindor", 1),
            Tcp,
            8080,
            false,
            Some("deny-everything-else"),
        );
    });
}
