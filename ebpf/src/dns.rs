//! Decodes the DNS message bytes a probe copied (header and first question):
//! id, query or response, rcode, counts, name and type. Never panics on
//! truncated or hostile input (compression loops, overlong names).

use serde::Serialize;

/// A decoded DNS message (header and first question).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsMessage {
    /// Transaction id.
    pub id: u16,
    /// True for a response (QR bit).
    pub response: bool,
    /// Opcode (0: QUERY).
    pub opcode: u8,
    /// Response code (meaningful in responses).
    pub rcode: Rcode,
    /// TC bit: the message was truncated by the server.
    pub truncated: bool,
    /// Number of questions.
    pub questions: u16,
    /// Number of answer records.
    pub answers: u16,
    /// Name asked for by the first question (lower case, no trailing dot);
    /// `None` if there is no question or it did not fit in the captured bytes.
    pub name: Option<String>,
    /// Type of the first question (1 A, 28 AAAA, ...); `None` as for `name`.
    pub qtype: Option<u16>,
}

/// A DNS response code, serialised by its name (`NOERROR`, `NXDOMAIN`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rcode(pub u8);

impl Rcode {
    /// NOERROR.
    pub const NOERROR: Rcode = Rcode(0);
    /// SERVFAIL.
    pub const SERVFAIL: Rcode = Rcode(2);
    /// NXDOMAIN.
    pub const NXDOMAIN: Rcode = Rcode(3);
    /// REFUSED.
    pub const REFUSED: Rcode = Rcode(5);

    /// The mnemonic of the code (RFC 1035, 2136).
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            6 => "YXDOMAIN",
            7 => "YXRRSET",
            8 => "NXRRSET",
            9 => "NOTAUTH",
            10 => "NOTZONE",
            _ => "OTHER",
        }
    }
}

impl Serialize for Rcode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Why bytes are not a DNS message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// Fewer than the 12 header bytes.
    #[error("DNS message of {0} bytes is shorter than its 12-byte header")]
    Short(usize),
}

/// Parses a DNS message. The header must be complete; the question is decoded
/// when it fits in `b` (probes copy at most 256 bytes).
pub fn parse(b: &[u8]) -> Result<DnsMessage, DnsError> {
    if b.len() < 12 {
        return Err(DnsError::Short(b.len()));
    }
    let id = u16::from_be_bytes([b[0], b[1]]);
    let flags = u16::from_be_bytes([b[2], b[3]]);
    let questions = u16::from_be_bytes([b[4], b[5]]);
    let answers = u16::from_be_bytes([b[6], b[7]]);
    let (name, qtype) = if questions > 0 {
        match read_name(b, 12) {
            Some((name, end)) => {
                let qtype = b
                    .get(end..end + 2)
                    .map(|t| u16::from_be_bytes([t[0], t[1]]));
                (Some(name), qtype)
            }
            None => (None, None),
        }
    } else {
        (None, None)
    };
    Ok(DnsMessage {
        id,
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        rcode: Rcode((flags & 0xf) as u8),
        truncated: flags & 0x0200 != 0,
        questions,
        answers,
        name,
        qtype,
    })
}

/// Reads a (possibly compressed) name at `pos`; returns it and the offset just
/// after it in the question. `None` if it runs past the data or loops.
fn read_name(b: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *b.get(pos)? as usize;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    return Some((name, end.unwrap_or(pos + 1)));
                }
                let label = b.get(pos + 1..pos + 1 + len)?;
                if !name.is_empty() {
                    name.push('.');
                }
                for &c in label {
                    let c = c.to_ascii_lowercase();
                    if c.is_ascii_graphic() && c != b'.' {
                        name.push(c as char);
                    } else {
                        name.push_str(&format!("\\{c:03}"));
                    }
                }
                if name.len() > 255 {
                    return None;
                }
                pos += 1 + len;
            }
            0xc0 => {
                let lo = *b.get(pos + 1)? as usize;
                if end.is_none() {
                    end = Some(pos + 2);
                }
                jumps += 1;
                if jumps > 16 {
                    return None;
                }
                pos = ((len & 0x3f) << 8) | lo;
            }
            _ => return None,
        }
    }
}

/// Builds a DNS query (used by tests and the lab): id, name, type, RD set.
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let l = label.as_bytes();
        q.push(l.len().min(63) as u8);
        q.extend_from_slice(&l[..l.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_query() {
        let q = build_query(0x1234, "Www.Example.org", 28);
        let m = parse(&q).unwrap();
        assert_eq!(m.id, 0x1234);
        assert!(!m.response);
        assert_eq!(m.name.as_deref(), Some("www.example.org"));
        assert_eq!(m.qtype, Some(28));
        assert_eq!(m.rcode, Rcode::NOERROR);
    }

    #[test]
    fn parses_response_flags() {
        let mut r = build_query(7, "nx.test", 1);
        r[2] = 0x81;
        r[3] = 0x83; // QR, RD, RA, NXDOMAIN
        r[7] = 0;
        let m = parse(&r).unwrap();
        assert!(m.response);
        assert_eq!(m.rcode, Rcode::NXDOMAIN);
        assert_eq!(serde_json::to_string(&m.rcode).unwrap(), "\"NXDOMAIN\"");
    }

    #[test]
    fn truncated_and_looping_input() {
        assert_eq!(parse(&[0; 5]), Err(DnsError::Short(5)));
        let q = build_query(1, "abc.def", 1);
        let m = parse(&q[..16]).unwrap();
        assert_eq!(m.name, None);
        let mut l = q[..12].to_vec();
        l.extend_from_slice(&[0xc0, 12]); // points at itself
        assert_eq!(parse(&l).unwrap().name, None);
    }
}
