//! Protocols and ports as pods, services and policies name them: the transport
//! protocols NetworkPolicy knows, ICMP (which flows have and policies cannot
//! name), and a port given by number or by a container port's name.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// The protocol of a connection as policy sees it: a transport protocol
/// NetworkPolicy can name in a rule's ports (TCP, UDP, SCTP), or ICMP, which
/// no port names: a rule without ports matches it (as every protocol), a rule
/// with ports never does. One value for ICMP and ICMPv6: the family is the
/// addresses'.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    /// ICMP echo (ICMPv4 or ICMPv6), at port 0.
    Icmp,
}

impl Protocol {
    /// The protocols a rule's ports can name (not [`Protocol::Icmp`]).
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmp => "ICMP",
        }
    }

    /// The IANA protocol number (6, 17, 132; ICMP's 1, ICMPv6 being 58).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Icmp => 1,
        }
    }

    /// The protocol of an IANA protocol number: the inverse of
    /// [`Protocol::number`], and ICMPv6 (58) as [`Protocol::Icmp`]; None for
    /// other protocols.
    pub fn from_number(number: u8) -> Option<Protocol> {
        match number {
            1 | 58 => Some(Protocol::Icmp),
            n => Protocol::ALL.into_iter().find(|p| p.number() == n),
        }
    }

    /// Whether a rule's ports can name it (false for ICMP).
    pub fn has_ports(self) -> bool {
        self != Protocol::Icmp
    }
}

impl FromStr for Protocol {
    type Err = ();
    /// Accepts `TCP`, `UDP`, `SCTP` and `ICMP` in any case (a policy's ports
    /// accept the first three only: see `validate::protocol_field`).
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            "ICMP" => Ok(Protocol::Icmp),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port in a rule: a number or a container port name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(name) => write!(f, "{name}"),
        }
    }
}
