//! Correlation: turns decoded kernel events into observations of flows.
//!
//! - A TCP attempt is held until its outcome arrives (established, refused,
//!   no answer...); kernel drops of its packets are added to it. Drops are
//!   matched by the initiator's socket (protocol, source address and port),
//!   because nftables sees a connection to a Service after DNAT: the drop's
//!   destination is the backend, and the observation keeps it as `backend`.
//! - A DNS query is held until its response (same client socket and id) or a
//!   timeout (no answer); a drop of the query marks it dropped, with the name
//!   asked for.
//! - A drop that belongs to no held flow is held for a moment by its socket: the
//!   probes may report a connect's attempt after its first SYN was dropped. An
//!   attempt or query from that socket adopts it; otherwise it becomes a
//!   dropped observation of its own when `expire` passes its hold time.
//! - The kernel's NAT of a connection (a forwarded SYN whose destination
//!   conntrack translated: the backend a Service's ClusterIP went to) joins
//!   the held attempt of its initiator's socket as `backend`; one that comes
//!   before its attempt (a successful connect is reported with its outcome,
//!   after its SYN left) waits for it like a drop, and is forgotten after the
//!   same hold.
//! - A DNS query seen leaving a second device (the node, after Service DNAT)
//!   keeps where the client sent it as `dst` and records where it went as
//!   `backend`.
//! - UDP flows become observations at once, with the packets and bytes the
//!   probes counted since the flow's previous event.
//! - An ICMP echo request (ICMP or ICMPv6) is held until its reply (same
//!   addresses, identifier and sequence): answered; a drop of the request
//!   (or of its reply): dropped, with the reason; neither within the ICMP
//!   timeout: no answer. Each echo is one observation of one packet (its
//!   bytes the request's length); aggregation sums them into a record. The
//!   probes see an echo leave every device it crosses (the pod's, then the
//!   node's), so an echo already held or reported stays known until its
//!   timeout, and its other sightings are absorbed, not counted twice.
//! - Each observation says how it was seen ([`SeenBy`]): through the
//!   initiator's socket, the responder's (an accepted connection, in the
//!   destination's namespace), or packets only.
//!
//! Nothing here reads a clock: `expire(now)` closes what timed out, so tests
//! drive time themselves.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use netverdict_ebpf::TrafficDirection;
use netverdict_ebpf::{DnsMessage, EchoKind, Event, FiveTuple, IcmpEcho, TcpOutcome};
use netverdict_policy::Protocol;
use netverdict_proto::v1::Outcome;
use rustc_hash::FxHashMap;

/// How the kernel showed a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeenBy {
    /// The initiator's socket: a connect (and its outcome) in the source's
    /// namespace.
    InitiatorSocket,
    /// The responder's socket: an accepted connection, in the destination's
    /// namespace.
    ResponderSocket,
    /// Packets only: devices they left, drops.
    Packets,
}

/// DNS details of an observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSeen {
    pub id: u16,
    /// The name asked for (lower case, no trailing dot), if it was readable.
    pub query: Option<String>,
    pub qtype: Option<u16>,
    /// The response code's name, None when no response was seen.
    pub rcode: Option<&'static str>,
    pub answers: u16,
}

/// One flow as the kernel saw it, before annotation.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    /// The network namespace the flow was seen in.
    pub netns: u32,
    /// Where the flow was seen: where it left (the initiator's namespace),
    /// where it arrived (the responder's), or not known (e.g. a drop in a
    /// routing namespace).
    pub direction: TrafficDirection,
    /// Through which socket, if any, the kernel showed the flow.
    pub seen_by: SeenBy,
    pub protocol: Protocol,
    /// Initiator.
    pub src: SocketAddr,
    /// Responder as the initiator addressed it (a Service IP before DNAT).
    pub dst: SocketAddr,
    /// The destination after DNAT, when the kernel revealed it (a drop of a
    /// packet after DNAT, the NAT of the connection's SYN, a DNS query seen
    /// after DNAT).
    pub backend: Option<SocketAddr>,
    pub outcome: Outcome,
    /// Packets the kernel dropped for this flow.
    pub drops: u32,
    /// The reason of the first drop (e.g. `NETFILTER_DROP`).
    pub drop_reason: Option<Arc<str>>,
    /// The kernel function where the first drop happened, when known.
    pub drop_location: Option<Arc<str>>,
    pub dns: Option<DnsSeen>,
    /// Packets the source sent, as counted (UDP: the probes' counters since
    /// the flow's previous event; ICMP: 1, the echo request; 0: not counted).
    pub packets: u64,
    /// The bytes of those packets (IP lengths).
    pub bytes: u64,
}

/// Correlation settings.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// A TCP attempt without outcome after this is reported without one.
    pub tcp: Duration,
    /// A DNS query without response after this is reported as no answer.
    pub dns: Duration,
    /// A drop no held flow claims waits this long for its attempt.
    pub orphan_drop: Duration,
    /// An ICMP echo request without reply after this is reported as no
    /// answer.
    pub icmp: Duration,
}

impl Timeouts {
    /// The longest correlation holds a flow before reporting it.
    pub fn longest(&self) -> Duration {
        self.tcp.max(self.dns).max(self.orphan_drop).max(self.icmp)
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: Duration::from_secs(150),
            dns: Duration::from_secs(5),
            orphan_drop: Duration::from_secs(3),
            icmp: Duration::from_secs(5),
        }
    }
}

/// Counters of what correlation saw and could not match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorrelationStats {
    /// Outcomes whose attempt was never seen (e.g. lost, or before start).
    pub outcomes_without_attempt: u64,
    /// Attempts reported without outcome after the timeout.
    pub attempts_timed_out: u64,
    /// DNS responses whose query was never seen.
    pub dns_responses_without_query: u64,
    /// Held flows reported before their outcome or response because the held
    /// flows reached their bound in bytes (the oldest go first).
    pub evicted: u64,
    /// NAT events that joined a connection (its backend).
    pub nat_joined: u64,
    /// NAT events no connection claimed within the hold.
    pub nat_unclaimed: u64,
    /// ICMP echo replies whose request was not held (never seen, or
    /// already reported as unanswered).
    pub icmp_replies_without_request: u64,
}

/// The default bound of what correlation holds: 32 MiB, a sixteenth of the
/// DaemonSet's memory limit (about 150,000 held attempts or queries).
pub const DEFAULT_MAX_BYTES: usize = 32 << 20;

type SocketKey = (Protocol, SocketAddr);

/// What a hash map entry costs beyond its key and value (control bytes and
/// spare capacity), roughly.
const MAP_OVERHEAD: usize = 16;
const TCP_ENTRY: usize = size_of::<(u64, Observation)>() + MAP_OVERHEAD;
const DNS_ENTRY: usize = size_of::<((SocketAddr, u16), Observation)>() + MAP_OVERHEAD;
const ORPHAN_ENTRY: usize = size_of::<(SocketKey, Observation)>() + MAP_OVERHEAD;
const NAT_ENTRY: usize =
    size_of::<(SocketKey, (SocketAddr, SocketAddr, SystemTime))>() + MAP_OVERHEAD;
const SOCKET_ENTRY: usize = size_of::<(SocketKey, Held)>() + MAP_OVERHEAD;
/// An echo held: its entry and, while it waits, its boxed observation.
const ICMP_ENTRY: usize = size_of::<(EchoKey, Echo)>() + size_of::<Observation>() + MAP_OVERHEAD;

/// An ICMP echo: the initiator's and responder's addresses, the identifier
/// and the sequence number.
type EchoKey = (IpAddr, IpAddr, u16, u16);

/// A held ICMP echo.
#[derive(Clone, Debug)]
enum Echo {
    /// The request, waiting for its reply.
    Waiting(Box<Observation>),
    /// Reported (answered or dropped); the echo's request was first seen at
    /// this time. Its sightings at other devices are absorbed until its
    /// timeout.
    Reported(SystemTime),
}

/// The key of the echo `echo` belongs to, seen going `src` → `dst`.
fn echo_key(echo: &IcmpEcho, tuple: &FiveTuple) -> EchoKey {
    let (src, dst) = (tuple.src.ip(), tuple.dst.ip());
    match echo.kind {
        EchoKind::Request => (src, dst, echo.id, echo.seq),
        EchoKind::Reply => (dst, src, echo.id, echo.seq),
    }
}

/// The bytes of the DNS name an observation holds.
fn name_bytes(obs: &Observation) -> usize {
    obs.dns
        .as_ref()
        .and_then(|d| d.query.as_ref())
        .map_or(0, String::capacity)
}

/// The correlation stage.
#[derive(Debug)]
pub struct Correlator {
    timeouts: Timeouts,
    /// What the held flows may take, estimated ([`Correlator::bytes`]).
    max_bytes: usize,
    /// The bytes of the DNS names held (in `dns` and `orphans`).
    names: usize,
    tcp: FxHashMap<u64, Observation>,
    /// Held TCP attempts and DNS queries by initiator socket, for drops.
    by_socket: FxHashMap<SocketKey, Held>,
    dns: FxHashMap<(SocketAddr, u16), Observation>,
    /// Drops no held flow claimed yet, by initiator socket.
    orphans: FxHashMap<SocketKey, Observation>,
    /// NATs no held flow claimed yet, by initiator socket: the original
    /// destination, the translated one, and when it was seen.
    nats: FxHashMap<SocketKey, (SocketAddr, SocketAddr, SystemTime)>,
    /// ICMP echoes held or recently reported.
    icmp: FxHashMap<EchoKey, Echo>,
    stats: CorrelationStats,
}

impl Default for Correlator {
    fn default() -> Self {
        Correlator::new(Timeouts::default())
    }
}

#[derive(Clone, Copy, Debug)]
enum Held {
    Tcp(u64),
    Dns(u16),
}

/// The kernel's IP protocol as the policy protocol it is, by IANA number;
/// None for protocols NetworkPolicy cannot name (not observed further).
fn protocol(tuple: &FiveTuple) -> Option<Protocol> {
    Protocol::from_number(tuple.protocol.number())
}

fn dns_seen(message: &DnsMessage) -> DnsSeen {
    DnsSeen {
        id: message.id,
        query: message.name.clone(),
        qtype: message.qtype,
        rcode: message.response.then(|| message.rcode.name()),
        answers: message.answers,
    }
}

impl Correlator {
    /// A correlator with the default bound ([`DEFAULT_MAX_BYTES`]).
    pub fn new(timeouts: Timeouts) -> Self {
        Correlator::with_bound(timeouts, DEFAULT_MAX_BYTES)
    }

    /// A correlator holding at most about `max_bytes` of flows.
    pub fn with_bound(timeouts: Timeouts, max_bytes: usize) -> Self {
        Correlator {
            timeouts,
            max_bytes,
            names: 0,
            tcp: FxHashMap::default(),
            by_socket: FxHashMap::default(),
            dns: FxHashMap::default(),
            orphans: FxHashMap::default(),
            nats: FxHashMap::default(),
            icmp: FxHashMap::default(),
            stats: CorrelationStats::default(),
        }
    }

    pub fn stats(&self) -> &CorrelationStats {
        &self.stats
    }

    /// The memory the held flows take, estimated: their entries and the DNS
    /// names they hold.
    pub fn bytes(&self) -> usize {
        self.names
            + self.tcp.len() * TCP_ENTRY
            + self.dns.len() * DNS_ENTRY
            + self.orphans.len() * ORPHAN_ENTRY
            + self.nats.len() * NAT_ENTRY
            + self.by_socket.len() * SOCKET_ENTRY
            + self.icmp.len() * ICMP_ENTRY
    }

    /// Flows held, waiting for an outcome or response (ICMP echoes reported
    /// but still remembered included).
    pub fn pending(&self) -> usize {
        self.tcp.len() + self.dns.len() + self.orphans.len() + self.icmp.len()
    }

    /// A new held flow adopts the drops and the NAT its socket had before it
    /// was seen.
    fn adopt_orphan(&mut self, obs: &mut Observation) {
        if let Some((original, backend, _)) = self.nats.remove(&(obs.protocol, obs.src)) {
            if original == obs.dst {
                obs.backend = Some(backend);
                self.stats.nat_joined += 1;
            } else {
                self.stats.nat_unclaimed += 1;
            }
        }
        if let Some(orphan) = self.orphans.remove(&(obs.protocol, obs.src)) {
            self.names -= name_bytes(&orphan);
            obs.drops = obs.drops.saturating_add(orphan.drops);
            obs.drop_reason = orphan.drop_reason;
            obs.drop_location = orphan.drop_location;
            obs.backend = orphan
                .backend
                .or(Some(orphan.dst))
                .filter(|b| *b != obs.dst);
            obs.last_seen = obs.last_seen.max(orphan.last_seen);
        }
    }

    /// Takes one event; completed observations are pushed to `out`.
    pub fn push(&mut self, event: &Event, out: &mut Vec<Observation>) {
        let meta = event.meta();
        let tuple = event.tuple();
        let Some(proto) = protocol(tuple) else { return };
        let seen_by = match (event, meta.direction) {
            (Event::TcpAttempt { .. } | Event::TcpOutcome { .. }, TrafficDirection::Egress) => {
                SeenBy::InitiatorSocket
            }
            (Event::TcpAttempt { .. } | Event::TcpOutcome { .. }, TrafficDirection::Ingress) => {
                SeenBy::ResponderSocket
            }
            _ => SeenBy::Packets,
        };
        let base = |outcome| Observation {
            first_seen: meta.time,
            last_seen: meta.time,
            netns: meta.netns,
            direction: meta.direction,
            seen_by,
            protocol: proto,
            src: tuple.src,
            dst: tuple.dst,
            backend: None,
            outcome,
            drops: 0,
            drop_reason: None,
            drop_location: None,
            dns: None,
            packets: 0,
            bytes: 0,
        };
        match event {
            Event::TcpAttempt { sock_id, .. } => {
                self.make_room(TCP_ENTRY + SOCKET_ENTRY, out);
                let mut obs = base(Outcome::Unspecified);
                self.adopt_orphan(&mut obs);
                self.tcp.insert(*sock_id, obs);
                if meta.direction != TrafficDirection::Ingress {
                    self.by_socket
                        .insert((proto, tuple.src), Held::Tcp(*sock_id));
                }
            }
            Event::TcpOutcome {
                sock_id, outcome, ..
            } => {
                let mut obs = match self.tcp.remove(sock_id) {
                    Some(obs) => obs,
                    None => {
                        self.stats.outcomes_without_attempt += 1;
                        let mut obs = base(Outcome::Unspecified);
                        self.adopt_orphan(&mut obs);
                        obs
                    }
                };
                if matches!(self.by_socket.get(&(proto, obs.src)), Some(Held::Tcp(id)) if id == sock_id)
                {
                    self.by_socket.remove(&(proto, obs.src));
                }
                obs.last_seen = meta.time;
                obs.outcome = match outcome {
                    TcpOutcome::Established | TcpOutcome::Accepted => Outcome::Established,
                    TcpOutcome::Refused => Outcome::Refused,
                    TcpOutcome::Reset => Outcome::Reset,
                    TcpOutcome::NoAnswer | TcpOutcome::Unreachable | TcpOutcome::Failed => {
                        if obs.drops > 0 {
                            Outcome::Dropped
                        } else {
                            Outcome::NoAnswer
                        }
                    }
                };
                out.push(obs);
            }
            Event::Dns { message, .. } if !message.response => {
                if let Some(held) = self.dns.get_mut(&(tuple.src, message.id)) {
                    // The same query leaving another device (the node, after
                    // Service DNAT): where it really went.
                    if tuple.dst != held.dst {
                        held.backend = Some(tuple.dst);
                    }
                    return;
                }
                let mut obs = base(Outcome::Unspecified);
                obs.dns = Some(dns_seen(message));
                self.make_room(DNS_ENTRY + SOCKET_ENTRY + name_bytes(&obs), out);
                self.adopt_orphan(&mut obs);
                self.names += name_bytes(&obs);
                self.dns.insert((tuple.src, message.id), obs);
                self.by_socket
                    .insert((proto, tuple.src), Held::Dns(message.id));
            }
            Event::Nat { original_dst, .. } => {
                let held = match self.by_socket.get(&(proto, tuple.src)).copied() {
                    Some(Held::Tcp(id)) => self.tcp.get_mut(&id),
                    _ => None,
                };
                match held {
                    Some(obs) if obs.dst == *original_dst => {
                        obs.backend = Some(tuple.dst);
                        self.stats.nat_joined += 1;
                    }
                    _ => {
                        self.make_room(NAT_ENTRY, out);
                        self.nats
                            .insert((proto, tuple.src), (*original_dst, tuple.dst, meta.time));
                    }
                }
            }
            Event::Dns { message, .. } => {
                // A response goes from the server back to the client.
                match self.dns.remove(&(tuple.dst, message.id)) {
                    Some(mut obs) => {
                        self.names -= name_bytes(&obs);
                        self.by_socket.remove(&(proto, obs.src));
                        obs.last_seen = meta.time;
                        obs.outcome = Outcome::Answered;
                        if let Some(dns) = &mut obs.dns {
                            dns.rcode = Some(message.rcode.name());
                            dns.answers = message.answers;
                        }
                        out.push(obs);
                    }
                    None => self.stats.dns_responses_without_query += 1,
                }
            }
            Event::Udp { packets, bytes, .. } => {
                let mut obs = base(Outcome::Unspecified);
                obs.packets = u64::from(*packets);
                obs.bytes = *bytes;
                out.push(obs);
            }
            Event::Icmp { echo, len, .. } => {
                let key = echo_key(echo, tuple);
                match echo.kind {
                    // The same request leaving another device: absorbed.
                    EchoKind::Request if self.icmp.contains_key(&key) => {}
                    EchoKind::Request => {
                        self.make_room(ICMP_ENTRY, out);
                        let mut obs = base(Outcome::Unspecified);
                        obs.packets = 1;
                        obs.bytes = u64::from(*len);
                        self.icmp.insert(key, Echo::Waiting(Box::new(obs)));
                    }
                    EchoKind::Reply => match self.icmp.remove(&key) {
                        Some(Echo::Waiting(obs)) => {
                            let mut obs = *obs;
                            obs.last_seen = meta.time;
                            obs.outcome = Outcome::Answered;
                            self.icmp.insert(key, Echo::Reported(obs.first_seen));
                            out.push(obs);
                        }
                        // The reply leaving another device: absorbed.
                        Some(reported) => {
                            self.icmp.insert(key, reported);
                        }
                        None => self.stats.icmp_replies_without_request += 1,
                    },
                }
            }
            Event::Drop {
                icmp: Some(echo),
                reason,
                location_symbol,
                len,
                ..
            } => {
                let key = echo_key(echo, tuple);
                let reason = Some(reason.clone().unwrap_or_else(|| "UNKNOWN".into()));
                let mut obs = match self.icmp.remove(&key) {
                    Some(Echo::Waiting(obs)) => *obs,
                    // A drop of an echo already reported (a duplicate).
                    Some(reported) => {
                        self.icmp.insert(key, reported);
                        return;
                    }
                    // The echo's only sighting: a request dropped before it
                    // left a device (or a reply whose request was not seen).
                    None => {
                        self.make_room(ICMP_ENTRY, out);
                        let mut obs = base(Outcome::Dropped);
                        if echo.kind == EchoKind::Reply {
                            std::mem::swap(&mut obs.src, &mut obs.dst);
                        } else {
                            obs.packets = 1;
                            obs.bytes = u64::from(*len);
                        }
                        obs
                    }
                };
                obs.drops = obs.drops.saturating_add(1);
                obs.drop_reason = reason;
                obs.drop_location = location_symbol.clone();
                obs.last_seen = meta.time;
                obs.outcome = Outcome::Dropped;
                self.icmp.insert(key, Echo::Reported(obs.first_seen));
                out.push(obs);
            }
            Event::Drop {
                reason,
                location_symbol,
                dns,
                ..
            } => {
                let held = self.by_socket.get(&(proto, tuple.src)).copied();
                let target = match held {
                    Some(Held::Tcp(id)) => self.tcp.get_mut(&id),
                    Some(Held::Dns(id)) => self.dns.get_mut(&(tuple.src, id)),
                    None => None,
                };
                match target {
                    Some(obs) => {
                        obs.drops = obs.drops.saturating_add(1);
                        obs.last_seen = meta.time;
                        if obs.drop_reason.is_none() {
                            obs.drop_reason =
                                Some(reason.clone().unwrap_or_else(|| "UNKNOWN".into()));
                            obs.drop_location = location_symbol.clone();
                        }
                        if tuple.dst != obs.dst {
                            obs.backend = Some(tuple.dst);
                        }
                        if obs.dns.is_some() {
                            // A dropped query gets no answer: report it now.
                            obs.outcome = Outcome::Dropped;
                            let key = (
                                tuple.src,
                                obs.dns.as_ref().map(|d| d.id).unwrap_or_default(),
                            );
                            if let Some(obs) = self.dns.remove(&key) {
                                self.names -= name_bytes(&obs);
                                self.by_socket.remove(&(proto, tuple.src));
                                out.push(obs);
                            }
                        }
                    }
                    None => match self.orphans.get_mut(&(proto, tuple.src)) {
                        Some(orphan) => {
                            orphan.drops = orphan.drops.saturating_add(1);
                            orphan.last_seen = meta.time;
                        }
                        None => {
                            let mut obs = base(Outcome::Dropped);
                            obs.drops = 1;
                            obs.drop_reason =
                                Some(reason.clone().unwrap_or_else(|| "UNKNOWN".into()));
                            obs.drop_location = location_symbol.clone();
                            obs.dns = dns.as_ref().map(dns_seen);
                            self.make_room(ORPHAN_ENTRY + name_bytes(&obs), out);
                            self.names += name_bytes(&obs);
                            self.orphans.insert((proto, tuple.src), obs);
                        }
                    },
                }
            }
        }
    }

    /// Reports held flows that timed out by `now`: DNS queries as unanswered
    /// (or dropped), TCP attempts as they are.
    pub fn expire(&mut self, now: SystemTime, out: &mut Vec<Observation>) {
        let deadline = |timeout| Some(now.checked_sub(timeout).unwrap_or(SystemTime::UNIX_EPOCH));
        self.expire_before(
            Deadlines {
                dns: deadline(self.timeouts.dns),
                tcp: deadline(self.timeouts.tcp),
                orphan: deadline(self.timeouts.orphan_drop),
                icmp: deadline(self.timeouts.icmp),
            },
            out,
        );
    }

    /// Reports every held flow as [`expire`](Self::expire) would once its
    /// time is up (at shutdown), whatever its time.
    pub fn expire_all(&mut self, out: &mut Vec<Observation>) {
        self.expire_before(
            Deadlines {
                dns: None,
                tcp: None,
                orphan: None,
                icmp: None,
            },
            out,
        );
    }

    /// Reports the held flows first seen at or before their kind's deadline
    /// (every one when it is None).
    fn expire_before(&mut self, deadlines: Deadlines, out: &mut Vec<Observation>) {
        let keep =
            |deadline: Option<SystemTime>, seen: SystemTime| deadline.is_some_and(|d| seen > d);
        let Deadlines {
            dns: dns_deadline,
            tcp: tcp_deadline,
            orphan: orphan_deadline,
            icmp: icmp_deadline,
        } = deadlines;
        let mut expired: Vec<Observation> = Vec::new();
        let names = &mut self.names;
        self.dns.retain(|_, obs| {
            let keep = keep(dns_deadline, obs.first_seen);
            if !keep {
                *names -= name_bytes(obs);
                let mut obs = obs.clone();
                obs.outcome = if obs.drops > 0 {
                    Outcome::Dropped
                } else {
                    Outcome::NoAnswer
                };
                expired.push(obs);
            }
            keep
        });
        self.orphans.retain(|_, obs| {
            let keep = keep(orphan_deadline, obs.first_seen);
            if !keep {
                *names -= name_bytes(obs);
                expired.push(obs.clone());
            }
            keep
        });
        let before = self.nats.len();
        self.nats
            .retain(|_, (_, _, seen)| keep(orphan_deadline, *seen));
        self.stats.nat_unclaimed += (before - self.nats.len()) as u64;
        let before = self.tcp.len();
        self.tcp.retain(|_, obs| {
            let keep = keep(tcp_deadline, obs.first_seen);
            if !keep {
                let mut obs = obs.clone();
                if obs.drops > 0 {
                    obs.outcome = Outcome::Dropped;
                }
                expired.push(obs);
            }
            keep
        });
        self.stats.attempts_timed_out += (before - self.tcp.len()) as u64;
        for obs in &expired {
            self.by_socket.remove(&(obs.protocol, obs.src));
        }
        self.icmp.retain(|_, echo| match echo {
            Echo::Waiting(obs) => {
                let keep = keep(icmp_deadline, obs.first_seen);
                if !keep {
                    let mut obs = Observation::clone(obs);
                    obs.outcome = Outcome::NoAnswer;
                    expired.push(obs);
                }
                keep
            }
            Echo::Reported(first_seen) => keep(icmp_deadline, *first_seen),
        });
        expired.sort_by_key(|o| o.first_seen);
        out.extend(expired);
    }

    /// Keeps what is held within the bound: when `incoming` more bytes do not
    /// fit, the oldest eighth of the held flows and NATs (by first sight) is
    /// let go, the flows reported as they are (counted in `evicted`), the NATs
    /// forgotten (counted in `nat_unclaimed`); again if that was not enough.
    fn make_room(&mut self, incoming: usize, out: &mut Vec<Observation>) {
        while self.bytes() + incoming > self.max_bytes {
            let mut held: Vec<(SystemTime, Slot)> = Vec::with_capacity(
                self.tcp.len()
                    + self.dns.len()
                    + self.orphans.len()
                    + self.nats.len()
                    + self.icmp.len(),
            );
            held.extend(self.icmp.iter().map(|(k, echo)| match echo {
                Echo::Waiting(o) => (o.first_seen, Slot::Icmp(*k)),
                Echo::Reported(seen) => (*seen, Slot::Icmp(*k)),
            }));
            held.extend(
                self.tcp
                    .iter()
                    .map(|(id, o)| (o.first_seen, Slot::Tcp(*id))),
            );
            held.extend(self.dns.iter().map(|(k, o)| (o.first_seen, Slot::Dns(*k))));
            held.extend(
                self.orphans
                    .iter()
                    .map(|(k, o)| (o.first_seen, Slot::Orphan(*k))),
            );
            held.extend(
                self.nats
                    .iter()
                    .map(|(k, (_, _, seen))| (*seen, Slot::Nat(*k))),
            );
            if held.is_empty() {
                return;
            }
            let n = (held.len() / 8).max(1);
            if n < held.len() {
                held.select_nth_unstable_by_key(n - 1, |(seen, _)| *seen);
                held.truncate(n);
            }
            held.sort_unstable_by_key(|(seen, _)| *seen);
            for (_, slot) in held {
                self.let_go(slot, out);
            }
        }
    }

    /// Lets one held flow or NAT go (see [`make_room`](Self::make_room)).
    fn let_go(&mut self, slot: Slot, out: &mut Vec<Observation>) {
        let obs = match slot {
            Slot::Tcp(id) => {
                let Some(mut obs) = self.tcp.remove(&id) else {
                    return;
                };
                let key = (obs.protocol, obs.src);
                if matches!(self.by_socket.get(&key), Some(Held::Tcp(held)) if *held == id) {
                    self.by_socket.remove(&key);
                }
                if obs.drops > 0 {
                    obs.outcome = Outcome::Dropped;
                }
                obs
            }
            Slot::Dns(key) => {
                let Some(obs) = self.dns.remove(&key) else {
                    return;
                };
                self.names -= name_bytes(&obs);
                let socket = (obs.protocol, obs.src);
                if matches!(self.by_socket.get(&socket), Some(Held::Dns(id)) if *id == key.1) {
                    self.by_socket.remove(&socket);
                }
                obs
            }
            Slot::Orphan(key) => {
                let Some(obs) = self.orphans.remove(&key) else {
                    return;
                };
                self.names -= name_bytes(&obs);
                obs
            }
            Slot::Nat(key) => {
                if self.nats.remove(&key).is_some() {
                    self.stats.nat_unclaimed += 1;
                }
                return;
            }
            // A request waiting for its reply is reported as it is; a
            // reported echo is forgotten.
            Slot::Icmp(key) => match self.icmp.remove(&key) {
                Some(Echo::Waiting(obs)) => *obs,
                _ => return,
            },
        };
        self.stats.evicted += 1;
        out.push(obs);
    }
}

/// Up to when each kind of held flow has timed out; None: every one.
#[derive(Clone, Copy, Debug)]
struct Deadlines {
    dns: Option<SystemTime>,
    tcp: Option<SystemTime>,
    orphan: Option<SystemTime>,
    icmp: Option<SystemTime>,
}

/// Where a held flow or NAT is.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Tcp(u64),
    Dns((SocketAddr, u16)),
    Orphan(SocketKey),
    Nat(SocketKey),
    Icmp(EchoKey),
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use netverdict_ebpf::{IpProtocol, Meta, Rcode};

    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms)
    }

    fn meta(ms: u64, direction: TrafficDirection) -> Meta {
        Meta {
            time: at(ms),
            mono_ns: ms * 1_000_000,
            netns: 4026532000,
            ifindex: None,
            direction,
        }
    }

    fn sa(last: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 244, 1, last)), port)
    }

    fn tuple(protocol: IpProtocol, src: SocketAddr, dst: SocketAddr) -> FiveTuple {
        FiveTuple { protocol, src, dst }
    }

    fn outcome(ms: u64, t: FiveTuple, sock_id: u64, outcome: TcpOutcome) -> Event {
        Event::TcpOutcome {
            meta: meta(ms, TrafficDirection::Egress),
            tuple: t,
            sock_id,
            outcome,
            errno: 0,
            retransmits: 0,
            old_state: 2,
            new_state: 7,
        }
    }

    fn drop(ms: u64, t: FiveTuple, dns: Option<DnsMessage>) -> Event {
        Event::Drop {
            meta: meta(ms, TrafficDirection::Unknown),
            tuple: t,
            reason: Some("NETFILTER_DROP".into()),
            reason_code: 12,
            len: 60,
            location: 0,
            location_symbol: Some("nf_hook_slow".into()),
            tcp_flags: 2,
            dns,
            icmp: None,
        }
    }

    fn echo(ms: u64, src: u8, dst: u8, kind: EchoKind, seq: u16) -> Event {
        Event::Icmp {
            meta: meta(ms, TrafficDirection::Egress),
            tuple: tuple(IpProtocol::Icmp, sa(src, 0), sa(dst, 0)),
            echo: IcmpEcho { kind, id: 77, seq },
            len: 84,
        }
    }

    #[test]
    fn icmp_echoes_are_answered_dropped_or_unanswered_and_counted_once() {
        let mut c = Correlator::default();
        let mut out = Vec::new();
        // Answered: the request and the reply each leave two devices.
        for (ms, src, dst, kind) in [
            (0, 20, 10, EchoKind::Request),
            (1, 20, 10, EchoKind::Request),
            (2, 10, 20, EchoKind::Reply),
            (3, 10, 20, EchoKind::Reply),
        ] {
            c.push(&echo(ms, src, dst, kind, 1), &mut out);
        }
        assert_eq!(out.len(), 1, "{out:#?}");
        let o = &out[0];
        assert_eq!(o.outcome, Outcome::Answered);
        assert_eq!(o.protocol, Protocol::Icmp);
        assert_eq!((o.src, o.dst), (sa(20, 0), sa(10, 0)));
        assert_eq!((o.packets, o.bytes), (1, 84));
        assert_eq!((o.first_seen, o.last_seen), (at(0), at(2)));
        // Dropped: the request leaves the pod, the node drops it.
        c.push(&echo(10, 20, 11, EchoKind::Request, 2), &mut out);
        let mut dropped = drop(11, tuple(IpProtocol::Icmp, sa(20, 0), sa(11, 0)), None);
        if let Event::Drop { icmp, .. } = &mut dropped {
            *icmp = Some(IcmpEcho {
                kind: EchoKind::Request,
                id: 77,
                seq: 2,
            });
        }
        c.push(&dropped, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].outcome, Outcome::Dropped);
        assert_eq!(out[1].drops, 1);
        assert_eq!(out[1].drop_reason.as_deref(), Some("NETFILTER_DROP"));
        assert_eq!(out[1].packets, 1);
        // The same drop seen again is not a second echo.
        c.push(&dropped, &mut out);
        assert_eq!(out.len(), 2);
        // Unanswered: reported at the timeout, not before.
        c.push(&echo(20, 20, 12, EchoKind::Request, 3), &mut out);
        c.expire(at(4_000), &mut out);
        assert_eq!(out.len(), 2);
        c.expire(at(5_020), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].outcome, Outcome::NoAnswer);
        assert_eq!(out[2].dst, sa(12, 0));
        // A reply nobody asked for is counted; everything is let go in time.
        c.push(&echo(6_000, 13, 20, EchoKind::Reply, 9), &mut out);
        assert_eq!(c.stats().icmp_replies_without_request, 1);
        c.expire(at(60_000), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(c.pending(), 0);
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn udp_observations_carry_the_probes_counts() {
        let mut c = Correlator::default();
        let mut out = Vec::new();
        c.push(
            &Event::Udp {
                meta: meta(0, TrafficDirection::Egress),
                tuple: tuple(IpProtocol::Udp, sa(20, 5000), sa(10, 9999)),
                packets: 4,
                bytes: 4 * 33,
            },
            &mut out,
        );
        assert_eq!((out[0].packets, out[0].bytes), (4, 132));
    }

    fn query(id: u16, name: &str, response: bool, rcode: Rcode) -> DnsMessage {
        DnsMessage {
            id,
            response,
            opcode: 0,
            rcode,
            truncated: false,
            questions: 1,
            answers: if response && rcode == Rcode::NOERROR {
                1
            } else {
                0
            },
            name: Some(name.into()),
            qtype: Some(1),
            records: Vec::new(),
            records_truncated: false,
        }
    }

    #[test]
    fn attempt_and_outcome_make_one_observation() {
        let mut c = Correlator::default();
        let mut out = Vec::new();
        let t = tuple(IpProtocol::Tcp, sa(20, 40000), sa(10, 8080));
        c.push(
            &Event::TcpAttempt {
                meta: meta(0, TrafficDirection::Egress),
                tuple: t,
                sock_id: 7,
            },
            &mut out,
        );
        assert!(out.is_empty());
        c.push(&outcome(3, t, 7, TcpOutcome::Established), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].outcome, Outcome::Established);
        assert_eq!(out[0].first_seen, at(0));
        assert_eq!(out[0].last_seen, at(3));
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn drops_after_dnat_join_the_attempt_and_reveal_the_backend() {
        let mut c = Correlator::default();
        let mut out = Vec::new();
        let client = sa(20, 40001);
        let service = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 1, 10)), 8080);
        let t = tuple(IpProtocol::Tcp, client, service);
        c.push(
            &Event::TcpAttempt {
                meta: meta(0, TrafficDirection::Egress),
                tuple: t,
                sock_id: 9,
            },
            &mut out,
        );
        let after_dnat = tuple(IpProtocol::Tcp, client, sa(10, 8080));
        for ms in [1, 1001, 3001] {
            c.push(&drop(ms, after_dnat, None), &mut out);
        }
        assert!(out.is_empty());
        c.push(&outcome(7000, t, 9, TcpOutcome::NoAnswer), &mut out);
        assert_eq!(out.len(), 1);
        let o = &out[0];
        assert_eq!(o.outcome, Outcome::Dropped);
        assert_eq!(o.drops, 3);
        assert_eq!(o.drop_reason.as_deref(), Some("NETFILTER_DROP"));
        assert_eq!(o.dst, service);
        assert_eq!(o.backend, Some(sa(10, 8080)));
    }

    #[test]
    fn unanswered_attempt_without_drops_is_no_answer() {
        let mut c = Correlator::default();
        let mut out = Vec::new();
        let t = tuple(IpProtocol::Tcp, sa(20, 40002), sa(10, 81));
        c.push(
            &Event::TcpAttempt {
                meta: meta(0, TrafficDirection::Egress),
                tuple: t,
                sock_id: 1,
            },
            &mut out,
        );
        c.push(&outcome(5, t, 1, TcpOutcome::NoAnswer), &mut out);
        assert_eq!(out[0].outcome, Outcome::NoAnswer);
        c.push(&outcome(6, t, 2, TcpOutcome::Refused), &mut out);
        assert_eq!(out[1].outcome, Outcome::Refused);
        assert_eq!(c.stats().outcomes_without_attempt, 1);
    }

    #[test]
    fn dns_query_answered_nxdomain_unanswered_and_dropped() {
        let mut c = Correlator::new(Timeouts {
            tcp: Duration::from_secs(150),
            dns: Duration::from_secs(5),
            orphan_drop: Duration::from_secs(3),
            icmp: Duration::from_secs(5),
        });
        let mut out = Vec::new();
        let dns_server = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)), 53);
        let ask = |c: &mut Correlator, out: &mut Vec<Observation>, ms, port, id, name: &str| {
            let t = tuple(IpProtocol::Udp, sa(20, port), dns_server);
            c.push(
                &Event::Dns {
                    meta: meta(ms, TrafficDirection::Egress),
                    tuple: t,
                    message: query(id, name, false, Rcode::NOERROR),
                },
                out,
            );
            t
        };
        let answer = |c: &mut Correlator,
                      out: &mut Vec<Observation>,
                      ms,
                      t: FiveTuple,
                      id,
                      name: &str,
                      rcode| {
            let back = tuple(IpProtocol::Udp, t.dst, t.src);
            c.push(
                &Event::Dns {
                    meta: meta(ms, TrafficDirection::Ingress),
                    tuple: back,
                    message: query(id, name, true, rcode),
                },
                out,
            );
        };
        let t1 = ask(
            &mut c,
            &mut out,
            0,
            50001,
            1,
            "api.default.svc.cluster.local",
        );
        answer(
            &mut c,
            &mut out,
            2,
            t1,
            1,
            "api.default.svc.cluster.local",
            Rcode::NOERROR,
        );
        let t2 = ask(
            &mut c,
            &mut out,
            3,
            50002,
            2,
            "nope.default.svc.cluster.local",
        );
        answer(
            &mut c,
            &mut out,
            4,
            t2,
            2,
            "nope.default.svc.cluster.local",
            Rcode(3),
        );
        ask(&mut c, &mut out, 10, 50003, 3, "slow.example");
        let t4 = ask(&mut c, &mut out, 11, 50004, 4, "blocked.example");
        c.push(
            &drop(
                12,
                t4,
                Some(query(4, "blocked.example", false, Rcode::NOERROR)),
            ),
            &mut out,
        );
        assert_eq!(out.len(), 3, "{out:#?}");
        assert_eq!(out[0].outcome, Outcome::Answered);
        assert_eq!(out[0].dns.as_ref().unwrap().rcode, Some("NOERROR"));
        assert_eq!(out[1].dns.as_ref().unwrap().rcode, Some("NXDOMAIN"));
        assert_eq!(out[2].outcome, Outcome::Dropped);
        assert_eq!(
            out[2].dns.as_ref().unwrap().query.as_deref(),
            Some("blocked.example")
        );
        // The slow query is still held until its timeout.
        c.expire(at(4000), &mut out);
        assert_eq!(out.len(), 3);
        c.expire(at(5011), &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(out[3].outcome, Outcome::NoAnswer);
        assert_eq!(
            out[3].dns.as_ref().unwrap().query.as_deref(),
            Some("slow.example")
        );
        assert_eq!(out[3].dns.as_ref().unwrap().rcode, None);
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn a_drop_nothing_claims_becomes_its_own_observation_after_the_hold() {
        let mut c = Correlator::default();
        let mut out = Vec::new();
        let t = tuple(IpProtocol::Udp, sa(20, 5000), sa(10, 9999));
        c.push(&drop(0, t, None), &mut out);
        c.push(&drop(500, t, None), &mut out);
        assert!(out.is_empty());
        c.expire(at(2_000), &mut out);
        assert!(out.is_empty());
        c.expire(at(3_001), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].outcome, Outcome::Dropped);
        assert_eq!(out[0].drops, 2);
        assert_eq!(out[0].protocol, Protocol::Udp);
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn an_attempt_reported_after_its_first_drop_adopts_it() {
        let mut c = Correlator::default();
        let mut out = Vec::new();
        let client = sa(20, 40009);
        let service = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 1, 10)), 8080);
        let after_dnat = tuple(IpProtocol::Tcp, client, sa(10, 8080));
        c.push(&drop(1, after_dnat, None), &mut out);
        let t = tuple(IpProtocol::Tcp, client, service);
        let attempt = Event::TcpAttempt {
            meta: meta(0, TrafficDirection::Egress),
            tuple: t,
            sock_id: 5,
        };
        c.push(&attempt, &mut out);
        c.push(&drop(1001, after_dnat, None), &mut out);
        c.push(&outcome(7000, t, 5, TcpOutcome::NoAnswer), &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].drops, 2);
        assert_eq!(out[0].outcome, Outcome::Dropped);
        assert_eq!(out[0].backend, Some(sa(10, 8080)));
        // An outcome with no attempt at all adopts the drops too.
        let t = tuple(IpProtocol::Tcp, sa(20, 40010), sa(10, 81));
        c.push(&drop(8000, t, None), &mut out);
        c.push(&outcome(9000, t, 6, TcpOutcome::NoAnswer), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].drops, out[1].outcome), (1, Outcome::Dropped));
        assert_eq!(
            out[1].backend, None,
            "the drop went where the socket addressed"
        );
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn the_kernel_s_nat_names_the_backend_before_or_after_the_attempt() {
        let mut c = Correlator::default();
        let mut out = Vec::new();
        let service = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 5, 5)), 80);
        let nat = |ms, client: SocketAddr, backend: SocketAddr| Event::Nat {
            meta: meta(ms, TrafficDirection::Egress),
            tuple: tuple(IpProtocol::Tcp, client, backend),
            original_dst: service,
        };
        // A connect that succeeds: its SYN was forwarded (NAT) before the
        // probe reports attempt and outcome together.
        let client = sa(20, 41000);
        c.push(&nat(0, client, sa(12, 8080)), &mut out);
        let t = tuple(IpProtocol::Tcp, client, service);
        c.push(
            &Event::TcpAttempt {
                meta: meta(0, TrafficDirection::Egress),
                tuple: t,
                sock_id: 1,
            },
            &mut out,
        );
        c.push(&outcome(2, t, 1, TcpOutcome::Established), &mut out);
        assert_eq!(out[0].backend, Some(sa(12, 8080)));
        assert_eq!(out[0].seen_by, SeenBy::InitiatorSocket);
        // A connect held before its SYN's NAT arrives (retransmitted SYN).
        let client = sa(20, 41001);
        let t = tuple(IpProtocol::Tcp, client, service);
        c.push(
            &Event::TcpAttempt {
                meta: meta(10, TrafficDirection::Egress),
                tuple: t,
                sock_id: 2,
            },
            &mut out,
        );
        c.push(&nat(11, client, sa(13, 8080)), &mut out);
        c.push(&outcome(5000, t, 2, TcpOutcome::NoAnswer), &mut out);
        assert_eq!(out[1].backend, Some(sa(13, 8080)));
        // A NAT nobody claims is forgotten after the hold, and counted.
        c.push(&nat(20, sa(20, 41002), sa(14, 8080)), &mut out);
        c.expire(at(4000), &mut out);
        assert_eq!(c.stats().nat_joined, 2);
        assert_eq!(c.stats().nat_unclaimed, 1);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_dns_query_seen_after_dnat_keeps_the_service_and_names_the_backend() {
        let mut c = Correlator::default();
        let mut out = Vec::new();
        let service = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)), 53);
        let pod = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 244, 0, 10)), 53);
        let client = sa(20, 50000);
        for (ms, dst) in [(0, service), (1, pod)] {
            c.push(
                &Event::Dns {
                    meta: meta(ms, TrafficDirection::Egress),
                    tuple: tuple(IpProtocol::Udp, client, dst),
                    message: query(7, "a.b", false, Rcode::NOERROR),
                },
                &mut out,
            );
        }
        c.push(
            &Event::Dns {
                meta: meta(2, TrafficDirection::Egress),
                tuple: tuple(IpProtocol::Udp, pod, client),
                message: query(7, "a.b", true, Rcode::NOERROR),
            },
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dst, service);
        assert_eq!(out[0].backend, Some(pod));
        assert_eq!(out[0].first_seen, at(0));
        assert_eq!(out[0].seen_by, SeenBy::Packets);
    }

    #[test]
    fn a_full_correlator_reports_its_oldest_held_flows_not_all_of_them() {
        let bound = 256 * 1024;
        let mut c = Correlator::with_bound(Timeouts::default(), bound);
        let mut out = Vec::new();
        let dns_server = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)), 53);
        let service = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 5, 5)), 80);
        let mut most_held = 0;
        let n = 6_000u64;
        for i in 0..n {
            let port = 10_000 + i as u16;
            // A scan of dropped ports: attempts waiting for their outcome.
            c.push(
                &Event::TcpAttempt {
                    meta: meta(i, TrafficDirection::Egress),
                    tuple: tuple(IpProtocol::Tcp, sa(20, port), sa(10, port)),
                    sock_id: i,
                },
                &mut out,
            );
            // Random names nobody answers yet.
            c.push(
                &Event::Dns {
                    meta: meta(i, TrafficDirection::Egress),
                    tuple: tuple(IpProtocol::Udp, sa(21, port), dns_server),
                    message: query(
                        i as u16,
                        &format!("{i:040}.random.example.com"),
                        false,
                        Rcode::NOERROR,
                    ),
                },
                &mut out,
            );
            // NATs no attempt claims.
            c.push(
                &Event::Nat {
                    meta: meta(i, TrafficDirection::Egress),
                    tuple: tuple(IpProtocol::Tcp, sa(22, port), sa(12, 8080)),
                    original_dst: service,
                },
                &mut out,
            );
            assert!(c.bytes() <= bound, "{} bytes after {i} rounds", c.bytes());
            most_held = most_held.max(c.pending());
            assert!(
                c.pending() >= most_held / 2,
                "{} held after {most_held}: too many reported at once",
                c.pending()
            );
        }
        assert!(c.pending() > 100, "{} held", c.pending());
        assert_eq!(c.stats().evicted, out.len() as u64);
        assert_eq!(out.len() + c.pending(), 2 * n as usize, "none lost");
        assert!(out.iter().all(|o| o.outcome == Outcome::Unspecified));
        let newest_reported = out.iter().map(|o| o.first_seen).max().unwrap();
        let mut rest = Vec::new();
        c.expire(at(10_000_000), &mut rest);
        assert!(rest.iter().all(|o| o.first_seen >= newest_reported));
    }

    #[test]
    fn drop_counts_saturate() {
        let mut c = Correlator::default();
        let mut out = Vec::new();
        let t = tuple(IpProtocol::Tcp, sa(20, 5000), sa(10, 9999));
        c.push(&drop(0, t, None), &mut out);
        for orphan in c.orphans.values_mut() {
            orphan.drops = u32::MAX;
        }
        c.push(&drop(1, t, None), &mut out);
        // An attempt from that socket adopts the drops.
        let attempt = Event::TcpAttempt {
            meta: meta(2, TrafficDirection::Egress),
            tuple: t,
            sock_id: 1,
        };
        c.push(&attempt, &mut out);
        c.push(&drop(3, t, None), &mut out);
        c.expire(at(10_000_000), &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].drops, u32::MAX);
    }

    #[test]
    fn tcp_attempts_without_outcome_expire_and_are_counted() {
        let mut c = Correlator::default();
        let mut out = Vec::new();
        let t = tuple(IpProtocol::Tcp, sa(20, 40003), sa(10, 80));
        c.push(
            &Event::TcpAttempt {
                meta: meta(0, TrafficDirection::Egress),
                tuple: t,
                sock_id: 3,
            },
            &mut out,
        );
        c.expire(at(149_000), &mut out);
        assert!(out.is_empty());
        c.expire(at(151_000), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].outcome, Outcome::Unspecified);
        assert_eq!(c.stats().attempts_timed_out, 1);
    }
}
