//! The Rust mirror of `bpf/netverdict_events.h`: the raw layout of what the probes
//! write into the ring buffer, with compile-time size and offset checks, and
//! bounds-checked readers that never panic on short or garbage input.

use std::mem::{offset_of, size_of};

/// Event kind: a TCP socket state change ([`RawTcpEvent`]).
pub const KIND_TCP: u16 = 1;
/// Event kind: a dropped IP packet ([`RawSkbEvent`]).
pub const KIND_DROP: u16 = 2;
/// Event kind: a UDP flow leaving a device ([`RawSkbEvent`]).
pub const KIND_UDP: u16 = 3;
/// Event kind: a DNS message leaving a device ([`RawSkbEvent`] + payload).
pub const KIND_DNS: u16 = 4;
/// Event kind: a forwarded SYN whose destination conntrack translated
/// ([`RawNatEvent`]).
pub const KIND_NAT: u16 = 5;
/// Event kind: an ICMP or ICMPv6 echo request or reply leaving a device
/// ([`RawSkbEvent`]; the header's `sport` is the echo identifier, `dport` the
/// sequence number, `tcp_flags` the ICMP type).
pub const KIND_ICMP: u16 = 6;
/// `RawTcpEvent::flags`: the record also stands for the attempt of the
/// connection, not reported on its own (at `attempt_ts_ns`).
pub const TCP_WITH_ATTEMPT: u16 = 1;
/// Index in `NV_STATS` of the count of dropped packets that were not IP
/// TCP/UDP/SCTP or an ICMP echo.
pub const STAT_NONIP_DROPS: u32 = 8;
/// Index in `NV_STATS` of the count of synthetic events (benchmark).
pub const STAT_SYNTH: u32 = 9;
/// Index in `NV_STATS` of the count of drops not emitted because their reason
/// is ignored ([`crate::Config::ignored_drop_reasons`]).
pub const STAT_IGNORED_DROPS: u32 = 10;
/// Index in `NV_STATS` of the count of DNS packets (port 53) whose message was
/// not in the packet's linear data, so not decoded (mostly DNS over TCP).
pub const STAT_DNS_NO_PAYLOAD: u32 = 11;
/// Index in `NV_STATS` of the count of ICMP/ICMPv6 packets leaving a device
/// that were not echo requests or replies (errors, neighbour discovery):
/// not reported.
pub const STAT_ICMP_OTHER: u32 = 12;
/// Entries of the `NV_DROP_IGNORE` map (reason values below it can be ignored).
pub const DROP_IGNORE_LEN: u32 = 1024;
/// Bytes of DNS message the probes copy at most: the classic UDP limit, so
/// that the answers of a usual response arrive whole.
pub const DNS_PAYLOAD_MAX: usize = 512;

/// Header common to every event (`struct nv_hdr`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RawHdr {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Opaque socket id (0: none).
    pub sock_id: u64,
    /// `KIND_*`.
    pub kind: u16,
    /// 0 unknown, 1 egress/outbound, 2 ingress/inbound.
    pub direction: u8,
    /// AF_INET or AF_INET6.
    pub family: u8,
    /// IP protocol number.
    pub protocol: u8,
    /// Padding.
    pub pad0: u8,
    /// Padding.
    pub pad1: u16,
    /// Network namespace inode.
    pub netns: u32,
    /// Interface index (0: unknown).
    pub ifindex: u32,
    /// Source port, host order.
    pub sport: u16,
    /// Destination port, host order.
    pub dport: u16,
    /// Padding.
    pub pad2: u32,
    /// Source address (IPv4: first 4 bytes).
    pub saddr: [u8; 16],
    /// Destination address (IPv4: first 4 bytes).
    pub daddr: [u8; 16],
}

/// `struct nv_tcp_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RawTcpEvent {
    /// Common header.
    pub hdr: RawHdr,
    /// TCP state before.
    pub oldstate: u8,
    /// TCP state after.
    pub newstate: u8,
    /// `TCP_WITH_ATTEMPT`, or 0.
    pub flags: u16,
    /// `sk->sk_err` at the transition.
    pub sk_err: i32,
    /// `tcp_sock.total_retrans` (for failed attempts).
    pub retransmits: u32,
    /// Padding.
    pub pad1: u32,
    /// With `TCP_WITH_ATTEMPT`: when the attempt began.
    pub attempt_ts_ns: u64,
}

/// `struct nv_skb_event`, followed by `payload_len` bytes of DNS message.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RawSkbEvent {
    /// Common header.
    pub hdr: RawHdr,
    /// Drop reason value (drops only).
    pub reason: u32,
    /// `skb->len`.
    pub pkt_len: u32,
    /// Drops: the freeing kernel address; UDP: bytes (IP lengths) since the
    /// last event; ICMP: the packet's IP length.
    pub location: u64,
    /// UDP: packets since the last event; others 1.
    pub packets: u32,
    /// Bytes of DNS message following the struct.
    pub payload_len: u16,
    /// TCP flags byte; ICMP echo: the ICMP type.
    pub tcp_flags: u8,
    /// Padding.
    pub pad0: u8,
}

/// `struct nv_nat_event`: the header's tuple is the packet as it left
/// (initiator → backend), `orig_daddr:orig_dport` where the initiator sent it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RawNatEvent {
    /// Common header.
    pub hdr: RawHdr,
    /// The original destination address (network order; IPv4: first 4 bytes).
    pub orig_daddr: [u8; 16],
    /// The original destination port, host order.
    pub orig_dport: u16,
    /// Padding.
    pub pad0: u16,
    /// Padding.
    pub pad1: u32,
}

const _: () = {
    assert!(size_of::<RawNatEvent>() == 96);
    assert!(offset_of!(RawNatEvent, orig_daddr) == 72);
    assert!(offset_of!(RawNatEvent, orig_dport) == 88);
    assert!(size_of::<RawHdr>() == 72);
    assert!(offset_of!(RawHdr, kind) == 16);
    assert!(offset_of!(RawHdr, direction) == 18);
    assert!(offset_of!(RawHdr, family) == 19);
    assert!(offset_of!(RawHdr, protocol) == 20);
    assert!(offset_of!(RawHdr, netns) == 24);
    assert!(offset_of!(RawHdr, ifindex) == 28);
    assert!(offset_of!(RawHdr, sport) == 32);
    assert!(offset_of!(RawHdr, dport) == 34);
    assert!(offset_of!(RawHdr, saddr) == 40);
    assert!(offset_of!(RawHdr, daddr) == 56);
    assert!(size_of::<RawTcpEvent>() == 96);
    assert!(offset_of!(RawTcpEvent, oldstate) == 72);
    assert!(offset_of!(RawTcpEvent, flags) == 74);
    assert!(offset_of!(RawTcpEvent, attempt_ts_ns) == 88);
    assert!(offset_of!(RawTcpEvent, sk_err) == 76);
    assert!(offset_of!(RawTcpEvent, retransmits) == 80);
    assert!(size_of::<RawSkbEvent>() == 96);
    assert!(offset_of!(RawSkbEvent, reason) == 72);
    assert!(offset_of!(RawSkbEvent, pkt_len) == 76);
    assert!(offset_of!(RawSkbEvent, location) == 80);
    assert!(offset_of!(RawSkbEvent, packets) == 88);
    assert!(offset_of!(RawSkbEvent, payload_len) == 92);
    assert!(offset_of!(RawSkbEvent, tcp_flags) == 94);
};

/// Why a ring buffer record could not be read as an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    /// The record is shorter than the structure its kind announces.
    #[error("record of kind {kind} is {len} bytes, shorter than the {need} its layout needs")]
    Truncated {
        /// Kind read from the header (0 if the header itself is short).
        kind: u16,
        /// Record length.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The kind field names no known event.
    #[error("unknown event kind {0}")]
    UnknownKind(u16),
}

fn u8_at(b: &[u8], o: usize) -> u8 {
    b[o]
}
fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_ne_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_ne_bytes(a)
}
fn addr_at(b: &[u8], o: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[o..o + 16]);
    a
}

/// A record read from the ring buffer.
#[derive(Debug, Clone)]
pub enum RawEvent<'a> {
    /// `KIND_TCP`.
    Tcp(RawTcpEvent),
    /// `KIND_DROP`, `KIND_UDP`, `KIND_DNS` or `KIND_ICMP`, with the DNS
    /// payload bytes.
    Skb(RawSkbEvent, &'a [u8]),
    /// `KIND_NAT`.
    Nat(RawNatEvent),
}

/// Reads the kind of a record (0 if it is too short to have one).
pub fn kind_of(b: &[u8]) -> u16 {
    if b.len() >= size_of::<RawHdr>() {
        u16_at(b, offset_of!(RawHdr, kind))
    } else {
        0
    }
}

fn read_hdr(b: &[u8]) -> RawHdr {
    RawHdr {
        ts_ns: u64_at(b, offset_of!(RawHdr, ts_ns)),
        sock_id: u64_at(b, offset_of!(RawHdr, sock_id)),
        kind: u16_at(b, offset_of!(RawHdr, kind)),
        direction: u8_at(b, offset_of!(RawHdr, direction)),
        family: u8_at(b, offset_of!(RawHdr, family)),
        protocol: u8_at(b, offset_of!(RawHdr, protocol)),
        pad0: 0,
        pad1: 0,
        netns: u32_at(b, offset_of!(RawHdr, netns)),
        ifindex: u32_at(b, offset_of!(RawHdr, ifindex)),
        sport: u16_at(b, offset_of!(RawHdr, sport)),
        dport: u16_at(b, offset_of!(RawHdr, dport)),
        pad2: 0,
        saddr: addr_at(b, offset_of!(RawHdr, saddr)),
        daddr: addr_at(b, offset_of!(RawHdr, daddr)),
    }
}

/// Parses one ring buffer record; every length is checked first.
pub fn parse(b: &[u8]) -> Result<RawEvent<'_>, AbiError> {
    let kind = kind_of(b);
    if b.len() < size_of::<RawHdr>() {
        return Err(AbiError::Truncated {
            kind,
            len: b.len(),
            need: size_of::<RawHdr>(),
        });
    }
    let need = match kind {
        KIND_TCP => size_of::<RawTcpEvent>(),
        KIND_DROP | KIND_UDP | KIND_DNS | KIND_ICMP => size_of::<RawSkbEvent>(),
        KIND_NAT => size_of::<RawNatEvent>(),
        k => return Err(AbiError::UnknownKind(k)),
    };
    if b.len() < need {
        return Err(AbiError::Truncated {
            kind,
            len: b.len(),
            need,
        });
    }
    let hdr = read_hdr(b);
    if kind == KIND_TCP {
        return Ok(RawEvent::Tcp(RawTcpEvent {
            hdr,
            oldstate: u8_at(b, offset_of!(RawTcpEvent, oldstate)),
            newstate: u8_at(b, offset_of!(RawTcpEvent, newstate)),
            flags: u16_at(b, offset_of!(RawTcpEvent, flags)),
            sk_err: u32_at(b, offset_of!(RawTcpEvent, sk_err)) as i32,
            retransmits: u32_at(b, offset_of!(RawTcpEvent, retransmits)),
            pad1: 0,
            attempt_ts_ns: u64_at(b, offset_of!(RawTcpEvent, attempt_ts_ns)),
        }));
    }
    if kind == KIND_NAT {
        return Ok(RawEvent::Nat(RawNatEvent {
            hdr,
            orig_daddr: addr_at(b, offset_of!(RawNatEvent, orig_daddr)),
            orig_dport: u16_at(b, offset_of!(RawNatEvent, orig_dport)),
            pad0: 0,
            pad1: 0,
        }));
    }
    let ev = RawSkbEvent {
        hdr,
        reason: u32_at(b, offset_of!(RawSkbEvent, reason)),
        pkt_len: u32_at(b, offset_of!(RawSkbEvent, pkt_len)),
        location: u64_at(b, offset_of!(RawSkbEvent, location)),
        packets: u32_at(b, offset_of!(RawSkbEvent, packets)),
        payload_len: u16_at(b, offset_of!(RawSkbEvent, payload_len)),
        tcp_flags: u8_at(b, offset_of!(RawSkbEvent, tcp_flags)),
        pad0: 0,
    };
    let start = size_of::<RawSkbEvent>();
    let plen = usize::from(ev.payload_len).min(DNS_PAYLOAD_MAX);
    let end = start + plen;
    if b.len() < end {
        return Err(AbiError::Truncated {
            kind,
            len: b.len(),
            need: end,
        });
    }
    Ok(RawEvent::Skb(ev, &b[start..end]))
}

/// Encodes a header into bytes (tests and benchmarks build records with it).
pub fn encode_hdr(h: &RawHdr, out: &mut Vec<u8>) {
    out.extend_from_slice(&h.ts_ns.to_ne_bytes());
    out.extend_from_slice(&h.sock_id.to_ne_bytes());
    out.extend_from_slice(&h.kind.to_ne_bytes());
    out.extend_from_slice(&[h.direction, h.family, h.protocol, 0, 0, 0]);
    out.extend_from_slice(&h.netns.to_ne_bytes());
    out.extend_from_slice(&h.ifindex.to_ne_bytes());
    out.extend_from_slice(&h.sport.to_ne_bytes());
    out.extend_from_slice(&h.dport.to_ne_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&h.saddr);
    out.extend_from_slice(&h.daddr);
}

/// Encodes a TCP event into bytes.
pub fn encode_tcp(e: &RawTcpEvent) -> Vec<u8> {
    let mut v = Vec::with_capacity(size_of::<RawTcpEvent>());
    encode_hdr(&e.hdr, &mut v);
    v.extend_from_slice(&[e.oldstate, e.newstate]);
    v.extend_from_slice(&e.flags.to_ne_bytes());
    v.extend_from_slice(&e.sk_err.to_ne_bytes());
    v.extend_from_slice(&e.retransmits.to_ne_bytes());
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(&e.attempt_ts_ns.to_ne_bytes());
    v
}

/// Encodes a NAT event into bytes.
pub fn encode_nat(e: &RawNatEvent) -> Vec<u8> {
    let mut v = Vec::with_capacity(size_of::<RawNatEvent>());
    encode_hdr(&e.hdr, &mut v);
    v.extend_from_slice(&e.orig_daddr);
    v.extend_from_slice(&e.orig_dport.to_ne_bytes());
    v.extend_from_slice(&[0; 6]);
    v
}

/// Encodes an skb event and its payload into bytes.
pub fn encode_skb(e: &RawSkbEvent, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(size_of::<RawSkbEvent>() + payload.len());
    encode_hdr(&e.hdr, &mut v);
    v.extend_from_slice(&e.reason.to_ne_bytes());
    v.extend_from_slice(&e.pkt_len.to_ne_bytes());
    v.extend_from_slice(&e.location.to_ne_bytes());
    v.extend_from_slice(&e.packets.to_ne_bytes());
    v.extend_from_slice(&e.payload_len.to_ne_bytes());
    v.extend_from_slice(&[e.tcp_flags, 0]);
    v.extend_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_tcp() {
        let mut e = RawTcpEvent::default();
        e.hdr.kind = KIND_TCP;
        e.hdr.sport = 1234;
        e.hdr.netns = 42;
        e.newstate = 1;
        e.sk_err = -3;
        let b = encode_tcp(&e);
        assert_eq!(b.len(), size_of::<RawTcpEvent>());
        match parse(&b).unwrap() {
            RawEvent::Tcp(t) => {
                assert_eq!(t.hdr.sport, 1234);
                assert_eq!(t.hdr.netns, 42);
                assert_eq!(t.newstate, 1);
                assert_eq!(t.sk_err, -3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(matches!(parse(&[0; 10]), Err(AbiError::Truncated { .. })));
        let mut e = RawTcpEvent::default();
        e.hdr.kind = KIND_TCP;
        let b = encode_tcp(&e);
        assert!(matches!(parse(&b[..90]), Err(AbiError::Truncated { .. })));
        e.hdr.kind = 99;
        assert_eq!(
            parse(&encode_tcp(&e)).unwrap_err(),
            AbiError::UnknownKind(99)
        );
        let mut s = RawSkbEvent::default();
        s.hdr.kind = KIND_DNS;
        s.payload_len = 20;
        let b = encode_skb(&s, &[1; 10]);
        assert!(matches!(
            parse(&b),
            Err(AbiError::Truncated { need: 116, .. })
        ));
    }
}
