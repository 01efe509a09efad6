// SPDX-License-Identifier: GPL-2.0
/* netverdict.bpf.c: the kernel-side probes of netverdict.
 *
 * All programs are tp_btf (BTF-typed raw tracepoints): they need no tracefs and
 * exist from 5.5 on. Their arguments are BTF pointers, so kernel fields are read
 * with plain (fault-safe, CO-RE relocated) loads rather than bpf_probe_read;
 * packet bytes are read with bpf_probe_read_kernel.
 * Field offsets come from CO-RE relocations (vmlinux_min.h),
 * drop reason values from the running kernel's BTF. Every event goes to the one
 * ring buffer NV_EVENTS; an event that cannot be reserved is counted in NV_STATS
 * at the index of its kind, so user space can report it.
 *
 *   tp_btf/inet_sock_set_state  TCP attempts and outcomes (NV_KIND_TCP)
 *   tp_btf/tcp_retransmit_skb   attempts still unanswered at their first SYN retransmit
 *   tp_btf/kfree_skb            drops with reason and parsed packet (NV_KIND_DROP)
 *   tp_btf/net_dev_queue        UDP flows and DNS messages leaving any device
 *                               (NV_KIND_UDP, NV_KIND_DNS), ICMP echo requests
 *                               and replies (NV_KIND_ICMP, one per packet),
 *                               forwarded SYNs whose destination conntrack
 *                               NATed (NV_KIND_NAT)
 *   raw_tp/nv_synth             synthetic events for the benchmark (never attached)
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "netverdict_events.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_SCTP 132
#define IPPROTO_ICMP 1
#define IPPROTO_ICMPV6 58

/* ICMP message types: RFC 792 and RFC 4443. */
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

/* TCP states: include/net/tcp_states.h, part of the user ABI (/proc/net/tcp). */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_TIME_WAIT 6
#define TCP_CLOSE 7
#define TCP_LISTEN 10
#define TCP_NEW_SYN_RECV 12

#define NSEC_PER_SEC 1000000000ULL

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* resized by the loader */
} NV_EVENTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, NV_STATS_LEN);
} NV_STATS SEC(".maps");

/* Outbound connects between SYN_SENT and their outcome: when the attempt
 * began, and whether it was already reported on its own. A direct-mapped
 * cache indexed by a hash of the socket address: array slots are read and
 * written without locks or allocation (a hash map update cost more than the
 * rest of the probe). Two pending connects sharing a slot are rare; the loser
 * is reported with its outcome's time, and may have its attempt reported
 * twice if its SYN was retransmitted. */
struct syn_slot {
	__u64 sk;     /* socket address, 0: free */
	__u64 ts_ns;  /* SYN_SENT time */
	__u64 emitted; /* attempt reported on its own */
};

#define NV_SYN_SLOTS 65536

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct syn_slot);
	__uint(max_entries, NV_SYN_SLOTS);
} NV_PENDING_SYN SEC(".maps");

/* The address of a BTF pointer as a plain number (the verifier allows no
 * arithmetic on the pointer itself). */
static __always_inline __u64 ptr_value(const void *p)
{
	__u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), &p);
	return v;
}

static __always_inline struct syn_slot *syn_slot(__u64 sk)
{
	__u32 idx = (__u32)((sk * 0x9E3779B97F4A7C15ULL) >> 48) & (NV_SYN_SLOTS - 1);
	return bpf_map_lookup_elem(&NV_PENDING_SYN, &idx);
}

/* Drop reasons not to emit (value 1: ignore), filled by the loader from names:
 * socket life-cycle frees such as QUEUE_PURGE are not network drops. Ignored
 * drops are counted in NV_STATS[NV_STAT_IGNORED_DROPS]. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u8);
	__uint(max_entries, NV_DROP_IGNORE_LEN);
} NV_DROP_IGNORE SEC(".maps");

struct flow_key {
	__u32 netns;
	__u32 ifindex;
	__u8 family;
	__u8 protocol;
	__u16 sport;
	__u16 dport;
	__u16 _pad;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct flow_val {
	__u64 last_emit_ns;
	__u64 bytes;
	__u64 packets;
};

/* UDP flows: one event when a flow is first seen, then at most one a second. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
	__uint(max_entries, 65536);
} NV_UDP_FLOWS SEC(".maps");

#define BPF_RB_NO_WAKEUP 1
#define BPF_RB_FORCE_WAKEUP 2
#define BPF_RB_AVAIL_DATA 0

/* Set by the loader. 0: wake the consumer for every event. Otherwise wake it
 * only once this many bytes are waiting; the consumer also polls on a timer.
 * Batching wake-ups keeps the cost per event low under load. */
const volatile __u64 nv_wakeup_bytes = 0;

/* Set by the loader from Config::tcp_close_records, for the benchmark only:
 * report every close of a TCP connection with its counts (segments out and
 * in, bytes acked), to measure what byte and packet counts per connection
 * would cost. They carry sk_err -1, so they decode as TCP outcomes (Failed,
 * errno -1): the consumer's cost is the real one. Never set outside it. */
const volatile __u8 nv_tcp_close_records = 0;

static __always_inline __u64 submit_flags(void)
{
	if (nv_wakeup_bytes == 0)
		return 0;
	return bpf_ringbuf_query(&NV_EVENTS, BPF_RB_AVAIL_DATA) >= nv_wakeup_bytes
		       ? BPF_RB_FORCE_WAKEUP
		       : BPF_RB_NO_WAKEUP;
}

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&NV_STATS, &idx);
	if (v)
		*v += 1; /* per-CPU: no atomics needed */
}

/* ---------- sockets ---------- */

static __always_inline void hdr_from_sock(struct nv_hdr *h, struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;

	h->family = family;
	h->protocol = IPPROTO_TCP;
	h->netns = sk->__sk_common.skc_net.net->ns.inum;
	h->ifindex = sk->__sk_common.skc_bound_dev_if;
	h->sport = sk->__sk_common.skc_num;
	h->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	h->sock_id = (__u64)sk;
	if (family == AF_INET6) {
		__builtin_memcpy(h->saddr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(h->daddr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
	} else {
		__be32 s = sk->__sk_common.skc_rcv_saddr;
		__be32 d = sk->__sk_common.skc_daddr;
		__builtin_memcpy(h->saddr, &s, 4);
		__builtin_memcpy(h->daddr, &d, 4);
	}
}

static __always_inline void emit_tcp(struct sock *sk, __u8 oldstate, __u8 newstate, __u64 ts,
				     __u8 direction, __u64 attempt_ts)
{
	struct nv_tcp_event *e = bpf_ringbuf_reserve(&NV_EVENTS, sizeof(*e), 0);
	if (!e) {
		count(NV_KIND_TCP);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	hdr_from_sock(&e->hdr, sk);
	if (e->hdr.sport == 0) /* unhashed at CLOSE: skc_num cleared, inet_sport kept */
		e->hdr.sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	e->hdr.ts_ns = ts;
	e->hdr.kind = NV_KIND_TCP;
	e->hdr.direction = direction;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->sk_err = sk->sk_err;
	/* Only failures need it; the cast field needs a (slower) probe read. */
	if (oldstate == TCP_SYN_SENT && newstate == TCP_CLOSE)
		e->retransmits = BPF_CORE_READ((struct tcp_sock *)sk, total_retrans);
	if (attempt_ts) {
		e->flags = NV_TCP_WITH_ATTEMPT;
		e->attempt_ts_ns = attempt_ts;
	}
	bpf_ringbuf_submit(e, submit_flags());
}

/* Reports the connect attempt of sk on its own, if not done yet: called when
 * its SYN is retransmitted (no answer yet) or dropped. */
static __always_inline void flush_pending_syn(struct sock *sk)
{
	__u64 id = ptr_value(sk);
	struct syn_slot *slot = syn_slot(id);
	if (!slot || slot->sk != id || slot->emitted)
		return;
	slot->emitted = 1;
	emit_tcp(sk, TCP_CLOSE, TCP_SYN_SENT, slot->ts_ns, NV_DIR_EGRESS, 0);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(nv_tcp_state, struct sock *sk, int oldstate, int newstate)
{
	/* Only attempts, their outcomes and closes matter: cheap test first. */
	if (newstate != TCP_SYN_SENT && newstate != TCP_CLOSE && oldstate != TCP_SYN_SENT &&
	    oldstate != TCP_SYN_RECV)
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u64 now = bpf_ktime_get_ns();

	if (newstate == TCP_SYN_SENT) {
		/* Reported with its outcome, or alone if the SYN is retransmitted
		 * or dropped first. */
		__u64 id = ptr_value(sk);
		struct syn_slot *slot = syn_slot(id);
		if (slot) {
			slot->sk = id;
			slot->ts_ns = now;
			slot->emitted = 0;
		}
		return 0;
	}
	if (oldstate == TCP_SYN_SENT) {
		__u64 attempt_ts = now; /* slot taken by another connect */
		__u64 id = ptr_value(sk);
		struct syn_slot *slot = syn_slot(id);
		if (slot && slot->sk == id) {
			attempt_ts = slot->emitted ? 0 : slot->ts_ns;
			slot->sk = 0;
		}
		emit_tcp(sk, oldstate, newstate, now, NV_DIR_EGRESS, attempt_ts);
		return 0;
	}
	if (oldstate == TCP_SYN_RECV) {
		/* Inbound: the child socket exists once the handshake is done (or
		 * failed); the record stands for the attempt and its outcome. */
		emit_tcp(sk, oldstate, newstate, now, NV_DIR_INGRESS, now);
		return 0;
	}
	/* An established (or closing) connection torn down with an error: a reset. */
	if (newstate == TCP_CLOSE && sk->sk_err != 0) {
		emit_tcp(sk, oldstate, newstate, now, NV_DIR_UNKNOWN, 0);
	} else if (nv_tcp_close_records && newstate == TCP_CLOSE) {
		struct nv_tcp_event *e = bpf_ringbuf_reserve(&NV_EVENTS, sizeof(*e), 0);
		if (!e) {
			count(NV_KIND_TCP);
			return 0;
		}
		__builtin_memset(e, 0, sizeof(*e));
		hdr_from_sock(&e->hdr, sk);
		e->hdr.ts_ns = now;
		e->hdr.kind = NV_KIND_TCP;
		e->oldstate = oldstate;
		e->newstate = newstate;
		e->sk_err = -1;
		struct tcp_sock *tp = (struct tcp_sock *)sk;
		e->retransmits = BPF_CORE_READ(tp, segs_out);
		e->_pad1 = BPF_CORE_READ(tp, segs_in);
		e->attempt_ts_ns = BPF_CORE_READ(tp, bytes_acked) + BPF_CORE_READ(tp, bytes_received);
		bpf_ringbuf_submit(e, submit_flags());
	}
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(nv_tcp_retransmit, struct sock *sk)
{
	if (sk->__sk_common.skc_state == TCP_SYN_SENT)
		flush_pending_syn(sk);
	return 0;
}

/* ---------- packets ---------- */

struct nv_iphdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

struct nv_ip6hdr {
	__be32 vtc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

/* What parse_skb learns from a packet. Offsets are from skb->head. */
struct pkt {
	__u8 family;
	__u8 protocol;
	__u8 tcp_flags;
	__u8 is_dns;
	__u8 has_payload; /* DNS: the L4 segment carries data */
	__u8 _pad[3];
	__u16 sport;
	__u16 dport;
	__u32 payload_off; /* DNS message start */
	__u32 payload_len; /* DNS message bytes present in the linear data */
	__u8 saddr[16];
	__u8 daddr[16];
};

static __always_inline __u32 min_u32(__u32 a, __u32 b)
{
	return a < b ? a : b;
}

/* parse_skb's answer for an ICMP/ICMPv6 packet that is not an echo request
 * or reply (errors, neighbour discovery...): not reported, counted. */
#define NV_PARSE_ICMP_OTHER 1

static __always_inline bool is_icmp(__u8 protocol)
{
	return protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6;
}

/* Parses IPv4/IPv6 + TCP/UDP/SCTP, or an ICMP/ICMPv6 echo, from the skb's
 * linear data. Returns 0 on success, NV_PARSE_ICMP_OTHER for other ICMP
 * messages, -1 if the packet is none of those. An echo's identifier and
 * sequence number go in sport and dport, its type in tcp_flags. */
static __always_inline int parse_skb(struct sk_buff *skb, struct pkt *p)
{
	unsigned char *head = skb->head;
	__u16 nh = skb->network_header;
	__u32 tail = skb->tail;
	__u16 proto = bpf_ntohs(skb->protocol);
	__u32 l4, l3_end;

	if (!head || nh == 0xffff)
		return -1;
	if (proto != ETH_P_IP && proto != ETH_P_IPV6) {
		/* Locally generated skbs may not carry skb->protocol yet. */
		__u8 v = 0;
		if (proto != 0 || bpf_probe_read_kernel(&v, 1, head + nh))
			return -1;
		proto = (v >> 4) == 4 ? ETH_P_IP : (v >> 4) == 6 ? ETH_P_IPV6 : 0;
	}
	if (proto == ETH_P_IP) {
		struct nv_iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) || (ip.ver_ihl >> 4) != 4)
			return -1;
		p->family = AF_INET;
		p->protocol = ip.protocol;
		__builtin_memcpy(p->saddr, &ip.saddr, 4);
		__builtin_memcpy(p->daddr, &ip.daddr, 4);
		l4 = nh + (ip.ver_ihl & 0xf) * 4;
		l3_end = nh + bpf_ntohs(ip.tot_len);
		if (bpf_ntohs(ip.frag_off) & 0x1fff)
			return (p->protocol == IPPROTO_TCP || p->protocol == IPPROTO_UDP ||
				p->protocol == IPPROTO_SCTP) ? 0 : -1; /* later fragment: no ports */
		if (p->protocol == IPPROTO_ICMPV6)
			return -1;
	} else if (proto == ETH_P_IPV6) {
		struct nv_ip6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) || (ip6.vtc_flow & 0xf0) != 0x60)
			return -1;
		p->family = AF_INET6;
		p->protocol = ip6.nexthdr; /* extension headers are not walked */
		__builtin_memcpy(p->saddr, ip6.saddr, 16);
		__builtin_memcpy(p->daddr, ip6.daddr, 16);
		l4 = nh + sizeof(ip6);
		l3_end = l4 + bpf_ntohs(ip6.payload_len);
		if (p->protocol == IPPROTO_ICMP)
			return -1;
	} else {
		return -1;
	}
	if (is_icmp(p->protocol)) {
		/* type, code, checksum, identifier, sequence */
		struct {
			__u8 type;
			__u8 code;
			__u16 csum;
			__be16 id;
			__be16 seq;
		} ih = {};
		if (bpf_probe_read_kernel(&ih, sizeof(ih), head + l4))
			return -1;
		bool echo = p->protocol == IPPROTO_ICMP
				    ? ih.type == ICMP_ECHO || ih.type == ICMP_ECHOREPLY
				    : ih.type == ICMPV6_ECHO_REQUEST || ih.type == ICMPV6_ECHO_REPLY;
		if (!echo)
			return NV_PARSE_ICMP_OTHER;
		p->sport = bpf_ntohs(ih.id);
		p->dport = bpf_ntohs(ih.seq);
		p->tcp_flags = ih.type;
		return 0;
	}
	if (p->protocol != IPPROTO_TCP && p->protocol != IPPROTO_UDP && p->protocol != IPPROTO_SCTP)
		return -1;

	/* Ports, and for TCP the data offset and flags, in one read. */
	struct {
		__be16 sport;
		__be16 dport;
		__u32 seq;
		__u32 ack;
		__u8 doff;
		__u8 flags;
	} th = {};
	if (bpf_probe_read_kernel(&th, p->protocol == IPPROTO_TCP ? sizeof(th) : 4, head + l4))
		return 0; /* IP header only in the linear part: no ports */
	p->sport = bpf_ntohs(th.sport);
	p->dport = bpf_ntohs(th.dport);
	p->tcp_flags = th.flags;
	if (p->sport != 53 && p->dport != 53)
		return 0;

	__u32 end = min_u32(tail, l3_end);
	if (p->protocol == IPPROTO_UDP)
		p->payload_off = l4 + 8;
	else if (p->protocol == IPPROTO_TCP)
		p->payload_off = l4 + (th.doff >> 4) * 4 + 2; /* skip the 2-byte length prefix */
	else
		return 0;
	p->is_dns = 1;
	/* Does the segment carry data at all (before the TCP length prefix)? */
	p->has_payload = l3_end > p->payload_off - (p->protocol == IPPROTO_TCP ? 2 : 0);
	if (end > p->payload_off)
		p->payload_len = min_u32(end - p->payload_off, NV_DNS_PAYLOAD_MAX);
	return 0;
}

/* The bytes from the packet's network header on: its IP length, without the
 * link-layer header a device put before it (what UDP and ICMP count). */
static __always_inline __u32 ip_len(struct sk_buff *skb)
{
	__s64 data_off = (__s64)((__u64)skb->data - (__u64)skb->head);
	__s64 n = (__s64)skb->len + data_off - (__s64)skb->network_header;
	return n > 0 && n <= skb->len ? (__u32)n : skb->len;
}

/* A connection request: the first packet of an outbound connect. */
static __always_inline bool is_syn(struct pkt *p)
{
	return p->protocol == IPPROTO_TCP && (p->tcp_flags & 0x12) == 0x02; /* SYN, no ACK */
}

static __always_inline void hdr_from_pkt(struct nv_hdr *h, struct pkt *p)
{
	h->family = p->family;
	h->protocol = p->protocol;
	h->sport = p->sport;
	h->dport = p->dport;
	__builtin_memcpy(h->saddr, p->saddr, 16);
	__builtin_memcpy(h->daddr, p->daddr, 16);
}

/* Emits an nv_skb_event; with the DNS message copied when the packet is DNS. */
static __always_inline void emit_skb(struct sk_buff *skb, struct pkt *p, __u16 kind, __u8 dir,
				     __u32 netns, __u32 ifindex, __u32 reason, __u64 location,
				     __u32 packets)
{
	struct nv_skb_event *e;
	__u64 id = (__u64)skb->sk;

	if (p->is_dns && p->payload_len > 0) {
		e = bpf_ringbuf_reserve(&NV_EVENTS, sizeof(*e) + NV_DNS_PAYLOAD_MAX, 0);
		if (!e) {
			count(kind);
			return;
		}
		/* 64-bit bound the verifier can follow (clang may otherwise check a
		 * 32-bit copy and pass the unchecked register). */
		__u64 n = p->payload_len;
		asm volatile("" : "+r"(n));
		if (n > NV_DNS_PAYLOAD_MAX)
			n = NV_DNS_PAYLOAD_MAX;
		asm volatile("" : "+r"(n));
		unsigned char *head = skb->head;
		if (bpf_probe_read_kernel((void *)(e + 1), n, head + p->payload_off))
			n = 0;
		e->payload_len = n;
	} else {
		e = bpf_ringbuf_reserve(&NV_EVENTS, sizeof(*e), 0);
		if (!e) {
			count(kind);
			return;
		}
		e->payload_len = 0;
	}
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->hdr.sock_id = id;
	e->hdr.kind = kind;
	e->hdr.direction = dir;
	e->hdr._pad0 = 0;
	e->hdr._pad1 = 0;
	e->hdr._pad2 = 0;
	e->hdr.netns = netns;
	e->hdr.ifindex = ifindex;
	hdr_from_pkt(&e->hdr, p);
	e->reason = reason;
	e->pkt_len = skb->len;
	e->location = location;
	e->packets = packets;
	e->tcp_flags = p->tcp_flags;
	e->_pad0 = 0;
	bpf_ringbuf_submit(e, submit_flags());
}

static __always_inline __u32 skb_netns(struct sk_buff *skb)
{
	struct net_device *dev = skb->dev;
	if (dev)
		return dev->nd_net.net->ns.inum;
	struct sock *sk = skb->sk;
	if (sk)
		return sk->__sk_common.skc_net.net->ns.inum;
	return 0;
}

SEC("tp_btf/kfree_skb")
int nv_kfree_skb(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	__u64 location = ctx[1];
	__u32 reason = 0;

	/* The reason argument exists from 5.17 on, together with the enum. */
	if (bpf_core_type_exists(enum skb_drop_reason)) {
		reason = (__u32)ctx[2];
		if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
		    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
			return 0;
		if (reason < NV_DROP_IGNORE_LEN) {
			__u8 *ignore = bpf_map_lookup_elem(&NV_DROP_IGNORE, &reason);
			if (ignore && *ignore) {
				count(NV_STAT_IGNORED_DROPS);
				return 0;
			}
		}
	}

	struct pkt p = {};
	if (parse_skb(skb, &p)) {
		count(NV_STAT_NONIP_DROPS);
		return 0;
	}
	struct sock *sk = skb->sk;
	if (sk && is_syn(&p))
		flush_pending_syn(sk);
	__u8 dir = NV_DIR_UNKNOWN;
	__u32 ifindex = 0;
	int iif = skb->skb_iif;
	if (iif > 0) {
		dir = NV_DIR_INGRESS;
		ifindex = iif;
	} else if (sk) {
		dir = NV_DIR_EGRESS;
		ifindex = skb->dev->ifindex;
	}
	emit_skb(skb, &p, NV_KIND_DROP, dir, skb_netns(skb), ifindex, reason, location, 1);
	return 0;
}

/* The conntrack entry of a packet (NULL when untracked). */
#define NV_NFCT_PTRMASK (~7UL)

/* Emits an NV_KIND_NAT event when the packet's destination differs from the
 * ORIGINAL destination of its conntrack entry: the backend a Service's
 * ClusterIP was translated to, as the kernel chose it. */
static __always_inline void emit_nat(struct sk_buff *skb, struct pkt *p, __u32 netns,
				     __u32 ifindex)
{
	if (!bpf_core_field_exists(skb->_nfct))
		return;
	unsigned long nfct = skb->_nfct;
	struct nf_conn *ct = (struct nf_conn *)(nfct & NV_NFCT_PTRMASK);
	if (!ct)
		return;
	union nf_inet_addr orig = {};
	__be16 orig_port = 0;
	if (BPF_CORE_READ_INTO(&orig, ct, tuplehash[0].tuple.dst.u3) ||
	    BPF_CORE_READ_INTO(&orig_port, ct, tuplehash[0].tuple.dst.u.all))
		return;
	__u16 oport = bpf_ntohs(orig_port);
	if (p->family == AF_INET) {
		__be32 now = 0;
		__builtin_memcpy(&now, p->daddr, 4);
		if (orig.ip == now && oport == p->dport)
			return;
	} else if (oport == p->dport) {
		__u32 now[4];
		__builtin_memcpy(now, p->daddr, 16);
		if (orig.all[0] == now[0] && orig.all[1] == now[1] && orig.all[2] == now[2] &&
		    orig.all[3] == now[3])
			return;
	}
	struct nv_nat_event *e = bpf_ringbuf_reserve(&NV_EVENTS, sizeof(*e), 0);
	if (!e) {
		count(NV_KIND_NAT);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->hdr.kind = NV_KIND_NAT;
	e->hdr.direction = NV_DIR_EGRESS;
	e->hdr.netns = netns;
	e->hdr.ifindex = ifindex;
	hdr_from_pkt(&e->hdr, p);
	__builtin_memcpy(e->orig_daddr, orig.all, 16);
	e->orig_dport = oport;
	bpf_ringbuf_submit(e, submit_flags());
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(nv_dev_queue, struct sk_buff *skb)
{
	/* Fast path: most packets are TCP segments that are not DNS; their
	 * socket says so without reading the packet. */
	struct sock *owner = skb->sk;
	if (owner) {
		__u8 st = owner->__sk_common.skc_state;
		if (st == TCP_TIME_WAIT || st == TCP_NEW_SYN_RECV)
			return 0; /* TCP mini-socket: ACK, RST or SYN-ACK */
		if (owner->sk_protocol == IPPROTO_TCP && owner->__sk_common.skc_num != 53 &&
		    owner->__sk_common.skc_dport != bpf_htons(53))
			return 0;
	}

	struct pkt p = {};
	int parsed = parse_skb(skb, &p);
	if (parsed == NV_PARSE_ICMP_OTHER)
		count(NV_STAT_ICMP_OTHER);
	if (parsed)
		return 0;
	struct net_device *dev = skb->dev;
	__u32 netns = dev ? dev->nd_net.net->ns.inum : 0;
	__u32 ifindex = dev ? dev->ifindex : 0;

	/* A forwarded connection request: was its destination translated? */
	if (!owner && is_syn(&p))
		emit_nat(skb, &p, netns, ifindex);

	if (p.is_dns) {
		if (p.payload_len > 0)
			emit_skb(skb, &p, NV_KIND_DNS, NV_DIR_EGRESS, netns, ifindex, 0, 0, 1);
		else if (p.has_payload)
			count(NV_STAT_DNS_NO_PAYLOAD);
		return 0;
	}
	if (is_icmp(p.protocol)) {
		/* Every echo: correlation pairs each request with its reply. Ping
		 * rates are low; a flood costs ring space, and its losses are
		 * counted like any other kind's. */
		emit_skb(skb, &p, NV_KIND_ICMP, NV_DIR_EGRESS, netns, ifindex, 0, ip_len(skb), 1);
		return 0;
	}
	if (p.protocol != IPPROTO_UDP)
		return 0;

	struct flow_key k = {};
	k.netns = netns;
	k.ifindex = ifindex;
	k.family = p.family;
	k.protocol = p.protocol;
	k.sport = p.sport;
	k.dport = p.dport;
	__builtin_memcpy(k.saddr, p.saddr, 16);
	__builtin_memcpy(k.daddr, p.daddr, 16);
	__u64 now = bpf_ktime_get_ns();
	__u32 len = ip_len(skb);
	struct flow_val *v = bpf_map_lookup_elem(&NV_UDP_FLOWS, &k);
	if (!v) {
		struct flow_val nv = { .last_emit_ns = now };
		bpf_map_update_elem(&NV_UDP_FLOWS, &k, &nv, BPF_NOEXIST);
		emit_skb(skb, &p, NV_KIND_UDP, NV_DIR_EGRESS, netns, ifindex, 0, len, 1);
		return 0;
	}
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, len);
	if (now - v->last_emit_ns >= NSEC_PER_SEC) {
		/* Counters since the last event; a racing CPU may move a packet to the next one. */
		__u64 pk = v->packets, by = v->bytes;
		v->last_emit_ns = now;
		__sync_fetch_and_sub(&v->packets, pk);
		__sync_fetch_and_sub(&v->bytes, by);
		emit_skb(skb, &p, NV_KIND_UDP, NV_DIR_EGRESS, netns, ifindex, 0, by, (__u32)pk);
	}
	return 0;
}

/* ---------- benchmark ---------- */

#define NV_SYNTH_BATCH 64

/* Writes NV_SYNTH_BATCH synthetic UDP events per run (BPF_PROG_TEST_RUN). */
SEC("raw_tp/nv_synth")
int nv_synth(void *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	for (int i = 0; i < NV_SYNTH_BATCH; i++) {
		struct nv_skb_event *e = bpf_ringbuf_reserve(&NV_EVENTS, sizeof(*e), 0);
		if (!e) {
			count(NV_KIND_UDP);
			continue;
		}
		__builtin_memset(e, 0, sizeof(*e));
		e->hdr.ts_ns = now;
		e->hdr.kind = NV_KIND_UDP;
		e->hdr.direction = NV_DIR_EGRESS;
		e->hdr.family = AF_INET;
		e->hdr.protocol = IPPROTO_UDP;
		e->hdr.netns = 1;
		e->hdr.ifindex = 1;
		e->hdr.sport = 40000 + i;
		e->hdr.dport = 9;
		e->hdr.saddr[0] = 10;
		e->hdr.daddr[0] = 10;
		e->pkt_len = 64;
		e->location = 64;
		e->packets = 1;
		bpf_ringbuf_submit(e, submit_flags());
		count(NV_STAT_SYNTH);
	}
	return 0;
}
