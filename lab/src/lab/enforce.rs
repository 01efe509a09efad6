//! How the lab's policy reaches the kernel: the nftables ruleset for the pods
//! the lab runs (Service DNAT in `nvsvc`, NetworkPolicy in `nvpol`, both
//! translated by `nft` from the cluster model, never from the engine's
//! verdicts), installed in the node namespace in one `nft -f` transaction, and
//! the packets its policy chains dropped.
//!
//! This is the one place that chooses the enforcement: a tc/eBPF mode would be
//! a second way to install the same per-pod decisions and count its drops, and
//! AdminNetworkPolicy tiers would be more chains in the same transaction.

use std::collections::BTreeMap;

use netverdict_policy::{ClusterState, PodKey};

use super::state::node_netns;
use super::{Lab, Result};
use crate::nft::{self, PodAddr, Unenforced};
use crate::sys;

/// The script that replaces the service and policy tables (one transaction)
/// for the pods at `addrs`.
pub(crate) fn ruleset(
    cluster: &ClusterState,
    addrs: &BTreeMap<PodKey, PodAddr>,
    unenforced: &Unenforced,
) -> String {
    let mut script = nft::replace_table(nft::SERVICE_TABLE, &nft::service_rules(cluster, addrs));
    script.push_str(&nft::replace_table(
        nft::POLICY_TABLE,
        &nft::policy_rules(cluster, addrs, unenforced),
    ));
    script
}

/// The packets counted by the `counter ... drop` rules of an
/// `nft list table` listing.
fn dropped_in_listing(listing: &str) -> u64 {
    listing
        .lines()
        .filter(|l| l.trim_end().ends_with("drop"))
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

    /// The nftables script that replaces both tables (one transaction).
    pub fn ruleset(&self) -> String {
        ruleset(&self.cluster, &self.pod_addrs(), &self.state.unenforced)
    }

    /// The packets the policy chains dropped so far (their `counter drop` rules).
    pub fn dropped_packets(&self) -> Result<u64> {
        let node = node_netns(&self.state.name);
        let listing = sys::in_netns(&node, || {
            sys::run("nft", &["list", "table", "inet", nft::POLICY_TABLE], None)
        })??;
        Ok(dropped_in_listing(&listing))
    }

    /// Replaces the service and policy tables in one `nft -f` transaction.
    pub(super) fn sync_rules(&self) -> Result<()> {
        sys::nft_in(&node_netns(&self.state.name), &self.ruleset())?;
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
            }\n";
        assert_eq!(dropped_in_listing(listing), 7);
        assert_eq!(dropped_in_listing("table inet nvpol {\n}\n"), 0);
    }
}
