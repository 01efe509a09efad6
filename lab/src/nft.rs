//! NetworkPolicy, the admin tiers and Service translation into nftables
//! rulesets: the lab's stand-in for a CNI and for kube-proxy.
//!
//! This is an implementation of the policies independent of the policy
//! engine's verdict code: it only uses the cluster model (selectors matched
//! against pods, admin policies in their tiers' decision order) and builds,
//! per pod and direction, chains of match-and-verdict rules, which the kernel
//! then evaluates packet by packet.
//!
//! Two tables live in the lab's node namespace, where every pod's traffic is
//! routed:
//!
//! - `inet nvsvc`: DNAT of ClusterIP:port to a backend pod and target port in
//!   `prerouting` (so policy sees the backend, as with kube-proxy);
//! - `inet nvpol`: in `forward`, replies of accepted connections pass
//!   (`ct state established,related`), a pod reaching itself passes, then
//!   `ip saddr vmap` jumps to the source pod's egress entry chain and `ip daddr
//!   vmap` to the destination pod's ingress entry chain.
//!
//! Each direction of pod number `N` (`e` egress, `i` ingress) has up to three
//! stage chains, made only when they have something to say; the first one
//! that exists is the entry the vmap jumps to:
//!
//! ```text
//! forward ─ vmap ─▶ ae<N> (Admin tier) ─ Pass / no match: goto ─▶ e<N> (NetworkPolicy, pod isolated)
//!                                                           └──▶ be<N> (Baseline tier, pod not isolated)
//! ```
//!
//! - `ae<N>`/`ai<N>`, the Admin tier: the rules of every AdminNetworkPolicy
//!   and Admin ClusterNetworkPolicy selecting the pod, lowest priority first
//!   (then name, then kind: the engine's decision order), each policy's rules
//!   in order, one line per (peer, port): Allow (Accept) allows, Deny denies,
//!   Pass does `goto` the next stage; the chain ends with that same `goto`;
//! - `e<N>`/`i<N>`, NetworkPolicy, when a policy of the pod's namespace
//!   isolates it for the direction: its allow rules, then the deny;
//! - `be<N>`/`bi<N>`, the Baseline tier, only when NetworkPolicy does not
//!   isolate the pod: the BaselineAdminNetworkPolicy's and Baseline
//!   ClusterNetworkPolicies' rules, Allow allows, Deny denies, Pass allows;
//!   falling off the end allows.
//!
//! "Allows" is `return` for egress (back to `forward`, so the destination's
//! ingress decides next; a `goto` keeps `forward` as the place to return to)
//! and `accept` for ingress; "denies" is `counter drop` (never `reject`), or a
//! mark in the tc mode ([`Deny`]). When a stage after the Admin tier does
//! not exist, Pass allows. Every deny rule has a counter.
//!
//! Each table is replaced as a whole by one `nft -f` transaction
//! ([`replace_table`]).

mod admin;

pub use admin::unenforced_domain_name_rules;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

use ipnet::IpNet;
use netverdict_policy::model::{Peer, Pod, PortRef, PortRule, Rule, Tier};
use netverdict_policy::{ClusterState, Direction, PodKey, Protocol};

/// Name of the policy table.
pub const POLICY_TABLE: &str = "nvpol";
/// Name of the service (DNAT) table.
pub const SERVICE_TABLE: &str = "nvsvc";

/// Which policies the lab leaves unenforced ("the CNI does not enforce").
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unenforced {
    /// Namespaces whose policies are ignored.
    pub namespaces: BTreeSet<String>,
    /// Policies (`namespace/name`, or `Kind/name` for the cluster-scoped
    /// admin policies) that are ignored.
    pub policies: BTreeSet<String>,
}

impl Unenforced {
    /// Whether the policy `namespace/name` is left unenforced.
    pub fn skips(&self, namespace: &str, name: &str) -> bool {
        self.namespaces.contains(namespace)
            || self.policies.contains(&format!("{namespace}/{name}"))
    }

    /// Whether the cluster-scoped policy `Kind/name` is left unenforced
    /// (namespaces do not apply to it).
    pub fn skips_cluster_scoped(&self, key: &str) -> bool {
        self.policies.contains(key)
    }
}

/// What ends an isolated pod's chain: the packet is denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deny {
    /// `counter drop` (the kernel's drop reason is NETFILTER_DROP).
    Drop,
    /// `counter meta mark set MARK accept`: marked for a drop elsewhere (the
    /// lab's tc programs drop marked packets, with a tc drop reason).
    Mark(u32),
}

impl Deny {
    fn statement(self) -> String {
        match self {
            Deny::Drop => "counter drop".to_string(),
            Deny::Mark(mark) => format!("counter meta mark set {mark:#x} accept"),
        }
    }
}

/// A pod as the lab runs it: its chain index and address.
#[derive(Clone, Debug)]
pub struct PodAddr {
    pub index: usize,
    pub ip: IpAddr,
}

/// A script that replaces `table inet <name>` with `body` atomically.
pub fn replace_table(name: &str, body: &str) -> String {
    format!("table inet {name} {{}}\ndelete table inet {name}\ntable inet {name} {{\n{body}}}\n")
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "ip" } else { "ip6" }
}

fn proto_kw(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
        // Never in a port rule (ports cannot name ICMP); `meta l4proto icmp`.
        Protocol::Icmp => "icmp",
    }
}

/// The service table body: DNAT of every ClusterIP:port with backends.
pub fn service_rules(state: &ClusterState, pods: &BTreeMap<PodKey, PodAddr>) -> String {
    let mut out = String::from(
        "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n",
    );
    for svc in state.services() {
        for ip in &svc.cluster_ips {
            for sp in &svc.ports {
                let backends: Vec<(IpAddr, u16)> = state
                    .service_backends(*ip, sp.port, sp.protocol)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|(key, port)| pods.get(&key).map(|p| (p.ip, port)))
                    .filter(|(b, _)| b.is_ipv4() == ip.is_ipv4())
                    .collect();
                let fam = family(ip);
                let proto = proto_kw(sp.protocol);
                let head = format!("    {fam} daddr {ip} {proto} dport {}", sp.port);
                match backends.as_slice() {
                    [] => {}
                    [(b, p)] => {
                        let _ = writeln!(out, "{head} dnat {fam} to {}", sock(b, *p));
                    }
                    many => {
                        let map: Vec<String> = many
                            .iter()
                            .enumerate()
                            .map(|(i, (b, p))| format!("{i} : {b} . {p}"))
                            .collect();
                        let _ = writeln!(
                            out,
                            "{head} dnat {fam} addr . port to numgen random mod {} map {{ {} }}",
                            many.len(),
                            map.join(", ")
                        );
                    }
                }
            }
        }
    }
    out.push_str("  }\n");
    // Hairpin: a pod reaching itself through a Service is SNATed to the node,
    // as kube-proxy masquerades it (else the pod would drop its own source).
    let pairs = self_pairs(pods);
    if !pairs.is_empty() {
        let _ = writeln!(
            out,
            "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ct status dnat ip saddr . ip daddr {{ {pairs} }} snat ip to {NODE_GATEWAY}\n  }}"
        );
    }
    out
}

/// The node address hairpin traffic is SNATed to (the pods' gateway).
pub const NODE_GATEWAY: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 1, 1);

/// `a . a, b . b, ...` for the IPv4 pods (a pod reaching itself).
fn self_pairs(pods: &BTreeMap<PodKey, PodAddr>) -> String {
    let pairs: Vec<String> = pods
        .values()
        .filter(|p| p.ip.is_ipv4())
        .map(|p| format!("{ip} . {ip}", ip = p.ip))
        .collect();
    pairs.join(", ")
}

fn sock(ip: &IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// One address condition of an allow rule.
#[derive(Clone, Debug)]
enum AddrCond {
    Any,
    /// These exact addresses (a pod peer's pods).
    Set(Vec<IpAddr>),
    Block {
        cidr: IpNet,
        except: Vec<IpNet>,
    },
    /// Any of these CIDRs (an admin `networks` peer; none overlap).
    Nets(Vec<IpNet>),
}

impl AddrCond {
    fn contains(&self, ip: IpAddr) -> bool {
        match self {
            AddrCond::Any => true,
            AddrCond::Set(ips) => ips.contains(&ip),
            AddrCond::Block { cidr, except } => {
                cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
            }
            AddrCond::Nets(nets) => nets.iter().any(|n| n.contains(&ip)),
        }
    }
}

/// The policy table body for the lab's pods, all on one node, dropping what
/// is denied.
pub fn policy_rules(
    state: &ClusterState,
    pods: &BTreeMap<PodKey, PodAddr>,
    unenforced: &Unenforced,
) -> String {
    policy_rules_for(state, pods, unenforced, |_| true, Deny::Drop)
}

/// The policy table body of one node: peers are matched against every pod of
/// the lab (`pods`), but only the pods `local` says run on this node get
/// chains (egress is checked on the source's node, ingress on the
/// destination's); a denied packet gets `deny`.
pub fn policy_rules_for(
    state: &ClusterState,
    pods: &BTreeMap<PodKey, PodAddr>,
    unenforced: &Unenforced,
    local: impl Fn(&PodKey) -> bool,
    deny: Deny,
) -> String {
    let mut chains = String::new();
    let mut egress_map = Vec::new();
    let mut ingress_map = Vec::new();
    let lab_pods: Vec<(&Pod, &PodAddr)> = pods
        .iter()
        .filter_map(|(key, addr)| state.pod(key).map(|p| (p.as_ref(), addr)))
        .filter(|(p, _)| !p.host_network)
        .collect();
    let deny_statement = deny.statement();
    for &(pod, addr) in lab_pods.iter().filter(|(p, _)| local(&p.key)) {
        for direction in [Direction::Egress, Direction::Ingress] {
            // Allowed: egress returns to `forward` (the destination's ingress
            // is next), ingress accepts.
            let (stage, allow, peer_dir) = match direction {
                Direction::Egress => ('e', "return", "daddr"),
                Direction::Ingress => ('i', "accept", "saddr"),
            };
            let np_chain = format!("{stage}{}", addr.index);
            let admin_chain = format!("a{np_chain}");
            let baseline_chain = format!("b{np_chain}");
            // NetworkPolicy: isolated when a policy selects the pod for the
            // direction; then it decides, and the Baseline tier is never reached.
            let mut isolated = false;
            let mut rules: Vec<(String, &Rule)> = Vec::new();
            for policy in state.policies() {
                if policy.namespace() != pod.key.namespace
                    || unenforced.skips(policy.namespace(), policy.key.name())
                    || !state.policy_selects(policy, pod)
                {
                    continue;
                }
                if let Some(list) = policy.rules(direction) {
                    isolated = true;
                    for r in list {
                        rules.push((policy.namespace().to_string(), r));
                    }
                }
            }
            let baseline = if isolated {
                Vec::new()
            } else {
                admin::tier_lines(
                    state,
                    &lab_pods,
                    unenforced,
                    Tier::Baseline,
                    pod,
                    direction,
                    &admin::Verdicts {
                        allow,
                        deny: &deny_statement,
                        pass: allow,
                    },
                )
            };
            let after_admin = if isolated {
                Some(&np_chain)
            } else if !baseline.is_empty() {
                Some(&baseline_chain)
            } else {
                None
            };
            let pass = after_admin.map_or(allow.to_string(), |c| format!("goto {c}"));
            let admin = admin::tier_lines(
                state,
                &lab_pods,
                unenforced,
                Tier::Admin,
                pod,
                direction,
                &admin::Verdicts {
                    allow,
                    deny: &deny_statement,
                    pass: &pass,
                },
            );
            let entry = if admin.is_empty() {
                match after_admin {
                    Some(chain) => chain,
                    None => continue,
                }
            } else {
                &admin_chain
            };
            match direction {
                Direction::Egress => egress_map.push(format!("{} : jump {entry}", addr.ip)),
                Direction::Ingress => ingress_map.push(format!("{} : jump {entry}", addr.ip)),
            }
            if !admin.is_empty() {
                let _ = writeln!(chains, "  chain {admin_chain} {{");
                let _ = writeln!(
                    chains,
                    "    # {} {}: Admin tier",
                    direction.as_str(),
                    pod.key
                );
                for line in &admin {
                    let _ = writeln!(chains, "    {line}");
                }
                if let Some(next) = after_admin {
                    let _ = writeln!(chains, "    goto {next}");
                }
                chains.push_str("  }\n");
            }
            if isolated {
                let _ = writeln!(chains, "  chain {np_chain} {{");
                let _ = writeln!(chains, "    # {} {}", direction.as_str(), pod.key);
                for (policy_ns, rule) in rules {
                    for line in
                        rule_lines(state, &lab_pods, &policy_ns, rule, direction, pod, peer_dir)
                    {
                        let _ = writeln!(chains, "    {line} {allow}");
                    }
                }
                let _ = writeln!(chains, "    {deny_statement}\n  }}");
            } else if !baseline.is_empty() {
                let _ = writeln!(chains, "  chain {baseline_chain} {{");
                let _ = writeln!(
                    chains,
                    "    # {} {}: Baseline tier",
                    direction.as_str(),
                    pod.key
                );
                for line in &baseline {
                    let _ = writeln!(chains, "    {line}");
                }
                chains.push_str("  }\n");
            }
        }
    }
    let mut out = String::from(
        "  chain forward {\n    type filter hook forward priority filter; policy accept;\n    ct state established,related accept\n",
    );
    // A pod may always reach itself (here: through a Service, hairpinned).
    let pairs = self_pairs(pods);
    if !pairs.is_empty() {
        let _ = writeln!(out, "    ip saddr . ip daddr {{ {pairs} }} accept");
    }
    if !egress_map.is_empty() {
        let _ = writeln!(out, "    ip saddr vmap {{ {} }}", egress_map.join(", "));
    }
    if !ingress_map.is_empty() {
        let _ = writeln!(out, "    ip daddr vmap {{ {} }}", ingress_map.join(", "));
    }
    out.push_str("  }\n");
    out.push_str(&chains);
    out
}

/// The match expressions (without verdict) of one rule for `pod` in `direction`.
fn rule_lines(
    state: &ClusterState,
    lab_pods: &[(&Pod, &PodAddr)],
    policy_ns: &str,
    rule: &Rule,
    direction: Direction,
    pod: &Pod,
    peer_dir: &str,
) -> Vec<String> {
    let mut conds: Vec<AddrCond> = Vec::new();
    if rule.peers.is_empty() {
        conds.push(AddrCond::Any);
    }
    for peer in &rule.peers {
        match peer {
            Peer::IpBlock(block) => conds.push(AddrCond::Block {
                cidr: block.cidr,
                except: block.except.clone(),
            }),
            Peer::Pods { .. } => {
                let ips: Vec<IpAddr> = lab_pods
                    .iter()
                    .filter(|(p, _)| state.peer_matches_pod(policy_ns, peer, p))
                    .map(|(_, a)| a.ip)
                    .collect();
                if !ips.is_empty() {
                    conds.push(AddrCond::Set(ips));
                }
            }
        }
    }
    let any_port = [PortRule {
        protocol: Protocol::Tcp,
        port: None,
        end_port: None,
    }];
    let ports: &[PortRule] = if rule.ports.is_empty() {
        &any_port
    } else {
        &rule.ports
    };
    let mut lines = Vec::new();
    for cond in &conds {
        for pr in ports {
            let any = rule.ports.is_empty();
            match &pr.port {
                Some(PortRef::Name(name)) => match direction {
                    // The destination is the selected pod itself.
                    Direction::Ingress => {
                        if let Some(n) = pod.named_port(name, pr.protocol) {
                            lines.extend(
                                addr_lines(cond, peer_dir)
                                    .into_iter()
                                    .map(|a| format!("{a}{} dport {n}", proto_kw(pr.protocol))),
                            );
                        }
                    }
                    // Resolved against each destination pod the peer admits.
                    Direction::Egress => {
                        for (dst, daddr) in lab_pods {
                            if !cond.contains(daddr.ip) {
                                continue;
                            }
                            if let Some(n) = dst.named_port(name, pr.protocol) {
                                lines.push(format!(
                                    "{} daddr {} {} dport {n}",
                                    family(&daddr.ip),
                                    daddr.ip,
                                    proto_kw(pr.protocol)
                                ));
                            }
                        }
                    }
                },
                Some(PortRef::Number(n)) => {
                    let range = match pr.end_port {
                        Some(end) if end > *n => format!("{n}-{end}"),
                        _ => n.to_string(),
                    };
                    lines.extend(
                        addr_lines(cond, peer_dir)
                            .into_iter()
                            .map(|a| format!("{a}{} dport {range}", proto_kw(pr.protocol))),
                    );
                }
                None if any => lines.extend(addr_lines(cond, peer_dir)),
                None => lines.extend(
                    addr_lines(cond, peer_dir)
                        .into_iter()
                        .map(|a| format!("{a}meta l4proto {}", proto_kw(pr.protocol))),
                ),
            }
        }
    }
    lines
}

/// The address matches of a condition (each ends with a space, or is empty for
/// "any address"). A set mixing families gives one line per family.
fn addr_lines(cond: &AddrCond, dir: &str) -> Vec<String> {
    match cond {
        AddrCond::Any => vec![String::new()],
        AddrCond::Set(_) | AddrCond::Nets(_) => {
            let items: Vec<(bool, String)> = match cond {
                AddrCond::Set(ips) => ips.iter().map(|i| (i.is_ipv4(), i.to_string())).collect(),
                AddrCond::Nets(nets) => nets
                    .iter()
                    .map(|n| (matches!(n, IpNet::V4(_)), n.to_string()))
                    .collect(),
                _ => Vec::new(),
            };
            let mut out = Vec::new();
            for v4 in [true, false] {
                let fam: Vec<&str> = items
                    .iter()
                    .filter(|(is_v4, _)| *is_v4 == v4)
                    .map(|(_, s)| s.as_str())
                    .collect();
                if !fam.is_empty() {
                    let f = if v4 { "ip" } else { "ip6" };
                    out.push(format!("{f} {dir} {{ {} }} ", fam.join(", ")));
                }
            }
            out
        }
        AddrCond::Block { cidr, except } => {
            let f = match cidr {
                IpNet::V4(_) => "ip",
                IpNet::V6(_) => "ip6",
            };
            let ex: Vec<String> = except
                .iter()
                .filter(|e| {
                    matches!(
                        (e, cidr),
                        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
                    )
                })
                .map(|e| e.trunc().to_string())
                .collect();
            let mut s = format!("{f} {dir} {} ", cidr.trunc());
            if !ex.is_empty() {
                let _ = write!(s, "{f} {dir} != {{ {} }} ", ex.join(", "));
            }
            vec![s]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netverdict_policy::Manifests;

    const CLUSTER: &str = r#"
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a, labels: {team: web}}}
- apiVersion: v1
  kind: Pod
  metadata: {name: server, namespace: a, labels: {app: api}}
  spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 8080}]}]}
  status: {podIP: 10.0.0.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: other, namespace: a, labels: {app: other}}
  spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 9000}]}]}
  status: {podIP: 10.0.0.2}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: a, labels: {role: frontend}}
  spec: {containers: [{name: c, image: x}]}
  status: {podIP: 10.0.0.3}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: api, namespace: a}
  spec:
    podSelector: {matchLabels: {app: api}}
    policyTypes: [Ingress]
    ingress:
    - from: [{podSelector: {matchLabels: {role: frontend}}}, {ipBlock: {cidr: 10.0.0.0/24, except: [10.0.0.2/32]}}]
      ports: [{port: http}, {port: 9000, endPort: 9010, protocol: UDP}]
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: client-egress, namespace: a}
  spec:
    podSelector: {matchLabels: {role: frontend}}
    policyTypes: [Egress]
    egress:
    - ports: [{port: http}]
"#;

    /// The lab's addresses of the state's pods, indexed in `namespace/name` order.
    pub(super) fn pod_addrs(state: &ClusterState) -> BTreeMap<PodKey, PodAddr> {
        state
            .pods()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    p.key.clone(),
                    PodAddr {
                        index: i,
                        ip: p.ips[0],
                    },
                )
            })
            .collect()
    }

    fn rules(unenforced: &Unenforced) -> String {
        let mut m = Manifests::default();
        m.read_str(std::path::Path::new("test.yaml"), CLUSTER);
        let (state, errors) = ClusterState::from_manifests(m, &Default::default());
        assert!(errors.is_empty(), "{errors:?}");
        let pods = pod_addrs(&state);
        policy_rules(&state, &pods, unenforced)
    }

    #[test]
    fn ingress_rules_combine_peers_and_ports_with_named_ports_of_the_pod() {
        let text = rules(&Unenforced::default());
        // The selected pod's own named port (8080), for both peers.
        assert!(
            text.contains("ip saddr { 10.0.0.3 } tcp dport 8080 accept"),
            "{text}"
        );
        assert!(
            text.contains("ip saddr 10.0.0.0/24 ip saddr != { 10.0.0.2/32 } tcp dport 8080 accept"),
            "{text}"
        );
        assert!(text.contains("udp dport 9000-9010 accept"), "{text}");
        assert!(text.contains("ct state established,related accept"));
        assert!(!text.contains("reject"));
    }

    #[test]
    fn egress_named_ports_resolve_per_destination_pod() {
        let text = rules(&Unenforced::default());
        assert!(
            text.contains("ip daddr 10.0.0.1 tcp dport 8080 return"),
            "{text}"
        );
        assert!(
            text.contains("ip daddr 10.0.0.2 tcp dport 9000 return"),
            "{text}"
        );
    }

    #[test]
    fn unenforced_namespaces_isolate_nothing() {
        let text = rules(&Unenforced {
            namespaces: ["a".to_string()].into(),
            policies: Default::default(),
        });
        assert!(!text.contains("vmap"), "{text}");
        assert!(!text.contains("drop"), "{text}");
    }

    #[test]
    fn unenforced_policies_are_left_out() {
        let text = rules(&Unenforced {
            namespaces: Default::default(),
            policies: ["a/api".to_string()].into(),
        });
        assert!(!text.contains("accept\n    counter drop"), "{text}");
        assert!(
            !text.contains("chain i"),
            "no ingress chain without api: {text}"
        );
        assert!(
            text.contains("chain e"),
            "client-egress is still enforced: {text}"
        );
    }

    #[test]
    fn a_node_has_chains_for_its_own_pods_only_and_peers_from_every_node() {
        let mut m = Manifests::default();
        m.read_str(std::path::Path::new("test.yaml"), CLUSTER);
        let (state, errors) = ClusterState::from_manifests(m, &Default::default());
        assert!(errors.is_empty(), "{errors:?}");
        let pods: BTreeMap<PodKey, PodAddr> = state
            .pods()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    p.key.clone(),
                    PodAddr {
                        index: i,
                        ip: p.ips[0],
                    },
                )
            })
            .collect();
        let server = PodKey::new("a", "server");
        let text = policy_rules_for(
            &state,
            &pods,
            &Unenforced::default(),
            |k| *k == server,
            Deny::Mark(0x6e76_0001),
        );
        // The server's ingress chain admits the client, which runs elsewhere.
        assert!(
            text.contains("ip saddr { 10.0.0.3 } tcp dport 8080 accept"),
            "{text}"
        );
        assert!(
            text.contains("counter meta mark set 0x6e760001 accept"),
            "{text}"
        );
        assert!(!text.contains("drop"), "{text}");
        // The client's egress chain is on its own node.
        assert!(!text.contains("ip saddr vmap"), "{text}");
        assert!(text.contains("ip daddr vmap { 10.0.0.1 : jump"), "{text}");
    }

    #[test]
    fn replace_table_is_one_idempotent_transaction() {
        let script = replace_table("t", "  chain c {\n  }\n");
        assert!(script.starts_with("table inet t {}\ndelete table inet t\n"));
    }

    #[test]
    fn domain_name_rules_are_listed_as_unenforced_and_left_out_of_the_ruleset() {
        let anp = r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: allowlist}
spec:
  priority: 5
  subject: {namespaces: {}}
  egress:
  - {name: registry, action: Allow, to: [{domainNames: ["*.example.com"]}]}
  - {name: office, action: Allow, to: [{networks: [192.0.2.0/24]}]}
"#;
        let mut m = Manifests::default();
        m.read_str(std::path::Path::new("test.yaml"), CLUSTER);
        m.read_str(std::path::Path::new("anp.yaml"), anp);
        let (state, errors) = ClusterState::from_manifests(m, &Default::default());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            unenforced_domain_name_rules(&state),
            ["AdminNetworkPolicy/allowlist egress rule 0 \"registry\""]
        );
        let pods = pod_addrs(&state);
        let text = policy_rules(&state, &pods, &Unenforced::default());
        assert!(
            text.contains("192.0.2.0/24"),
            "the other rule is enforced: {text}"
        );
        assert!(!text.contains("\"registry\""), "{text}");
    }
}
