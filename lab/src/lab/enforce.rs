//! How the lab's policy reaches the kernel, node by node: the nftables ruleset
//! of each node (Service DNAT in `nvsvc` for every Service, as kube-proxy has
//! on every node; NetworkPolicy in `nvpol` with chains for that node's pods
//! only, so egress is checked on the source's node and ingress on the
//! destination's, each with its own conntrack), translated by `nft` from the
//! cluster model, never from the engine's verdicts, installed in the node's
//! namespace in one `nft -f` transaction; and the packets its policy chains
//! denied.
//!
//! Two enforcement modes ([`Enforcement`]):
//!
//! - `nftables`: the chains drop (drop reason NETFILTER_DROP);
//! - `tc`: the same chains mark denied packets, and a sched_cls program on the
//!   tc egress hook of every lab link of the node (the pods' veths `p<i>` and
//!   the links to other nodes `n<j>`) drops marked packets, as an eBPF CNI
//!   drops (drop reason TC_EGRESS on this kernel, read from its BTF by the
//!   probes). The program is `netverdict_ebpf::LAB_TC_DROP_OBJECT`, loaded by
//!   `tc` from the lab's directory.
//!
//! The admin tiers (AdminNetworkPolicy, BaselineAdminNetworkPolicy,
//! ClusterNetworkPolicy) are chains before and after the NetworkPolicy chains
//! in the same transaction (see [`crate::nft`]), in both modes.

use std::collections::BTreeMap;

use netverdict_policy::{ClusterState, PodKey};
use serde::{Deserialize, Serialize};

use super::state::{LabNode, state_error};
use super::{Lab, Result};
use crate::nft::{self, Deny, PodAddr, Unenforced};
use crate::sys;

/// How a lab enforces NetworkPolicy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// nftables chains drop denied packets (NETFILTER_DROP).
    #[default]
    Nftables,
    /// nftables chains mark denied packets and tc programs drop them
    /// (TC_EGRESS), as eBPF datapaths drop.
    Tc,
}

impl Enforcement {
    /// The name on the command line and in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Nftables => "nftables",
            Enforcement::Tc => "tc",
        }
    }

    fn deny(self) -> Deny {
        match self {
            Enforcement::Nftables => Deny::Drop,
            Enforcement::Tc => Deny::Mark(netverdict_ebpf::LAB_DENY_MARK),
        }
    }
}

impl std::str::FromStr for Enforcement {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "nftables" => Ok(Enforcement::Nftables),
            "tc" => Ok(Enforcement::Tc),
            other => Err(format!("unknown enforcement {other:?}: use nftables or tc")),
        }
    }
}

/// The script that replaces the service and policy tables (one transaction)
/// of a node: the pods at `addrs` (every pod of the lab), chains for those
/// `local` says run on the node.
pub(crate) fn ruleset(
    cluster: &ClusterState,
    addrs: &BTreeMap<PodKey, PodAddr>,
    unenforced: &Unenforced,
    local: impl Fn(&PodKey) -> bool,
    enforcement: Enforcement,
) -> String {
    let mut script = nft::replace_table(nft::SERVICE_TABLE, &nft::service_rules(cluster, addrs));
    script.push_str(&nft::replace_table(
        nft::POLICY_TABLE,
        &nft::policy_rules_for(cluster, addrs, unenforced, local, enforcement.deny()),
    ));
    script
}

/// `tc -batch` lines attaching the lab's drop program (the object at
/// `object`) to the tc egress hook of `links`.
pub(crate) fn tc_drop_script(links: &[String], object: &str) -> String {
    links
        .iter()
        .map(|link| {
            format!(
                "qdisc add dev {link} clsact\nfilter add dev {link} egress pref 1 handle 1 bpf direct-action obj {object} sec tc\n"
            )
        })
        .collect()
}

/// The object file of the tc drop program, in the lab's directory.
const TC_DROP_OBJECT_FILE: &str = "tc_drop.bpf.o";

/// The packets counted by the deny rules (`counter ... drop`, or `counter
/// ... meta mark set ... accept` in the tc mode) of an `nft list table` listing.
fn dropped_in_listing(listing: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.trim_end().ends_with("drop") || l.contains("meta mark set"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "packets")?;
            words.next()?.parse::<u64>().ok()
        })
        .sum()
}

impl Lab {
    /// The lab's pods by key, with the index that names their chains.
    fn pod_addrs(&self) -> BTreeMap<PodKey, PodAddr> {
        self.state
            .pods
            .values()
            .map(|p| {
                (
                    p.key(),
                    PodAddr {
                        index: p.index,
                        ip: p.ip,
                    },
                )
            })
            .collect()
    }

    /// The nftables script that replaces both tables (one transaction) of
    /// the first node (the only one of a one-node lab).
    pub fn ruleset(&self) -> String {
        self.node_ruleset(0)
    }

    /// The nftables script of node number `node`.
    pub fn node_ruleset(&self, node: usize) -> String {
        ruleset(
            &self.cluster,
            &self.pod_addrs(),
            &self.state.unenforced,
            |key| {
                self.state
                    .pods
                    .get(&key.to_string())
                    .is_some_and(|p| p.node == node)
            },
            self.state.enforcement,
        )
    }

    /// The packets the policy chains denied so far, on every node (their
    /// `counter` deny rules).
    pub fn dropped_packets(&self) -> Result<u64> {
        let mut total = 0;
        for node in &self.state.nodes {
            let listing = sys::in_netns(&node.netns, || {
                sys::run("nft", &["list", "table", "inet", nft::POLICY_TABLE], None)
            })??;
            total += dropped_in_listing(&listing);
        }
        Ok(total)
    }

    /// Replaces the service and policy tables of every node, each in one
    /// `nft -f` transaction.
    pub(super) fn sync_rules(&self) -> Result<()> {
        for node in &self.state.nodes {
            sys::nft_in(&node.netns, &self.node_ruleset(node.index))?;
        }
        Ok(())
    }

    /// In the tc mode, attaches the drop program to `links` of `node` (a
    /// no-op in the nftables mode).
    pub(super) fn attach_tc_drops(&self, node: &LabNode, links: &[String]) -> Result<()> {
        if self.state.enforcement != Enforcement::Tc || links.is_empty() {
            return Ok(());
        }
        let object = self.dir.join(TC_DROP_OBJECT_FILE);
        if !object.exists() {
            std::fs::write(&object, netverdict_ebpf::LAB_TC_DROP_OBJECT)
                .map_err(|e| state_error(&object, e))?;
        }
        sys::tc_batch(
            &node.netns,
            &tc_drop_script(links, &object.to_string_lossy()),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    /// The chain of a script, from its `chain NAME {` line to its `}`.
    fn chain<'a>(script: &'a str, name: &str) -> &'a str {
        let head = format!("  chain {name} {{\n");
        let start = script
            .find(&head)
            .unwrap_or_else(|| panic!("no chain {name} in\n{script}"));
        let end = script[start..].find("\n  }\n").expect("chain end") + start;
        &script[start + head.len()..end]
    }

    /// The index of a pod of `lab` (names its chains).
    fn index(lab: &Lab, pod: &str) -> usize {
        lab.state.pods[pod].index
    }

    #[test]
    fn the_seed_cluster_without_policies_isolates_nobody() {
        let lab = fixture::planned(fixture::seed_objects(false), true);
        let script = lab.ruleset();
        assert!(!script.contains("vmap"), "{script}");
        assert!(!script.contains("drop"), "{script}");
        // Replies pass first; a pod reaching itself (hairpin) is accepted.
        assert_eq!(
            chain(&script, "forward"),
            "    type filter hook forward priority filter; policy accept;\n    \
             ct state established,related accept\n    \
             ip saddr . ip daddr { 10.244.1.10 . 10.244.1.10, 10.244.1.20 . 10.244.1.20, \
             10.244.0.10 . 10.244.0.10, 10.244.2.20 . 10.244.2.20 } accept"
        );
    }

    #[test]
    fn the_seed_services_are_dnated_to_their_named_target_ports() {
        let lab = fixture::planned(fixture::seed_objects(false), true);
        let script = lab.ruleset();
        let pre = chain(&script, "prerouting");
        for line in [
            "ip daddr 10.96.1.10 tcp dport 8080 dnat ip to 10.244.1.10:8080",
            "ip daddr 10.96.1.10 tcp dport 5432 dnat ip to 10.244.1.10:5432",
            "ip daddr 10.96.0.10 udp dport 53 dnat ip to 10.244.0.10:53",
            "ip daddr 10.96.0.10 tcp dport 53 dnat ip to 10.244.0.10:53",
        ] {
            assert!(pre.contains(line), "{line} missing from\n{pre}");
        }
        assert_eq!(pre.matches("dnat").count(), 4, "{pre}");
        // The service table comes first and both tables are replaced.
        let svc = script.find("table inet nvsvc {\n").expect("service table");
        let pol = script.find("table inet nvpol {\n").expect("policy table");
        assert!(svc < pol);
        assert!(script.starts_with("table inet nvsvc {}\ndelete table inet nvsvc\n"));
    }

    #[test]
    fn the_seed_policies_become_one_chain_per_isolated_pod_and_direction() {
        let lab = fixture::planned(fixture::seed_objects(true), true);
        let script = lab.ruleset();
        let (api, client, dns, shop) = (
            index(&lab, "default/api"),
            index(&lab, "default/np-client"),
            index(&lab, "kube-system/coredns"),
            index(&lab, "shop/np-client"),
        );
        let forward = chain(&script, "forward");
        // default-deny isolates both default pods both ways; kube-system and
        // shop have no policy.
        assert!(
            forward.contains(&format!(
                "ip saddr vmap {{ 10.244.1.10 : jump e{api}, 10.244.1.20 : jump e{client} }}"
            )),
            "{forward}"
        );
        assert!(
            forward.contains(&format!(
                "ip daddr vmap {{ 10.244.1.10 : jump i{api}, 10.244.1.20 : jump i{client} }}"
            )),
            "{forward}"
        );
        for absent in [dns, shop] {
            assert!(!script.contains(&format!("chain e{absent} ")), "{script}");
            assert!(!script.contains(&format!("chain i{absent} ")), "{script}");
        }
        // allow-dns-egress: DNS to kube-system's pods only; egress rules
        // `return` so the destination's ingress chain decides next.
        assert_eq!(
            chain(&script, &format!("e{client}")),
            "    # egress default/np-client\n    \
             ip daddr { 10.244.0.10 } udp dport 53 return\n    \
             ip daddr { 10.244.0.10 } tcp dport 53 return\n    \
             counter drop"
        );
        // api-from-web: frontends of team=web namespaces (default, not shop)
        // on 8080 only.
        assert_eq!(
            chain(&script, &format!("i{api}")),
            "    # ingress default/api\n    \
             ip saddr { 10.244.1.20 } tcp dport 8080 accept\n    \
             counter drop"
        );
        // default-deny alone: nothing may reach the client.
        assert_eq!(
            chain(&script, &format!("i{client}")),
            "    # ingress default/np-client\n    counter drop"
        );
        assert!(!script.contains("reject"));
    }

    #[test]
    fn unenforced_policies_leave_the_ruleset_but_not_the_engine() {
        let mut lab = fixture::planned(fixture::seed_objects(true), true);
        lab.state
            .unenforced
            .policies
            .insert("default/api-from-web".into());
        let script = lab.ruleset();
        let api = index(&lab, "default/api");
        // default-deny still isolates the api: only the allow rule is gone.
        assert_eq!(
            chain(&script, &format!("i{api}")),
            "    # ingress default/api\n    counter drop"
        );
        assert_eq!(lab.cluster().policy_count(), 3);
    }

    #[test]
    fn two_nodes_split_the_chains_and_the_tc_mode_marks_instead_of_dropping() {
        let mut lab = fixture::planned_on(fixture::seed_objects(true), 2, Enforcement::Tc);
        let on = |pod: &str| lab.state.pods[pod].node;
        // In turn, in the manifests' order (the DNS pod first).
        assert_eq!(
            [
                on("kube-system/coredns"),
                on("default/api"),
                on("default/np-client"),
                on("shop/np-client")
            ],
            [0, 1, 0, 1]
        );
        let api = index(&lab, "default/api");
        let client = index(&lab, "default/np-client");
        let node0 = lab.node_ruleset(0);
        let node1 = lab.node_ruleset(1);
        // The client's chains on node 0, the api's on node 1.
        assert!(node0.contains(&format!("chain e{client} ")), "{node0}");
        assert!(!node0.contains(&format!("chain i{api} ")), "{node0}");
        assert!(node1.contains(&format!("chain i{api} ")), "{node1}");
        assert!(!node1.contains(&format!("chain e{client} ")), "{node1}");
        // Both nodes DNAT every Service.
        for script in [&node0, &node1] {
            assert!(script.contains("dnat ip to 10.244.1.10:8080"), "{script}");
            assert!(!script.contains("drop"), "{script}");
        }
        assert_eq!(
            chain(&node1, &format!("i{api}")),
            "    # ingress default/api\n    \
             ip saddr { 10.244.1.20 } tcp dport 8080 accept\n    \
             counter meta mark set 0x6e760001 accept"
        );
        lab.state.enforcement = Enforcement::Nftables;
        assert!(lab.node_ruleset(1).ends_with("counter drop\n  }\n}\n"));
        assert_eq!(
            tc_drop_script(&["p3".to_string()], "/x/tc.o"),
            "qdisc add dev p3 clsact\nfilter add dev p3 egress pref 1 handle 1 bpf direct-action obj /x/tc.o sec tc\n"
        );
        assert_eq!("tc".parse::<Enforcement>(), Ok(Enforcement::Tc));
        assert!("ebpf".parse::<Enforcement>().is_err());
    }

    #[test]
    fn drops_are_summed_over_the_counter_rules_only() {
        let listing = "table inet nvpol {\n\
            \tchain forward {\n\
            \t\ttype filter hook forward priority filter; policy accept;\n\
            \t\tct state established,related accept\n\
            \t\tip saddr vmap { 10.0.0.1 : jump e0 }\n\
            \t}\n\
            \tchain e0 {\n\
            \t\tip daddr { 10.0.0.2 } tcp dport 80 return\n\
            \t\tcounter packets 3 bytes 180 drop\n\
            \t}\n\
            \tchain i1 {\n\
            \t\tip saddr { 10.0.0.9 } counter packets 50 bytes 9000 accept\n\
            \t\tcounter packets 4 bytes 240 drop\n\
            \t}\n\
            \tchain i2 {\n\
            \t\tcounter packets 5 bytes 300 meta mark set 0x6e760001 accept\n\
            \t}\n\
            }\n";
        assert_eq!(dropped_in_listing(listing), 12);
        assert_eq!(dropped_in_listing("table inet nvpol {\n}\n"), 0);
    }
}
