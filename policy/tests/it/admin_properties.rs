//! Property tests of the Admin and Baseline tiers on random small clusters
//! (namespaces and pods with labels from a small vocabulary, a node, a few
//! NetworkPolicies) mixed with random AdminNetworkPolicies,
//! BaselineAdminNetworkPolicies and ClusterNetworkPolicies of both tiers (few
//! priorities, so ties happen; random subjects, actions, peers and ports):
//!
//! - the engine agrees with a naive reference evaluator written here from the
//!   API documentation (tiers in order, policies by priority then name then
//!   kind, rules in order, first match decides);
//! - cached, uncached and scanning evaluations agree;
//! - admin policies that select no pod change no verdict (so with no admin
//!   policy, verdicts are NetworkPolicy's, field for field);
//! - removing every admin policy gives back the verdicts of a state that never
//!   had any (cache invalidation).

use crate::common::objects;
use ipnet::IpNet;
use netverdict_policy::{
    ClusterState, Connection, Direction, Endpoint, ObjectKind, PodKey, Protocol,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};

const NAMESPACES: [&str; 3] = ["n0", "n1", "n2"];
const VALUES: [&str; 2] = ["a", "b"];
const PORTS: [u16; 3] = [80, 443, 5353];
const NETWORKS: [&str; 4] = [
    "10.0.0.0/24",
    "10.0.0.0/30",
    "10.0.1.0/24",
    "203.0.113.0/24",
];
const NODE_IP: &str = "192.168.0.9";

#[derive(Clone, Debug)]
struct GPod {
    ns: usize,
    app: usize,
    /// Whether the pod names port 80 `web`.
    web: bool,
}

#[derive(Clone, Debug)]
enum GPeer {
    /// Namespaces whose `team` label is this value.
    Namespaces(usize),
    /// Pods with `app` of this value in any namespace.
    Pods(usize),
    Networks(usize),
    /// Nodes labelled `zone=a` (the node is, or is not).
    Nodes,
}

#[derive(Clone, Debug)]
enum GPort {
    Number(u16, Protocol),
    Range(u16, u16),
    Web,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum GAction {
    Allow,
    Deny,
    Pass,
}

#[derive(Clone, Debug)]
struct GRule {
    action: GAction,
    peers: Vec<GPeer>,
    ports: Vec<GPort>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum GKind {
    Anp,
    Banp,
    CnpAdmin,
    CnpBaseline,
}

#[derive(Clone, Debug)]
struct GAdmin {
    kind: GKind,
    priority: u32,
    /// Subject: pods of namespaces with `team` = this value, and `app` = this
    /// (when Some).
    subject_team: usize,
    subject_app: Option<usize>,
    ingress: Vec<GRule>,
    egress: Vec<GRule>,
}

/// A NetworkPolicy isolating pods with `app` for ingress (and egress),
/// allowing from/to pods with `app` = `peer_app`.
#[derive(Clone, Debug)]
struct GNp {
    ns: usize,
    app: usize,
    egress: bool,
    peer_app: usize,
}

#[derive(Clone, Debug)]
struct GCluster {
    /// Each namespace's `team` label value.
    teams: Vec<usize>,
    pods: Vec<GPod>,
    nps: Vec<GNp>,
    admins: Vec<GAdmin>,
    node_zone_a: bool,
}

fn pod_ip(i: usize) -> String {
    format!("10.0.0.{}", i + 1)
}

// ---- objects ---------------------------------------------------------------

fn admin_json(i: usize, a: &GAdmin) -> Value {
    let v2 = matches!(a.kind, GKind::CnpAdmin | GKind::CnpBaseline);
    let rules = |rules: &[GRule], field: &str| -> Vec<Value> {
        rules
            .iter()
            .map(|r| {
                let action = match (r.action, v2) {
                    (GAction::Allow, false) => "Allow",
                    (GAction::Allow, true) => "Accept",
                    (GAction::Deny, _) => "Deny",
                    (GAction::Pass, _) => "Pass",
                };
                let peers: Vec<Value> = r
                    .peers
                    .iter()
                    .map(|p| match p {
                        GPeer::Namespaces(t) => json!({"namespaces": {"matchLabels": {"team": VALUES[*t]}}}),
                        GPeer::Pods(app) => json!({"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": VALUES[*app]}}}}),
                        GPeer::Networks(n) => json!({"networks": [NETWORKS[*n]]}),
                        GPeer::Nodes => json!({"nodes": {"matchLabels": {"zone": "a"}}}),
                    })
                    .collect();
                let mut out = json!({"name": format!("r-{field}"), "action": action});
                out[field] = json!(peers);
                if !r.ports.is_empty() {
                    let ports: Vec<Value> = r
                        .ports
                        .iter()
                        .map(|p| match (p, v2) {
                            (GPort::Number(n, proto), false) => json!({"portNumber": {"protocol": proto.as_str(), "port": n}}),
                            (GPort::Number(n, proto), true) => json!({proto.as_str().to_lowercase(): {"destinationPort": {"number": n}}}),
                            (GPort::Range(s, e), false) => json!({"portRange": {"start": s, "end": e}}),
                            (GPort::Range(s, e), true) => json!({"tcp": {"destinationPort": {"range": {"start": s, "end": e}}}}),
                            (GPort::Web, false) => json!({"namedPort": "web"}),
                            (GPort::Web, true) => json!({"destinationNamedPort": "web"}),
                        })
                        .collect();
                    out[if v2 { "protocols" } else { "ports" }] = json!(ports);
                }
                out
            })
            .collect()
    };
    let subject = match a.subject_app {
        None => json!({"namespaces": {"matchLabels": {"team": VALUES[a.subject_team]}}}),
        Some(app) => {
            json!({"pods": {"namespaceSelector": {"matchLabels": {"team": VALUES[a.subject_team]}},
                                    "podSelector": {"matchLabels": {"app": VALUES[app]}}}})
        }
    };
    let mut spec = json!({"subject": subject, "ingress": rules(&a.ingress, "from"), "egress": rules(&a.egress, "to")});
    let (api, kind, name) = match a.kind {
        GKind::Anp => ("v1alpha1", "AdminNetworkPolicy", format!("p{i}")),
        GKind::Banp => (
            "v1alpha1",
            "BaselineAdminNetworkPolicy",
            "default".to_string(),
        ),
        GKind::CnpAdmin | GKind::CnpBaseline => {
            ("v1alpha2", "ClusterNetworkPolicy", format!("p{i}"))
        }
    };
    match a.kind {
        GKind::Banp => {}
        GKind::CnpAdmin => {
            spec["tier"] = json!("Admin");
            spec["priority"] = json!(a.priority);
        }
        GKind::CnpBaseline => {
            spec["tier"] = json!("Baseline");
            spec["priority"] = json!(a.priority);
        }
        GKind::Anp => spec["priority"] = json!(a.priority),
    }
    json!({"apiVersion": format!("policy.networking.k8s.io/{api}"), "kind": kind, "metadata": {"name": name}, "spec": spec})
}

impl GCluster {
    fn base_objects(&self) -> Vec<Value> {
        let mut out = vec![json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-9", "labels": if self.node_zone_a { json!({"zone": "a"}) } else { json!({}) }},
            "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}})];
        for (i, t) in self.teams.iter().enumerate() {
            out.push(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": NAMESPACES[i], "labels": {"team": VALUES[*t]}}}));
        }
        for (i, p) in self.pods.iter().enumerate() {
            let ports = if p.web {
                json!([{"containerPort": 80, "name": "web"}])
            } else {
                json!([])
            };
            out.push(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{i}"), "namespace": NAMESPACES[p.ns], "labels": {"app": VALUES[p.app]}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": ports}]},
                "status": {"podIP": pod_ip(i)}}));
        }
        for (i, np) in self.nps.iter().enumerate() {
            let peer = json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": VALUES[np.peer_app]}}}]);
            let mut spec = json!({"podSelector": {"matchLabels": {"app": VALUES[np.app]}},
                "policyTypes": if np.egress { json!(["Ingress", "Egress"]) } else { json!(["Ingress"]) },
                "ingress": [{"from": peer}]});
            if np.egress {
                spec["egress"] = json!([{"to": peer}]);
            }
            out.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": format!("np{i}"), "namespace": NAMESPACES[np.ns]}, "spec": spec}));
        }
        out
    }

    /// The admin policies as objects (one BaselineAdminNetworkPolicy at most:
    /// later ones are left out).
    fn admin_objects(&self) -> Vec<Value> {
        let mut banp = false;
        let mut out = Vec::new();
        for (i, a) in self.admins.iter().enumerate() {
            if a.kind == GKind::Banp {
                if banp {
                    continue;
                }
                banp = true;
            }
            out.push(admin_json(i, a));
        }
        out
    }

    fn state(&self, with_admin: bool) -> ClusterState {
        let mut values = self.base_objects();
        if with_admin {
            values.extend(self.admin_objects());
        }
        let text: String = values
            .iter()
            .map(|v| format!("---\n{}", serde_yaml_ng::to_string(v).expect("yaml")))
            .collect();
        let mut state = ClusterState::new();
        for o in objects(&text) {
            state.apply(&o).unwrap_or_else(|e| panic!("rejected: {e}"));
        }
        state
    }

    // ---- the reference ---------------------------------------------------------

    /// The admin policies in effect (the first BANP only), with their index.
    fn effective_admins(&self) -> Vec<(usize, &GAdmin)> {
        let mut banp = false;
        self.admins
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                if a.kind == GKind::Banp {
                    let first = !banp;
                    banp = true;
                    first
                } else {
                    true
                }
            })
            .collect()
    }

    /// Endpoint: Some(pod index) or the node (None).
    fn peer_matches(&self, peer: &GPeer, other: Option<usize>) -> bool {
        match (peer, other) {
            (GPeer::Namespaces(t), Some(i)) => self.teams[self.pods[i].ns] == *t,
            (GPeer::Pods(app), Some(i)) => self.pods[i].app == *app,
            (GPeer::Networks(n), Some(i)) => NETWORKS[*n]
                .parse::<IpNet>()
                .unwrap()
                .contains(&pod_ip(i).parse::<std::net::IpAddr>().unwrap()),
            (GPeer::Networks(n), None) => NETWORKS[*n]
                .parse::<IpNet>()
                .unwrap()
                .contains(&NODE_IP.parse::<std::net::IpAddr>().unwrap()),
            (GPeer::Nodes, None) => self.node_zone_a,
            _ => false,
        }
    }

    fn port_matches(&self, port: &GPort, dst: Option<usize>, number: u16, proto: Protocol) -> bool {
        match port {
            GPort::Number(n, p) => *n == number && *p == proto,
            GPort::Range(s, e) => proto == Protocol::Tcp && *s <= number && number <= *e,
            GPort::Web => {
                proto == Protocol::Tcp && number == 80 && dst.is_some_and(|d| self.pods[d].web)
            }
        }
    }

    /// The first matching rule's action in one tier (admin: ANP and CNP Admin;
    /// baseline: BANP and CNP Baseline), policies by (priority, name, kind).
    fn tier_action(
        &self,
        baseline: bool,
        subject: usize,
        direction: Direction,
        peer: Option<usize>,
        dst: Option<usize>,
        (port, proto): (u16, Protocol),
    ) -> Option<GAction> {
        let mut policies: Vec<(u32, String, u8, &GAdmin)> = self
            .effective_admins()
            .into_iter()
            .filter(|(_, a)| matches!(a.kind, GKind::Banp | GKind::CnpBaseline) == baseline)
            .map(|(i, a)| {
                let (priority, name, kind) = match a.kind {
                    GKind::Banp => (1001, "default".to_string(), 1),
                    GKind::Anp => (a.priority, format!("p{i}"), 0),
                    _ => (a.priority, format!("p{i}"), 2),
                };
                (priority, name, kind, a)
            })
            .collect();
        policies.sort_by(|x, y| (x.0, &x.1, x.2).cmp(&(y.0, &y.1, y.2)));
        let pod = &self.pods[subject];
        for (_, _, _, a) in policies {
            let selected = self.teams[pod.ns] == a.subject_team
                && a.subject_app.is_none_or(|app| app == pod.app);
            if !selected {
                continue;
            }
            let rules = match direction {
                Direction::Ingress => &a.ingress,
                Direction::Egress => &a.egress,
            };
            for r in rules {
                let peer_ok = r.peers.iter().any(|p| self.peer_matches(p, peer));
                let port_ok = r.ports.is_empty()
                    || r.ports
                        .iter()
                        .any(|p| self.port_matches(p, dst, port, proto));
                if peer_ok && port_ok {
                    return Some(r.action);
                }
            }
        }
        None
    }

    /// NetworkPolicy: None when no policy isolates, else whether one allows.
    fn np_allows(&self, subject: usize, direction: Direction, peer: Option<usize>) -> Option<bool> {
        let pod = &self.pods[subject];
        let selecting: Vec<&GNp> = self
            .nps
            .iter()
            .filter(|np| {
                np.ns == pod.ns
                    && np.app == pod.app
                    && (direction == Direction::Ingress || np.egress)
            })
            .collect();
        if selecting.is_empty() {
            return None;
        }
        Some(
            selecting
                .iter()
                .any(|np| peer.is_some_and(|p| self.pods[p].app == np.peer_app)),
        )
    }

    fn direction_allows(
        &self,
        subject: usize,
        direction: Direction,
        peer: Option<usize>,
        dst: Option<usize>,
        port: u16,
        proto: Protocol,
    ) -> bool {
        match self.tier_action(false, subject, direction, peer, dst, (port, proto)) {
            Some(GAction::Allow) => return true,
            Some(GAction::Deny) => return false,
            _ => {}
        }
        if let Some(allowed) = self.np_allows(subject, direction, peer) {
            return allowed;
        }
        !matches!(
            self.tier_action(true, subject, direction, peer, dst, (port, proto)),
            Some(GAction::Deny)
        )
    }

    /// Pod to pod (or to the node when `dst` is None).
    fn allowed(&self, src: usize, dst: Option<usize>, port: u16, proto: Protocol) -> bool {
        if Some(src) == dst {
            return true;
        }
        let egress = self.direction_allows(src, Direction::Egress, dst, dst, port, proto);
        let ingress = match dst {
            Some(d) => self.direction_allows(d, Direction::Ingress, Some(src), dst, port, proto),
            None => true,
        };
        egress && ingress
    }
}

// ---- strategies -------------------------------------------------------------

fn peer() -> impl Strategy<Value = GPeer> {
    prop_oneof![
        (0..2usize).prop_map(GPeer::Namespaces),
        (0..2usize).prop_map(GPeer::Pods),
        (0..NETWORKS.len()).prop_map(GPeer::Networks),
        Just(GPeer::Nodes),
    ]
}

fn port() -> impl Strategy<Value = GPort> {
    prop_oneof![
        (select(&PORTS[..]), select(&Protocol::ALL[..])).prop_map(|(n, p)| GPort::Number(n, p)),
        Just(GPort::Range(80, 443)),
        Just(GPort::Web),
    ]
}

fn admin_rule(ingress: bool, pass: bool) -> impl Strategy<Value = GRule> {
    let actions: Vec<GAction> = if pass {
        vec![GAction::Allow, GAction::Deny, GAction::Pass]
    } else {
        vec![GAction::Allow, GAction::Deny]
    };
    (select(actions), vec(peer(), 1..3), vec(port(), 0..3)).prop_map(
        move |(action, mut peers, mut ports)| {
            if ingress {
                // Ingress peers are namespaces and pods only.
                peers.retain(|p| matches!(p, GPeer::Namespaces(_) | GPeer::Pods(_)));
                if peers.is_empty() {
                    peers.push(GPeer::Namespaces(0));
                }
            } else if peers
                .iter()
                .any(|p| matches!(p, GPeer::Networks(_) | GPeer::Nodes))
            {
                // Named ports need pod peers.
                ports.retain(|p| !matches!(p, GPort::Web));
            }
            GRule {
                action,
                peers,
                ports,
            }
        },
    )
}

fn admin() -> impl Strategy<Value = GAdmin> {
    select(vec![
        GKind::Anp,
        GKind::Banp,
        GKind::CnpAdmin,
        GKind::CnpBaseline,
    ])
    .prop_flat_map(|kind| {
        let pass = kind != GKind::Banp;
        (
            Just(kind),
            select(vec![1u32, 2]),
            0..2usize,
            proptest::option::of(0..2usize),
            vec(admin_rule(true, pass), 0..3),
            vec(admin_rule(false, pass), 0..3),
        )
            .prop_map(
                |(kind, priority, subject_team, subject_app, ingress, egress)| GAdmin {
                    kind,
                    priority,
                    subject_team,
                    subject_app,
                    ingress,
                    egress,
                },
            )
    })
}

fn cluster() -> impl Strategy<Value = GCluster> {
    (
        vec(0..2usize, 3),
        vec(
            (0..3usize, 0..2usize, any::<bool>()).prop_map(|(ns, app, web)| GPod { ns, app, web }),
            2..5,
        ),
        vec(
            (0..3usize, 0..2usize, any::<bool>(), 0..2usize).prop_map(
                |(ns, app, egress, peer_app)| GNp {
                    ns,
                    app,
                    egress,
                    peer_app,
                },
            ),
            0..3,
        ),
        vec(admin(), 0..5),
        any::<bool>(),
    )
        .prop_map(|(teams, pods, nps, admins, node_zone_a)| GCluster {
            teams,
            pods,
            nps,
            admins,
            node_zone_a,
        })
}

fn connections(model: &GCluster) -> Vec<(Connection, usize, Option<usize>, u16, Protocol)> {
    let mut out = Vec::new();
    let n = model.pods.len();
    for s in 0..n {
        for d in (0..n).map(Some).chain([None]) {
            for (k, port) in PORTS.iter().enumerate() {
                let proto = Protocol::ALL[(s + k) % 3];
                let proto = if *port == 80 { Protocol::Tcp } else { proto };
                let src = Endpoint::Pod(PodKey::new(NAMESPACES[model.pods[s].ns], format!("p{s}")));
                let dst = match d {
                    Some(d) => Endpoint::Ip(pod_ip(d).parse().unwrap()),
                    None => Endpoint::Ip(NODE_IP.parse().unwrap()),
                };
                out.push((Connection::new(src, dst, *port, proto), s, d, *port, proto));
            }
        }
    }
    out
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// The engine decides as the naive reference does, every path agreeing.
    #[test]
    fn engine_agrees_with_reference(model in cluster()) {
        let state = model.state(true);
        for (conn, s, d, port, proto) in connections(&model) {
            let cached = state.verdict(&conn).expect("valid");
            let uncached = state.verdict_uncached(&conn).expect("valid");
            let scanned = state.verdict_by_scan(&conn).expect("valid");
            prop_assert_eq!(&*cached, &uncached);
            prop_assert_eq!(&uncached, &scanned);
            prop_assert_eq!(
                cached.allowed,
                model.allowed(s, d, port, proto),
                "{:?}\n{}\n{:#?}",
                conn,
                netverdict_policy::explain(&state, &conn, &cached),
                model.admin_objects()
            );
            // A decided admin direction names its rule; a denial its policy.
            for dv in [&cached.egress, &cached.ingress] {
                if let Some(rule) = dv.deciding_admin_rule() {
                    prop_assert!(dv.tier.is_some());
                    prop_assert_eq!(rule.action.allows(), dv.allowed());
                }
            }
            prop_assert_eq!(cached.allowed, cached.denied_by().is_empty());
        }
    }

    /// Admin policies that select no pod change no verdict, field for field:
    /// with no admin policy in effect, verdicts are NetworkPolicy's.
    #[test]
    fn admin_policies_selecting_nothing_change_nothing(mut model in cluster()) {
        // No namespace has team=b: subjects on b select nothing.
        model.teams = vec![0; 3];
        let without_b = model.state(false);
        for a in &mut model.admins {
            a.subject_team = 1;
        }
        let with = model.state(true);
        for (conn, ..) in connections(&model) {
            prop_assert_eq!(&*without_b.verdict(&conn).unwrap(), &*with.verdict(&conn).unwrap());
        }
    }

    /// Deleting every admin policy (cache warm) answers as a state that never
    /// had them.
    #[test]
    fn removing_admin_policies_restores_network_policy_verdicts(model in cluster()) {
        let mut state = model.state(true);
        let conns = connections(&model);
        for (conn, ..) in &conns {
            state.verdict(conn).unwrap();
        }
        for (i, a) in model.admins.iter().enumerate() {
            let (kind, name) = match a.kind {
                GKind::Anp => (ObjectKind::AdminNetworkPolicy, format!("p{i}")),
                GKind::Banp => (ObjectKind::BaselineAdminNetworkPolicy, "default".to_string()),
                _ => (ObjectKind::ClusterNetworkPolicy, format!("p{i}")),
            };
            state.delete(kind, "", &name);
        }
        prop_assert_eq!(state.admin_policy_count(), 0);
        let fresh = model.state(false);
        for (conn, ..) in &conns {
            prop_assert_eq!(&*state.verdict(conn).unwrap(), &*fresh.verdict(conn).unwrap());
        }
    }
}
