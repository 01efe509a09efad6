//! The admin tiers in nftables: the rules of AdminNetworkPolicies,
//! BaselineAdminNetworkPolicy and ClusterNetworkPolicies (Admin and Baseline
//! tiers) that apply to one pod and direction, as chain lines in decision
//! order.
//!
//! The translation works on the policy crate's model
//! ([`AdminPolicy`](netverdict_policy::model::AdminPolicy), already validated
//! and in decision order per tier: priority, then name, then kind), with its
//! selectors resolved by the cluster state (`admin_selects`,
//! `admin_peer_matches_pod`, `admin_peer_node_ips`), never by the engine's
//! verdict code. Each rule becomes one line per (peer, port) with the rule's
//! verdict, in the rule's order, so the first matching line is the engine's
//! first matching rule:
//!
//! - `namespaces` and `pods` peers: the set of the lab's pods they match;
//!   `nodes`: the addresses of the matching Node objects; `networks`: the
//!   CIDRs (aggregated, so no two intervals of a set overlap); `domainNames`:
//!   nothing, the lab cannot enforce names ([`unenforced_domain_name_rules`]
//!   lists those rules; the engine matches them only on connections that
//!   carry names, which the lab's matrix connections never do); a peer of a newer API
//!   version: any address, with Deny, in a Deny or Pass rule (fail closed)
//!   and nothing in an Allow rule;
//! - ports: `proto dport N`, `proto dport A-B`, `meta l4proto proto` (every
//!   port of a protocol), and named ports resolved on the destination pod
//!   (the subject itself for ingress, each destination pod the peer admits for
//!   egress); no ports: any.

use std::fmt::Write;
use std::net::IpAddr;

use ipnet::IpNet;
use netverdict_policy::model::{AdminAction, AdminPeer, AdminPort, AdminRule, Pod, Tier};
use netverdict_policy::{ClusterState, Direction, Protocol};

use super::{AddrCond, PodAddr, Unenforced, addr_lines, family, proto_kw};

/// What each action of a tier's rules does in its chain.
pub(super) struct Verdicts<'a> {
    /// Allow (ClusterNetworkPolicy's Accept).
    pub allow: &'a str,
    /// Deny.
    pub deny: &'a str,
    /// Pass: the next stage (a `goto`), or the allow verdict when none follows.
    pub pass: &'a str,
}

impl Verdicts<'_> {
    fn of(&self, action: AdminAction) -> &str {
        match action {
            AdminAction::Allow => self.allow,
            AdminAction::Deny => self.deny,
            AdminAction::Pass => self.pass,
        }
    }
}

/// The lines (a `#` comment naming each rule, then its matches with their
/// verdicts) of the `tier` policies whose subject selects `pod`, for
/// `direction`; empty when no rule can match anything.
pub(super) fn tier_lines(
    state: &ClusterState,
    lab_pods: &[(&Pod, &PodAddr)],
    unenforced: &Unenforced,
    tier: Tier,
    pod: &Pod,
    direction: Direction,
    verdicts: &Verdicts,
) -> Vec<String> {
    let peer_dir = match direction {
        Direction::Egress => "daddr",
        Direction::Ingress => "saddr",
    };
    let mut out = Vec::new();
    for policy in state.admin_tier(tier) {
        let rules = policy.rules(direction);
        if rules.is_empty()
            || unenforced.skips_cluster_scoped(&policy.key.to_string())
            || !state.admin_selects(policy, pod)
        {
            continue;
        }
        for (index, rule) in rules.iter().enumerate() {
            let lines = rule_lines(state, lab_pods, rule, pod, direction, peer_dir, verdicts);
            if lines.is_empty() {
                continue;
            }
            let mut comment = format!("# {} rule {index}", policy.key);
            if let Some(name) = &rule.name {
                let _ = write!(comment, " \"{name}\"");
            }
            let _ = write!(comment, " ({})", rule.action.spelled_for(policy.key.kind()));
            out.push(comment);
            out.extend(lines);
        }
    }
    out
}

/// The admin rules with a `domainNames` peer, which the lab cannot enforce
/// (nftables sees addresses, not the names a pod resolved): one line each,
/// `Kind/name rule N "rule-name"`. The engine still judges a flow by the
/// names its source resolved, so a collector in the lab reports such a flow
/// as allowed while the lab drops it (a mismatch), as it would on a CNI
/// without name-based enforcement.
pub fn unenforced_domain_name_rules(state: &ClusterState) -> Vec<String> {
    let mut out = Vec::new();
    for policy in state.admin_policies() {
        for (index, rule) in policy.egress.iter().enumerate() {
            if rule
                .peers
                .iter()
                .any(|p| matches!(p, AdminPeer::DomainNames(_)))
            {
                let mut line = format!("{} egress rule {index}", policy.key);
                if let Some(name) = &rule.name {
                    let _ = write!(line, " \"{name}\"");
                }
                out.push(line);
            }
        }
    }
    out
}

/// The lines of one rule: per peer in order, its address condition and the
/// verdict it takes, times the ports.
fn rule_lines(
    state: &ClusterState,
    lab_pods: &[(&Pod, &PodAddr)],
    rule: &AdminRule,
    pod: &Pod,
    direction: Direction,
    peer_dir: &str,
    verdicts: &Verdicts,
) -> Vec<String> {
    let mut lines = Vec::new();
    for peer in &rule.peers {
        let (cond, action) = match peer {
            AdminPeer::Namespaces(_) | AdminPeer::Pods { .. } => {
                let ips: Vec<IpAddr> = lab_pods
                    .iter()
                    .filter(|(p, _)| state.admin_peer_matches_pod(peer, p))
                    .map(|(_, a)| a.ip)
                    .collect();
                (AddrCond::Set(ips), rule.action)
            }
            AdminPeer::Nodes(_) => (AddrCond::Set(state.admin_peer_node_ips(peer)), rule.action),
            AdminPeer::Networks(nets) => {
                let nets: Vec<IpNet> = nets.iter().map(IpNet::trunc).collect();
                (AddrCond::Nets(IpNet::aggregate(&nets)), rule.action)
            }
            AdminPeer::DomainNames(_) => continue,
            AdminPeer::Unrecognized if rule.action == AdminAction::Allow => continue,
            AdminPeer::Unrecognized => (AddrCond::Any, AdminAction::Deny),
        };
        if matches!(&cond, AddrCond::Set(ips) if ips.is_empty()) {
            continue;
        }
        let verdict = verdicts.of(action);
        for m in matches(&cond, &rule.ports, lab_pods, pod, direction, peer_dir) {
            lines.push(format!("{m}{verdict}"));
        }
    }
    lines
}

const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// The match expressions (each ending with a space, or empty for "anything")
/// of an address condition and a rule's ports.
fn matches(
    cond: &AddrCond,
    ports: &[AdminPort],
    lab_pods: &[(&Pod, &PodAddr)],
    pod: &Pod,
    direction: Direction,
    peer_dir: &str,
) -> Vec<String> {
    let addrs = addr_lines(cond, peer_dir);
    if ports.is_empty() {
        return addrs;
    }
    let mut out = Vec::new();
    for port in ports {
        let with = |suffix: String| addrs.iter().map(move |a| format!("{a}{suffix} "));
        match port {
            AdminPort::Protocol(p) => out.extend(with(format!("meta l4proto {}", proto_kw(*p)))),
            AdminPort::Number { protocol, port } => {
                out.extend(with(format!("{} dport {port}", proto_kw(*protocol))));
            }
            AdminPort::Range {
                protocol,
                start,
                end,
            } => {
                let range = if start == end {
                    start.to_string()
                } else {
                    format!("{start}-{end}")
                };
                out.extend(with(format!("{} dport {range}", proto_kw(*protocol))));
            }
            AdminPort::Named(name) => match direction {
                // The destination is the selected pod itself.
                Direction::Ingress => {
                    for p in PROTOCOLS {
                        if let Some(n) = pod.named_port(name, p) {
                            out.extend(with(format!("{} dport {n}", proto_kw(p))));
                        }
                    }
                }
                // Resolved on each destination pod the condition admits.
                Direction::Egress => {
                    for (dst, daddr) in lab_pods {
                        if dst.host_network || !cond.contains(daddr.ip) {
                            continue;
                        }
                        for p in PROTOCOLS {
                            if let Some(n) = dst.named_port(name, p) {
                                out.push(format!(
                                    "{} daddr {} {} dport {n} ",
                                    family(&daddr.ip),
                                    daddr.ip,
                                    proto_kw(p)
                                ));
                            }
                        }
                    }
                }
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use netverdict_policy::{Manifests, PodKey};

    use super::super::{Deny, policy_rules_for};
    use super::*;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a, labels: {team: web}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: b, labels: {team: db}}}
- apiVersion: v1
  kind: Node
  metadata: {name: node-0, labels: {kubernetes.io/hostname: node-0}}
  status: {addresses: [{type: InternalIP, address: 10.249.0.1}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: server, namespace: a, labels: {app: api}}
  spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}]}]}
  status: {podIP: 10.0.0.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: a, labels: {role: frontend}}
  spec: {containers: [{name: c, image: x}]}
  status: {podIP: 10.0.0.2}
- apiVersion: v1
  kind: Pod
  metadata: {name: db, namespace: b, labels: {app: db}}
  spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 5432}, {name: dns, containerPort: 53, protocol: UDP}]}]}
  status: {podIP: 10.0.1.1}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: api, namespace: a}
  spec:
    podSelector: {matchLabels: {app: api}}
    policyTypes: [Ingress]
    ingress: [{from: [{podSelector: {matchLabels: {role: frontend}}}]}]
- apiVersion: policy.networking.k8s.io/v1alpha1
  kind: AdminNetworkPolicy
  metadata: {name: deny-db}
  spec:
    priority: 10
    subject: {namespaces: {matchLabels: {team: web}}}
    ingress:
    - name: deny-from-db
      action: Deny
      from: [{namespaces: {matchLabels: {team: db}}}]
      ports: [{portNumber: {protocol: TCP, port: 8080}}, {portRange: {protocol: TCP, start: 9000, end: 9100}}]
    - name: pass-frontends
      action: Pass
      from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {role: frontend}}}}]
    egress:
    - name: dns-networks
      action: Allow
      to: [{networks: [10.96.0.0/16, 10.96.1.0/24, 10.0.1.0/24]}]
      ports: [{portRange: {protocol: UDP, start: 53, end: 53}}]
    - name: no-nodes
      action: Deny
      to: [{nodes: {}}]
    - name: db-named
      action: Pass
      to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}]
      ports: [{namedPort: http}]
- apiVersion: policy.networking.k8s.io/v1alpha2
  kind: ClusterNetworkPolicy
  metadata: {name: deny-db}
  spec:
    tier: Admin
    priority: 10
    subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: api}}}}
    ingress:
    - name: accept-db
      action: Accept
      from: [{namespaces: {}}]
      protocols: [{tcp: {}}, {destinationNamedPort: http}]
- apiVersion: policy.networking.k8s.io/v1alpha1
  kind: AdminNetworkPolicy
  metadata: {name: first}
  spec:
    priority: 1
    subject: {namespaces: {}}
    ingress:
    - action: Allow
      from: [{pods: {namespaceSelector: {matchLabels: {team: nobody}}, podSelector: {}}}]
    - action: Allow
      from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: b}}}]
      ports: [{namedPort: dns}]
- apiVersion: policy.networking.k8s.io/v1alpha1
  kind: BaselineAdminNetworkPolicy
  metadata: {name: default}
  spec:
    subject: {namespaces: {}}
    ingress:
    - name: baseline-deny
      action: Deny
      from: [{namespaces: {matchLabels: {team: web}}}]
"#;

    /// The policy table of the test cluster; pods are numbered in key order
    /// (a/client 0, a/server 1, b/db 2).
    fn table(unenforced: &Unenforced, deny: Deny) -> String {
        let mut m = Manifests::default();
        m.read_str(std::path::Path::new("test.yaml"), CLUSTER);
        let (state, errors) = ClusterState::from_manifests(m, &Default::default());
        assert!(errors.is_empty(), "{errors:?}");
        let pods = super::super::tests::pod_addrs(&state);
        assert_eq!(pods[&PodKey::new("a", "server")].index, 1);
        policy_rules_for(&state, &pods, unenforced, |_| true, deny)
    }

    /// The body of chain `name` (None when it does not exist).
    fn chain<'a>(table: &'a str, name: &str) -> Option<&'a str> {
        let head = format!("  chain {name} {{\n");
        let start = table.find(&head)? + head.len();
        let end = table[start..].find("\n  }\n")? + start;
        Some(&table[start..end])
    }

    #[test]
    fn the_admin_tier_comes_first_in_priority_order_and_passes_to_network_policy() {
        let table = table(&Unenforced::default(), Deny::Drop);
        // The server: Admin tier chain first, then its NetworkPolicy chain
        // (it is isolated for ingress), never a baseline chain.
        assert!(
            table.contains(
                "ip daddr vmap { 10.0.0.2 : jump ai0, 10.0.0.1 : jump ai1, 10.0.1.1 : jump ai2 }"
            ),
            "{table}"
        );
        assert_eq!(
            chain(&table, "ai1"),
            Some(
                "    # ingress a/server: Admin tier\n    \
                 # AdminNetworkPolicy/deny-db rule 0 \"deny-from-db\" (Deny)\n    \
                 ip saddr { 10.0.1.1 } tcp dport 8080 counter drop\n    \
                 ip saddr { 10.0.1.1 } tcp dport 9000-9100 counter drop\n    \
                 # AdminNetworkPolicy/deny-db rule 1 \"pass-frontends\" (Pass)\n    \
                 ip saddr { 10.0.0.2 } goto i1\n    \
                 # ClusterNetworkPolicy/deny-db rule 0 \"accept-db\" (Accept)\n    \
                 ip saddr { 10.0.0.2, 10.0.0.1, 10.0.1.1 } meta l4proto tcp accept\n    \
                 ip saddr { 10.0.0.2, 10.0.0.1, 10.0.1.1 } tcp dport 8080 accept\n    \
                 goto i1"
            ),
            "{table}"
        );
        assert!(chain(&table, "i1").is_some_and(|c| c.ends_with("counter drop")));
        assert!(chain(&table, "bi1").is_none(), "{table}");
        // The named port `dns` of `first` resolves on the db (UDP 53) only.
        assert_eq!(
            chain(&table, "ai2"),
            Some(
                "    # ingress b/db: Admin tier\n    \
                 # AdminNetworkPolicy/first rule 1 (Allow)\n    \
                 ip saddr { 10.0.1.1 } udp dport 53 accept\n    \
                 goto bi2"
            )
        );
    }

    #[test]
    fn egress_networks_aggregate_nodes_are_addresses_and_a_last_pass_allows() {
        let table = table(&Unenforced::default(), Deny::Drop);
        // The client: no NetworkPolicy egress, no baseline egress rule: Pass
        // and the end of the Admin tier allow (return to `forward`).
        assert_eq!(
            chain(&table, "ae0"),
            Some(
                "    # egress a/client: Admin tier\n    \
                 # AdminNetworkPolicy/deny-db rule 0 \"dns-networks\" (Allow)\n    \
                 ip daddr { 10.0.1.0/24, 10.96.0.0/16 } udp dport 53 return\n    \
                 # AdminNetworkPolicy/deny-db rule 1 \"no-nodes\" (Deny)\n    \
                 ip daddr { 10.249.0.1 } counter drop\n    \
                 # AdminNetworkPolicy/deny-db rule 2 \"db-named\" (Pass)\n    \
                 ip daddr 10.0.1.1 tcp dport 5432 return"
            ),
            "{table}"
        );
        assert!(table.contains("ip saddr vmap { 10.0.0.2 : jump ae0, 10.0.0.1 : jump ae1 }"));
        assert!(chain(&table, "e0").is_none() && chain(&table, "be0").is_none());
    }

    #[test]
    fn the_baseline_tier_decides_only_for_pods_network_policy_does_not_isolate() {
        let table = table(&Unenforced::default(), Deny::Drop);
        let baseline = "    # BaselineAdminNetworkPolicy/default rule 0 \"baseline-deny\" (Deny)\n    \
                        ip saddr { 10.0.0.2, 10.0.0.1 } counter drop";
        for (pod, chain_name) in [("a/client", "bi0"), ("b/db", "bi2")] {
            assert_eq!(
                chain(&table, chain_name),
                Some(format!("    # ingress {pod}: Baseline tier\n{baseline}").as_str()),
                "{table}"
            );
        }
        // The client's Pass goes to its baseline chain.
        assert!(
            chain(&table, "ai0").is_some_and(|c| c.contains("ip saddr { 10.0.0.2 } goto bi0\n")),
            "{table}"
        );
    }

    #[test]
    fn unenforced_admin_policies_are_left_out_by_kind_and_name() {
        let unenforced = Unenforced {
            namespaces: ["a".to_string(), "b".to_string()].into(),
            policies: [
                "AdminNetworkPolicy/deny-db".to_string(),
                "BaselineAdminNetworkPolicy/default".to_string(),
            ]
            .into(),
        };
        let table = table(&unenforced, Deny::Drop);
        // Unenforced namespaces leave the cluster-scoped policies alone.
        assert!(!table.contains("AdminNetworkPolicy/deny-db"), "{table}");
        assert!(!table.contains("Baseline"), "{table}");
        assert!(
            table.contains("ClusterNetworkPolicy/deny-db rule 0"),
            "{table}"
        );
        assert!(table.contains("AdminNetworkPolicy/first rule 1"), "{table}");
        assert!(!table.contains("ip saddr vmap"), "{table}");
        // The server's Admin tier ends with allow: nothing isolates it now.
        assert!(
            chain(&table, "ai1").is_some_and(|c| !c.contains("goto")),
            "{table}"
        );
    }

    #[test]
    fn the_tc_mode_marks_admin_denies() {
        let table = table(&Unenforced::default(), Deny::Mark(0x6e76_0001));
        assert!(!table.contains("drop"), "{table}");
        assert!(
            table.contains("ip daddr { 10.249.0.1 } counter meta mark set 0x6e760001 accept"),
            "{table}"
        );
    }
}
