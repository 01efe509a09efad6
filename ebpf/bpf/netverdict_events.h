/* netverdict_events.h: the layout of every event the probes put in the ring
 * buffer, shared by all probes. The Rust mirror is ebpf/src/abi.rs, which asserts
 * the same sizes and offsets: change both together.
 *
 * All integers are in host byte order except addresses (network order bytes).
 *
 * ICMP echo (NV_KIND_ICMP, and NV_KIND_DROP of an echo): the header's protocol
 * is IPPROTO_ICMP (1) or IPPROTO_ICMPV6 (58), sport is the echo identifier,
 * dport the echo sequence number, and nv_skb_event.tcp_flags the ICMP type
 * (8/0 request/reply, 128/129 for ICMPv6).
 */
#ifndef NV_EVENTS_H
#define NV_EVENTS_H

/* Event kinds; also the index of the kind's loss counter in NV_STATS. */
#define NV_KIND_TCP 1  /* struct nv_tcp_event: a TCP socket state change */
#define NV_KIND_DROP 2 /* struct nv_skb_event: skb:kfree_skb of an IP packet */
#define NV_KIND_UDP 3  /* struct nv_skb_event: a UDP flow seen leaving a device */
#define NV_KIND_DNS 4  /* struct nv_skb_event: a DNS message (UDP/TCP 53) leaving a device */
#define NV_KIND_NAT 5  /* struct nv_nat_event: a forwarded SYN whose destination the kernel NATed */
#define NV_KIND_ICMP 6 /* struct nv_skb_event: an ICMP or ICMPv6 echo request or reply leaving a device */
#define NV_KIND_MAX 7

/* Other counters in NV_STATS. */
#define NV_STAT_NONIP_DROPS 8 /* kfree_skb of packets that are not IPv4/IPv6 TCP/UDP/SCTP or ICMP echo */
#define NV_STAT_SYNTH 9       /* events written by the benchmark's synthetic generator */
#define NV_STAT_IGNORED_DROPS 10 /* drops whose reason user space asked to ignore */
#define NV_STAT_DNS_NO_PAYLOAD 11 /* DNS packets whose message is not in the linear data */
#define NV_STAT_ICMP_OTHER 12 /* ICMP/ICMPv6 packets leaving a device that are not echo (errors, ND...) */
#define NV_STATS_LEN 16

#define NV_DIR_UNKNOWN 0
#define NV_DIR_EGRESS 1  /* leaving the netns / outbound connection */
#define NV_DIR_INGRESS 2 /* entering the netns / inbound connection */

/* Drop reasons below this value can be ignored through NV_DROP_IGNORE. */
#define NV_DROP_IGNORE_LEN 1024

/* Bytes of DNS message (after the UDP header or TCP length prefix) copied. */
#define NV_DNS_PAYLOAD_MAX 512

struct nv_hdr {
	__u64 ts_ns;     /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 sock_id;   /* opaque id of the socket (0: none), links attempt and outcome */
	__u16 kind;      /* NV_KIND_* */
	__u8 direction;  /* NV_DIR_* */
	__u8 family;     /* AF_INET (2) or AF_INET6 (10) */
	__u8 protocol;   /* IPPROTO_TCP / UDP / SCTP */
	__u8 _pad0;
	__u16 _pad1;
	__u32 netns;     /* network namespace inode (ns.inum) */
	__u32 ifindex;   /* interface index in that netns, 0: unknown */
	__u16 sport;
	__u16 dport;
	__u32 _pad2;
	__u8 saddr[16];  /* IPv4: first 4 bytes */
	__u8 daddr[16];
};

/* nv_tcp_event.flags: the record also stands for the connection's attempt,
 * which was not reported on its own (at attempt_ts_ns). A successful connect
 * thus costs one record, not two. */
#define NV_TCP_WITH_ATTEMPT 1

/* A TCP state change: an attempt (-> SYN_SENT, reported on its own only when
 * its SYN is retransmitted or dropped) or an outcome (from SYN_SENT or
 * SYN_RECV, or a close with an error). */
struct nv_tcp_event {
	struct nv_hdr hdr;
	__u8 oldstate;   /* TCP_* from include/net/tcp_states.h (uapi-stable) */
	__u8 newstate;
	__u16 flags;     /* NV_TCP_* */
	__s32 sk_err;    /* sk->sk_err at the transition (ECONNREFUSED, ETIMEDOUT...) */
	__u32 retransmits; /* tcp_sock.total_retrans (SYN retransmits for SYN_SENT) */
	__u32 _pad1;
	__u64 attempt_ts_ns; /* with NV_TCP_WITH_ATTEMPT: when the attempt began */
};

struct nv_skb_event {
	struct nv_hdr hdr;
	__u32 reason;     /* DROP: enum skb_drop_reason value (name from BTF in user space) */
	__u32 pkt_len;    /* skb->len: the IP packet's length */
	__u64 location;   /* DROP: kernel address that freed the skb; UDP: bytes (IP lengths)
			   * since last event; ICMP: the packet's IP length */
	__u32 packets;    /* UDP: packets since last event; others 1 */
	__u16 payload_len;/* bytes of DNS message that follow this struct */
	__u8 tcp_flags;   /* TCP: flags byte of the header; ICMP echo: the ICMP type */
	__u8 _pad0;
	/* followed by payload_len bytes (0 or NV_DNS_PAYLOAD_MAX reserved) */
};

/* A TCP SYN leaving a device after the kernel changed its destination
 * (Service DNAT by kube-proxy, or the lab's nftables): the header's tuple is
 * the packet as it leaves (initiator -> backend), the original destination is
 * read from the packet's conntrack entry (its ORIGINAL tuple). */
struct nv_nat_event {
	struct nv_hdr hdr;
	__u8 orig_daddr[16]; /* network order; IPv4: first 4 bytes */
	__u16 orig_dport;    /* host order */
	__u16 _pad0;
	__u32 _pad1;
};

#endif
