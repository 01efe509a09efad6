//! Decodes the DNS message bytes a probe copied: the header (id, query or
//! response, rcode, counts), the first question (name and type) and, in a
//! response, the address and alias records of the answer section (A, AAAA,
//! CNAME, with their TTLs) so that outside addresses can be named by what a
//! pod resolved. Never panics on truncated or hostile input (compression
//! loops, overlong names, lengths past the end).
//!
//! The parser is written here rather than taken from a DNS library because
//! the probes copy at most [`crate::abi::DNS_PAYLOAD_MAX`] bytes: a long
//! answer arrives cut off, and a library refuses the whole message where this
//! keeps the records that arrived whole and says the rest was cut
//! ([`DnsMessage::records_truncated`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    /// The answer section's address and alias records (A, AAAA, CNAME of
    /// class IN), in message order, as far as the captured bytes go; other
    /// record types are skipped. Empty for a query.
    pub records: Vec<DnsRecord>,
    /// The answer section was cut off by the capture: some announced answers
    /// are missing from `records`.
    pub records_truncated: bool,
}

/// One address or alias record of an answer section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsRecord {
    /// The record's owner name (lower case, no trailing dot).
    pub name: String,
    /// How long the record may be cached, in seconds.
    pub ttl: u32,
    /// What the name stands for.
    pub data: RecordData,
}

/// What an answer record says about its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordData {
    /// A or AAAA: the name has this address.
    Address(IpAddr),
    /// CNAME: the name is an alias of this one (lower case, no trailing dot).
    Alias(String),
}

/// The longest CNAME chain followed from a question to its addresses.
const MAX_ALIAS_DEPTH: usize = 16;

impl DnsMessage {
    /// The addresses the first question's name resolved to, following its
    /// CNAME chain through the records, each with the shortest TTL along its
    /// chain (the time a resolver may keep the whole answer). Records about
    /// other names (unrelated extra data) are not followed.
    pub fn resolved_addresses(&self) -> Vec<(IpAddr, u32)> {
        let Some(question) = &self.name else {
            return Vec::new();
        };
        // (name, ttl along the chain to it): the question, then its aliases.
        let mut names: Vec<(&str, u32)> = vec![(question.as_str(), u32::MAX)];
        let mut next = 0;
        while next < names.len() && names.len() <= MAX_ALIAS_DEPTH {
            let (name, ttl) = names[next];
            next += 1;
            for record in &self.records {
                if let RecordData::Alias(target) = &record.data
                    && record.name == name
                    && !names.iter().any(|(n, _)| *n == target)
                {
                    names.push((target.as_str(), ttl.min(record.ttl)));
                }
            }
        }
        let mut out: Vec<(IpAddr, u32)> = Vec::new();
        for record in &self.records {
            let RecordData::Address(ip) = record.data else {
                continue;
            };
            let Some((_, chain_ttl)) = names.iter().find(|(n, _)| *n == record.name) else {
                continue;
            };
            let ttl = (*chain_ttl).min(record.ttl);
            match out.iter_mut().find(|(seen, _)| *seen == ip) {
                Some(seen) => seen.1 = seen.1.max(ttl),
                None => out.push((ip, ttl)),
            }
        }
        out
    }
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
/// when it fits in `b`, and a response's answer records as far as they fit
/// (probes copy at most [`crate::abi::DNS_PAYLOAD_MAX`] bytes).
pub fn parse(b: &[u8]) -> Result<DnsMessage, DnsError> {
    if b.len() < 12 {
        return Err(DnsError::Short(b.len()));
    }
    let id = u16::from_be_bytes([b[0], b[1]]);
    let flags = u16::from_be_bytes([b[2], b[3]]);
    let questions = u16::from_be_bytes([b[4], b[5]]);
    let answers = u16::from_be_bytes([b[6], b[7]]);
    let response = flags & 0x8000 != 0;
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
    let (records, records_truncated) = if response && answers > 0 {
        read_answers(b, questions, answers)
    } else {
        (Vec::new(), false)
    };
    Ok(DnsMessage {
        id,
        response,
        opcode: ((flags >> 11) & 0xf) as u8,
        rcode: Rcode((flags & 0xf) as u8),
        truncated: flags & 0x0200 != 0,
        questions,
        answers,
        name,
        qtype,
        records,
        records_truncated,
    })
}

/// Record types and the class decoded in answers.
const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// Reads the answer section: skips `questions` questions, then decodes up to
/// `answers` records. Returns the A, AAAA and CNAME records of class IN, and
/// whether the bytes ended before every announced answer was read.
fn read_answers(b: &[u8], questions: u16, answers: u16) -> (Vec<DnsRecord>, bool) {
    let mut pos = 12;
    for _ in 0..questions {
        match skip_name(b, pos) {
            Some(end) if end + 4 <= b.len() => pos = end + 4,
            _ => return (Vec::new(), true),
        }
    }
    let mut records = Vec::new();
    for _ in 0..answers {
        let Some((name, end)) = read_name(b, pos) else {
            return (records, true);
        };
        let Some(fixed) = b.get(end..end + 10) else {
            return (records, true);
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlength = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let start = end + 10;
        let Some(rdata) = b.get(start..start + rdlength) else {
            return (records, true);
        };
        pos = start + rdlength;
        if class != CLASS_IN {
            continue;
        }
        let data = match (rtype, rdata.len()) {
            (TYPE_A, 4) => RecordData::Address(IpAddr::V4(Ipv4Addr::new(
                rdata[0], rdata[1], rdata[2], rdata[3],
            ))),
            (TYPE_AAAA, 16) => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(rdata);
                RecordData::Address(IpAddr::V6(Ipv6Addr::from(octets)))
            }
            // The target may point back into the message (compression).
            (TYPE_CNAME, _) => match read_name(b, start) {
                Some((target, _)) => RecordData::Alias(target),
                None => continue,
            },
            _ => continue,
        };
        // A TTL with the top bit set is read as 0 (RFC 2181 section 8).
        let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
        records.push(DnsRecord { name, ttl, data });
    }
    (records, false)
}

/// The offset just after the (possibly compressed) name at `pos`, without
/// decoding it; `None` if it runs past the data.
fn skip_name(b: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *b.get(pos)? as usize;
        match len & 0xc0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + len,
            0xc0 => return b.get(pos + 1).map(|_| pos + 2),
            _ => return None,
        }
    }
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
    push_name(&mut q, name);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// Builds a NOERROR response to [`build_query`]`(id, name, qtype)` carrying
/// `records` in its answer section (used by tests): owner names equal to the
/// question's are compressed to a pointer to it, others written out.
pub fn build_response(id: u16, name: &str, qtype: u16, records: &[DnsRecord]) -> Vec<u8> {
    let mut r = build_query(id, name, qtype);
    r[2] = 0x81; // QR, RD
    r[3] = 0x80; // RA, NOERROR
    let count = u16::try_from(records.len()).unwrap_or(u16::MAX);
    r[6..8].copy_from_slice(&count.to_be_bytes());
    let question = name.trim_end_matches('.').to_ascii_lowercase();
    for record in records.iter().take(usize::from(count)) {
        if record.name == question {
            r.extend_from_slice(&[0xc0, 12]);
        } else {
            push_name(&mut r, &record.name);
        }
        let (rtype, rdata) = match &record.data {
            RecordData::Address(IpAddr::V4(ip)) => (TYPE_A, ip.octets().to_vec()),
            RecordData::Address(IpAddr::V6(ip)) => (TYPE_AAAA, ip.octets().to_vec()),
            RecordData::Alias(target) => {
                let mut t = Vec::new();
                push_name(&mut t, target);
                (TYPE_CNAME, t)
            }
        };
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&record.ttl.to_be_bytes());
        let len = u16::try_from(rdata.len()).unwrap_or(u16::MAX);
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(&rdata);
    }
    r
}

/// Appends `name` in wire form (labels cut at 63 bytes, no compression).
fn push_name(out: &mut Vec<u8>, name: &str) {
    for label in name.trim_end_matches('.').split('.') {
        let l = label.as_bytes();
        out.push(l.len().min(63) as u8);
        out.extend_from_slice(&l[..l.len().min(63)]);
    }
    out.push(0);
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

    fn address(name: &str, ttl: u32, ip: &str) -> DnsRecord {
        DnsRecord {
            name: name.into(),
            ttl,
            data: RecordData::Address(ip.parse().unwrap()),
        }
    }

    fn alias(name: &str, ttl: u32, target: &str) -> DnsRecord {
        DnsRecord {
            name: name.into(),
            ttl,
            data: RecordData::Alias(target.into()),
        }
    }

    #[test]
    fn answers_round_trip_with_their_ttls() {
        let records = vec![
            alias("www.example.com", 300, "edge.cdn.test"),
            address("edge.cdn.test", 20, "203.0.113.7"),
            address("edge.cdn.test", 60, "2001:db8::7"),
        ];
        let r = build_response(9, "WWW.example.com", 1, &records);
        let m = parse(&r).unwrap();
        assert!(m.response);
        assert_eq!(m.answers, 3);
        assert_eq!(m.records, records);
        assert!(!m.records_truncated);
        assert_eq!(
            m.resolved_addresses(),
            vec![
                ("203.0.113.7".parse().unwrap(), 20),
                ("2001:db8::7".parse().unwrap(), 60)
            ]
        );
    }

    #[test]
    fn the_chain_s_shortest_ttl_bounds_an_address() {
        let records = vec![
            alias("a.test", 10, "b.test"),
            alias("b.test", 600, "c.test"),
            address("c.test", 600, "198.51.100.1"),
        ];
        let m = parse(&build_response(1, "a.test", 1, &records)).unwrap();
        assert_eq!(
            m.resolved_addresses(),
            vec![("198.51.100.1".parse().unwrap(), 10)]
        );
    }

    #[test]
    fn records_of_other_names_are_not_followed() {
        let records = vec![
            address("a.test", 30, "198.51.100.1"),
            address("unrelated.test", 30, "198.51.100.2"),
            alias("unrelated.test", 30, "a.test"),
        ];
        let m = parse(&build_response(1, "a.test", 1, &records)).unwrap();
        assert_eq!(m.records.len(), 3);
        assert_eq!(
            m.resolved_addresses(),
            vec![("198.51.100.1".parse().unwrap(), 30)]
        );
    }

    #[test]
    fn a_cut_answer_keeps_the_records_that_arrived_whole() {
        let records = vec![
            address("a.test", 30, "198.51.100.1"),
            address("a.test", 30, "198.51.100.2"),
        ];
        let r = build_response(1, "a.test", 1, &records);
        let m = parse(&r[..r.len() - 2]).unwrap();
        assert_eq!(m.records, records[..1].to_vec());
        assert!(m.records_truncated);
        // A query's answer count is not read as records.
        let mut q = build_query(1, "a.test", 1);
        q[7] = 5;
        let m = parse(&q).unwrap();
        assert!(m.records.is_empty() && !m.records_truncated);
    }

    #[test]
    fn aliases_that_loop_end() {
        let records = vec![alias("a.test", 30, "b.test"), alias("b.test", 30, "a.test")];
        let m = parse(&build_response(1, "a.test", 1, &records)).unwrap();
        assert!(m.resolved_addresses().is_empty());
    }

    #[test]
    fn hostile_lengths_never_panic() {
        let r = build_response(1, "a.test", 1, &[address("a.test", 30, "198.51.100.1")]);
        for cut in 0..r.len() {
            let _ = parse(&r[..cut]);
        }
        let mut long = r.clone();
        let n = long.len();
        long[n - 6] = 0xff; // rdlength past the end
        long[n - 5] = 0xff;
        let m = parse(&long).unwrap();
        assert!(m.records.is_empty() && m.records_truncated);
    }
}
