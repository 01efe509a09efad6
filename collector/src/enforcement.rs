//! Which kernel drops are policy enforcement: the drops a datapath that
//! enforces NetworkPolicy makes, whatever the datapath. iptables and nftables
//! drop with NETFILTER_DROP; eBPF datapaths (Cilium, Calico's eBPF mode) drop
//! from tc programs (TC_INGRESS, TC_EGRESS), XDP programs (XDP), cgroup
//! programs (BPF_CGROUP_*), or through a BPF helper that frees the packet with
//! no reason (NOT_SPECIFIED, at a BPF location: the helper, or the tc, XDP or
//! cgroup glue that ran the program). Reason names come from the kernel's BTF
//! (never numbers), locations from its symbols.

/// Drop reasons that only a packet filter gives.
pub const ENFORCEMENT_REASONS: [&str; 4] = ["NETFILTER_DROP", "TC_INGRESS", "TC_EGRESS", "XDP"];

/// The prefix of the cgroup BPF drop reasons (`BPF_CGROUP_EGRESS`...).
const CGROUP_REASON_PREFIX: &str = "BPF_CGROUP_";

/// The reason of a drop that says nothing of who dropped.
const NOT_SPECIFIED: &str = "NOT_SPECIFIED";

/// Kernel functions that run BPF programs or are BPF helpers freeing packets:
/// a drop located in one of them was made by a BPF program.
const BPF_LOCATION_PREFIXES: [&str; 16] = [
    "bpf_",
    "__bpf_",
    "____bpf_",
    "sk_filter",
    "tcf_classify",
    "tcx_",
    "cls_bpf",
    "sch_handle_",
    "xdp_",
    "do_xdp",
    "__xdp",
    "netif_receive_generic_xdp",
    "skb_do_redirect",
    "__cgroup_bpf",
    "cgroup_bpf",
    "dev_map_",
];

/// Whether a kernel function (from the drop's location) belongs to BPF: a JIT
/// image (`bpf_prog_<tag>_<name>`), a helper, or the glue running programs.
pub fn is_bpf_location(symbol: &str) -> bool {
    BPF_LOCATION_PREFIXES.iter().any(|p| symbol.starts_with(p))
}

/// Whether a drop with this reason name at this location enforced policy.
pub fn is_enforcement_drop(reason: Option<&str>, location: Option<&str>) -> bool {
    match reason {
        Some(r) if ENFORCEMENT_REASONS.contains(&r) || r.starts_with(CGROUP_REASON_PREFIX) => true,
        Some(NOT_SPECIFIED) => location.is_some_and(is_bpf_location),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_filters_of_any_datapath_count_and_the_stack_s_own_drops_do_not() {
        for reason in [
            "NETFILTER_DROP",
            "TC_INGRESS",
            "TC_EGRESS",
            "XDP",
            "BPF_CGROUP_EGRESS",
            "BPF_CGROUP_INGRESS",
        ] {
            assert!(is_enforcement_drop(Some(reason), None), "{reason}");
        }
        for reason in ["NO_SOCKET", "NEIGH_FAILED", "TCP_CSUM", "QUEUE_PURGE"] {
            assert!(
                !is_enforcement_drop(Some(reason), Some("bpf_prog_x")),
                "{reason}"
            );
        }
        assert!(!is_enforcement_drop(None, Some("skb_do_redirect")));
        // NOT_SPECIFIED counts only where BPF freed the packet.
        assert!(is_enforcement_drop(
            Some("NOT_SPECIFIED"),
            Some("skb_do_redirect")
        ));
        assert!(is_enforcement_drop(
            Some("NOT_SPECIFIED"),
            Some("bpf_prog_2e0822bfc3b94ebe_drop")
        ));
        assert!(is_enforcement_drop(
            Some("NOT_SPECIFIED"),
            Some("sch_handle_ingress")
        ));
        assert!(!is_enforcement_drop(
            Some("NOT_SPECIFIED"),
            Some("veth_xmit")
        ));
        assert!(!is_enforcement_drop(Some("NOT_SPECIFIED"), None));
    }
}
