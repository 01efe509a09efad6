//! The typed events the collector consumes, and the decoder that turns a raw
//! ring buffer record (see [`crate::abi`]) into one: addresses, TCP outcome
//! classification, drop reason names, DNS decoding, wall-clock time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Serialize, Serializer};

use crate::abi::{self, RawEvent, RawHdr, RawSkbEvent, RawTcpEvent};
use crate::btf::DropReasons;
use crate::dns::{self, DnsMessage};
use crate::kallsyms::KernelSymbols;

/// The kinds of events, also the keys of the loss counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// TCP attempts and outcomes.
    Tcp,
    /// Kernel drops.
    Drop,
    /// UDP flows.
    Udp,
    /// DNS messages.
    Dns,
    /// Destinations translated by the kernel (Service DNAT).
    Nat,
    /// ICMP echo requests and replies.
    Icmp,
    /// A record whose kind could not be read.
    Unknown,
}

impl EventKind {
    /// Every kind the probes emit.
    pub const ALL: [EventKind; 6] = [
        EventKind::Tcp,
        EventKind::Drop,
        EventKind::Udp,
        EventKind::Dns,
        EventKind::Nat,
        EventKind::Icmp,
    ];

    /// The kind number in the probes' ABI.
    pub fn abi(self) -> u16 {
        match self {
            EventKind::Tcp => abi::KIND_TCP,
            EventKind::Drop => abi::KIND_DROP,
            EventKind::Udp => abi::KIND_UDP,
            EventKind::Dns => abi::KIND_DNS,
            EventKind::Nat => abi::KIND_NAT,
            EventKind::Icmp => abi::KIND_ICMP,
            EventKind::Unknown => 0,
        }
    }

    /// The kind of an ABI kind number.
    pub fn from_abi(k: u16) -> EventKind {
        match k {
            abi::KIND_TCP => EventKind::Tcp,
            abi::KIND_DROP => EventKind::Drop,
            abi::KIND_UDP => EventKind::Udp,
            abi::KIND_DNS => EventKind::Dns,
            abi::KIND_NAT => EventKind::Nat,
            abi::KIND_ICMP => EventKind::Icmp,
            _ => EventKind::Unknown,
        }
    }
}

/// Where the observing socket or device saw a packet or connection, relative
/// to its network namespace: leaving it (the initiator's side) or entering it
/// (the responder's side). The one definition of the concept from the probes
/// to the collector's observations; the protobuf `TrafficDirection` is its
/// wire form. (Not a policy direction: that is `netverdict_policy::Direction`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficDirection {
    /// Not known (e.g. a drop of a forwarded packet before routing).
    Unknown,
    /// Leaving the namespace's socket or device; outbound connection.
    Egress,
    /// Entering the namespace; inbound connection.
    Ingress,
}

impl TrafficDirection {
    fn from_abi(d: u8) -> TrafficDirection {
        match d {
            1 => TrafficDirection::Egress,
            2 => TrafficDirection::Ingress,
            _ => TrafficDirection::Unknown,
        }
    }
}

/// The IP protocol of a packet or socket, as the kernel reports it (the IP
/// header's protocol number): the transports policy knows, or any other.
/// Policy's `netverdict_policy::Protocol` is the subset NetworkPolicy can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IpProtocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
    /// ICMP (1), IPv4's.
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
    /// Any other IP protocol number.
    Other(u8),
}

impl IpProtocol {
    fn from_abi(p: u8) -> IpProtocol {
        match p {
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            132 => IpProtocol::Sctp,
            1 => IpProtocol::Icmp,
            58 => IpProtocol::Icmpv6,
            n => IpProtocol::Other(n),
        }
    }

    /// The IANA protocol number, as in the IP header.
    pub fn number(self) -> u8 {
        match self {
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Sctp => 132,
            IpProtocol::Icmp => 1,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Other(n) => n,
        }
    }

    /// ICMP or ICMPv6: no ports.
    pub fn is_icmp(self) -> bool {
        matches!(self, IpProtocol::Icmp | IpProtocol::Icmpv6)
    }
}

/// Which half of an ICMP echo exchange a packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EchoKind {
    /// ICMP type 8, ICMPv6 type 128.
    Request,
    /// ICMP type 0, ICMPv6 type 129.
    Reply,
}

/// An ICMP or ICMPv6 echo request or reply: what pairs a reply with its
/// request (with the two addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct IcmpEcho {
    /// Request or reply.
    pub kind: EchoKind,
    /// The echo identifier (a ping socket's "port").
    pub id: u16,
    /// The echo sequence number.
    pub seq: u16,
}

impl IcmpEcho {
    /// The echo of a packet of `protocol` with ICMP `icmp_type`, identifier
    /// and sequence; None when it is not an echo request or reply.
    pub fn of(protocol: IpProtocol, icmp_type: u8, id: u16, seq: u16) -> Option<IcmpEcho> {
        let kind = match (protocol, icmp_type) {
            (IpProtocol::Icmp, 8) | (IpProtocol::Icmpv6, 128) => EchoKind::Request,
            (IpProtocol::Icmp, 0) | (IpProtocol::Icmpv6, 129) => EchoKind::Reply,
            _ => return None,
        };
        Some(IcmpEcho { kind, id, seq })
    }
}

/// Source and destination of a packet or connection (for a socket: local and
/// remote ends). ICMP has no ports: both are 0 (an echo's identifier and
/// sequence are in [`IcmpEcho`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct FiveTuple {
    /// IP protocol.
    pub protocol: IpProtocol,
    /// Source (local) address and port.
    pub src: SocketAddr,
    /// Destination (remote) address and port.
    pub dst: SocketAddr,
}

/// What every event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Meta {
    /// Wall-clock time of the event (from the monotonic stamp).
    #[serde(serialize_with = "ser_time")]
    pub time: SystemTime,
    /// Kernel monotonic time of the event, ns (CLOCK_MONOTONIC).
    pub mono_ns: u64,
    /// Network namespace inode number (`ls -L -i /proc/<pid>/ns/net`, `/run/netns/<name>`).
    pub netns: u32,
    /// Interface index in that namespace, if known.
    pub ifindex: Option<u32>,
    /// Where the packet or connection was seen, where known.
    pub direction: TrafficDirection,
}

fn ser_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_nanos(*t))
}

/// How a TCP connection attempt ended (or an established connection failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpOutcome {
    /// Outbound: SYN answered, connection established.
    Established,
    /// Inbound: handshake completed, connection accepted.
    Accepted,
    /// Outbound: answered with a RST (ECONNREFUSED).
    Refused,
    /// No answer: SYNs retransmitted until the kernel (ETIMEDOUT) or the
    /// application (socket closed) gave up.
    NoAnswer,
    /// An ICMP error made the attempt fail (host/network unreachable...).
    Unreachable,
    /// A connection (or inbound handshake) was reset.
    Reset,
    /// Any other error; see `errno`.
    Failed,
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A TCP connection attempt: outbound SYN sent (connect) or inbound
    /// handshake received (direction says which). Its time is when the
    /// attempt began. It comes just before its outcome, or on its own,
    /// earlier, as soon as the SYN is retransmitted (no answer yet) or dropped.
    TcpAttempt {
        /// Common fields.
        #[serde(flatten)]
        meta: Meta,
        /// Initiator → responder: local → remote for outbound (egress),
        /// remote → local for inbound (ingress).
        tuple: FiveTuple,
        /// Opaque socket id, equal in the attempt and its outcome.
        sock_id: u64,
    },
    /// The outcome of a TCP attempt, or the reset of a connection.
    TcpOutcome {
        /// Common fields.
        #[serde(flatten)]
        meta: Meta,
        /// As for `TcpAttempt`: initiator → responder when the direction is
        /// known, else local → remote.
        tuple: FiveTuple,
        /// Opaque socket id, equal in the attempt and its outcome.
        sock_id: u64,
        /// What happened.
        outcome: TcpOutcome,
        /// `sk_err` of the socket (0, ECONNREFUSED, ETIMEDOUT...).
        errno: i32,
        /// Retransmitted segments (for an attempt: SYN retransmits).
        retransmits: u32,
        /// Kernel TCP state before (2 SYN_SENT, 3 SYN_RECV, 1 ESTABLISHED...).
        old_state: u8,
        /// Kernel TCP state after.
        new_state: u8,
    },
    /// A UDP flow seen leaving a device: first packet, then at most one event a
    /// second with the packets and bytes since the previous one.
    Udp {
        /// Common fields.
        #[serde(flatten)]
        meta: Meta,
        /// Source → destination.
        tuple: FiveTuple,
        /// Packets since the previous event of the flow.
        packets: u32,
        /// Bytes (IP lengths) since the previous event of the flow.
        bytes: u64,
    },
    /// An ICMP or ICMPv6 echo request or reply seen leaving a device (each
    /// one, at each device it leaves).
    Icmp {
        /// Common fields.
        #[serde(flatten)]
        meta: Meta,
        /// Sender → receiver of this packet (ports 0).
        tuple: FiveTuple,
        /// Request or reply, identifier and sequence.
        echo: IcmpEcho,
        /// The packet's IP length (headers included, link layer excluded).
        len: u32,
    },
    /// A DNS message (UDP or TCP port 53) seen leaving a device.
    Dns {
        /// Common fields.
        #[serde(flatten)]
        meta: Meta,
        /// Source → destination.
        tuple: FiveTuple,
        /// The decoded message.
        message: DnsMessage,
    },
    /// A packet freed by the kernel as dropped (skb:kfree_skb).
    Drop {
        /// Common fields.
        #[serde(flatten)]
        meta: Meta,
        /// Source → destination, parsed from the packet.
        tuple: FiveTuple,
        /// Drop reason name from the kernel's BTF (`NETFILTER_DROP`...);
        /// `None` on kernels without reasons or for an unnamed value.
        #[serde(serialize_with = "ser_reason")]
        reason: Option<Arc<str>>,
        /// Drop reason value.
        reason_code: u32,
        /// Packet length (skb->len).
        len: u32,
        /// Kernel address of the function that dropped it.
        location: u64,
        /// The kernel function at `location`, from `/proc/kallsyms` (`None`
        /// when the symbols could not be read).
        #[serde(serialize_with = "ser_reason")]
        location_symbol: Option<Arc<str>>,
        /// TCP flags of the dropped segment (0 for other protocols).
        tcp_flags: u8,
        /// The DNS message in the packet, if it was DNS (name of a dropped query).
        dns: Option<DnsMessage>,
        /// The ICMP echo the packet was, if it was one.
        icmp: Option<IcmpEcho>,
    },
    /// A connection request (TCP SYN) leaving a device after the kernel
    /// translated its destination (Service DNAT): where it really goes.
    Nat {
        /// Common fields.
        #[serde(flatten)]
        meta: Meta,
        /// Initiator → the translated destination (the Service's backend), as
        /// the packet leaves.
        tuple: FiveTuple,
        /// Where the initiator sent it (the Service's address and port).
        original_dst: SocketAddr,
    },
}

fn ser_reason<S: Serializer>(r: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => s.serialize_str(r),
        None => s.serialize_none(),
    }
}

impl Event {
    /// The common fields.
    pub fn meta(&self) -> &Meta {
        match self {
            Event::TcpAttempt { meta, .. }
            | Event::TcpOutcome { meta, .. }
            | Event::Udp { meta, .. }
            | Event::Icmp { meta, .. }
            | Event::Dns { meta, .. }
            | Event::Drop { meta, .. }
            | Event::Nat { meta, .. } => meta,
        }
    }

    /// The 5-tuple.
    pub fn tuple(&self) -> &FiveTuple {
        match self {
            Event::TcpAttempt { tuple, .. }
            | Event::TcpOutcome { tuple, .. }
            | Event::Udp { tuple, .. }
            | Event::Icmp { tuple, .. }
            | Event::Dns { tuple, .. }
            | Event::Drop { tuple, .. }
            | Event::Nat { tuple, .. } => tuple,
        }
    }

    /// The kind (loss counter key) of the event.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::TcpAttempt { .. } | Event::TcpOutcome { .. } => EventKind::Tcp,
            Event::Udp { .. } => EventKind::Udp,
            Event::Icmp { .. } => EventKind::Icmp,
            Event::Dns { .. } => EventKind::Dns,
            Event::Drop { .. } => EventKind::Drop,
            Event::Nat { .. } => EventKind::Nat,
        }
    }
}

/// Why a record was not turned into an event (counted as a decode error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record does not match the ABI.
    #[error(transparent)]
    Abi(#[from] abi::AbiError),
    /// The address family is neither AF_INET nor AF_INET6.
    #[error("unknown address family {0}")]
    Family(u8),
    /// A TCP state change that is neither an attempt nor an outcome.
    #[error("TCP transition {0} -> {1} is not an attempt or outcome")]
    TcpTransition(u8, u8),
    /// A DNS event without a decodable DNS message.
    #[error("DNS payload: {0}")]
    Dns(#[from] dns::DnsError),
    /// An ICMP event that is not an echo request or reply of its protocol.
    #[error("ICMP event of protocol {protocol} and type {icmp_type} is not an echo")]
    NotEcho {
        /// The IP protocol number.
        protocol: u8,
        /// The ICMP type.
        icmp_type: u8,
    },
}

// TCP states (include/net/tcp_states.h, user ABI).
const TCP_ESTABLISHED: u8 = 1;
const TCP_SYN_SENT: u8 = 2;
const TCP_SYN_RECV: u8 = 3;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;

const ECONNRESET: i32 = 104;
const EPIPE: i32 = 32;
const ETIMEDOUT: i32 = 110;
const ECONNREFUSED: i32 = 111;
const EHOSTUNREACH: i32 = 113;
const ENETUNREACH: i32 = 101;
const EHOSTDOWN: i32 = 112;

/// Turns raw records into [`Event`]s: holds the drop reason names and the
/// offset from the monotonic clock to wall time.
#[derive(Debug, Clone)]
pub struct Decoder {
    reasons: Arc<DropReasons>,
    symbols: Arc<KernelSymbols>,
    /// Wall-clock ns minus monotonic ns, sampled at creation.
    wall_offset_ns: i128,
}

impl Decoder {
    /// A decoder using the given reason names and the current clock offset.
    pub fn new(reasons: Arc<DropReasons>) -> Decoder {
        Decoder {
            reasons,
            symbols: Arc::new(KernelSymbols::default()),
            wall_offset_ns: crate::clock::wall_minus_monotonic_ns(),
        }
    }

    /// This decoder naming drop locations with `symbols`.
    pub fn with_symbols(mut self, symbols: Arc<KernelSymbols>) -> Decoder {
        self.symbols = symbols;
        self
    }

    /// The drop reason names in use.
    pub fn reasons(&self) -> &Arc<DropReasons> {
        &self.reasons
    }

    /// Converts a monotonic stamp to wall time.
    pub fn wall_time(&self, mono_ns: u64) -> SystemTime {
        let ns = i128::from(mono_ns) + self.wall_offset_ns;
        let ns = u64::try_from(ns.max(0)).unwrap_or(u64::MAX);
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
    }

    /// Decodes one record into one event, or two: a TCP outcome record may
    /// also stand for its attempt (not reported on its own), which then
    /// comes first.
    pub fn decode(&self, record: &[u8]) -> Result<(Event, Option<Event>), DecodeError> {
        match abi::parse(record)? {
            RawEvent::Tcp(t) => self.tcp(&t),
            RawEvent::Skb(s, payload) => self.skb(&s, payload).map(|e| (e, None)),
            RawEvent::Nat(n) => self.nat(&n).map(|e| (e, None)),
        }
    }

    fn nat(&self, n: &abi::RawNatEvent) -> Result<Event, DecodeError> {
        let tuple = tuple(&n.hdr)?;
        let ip = match tuple.dst {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(
                n.orig_daddr[0],
                n.orig_daddr[1],
                n.orig_daddr[2],
                n.orig_daddr[3],
            )),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n.orig_daddr)),
        };
        Ok(Event::Nat {
            meta: self.meta(&n.hdr),
            tuple,
            original_dst: SocketAddr::new(ip, n.orig_dport),
        })
    }

    fn meta(&self, h: &RawHdr) -> Meta {
        Meta {
            time: self.wall_time(h.ts_ns),
            mono_ns: h.ts_ns,
            netns: h.netns,
            ifindex: (h.ifindex != 0).then_some(h.ifindex),
            direction: TrafficDirection::from_abi(h.direction),
        }
    }

    fn tcp(&self, t: &RawTcpEvent) -> Result<(Event, Option<Event>), DecodeError> {
        let event = self.tcp_one(t)?;
        if t.flags & abi::TCP_WITH_ATTEMPT == 0 {
            return Ok((event, None));
        }
        let Event::TcpOutcome {
            meta,
            tuple,
            sock_id,
            ..
        } = &event
        else {
            return Ok((event, None));
        };
        let attempt = Event::TcpAttempt {
            meta: Meta {
                time: self.wall_time(t.attempt_ts_ns),
                mono_ns: t.attempt_ts_ns,
                ..meta.clone()
            },
            tuple: *tuple,
            sock_id: *sock_id,
        };
        Ok((attempt, Some(event)))
    }

    fn tcp_one(&self, t: &RawTcpEvent) -> Result<Event, DecodeError> {
        let meta = self.meta(&t.hdr);
        let mut tuple = tuple(&t.hdr)?;
        // The probe reports local -> remote; an inbound connection is
        // reported initiator -> responder, as its packets (and drops) are.
        if meta.direction == TrafficDirection::Ingress {
            std::mem::swap(&mut tuple.src, &mut tuple.dst);
        }
        let sock_id = t.hdr.sock_id;
        let (old, new) = (t.oldstate, t.newstate);
        if new == TCP_SYN_SENT || (old == TCP_LISTEN && new == TCP_SYN_RECV) {
            return Ok(Event::TcpAttempt {
                meta,
                tuple,
                sock_id,
            });
        }
        let outcome = match (old, new, t.sk_err) {
            (TCP_SYN_SENT, TCP_ESTABLISHED, _) => TcpOutcome::Established,
            (TCP_SYN_RECV, TCP_ESTABLISHED, _) => TcpOutcome::Accepted,
            (TCP_SYN_SENT, TCP_CLOSE, ECONNREFUSED) => TcpOutcome::Refused,
            (TCP_SYN_SENT, TCP_CLOSE, ETIMEDOUT | 0) => TcpOutcome::NoAnswer,
            (TCP_SYN_SENT, TCP_CLOSE, EHOSTUNREACH | ENETUNREACH | EHOSTDOWN) => {
                TcpOutcome::Unreachable
            }
            (TCP_SYN_RECV, TCP_CLOSE, _) => TcpOutcome::Reset,
            (_, TCP_CLOSE, ECONNRESET | EPIPE) => TcpOutcome::Reset,
            (_, TCP_CLOSE, e) if e != 0 => TcpOutcome::Failed,
            _ => return Err(DecodeError::TcpTransition(old, new)),
        };
        Ok(Event::TcpOutcome {
            meta,
            tuple,
            sock_id,
            outcome,
            errno: t.sk_err,
            retransmits: t.retransmits,
            old_state: old,
            new_state: new,
        })
    }

    fn skb(&self, s: &RawSkbEvent, payload: &[u8]) -> Result<Event, DecodeError> {
        let meta = self.meta(&s.hdr);
        let tuple = tuple(&s.hdr)?;
        // An ICMP packet's "ports" are its echo identifier and sequence.
        let icmp = IcmpEcho::of(tuple.protocol, s.tcp_flags, s.hdr.sport, s.hdr.dport);
        match s.hdr.kind {
            abi::KIND_ICMP => Ok(Event::Icmp {
                meta,
                tuple,
                echo: icmp.ok_or(DecodeError::NotEcho {
                    protocol: s.hdr.protocol,
                    icmp_type: s.tcp_flags,
                })?,
                len: u32::try_from(s.location).unwrap_or(u32::MAX),
            }),
            abi::KIND_UDP => Ok(Event::Udp {
                meta,
                tuple,
                packets: s.packets,
                bytes: s.location,
            }),
            abi::KIND_DNS => Ok(Event::Dns {
                meta,
                tuple,
                message: dns::parse(payload)?,
            }),
            _ => Ok(Event::Drop {
                meta,
                tuple,
                reason: self.reasons.name(s.reason),
                reason_code: s.reason,
                len: s.pkt_len,
                location: s.location,
                location_symbol: self.symbols.name(s.location),
                tcp_flags: s.tcp_flags,
                dns: if payload.is_empty() {
                    None
                } else {
                    dns::parse(payload).ok()
                },
                icmp,
            }),
        }
    }
}

fn tuple(h: &RawHdr) -> Result<FiveTuple, DecodeError> {
    let (src, dst) = match h.family {
        2 => {
            let s = Ipv4Addr::new(h.saddr[0], h.saddr[1], h.saddr[2], h.saddr[3]);
            let d = Ipv4Addr::new(h.daddr[0], h.daddr[1], h.daddr[2], h.daddr[3]);
            (IpAddr::V4(s), IpAddr::V4(d))
        }
        10 => (
            IpAddr::V6(Ipv6Addr::from(h.saddr)),
            IpAddr::V6(Ipv6Addr::from(h.daddr)),
        ),
        f => return Err(DecodeError::Family(f)),
    };
    let protocol = IpProtocol::from_abi(h.protocol);
    let (sport, dport) = if protocol.is_icmp() {
        (0, 0)
    } else {
        (h.sport, h.dport)
    };
    Ok(FiveTuple {
        protocol,
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{encode_skb, encode_tcp};

    fn dec() -> Decoder {
        Decoder::new(Arc::new(DropReasons::from_pairs([(12, "NETFILTER_DROP")])))
    }

    fn tcp(old: u8, new: u8, err: i32) -> Vec<u8> {
        let mut e = RawTcpEvent::default();
        e.hdr.kind = abi::KIND_TCP;
        e.hdr.family = 2;
        e.hdr.protocol = 6;
        e.hdr.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        e.hdr.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        e.hdr.sport = 40000;
        e.hdr.dport = 80;
        e.oldstate = old;
        e.newstate = new;
        e.sk_err = err;
        encode_tcp(&e)
    }

    fn outcome(b: &[u8]) -> TcpOutcome {
        match dec().decode(b).unwrap().0 {
            Event::TcpOutcome { outcome, .. } => outcome,
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn classifies_tcp() {
        assert!(matches!(
            dec().decode(&tcp(7, 2, 0)).unwrap().0,
            Event::TcpAttempt { .. }
        ));
        assert!(matches!(
            dec().decode(&tcp(10, 3, 0)).unwrap().0,
            Event::TcpAttempt { .. }
        ));
        assert_eq!(outcome(&tcp(2, 1, 0)), TcpOutcome::Established);
        assert_eq!(outcome(&tcp(3, 1, 0)), TcpOutcome::Accepted);
        assert_eq!(outcome(&tcp(2, 7, 111)), TcpOutcome::Refused);
        assert_eq!(outcome(&tcp(2, 7, 110)), TcpOutcome::NoAnswer);
        assert_eq!(outcome(&tcp(2, 7, 0)), TcpOutcome::NoAnswer);
        assert_eq!(outcome(&tcp(2, 7, 113)), TcpOutcome::Unreachable);
        assert_eq!(outcome(&tcp(1, 7, 104)), TcpOutcome::Reset);
        assert!(dec().decode(&tcp(1, 4, 0)).is_err());
        let e = dec().decode(&tcp(2, 1, 0)).unwrap().0;
        assert_eq!(e.tuple().src, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(e.tuple().dst, "10.0.0.2:80".parse().unwrap());
    }

    #[test]
    fn outcome_record_with_attempt_gives_both() {
        let mut b = tcp(2, 1, 0);
        b[74] = abi::TCP_WITH_ATTEMPT as u8;
        b[88..96].copy_from_slice(&5u64.to_ne_bytes());
        let (first, second) = dec().decode(&b).unwrap();
        let Event::TcpAttempt { meta, tuple, .. } = &first else {
            panic!("{first:?}")
        };
        assert_eq!(meta.mono_ns, 5);
        let second = second.expect("outcome");
        assert_eq!(second.tuple(), tuple);
        assert!(matches!(
            second,
            Event::TcpOutcome {
                outcome: TcpOutcome::Established,
                ..
            }
        ));
        // Inbound: reported initiator -> responder.
        b[18] = 2;
        let (first, _) = dec().decode(&b).unwrap();
        assert_eq!(first.tuple().src, "10.0.0.2:80".parse().unwrap());
    }

    #[test]
    fn decodes_drop_with_reason_and_dns() {
        let mut s = RawSkbEvent::default();
        s.hdr.kind = abi::KIND_DROP;
        s.hdr.family = 10;
        s.hdr.protocol = 17;
        s.hdr.daddr[15] = 1;
        s.hdr.dport = 53;
        s.reason = 12;
        let q = dns::build_query(9, "dropped.example", 1);
        s.payload_len = q.len() as u16;
        let e = dec().decode(&encode_skb(&s, &q)).unwrap().0;
        let Event::Drop {
            reason, dns, tuple, ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(reason.as_deref(), Some("NETFILTER_DROP"));
        assert_eq!(
            dns.as_ref().unwrap().name.as_deref(),
            Some("dropped.example")
        );
        assert_eq!(tuple.dst, "[::1]:53".parse().unwrap());
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["kind"], "drop");
        assert_eq!(j["reason"], "NETFILTER_DROP");
        assert_eq!(j["tuple"]["protocol"], "udp");
        assert!(j["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn decodes_icmp_echoes_without_ports_and_refuses_other_types() {
        let mut s = RawSkbEvent::default();
        s.hdr.kind = abi::KIND_ICMP;
        s.hdr.family = 2;
        s.hdr.protocol = 1;
        s.hdr.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        s.hdr.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        s.hdr.sport = 0x1234; // identifier
        s.hdr.dport = 7; // sequence
        s.tcp_flags = 8;
        s.pkt_len = 98;
        s.location = 84;
        let e = dec().decode(&encode_skb(&s, &[])).unwrap().0;
        let Event::Icmp {
            tuple, echo, len, ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(tuple.protocol, IpProtocol::Icmp);
        assert_eq!(tuple.src, "10.0.0.1:0".parse().unwrap());
        assert_eq!(tuple.dst, "10.0.0.2:0".parse().unwrap());
        assert_eq!(
            *echo,
            IcmpEcho {
                kind: EchoKind::Request,
                id: 0x1234,
                seq: 7
            }
        );
        assert_eq!(*len, 84);
        assert_eq!(e.kind(), EventKind::Icmp);
        // ICMPv6 reply.
        s.hdr.family = 10;
        s.hdr.protocol = 58;
        s.tcp_flags = 129;
        let e = dec().decode(&encode_skb(&s, &[])).unwrap().0;
        assert!(matches!(
            e,
            Event::Icmp {
                echo: IcmpEcho {
                    kind: EchoKind::Reply,
                    ..
                },
                ..
            }
        ));
        // An IPv4 echo type under ICMPv6 is not an echo.
        s.tcp_flags = 8;
        assert_eq!(
            dec().decode(&encode_skb(&s, &[])).unwrap_err(),
            DecodeError::NotEcho {
                protocol: 58,
                icmp_type: 8
            }
        );
        // A dropped echo request says which echo it was.
        s.hdr.kind = abi::KIND_DROP;
        s.tcp_flags = 128;
        let e = dec().decode(&encode_skb(&s, &[])).unwrap().0;
        let Event::Drop { icmp, tuple, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(icmp.map(|i| (i.kind, i.seq)), Some((EchoKind::Request, 7)));
        assert_eq!(tuple.dst.port(), 0);
    }

    #[test]
    fn random_records_never_panic() {
        let d = dec();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 400) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if b.len() > 20 {
                b[16] = (next() % 7) as u8; // a valid kind most of the time
                b[17] = 0;
            }
            let _ = d.decode(&b);
        }
    }

    #[test]
    fn decodes_nat_and_names_drop_locations() {
        let mut n = abi::RawNatEvent::default();
        n.hdr.kind = abi::KIND_NAT;
        n.hdr.family = 2;
        n.hdr.protocol = 6;
        n.hdr.saddr[..4].copy_from_slice(&[10, 244, 2, 20]);
        n.hdr.daddr[..4].copy_from_slice(&[10, 244, 1, 10]);
        n.hdr.sport = 40000;
        n.hdr.dport = 8080;
        n.orig_daddr[..4].copy_from_slice(&[10, 96, 1, 10]);
        n.orig_dport = 80;
        let e = dec().decode(&abi::encode_nat(&n)).unwrap().0;
        let Event::Nat {
            tuple,
            original_dst,
            ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(tuple.dst, "10.244.1.10:8080".parse().unwrap());
        assert_eq!(*original_dst, "10.96.1.10:80".parse().unwrap());
        assert_eq!(e.kind(), EventKind::Nat);

        let symbols = KernelSymbols::parse("ffffffff81000000 T __dev_queue_xmit\n");
        let d = dec().with_symbols(Arc::new(symbols));
        let mut s = RawSkbEvent::default();
        s.hdr.kind = abi::KIND_DROP;
        s.hdr.family = 2;
        s.hdr.protocol = 6;
        s.location = 0xffff_ffff_8100_0360;
        let e = d.decode(&encode_skb(&s, &[])).unwrap().0;
        let Event::Drop {
            location_symbol, ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(location_symbol.as_deref(), Some("__dev_queue_xmit"));
    }

    #[test]
    fn garbage_family_is_an_error() {
        let mut b = tcp(2, 1, 0);
        b[19] = 99;
        assert_eq!(dec().decode(&b).unwrap_err(), DecodeError::Family(99));
    }
}
