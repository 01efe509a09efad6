// SPDX-License-Identifier: GPL-2.0
/* lab_tc_drop.bpf.c: the drop of the lab's tc enforcement mode (`netverdict
 * lab up --enforcement tc`), as an eBPF CNI drops: a sched_cls program in
 * direct-action mode on the tc egress hook of the lab's links that returns
 * TC_ACT_SHOT for the packets the node's policy chains marked as denied. The
 * kernel frees them with its tc drop reason (TC_EGRESS), not NETFILTER_DROP.
 *
 * The decision itself stays in the node's nftables chains (one translation of
 * NetworkPolicy, checked against the engine by the lab's matrix tests); only
 * the drop moves to tc. The mark is NV_LAB_DENY_MARK, which lab/src/nft.rs
 * sets (keep both equal).
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>

/* The context of sched_cls programs: a UAPI struct whose field offsets the
 * verifier maps to the sk_buff (include/uapi/linux/bpf.h); only the leading
 * fields up to mark are declared. */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
};

/* include/uapi/linux/pkt_cls.h */
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

char LICENSE[] SEC("license") = "GPL";

#define NV_LAB_DENY_MARK 0x6e760001

SEC("tc")
int nv_lab_tc_drop(struct __sk_buff *skb)
{
	return skb->mark == NV_LAB_DENY_MARK ? TC_ACT_SHOT : TC_ACT_OK;
}
