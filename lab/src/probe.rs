//! Probes from inside a pod, like `kubectl exec <pod> -- nc -vz` and `nslookup`.
//!
//! A probe thread enters the source pod's namespace and opens every socket
//! there (a socket belongs to the namespace it was created in); connections are
//! non-blocking and waited on together with `poll`, so one source probes all its
//! destinations at once, within one timeout.
//!
//! A TCP connect that completes is `succeeded`, a reset is `refused`, silence
//! (a dropped SYN) is `timed out`. UDP sends a datagram on a connected socket:
//! an echo is `succeeded`, an ICMP port-unreachable (`ECONNREFUSED`) is
//! `refused`, silence is `timed out`. ICMP is a ping: an echo request from a
//! raw socket connected to the target (so it receives only the target's
//! packets), `succeeded` when the echo reply with its identifier comes back,
//! else `timed out` (the port is ignored).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use netverdict_policy::Protocol;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::Serialize;
use socket2::{Domain, Protocol as SockProto, SockAddr, Socket, Type};

use crate::sys;

/// Errors of probes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The source pod's namespace could not be entered.
    #[error(transparent)]
    Sys(#[from] sys::Error),
    /// A DNS name is not valid.
    #[error("invalid DNS name {name:?}: {message}")]
    BadName { name: String, message: String },
    /// A DNS answer could not be parsed.
    #[error("bad DNS answer from {server}: {message}")]
    BadAnswer { server: SocketAddr, message: String },
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a connection attempt observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Refused,
    TimedOut,
    /// No route (e.g. a Service IP without backends).
    Unreachable,
    /// The protocol is not available in this kernel (e.g. SCTP).
    Unsupported,
    /// Any other local error.
    Error,
}

impl Outcome {
    /// Whether the network let the attempt through (an answer, even a refusal,
    /// came back): the observation compared with an "allowed" verdict.
    pub fn reached(self) -> bool {
        matches!(self, Outcome::Succeeded | Outcome::Refused)
    }

    /// The word `nc -vz` would print.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Refused => "refused",
            Outcome::TimedOut => "timed out",
            Outcome::Unreachable => "unreachable",
            Outcome::Unsupported => "unsupported",
            Outcome::Error => "error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn errno_outcome(e: &std::io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Outcome::Refused,
        Some(libc::ETIMEDOUT) => Outcome::TimedOut,
        Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => Outcome::Unreachable,
        Some(libc::EPROTONOSUPPORT) | Some(libc::ESOCKTNOSUPPORT) => Outcome::Unsupported,
        _ => Outcome::Error,
    }
}

/// The UDP probe datagram: a DNS query (for `probe.netverdict.`), so that a DNS
/// server answers it as the echo servers echo it.
fn udp_payload() -> Vec<u8> {
    let mut msg = Message::new();
    msg.set_id(0x6e76)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    if let Ok(name) = Name::from_ascii("probe.netverdict.") {
        msg.add_query(Query::query(name, RecordType::A));
    }
    msg.to_vec()
        .unwrap_or_else(|_| b"netverdict-probe".to_vec())
}

struct Pending {
    socket: Socket,
    protocol: Protocol,
    index: usize,
    /// ICMP: the echo identifier of the request.
    echo_id: u16,
}

/// The sequence number of every probe's echo request.
const ECHO_SEQ: u16 = 1;
/// The data of an echo request.
const ECHO_DATA: &[u8] = b"netverdict-probe";

/// An ICMP (type 8) or ICMPv6 (type 128) echo request.
fn echo_request(v4: bool, id: u16) -> Vec<u8> {
    netverdict_ebpf::icmp::build_echo_request(v4, id, ECHO_SEQ, ECHO_DATA)
}

/// Whether a datagram read from a raw ICMP socket is the echo reply to
/// identifier `id` (IPv4 raw sockets deliver the IP header first).
fn is_echo_reply(v4: bool, datagram: &[u8], id: u16) -> bool {
    let icmp = if v4 {
        let header = usize::from(datagram.first().map_or(0, |b| b & 0x0f)) * 4;
        datagram.get(header..).unwrap_or_default()
    } else {
        datagram
    };
    let reply_type = if v4 { 0 } else { 129 };
    icmp.len() >= 8 && icmp[0] == reply_type && icmp[4..6] == id.to_be_bytes()
}

/// Probes every target from inside `netns`, concurrently, each within `timeout`.
pub fn probe_many(
    netns: &str,
    targets: &[(SocketAddr, Protocol)],
    timeout: Duration,
) -> Result<Vec<Outcome>> {
    Ok(sys::in_netns(netns, || probe_here(targets, timeout))?)
}

/// Probes from the calling thread's namespace.
pub fn probe_here(targets: &[(SocketAddr, Protocol)], timeout: Duration) -> Vec<Outcome> {
    let mut outcomes = vec![Outcome::TimedOut; targets.len()];
    let mut pending = Vec::new();
    let payload = udp_payload();
    for (index, &(addr, protocol)) in targets.iter().enumerate() {
        let echo_id: u16 = rand::random();
        match start(addr, protocol, &payload, echo_id) {
            Ok(Some(socket)) => pending.push(Pending {
                socket,
                protocol,
                index,
                echo_id,
            }),
            Ok(None) => outcomes[index] = Outcome::Succeeded,
            Err(e) => outcomes[index] = errno_outcome(&e),
        }
    }
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ready: Vec<PollFlags> = {
            let mut fds: Vec<PollFd> = pending
                .iter()
                .map(|p| {
                    let flags = match p.protocol {
                        Protocol::Udp | Protocol::Icmp => PollFlags::POLLIN,
                        Protocol::Tcp | Protocol::Sctp => PollFlags::POLLOUT,
                    };
                    PollFd::new(p.socket.as_fd(), flags)
                })
                .collect();
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) => fds
                    .iter()
                    .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                    .collect(),
                Err(_) => continue,
            }
        };
        let mut still = Vec::new();
        for (p, revents) in pending.into_iter().zip(ready) {
            if revents.is_empty() {
                still.push(p);
                continue;
            }
            match finish(&p) {
                Some(outcome) => outcomes[p.index] = outcome,
                None => still.push(p),
            }
        }
        pending = still;
    }
    outcomes
}

/// Starts a connection attempt; `Ok(None)` when it completed at once.
fn start(
    addr: SocketAddr,
    protocol: Protocol,
    payload: &[u8],
    echo_id: u16,
) -> std::io::Result<Option<Socket>> {
    let domain = Domain::for_address(addr);
    let (ty, proto) = match protocol {
        Protocol::Tcp => (Type::STREAM, SockProto::TCP),
        Protocol::Udp => (Type::DGRAM, SockProto::UDP),
        Protocol::Sctp => (Type::STREAM, SockProto::from(libc::IPPROTO_SCTP)),
        Protocol::Icmp if addr.is_ipv4() => (Type::RAW, SockProto::ICMPV4),
        Protocol::Icmp => (Type::RAW, SockProto::ICMPV6),
    };
    if protocol == Protocol::Icmp {
        let socket = Socket::new(domain, ty, Some(proto))?;
        socket.set_nonblocking(true)?;
        // A connected raw socket receives only the target's packets.
        socket.connect(&SockAddr::from(SocketAddr::new(addr.ip(), 0)))?;
        socket.send(&echo_request(addr.is_ipv4(), echo_id))?;
        return Ok(Some(socket));
    }
    let socket = Socket::new(domain, ty, Some(proto))?;
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => return Ok(Some(socket)),
        Err(e) => return Err(e),
    }
    if protocol == Protocol::Udp {
        socket.send(payload)?;
        return Ok(Some(socket));
    }
    Ok(None)
}

/// The outcome of a probe whose socket is ready; None when it is not
/// decided yet (ICMP: what came was not the echo reply).
fn finish(p: &Pending) -> Option<Outcome> {
    match p.protocol {
        Protocol::Udp => {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 512];
            Some(match p.socket.recv(&mut buf) {
                Ok(_) => Outcome::Succeeded,
                Err(e) => errno_outcome(&e),
            })
        }
        Protocol::Icmp => {
            let v4 = p
                .socket
                .peer_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .is_none_or(|a| a.is_ipv4());
            let mut buf = [0u8; 1500];
            // Everything waiting: the target's other packets (its own echo
            // request, when a pod pings itself) come too.
            while let Ok(n) = std::io::Read::read(&mut &p.socket, &mut buf) {
                if is_echo_reply(v4, &buf[..n], p.echo_id) {
                    return Some(Outcome::Succeeded);
                }
            }
            None
        }
        Protocol::Tcp | Protocol::Sctp => Some(match p.socket.take_error() {
            Ok(None) => Outcome::Succeeded,
            Ok(Some(e)) | Err(e) => errno_outcome(&e),
        }),
    }
}

/// The answer of a DNS lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "addresses")]
pub enum DnsAnswer {
    /// The name's addresses (empty: the name exists without records of the type).
    Addresses(Vec<IpAddr>),
    NxDomain,
    /// Another response code (e.g. REFUSED, SERVFAIL).
    Failed(String),
    TimedOut,
}

impl fmt::Display for DnsAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsAnswer::Addresses(a) if a.is_empty() => f.write_str("no records"),
            DnsAnswer::Addresses(a) => {
                let s: Vec<String> = a.iter().map(|i| i.to_string()).collect();
                f.write_str(&s.join(", "))
            }
            DnsAnswer::NxDomain => f.write_str("NXDOMAIN"),
            DnsAnswer::Failed(code) => write!(f, "failed: {code}"),
            DnsAnswer::TimedOut => f.write_str("timed out"),
        }
    }
}

/// Resolves `name` (type A, or AAAA) through `server` over UDP or TCP from the
/// calling thread's namespace.
pub fn dns_query_here(
    server: SocketAddr,
    name: &str,
    record: RecordType,
    tcp: bool,
    timeout: Duration,
) -> Result<DnsAnswer> {
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let qname = Name::from_ascii(&fqdn).map_err(|e| Error::BadName {
        name: name.to_string(),
        message: e.to_string(),
    })?;
    let mut msg = Message::new();
    msg.set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(qname, record));
    let bytes = msg.to_vec().map_err(|e| Error::BadName {
        name: name.to_string(),
        message: e.to_string(),
    })?;
    let reply = if tcp {
        dns_tcp(server, &bytes, timeout)
    } else {
        dns_udp(server, &bytes, timeout)
    };
    let reply = match reply {
        Ok(r) => r,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Ok(DnsAnswer::TimedOut);
        }
        Err(e) => return Ok(DnsAnswer::Failed(e.to_string())),
    };
    let answer = Message::from_vec(&reply).map_err(|e| Error::BadAnswer {
        server,
        message: e.to_string(),
    })?;
    Ok(match answer.response_code() {
        ResponseCode::NoError => DnsAnswer::Addresses(
            answer
                .answers()
                .iter()
                .filter_map(|r| match r.data() {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect(),
        ),
        ResponseCode::NXDomain => DnsAnswer::NxDomain,
        other => DnsAnswer::Failed(other.to_string()),
    })
}

fn dns_udp(server: SocketAddr, query: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let socket = std::net::UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send(query)?;
    let mut buf = vec![0u8; 4096];
    let n = socket.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn dns_tcp(server: SocketAddr, query: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&server, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let len = u16::try_from(query.len()).unwrap_or(u16::MAX);
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};

    #[test]
    fn tcp_probes_tell_an_open_port_from_a_closed_one() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let open = listener.local_addr().expect("addr");
        let closed = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let outcomes = probe_here(
            &[(open, Protocol::Tcp), (closed, Protocol::Tcp)],
            Duration::from_secs(5),
        );
        assert_eq!(outcomes, [Outcome::Succeeded, Outcome::Refused]);
    }

    #[test]
    fn udp_probes_are_dns_queries_that_an_echo_answers() {
        let echo = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = echo.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = echo.recv_from(&mut buf).expect("a datagram");
            echo.send_to(&buf[..n], from).expect("echo");
            buf[..n].to_vec()
        });
        let outcomes = probe_here(&[(addr, Protocol::Udp)], Duration::from_secs(5));
        assert_eq!(outcomes, [Outcome::Succeeded]);
        let datagram = server.join().expect("echo thread");
        let query = Message::from_vec(&datagram).expect("the probe is a DNS message");
        assert_eq!(query.message_type(), MessageType::Query);
        assert_eq!(query.queries()[0].name().to_ascii(), "probe.netverdict.");
    }

    #[test]
    fn echo_requests_are_checksummed_and_replies_are_told_by_identifier() {
        let request = echo_request(true, 0xbeef);
        assert_eq!(&request[..2], &[8, 0]);
        assert_eq!(
            netverdict_ebpf::icmp::internet_checksum(&request),
            0,
            "a checksummed message sums to zero"
        );
        assert_eq!(&request[4..8], &[0xbe, 0xef, 0, 1]);
        // An IPv4 reply comes after its IP header (here 20 bytes).
        let mut reply = vec![0x45; 1];
        reply.extend_from_slice(&[0; 19]);
        reply.extend_from_slice(&[0, 0, 0, 0, 0xbe, 0xef, 0, 1]);
        assert!(is_echo_reply(true, &reply, 0xbeef));
        assert!(!is_echo_reply(true, &reply, 0xbeee), "another probe's");
        // An ICMPv6 reply has no IP header before it; a request is not a reply.
        assert!(is_echo_reply(
            false,
            &[129, 0, 0, 0, 0xbe, 0xef, 0, 1],
            0xbeef
        ));
        assert!(!is_echo_reply(false, &echo_request(false, 0xbeef), 0xbeef));
        assert!(!is_echo_reply(true, &[0x4f], 1), "short garbage");
    }

    #[test]
    fn only_an_answer_counts_as_reached() {
        let reached: Vec<Outcome> = [
            Outcome::Succeeded,
            Outcome::Refused,
            Outcome::TimedOut,
            Outcome::Unreachable,
            Outcome::Unsupported,
            Outcome::Error,
        ]
        .into_iter()
        .filter(|o| o.reached())
        .collect();
        assert_eq!(reached, [Outcome::Succeeded, Outcome::Refused]);
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(errno_outcome(&refused), Outcome::Refused);
        let no_route = std::io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert_eq!(errno_outcome(&no_route), Outcome::Unreachable);
    }
}
