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
//! `refused`, silence is `timed out`.

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
        match start(addr, protocol, &payload) {
            Ok(Some(socket)) => pending.push(Pending {
                socket,
                protocol,
                index,
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
                        Protocol::Udp => PollFlags::POLLIN,
                        _ => PollFlags::POLLOUT,
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
            outcomes[p.index] = finish(&p);
        }
        pending = still;
    }
    outcomes
}

/// Starts a connection attempt; `Ok(None)` when it completed at once.
fn start(addr: SocketAddr, protocol: Protocol, payload: &[u8]) -> std::io::Result<Option<Socket>> {
    let domain = Domain::for_address(addr);
    let (ty, proto) = match protocol {
        Protocol::Tcp => (Type::STREAM, SockProto::TCP),
        Protocol::Udp => (Type::DGRAM, SockProto::UDP),
        Protocol::Sctp => (Type::STREAM, SockProto::from(libc::IPPROTO_SCTP)),
    };
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

fn finish(p: &Pending) -> Outcome {
    match p.protocol {
        Protocol::Udp => {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 512];
            match p.socket.recv(&mut buf) {
                Ok(_) => Outcome::Succeeded,
                Err(e) => errno_outcome(&e),
            }
        }
        _ => match p.socket.take_error() {
            Ok(None) => Outcome::Succeeded,
            Ok(Some(e)) | Err(e) => errno_outcome(&e),
        },
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
