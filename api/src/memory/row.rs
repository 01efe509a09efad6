//! The compact row a stored flow becomes, and the symbol tables its repeated
//! parts are interned in ([`Tables`]): the memory store keeps [`Row`]s, about
//! 200 bytes each, and renders a `pb::Flow` back only for query results.
//!
//! What a row keeps inline: times as nanoseconds, counts, ports, enum numbers
//! (as sent, so a newer collector's numbers come back unchanged), addresses as
//! 4 or 16 bytes ([`Ip`]), the DNS transaction id, and flags the reports read
//! ([`Flags`]). What it keeps as a [`Sym`] of a table: texts (node names,
//! Services, reasons, drop reasons, the node part of flow ids), an endpoint's
//! identity (every field but its address and port: kind, namespace, pod,
//! workload, node, labels), each direction's verdict, the policy lists, the
//! DNS query (all but its id) and the destination's names. A flow id `node/run/sequence` with decimal
//! numbers is kept as its node's symbol and two numbers ([`FlowId`]); any
//! other id, and an address whose text is not its canonical form, as a text.
//!
//! Compacting takes one reference per symbol ([`Tables::compact`]) and
//! releasing a row drops them ([`Tables::release`]); rendering
//! ([`Tables::render`]) gives back the flow exactly as it was inserted (the
//! flow passed `check_storable`: times are normalized and within 1970..2106,
//! ports fit 16 bits).

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netverdict_proto::time::UnixNanos;
use netverdict_proto::v1 as pb;
use prost::Message;
use rustc_hash::{FxBuildHasher, FxHasher};

use super::intern::{Sym, Table, Value};
use crate::report::is_dns_failure;

/// `first_seen` not set.
pub(super) const NO_TIME: i64 = i64::MIN;

/// A flow id: `node/run/sequence` with canonical decimal numbers as parts,
/// any other id as a whole text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum FlowId {
    /// The node (None: empty) and the two numbers.
    Parts {
        node: Option<Sym>,
        run: u64,
        sequence: u64,
    },
    /// Any other id (never empty: ids are validated).
    Text(Sym),
}

/// An endpoint's address: its 4 or 16 bytes when the text is the address's
/// canonical form, else the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Ip {
    /// No address (an empty text).
    Empty,
    /// An IPv4 address.
    V4([u8; 4]),
    /// An IPv6 address.
    V6([u8; 16]),
    /// A text that is not an address in its canonical form.
    Text(Sym),
}

/// One end of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Side {
    /// The endpoint's identity (None: the flow has no such endpoint).
    pub(super) identity: Option<Sym>,
    pub(super) ip: Ip,
    pub(super) port: u32,
}

/// What the reports read of a row, decided once at insert with the reports'
/// own definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Flags(u8);

impl Flags {
    /// The verdict is DENIED.
    pub(super) const DENIED: u8 = 1;
    /// `report::is_dns_failure`.
    pub(super) const DNS_FAILURE: u8 = 2;
    /// The source's egress denied the flow.
    pub(super) const EGRESS_DENIED: u8 = 4;
    /// The destination's ingress denied the flow.
    pub(super) const INGRESS_DENIED: u8 = 8;
    /// A second observation of a connection: reports skip it.
    pub(super) const COUNTED_ELSEWHERE: u8 = 16;

    pub(super) fn has(self, flag: u8) -> bool {
        self.0 & flag != 0
    }
}

/// A stored flow.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) id: FlowId,
    /// Nanoseconds since the epoch; [`NO_TIME`] when not set.
    pub(super) first_seen: i64,
    /// Nanoseconds since the epoch (always set).
    pub(super) last_seen: i64,
    pub(super) count: u64,
    pub(super) drop_count: u64,
    /// Packets and bytes the source sent (`Flow.packets`, `Flow.bytes`).
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) source: Side,
    pub(super) destination: Side,
    pub(super) node_name: Option<Sym>,
    pub(super) service: Option<Sym>,
    pub(super) reason: Option<Sym>,
    pub(super) drop_reason: Option<Sym>,
    pub(super) egress: Option<Sym>,
    pub(super) ingress: Option<Sym>,
    pub(super) allowed_by: Option<Sym>,
    pub(super) denied_by: Option<Sym>,
    pub(super) dns: Option<Sym>,
    pub(super) dns_id: u32,
    pub(super) destination_names: Option<Sym>,
    pub(super) protocol: i32,
    pub(super) traffic_direction: i32,
    pub(super) verdict: i32,
    pub(super) outcome: i32,
    pub(super) mismatch: i32,
    pub(super) observation_point: i32,
    pub(super) flags: Flags,
}

/// What flow filters read of a row: its verdict, outcome, mismatch,
/// protocol, node, drop reason, policy lists, DNS record, destination names
/// and endpoints (identities and ports; addresses only when asked). Rows with one
/// signature pass or fail a filter set alike, so a query decides once per
/// signature ([`Probe::check`] renders just these parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Signature {
    source: Side,
    destination: Side,
    node_name: Option<Sym>,
    drop_reason: Option<Sym>,
    allowed_by: Option<Sym>,
    denied_by: Option<Sym>,
    dns: Option<Sym>,
    destination_names: Option<Sym>,
    verdict: i32,
    outcome: i32,
    protocol: i32,
    mismatch: i32,
}

impl Row {
    /// The row's signature, its addresses left out unless `addresses`.
    pub(super) fn signature(&self, Addresses(addresses): Addresses) -> Signature {
        let side = |s: &Side| Side {
            ip: if addresses { s.ip } else { Ip::Empty },
            ..*s
        };
        Signature {
            source: side(&self.source),
            destination: side(&self.destination),
            node_name: self.node_name,
            drop_reason: self.drop_reason,
            allowed_by: self.allowed_by,
            denied_by: self.denied_by,
            dns: self.dns,
            destination_names: self.destination_names,
            verdict: self.verdict,
            outcome: self.outcome,
            protocol: self.protocol,
            mismatch: self.mismatch,
        }
    }
}

/// The per-store symbol tables.
#[derive(Default)]
pub(super) struct Tables {
    /// Node names, Services, reasons, drop reasons, flow ids' nodes (or
    /// whole ids), addresses that are not in canonical form.
    texts: Table<Box<str>>,
    /// Endpoint identities: `pb::Endpoint`s with an empty `ip` and port 0.
    endpoints: Table<pb::Endpoint>,
    /// Direction verdicts.
    verdicts: Table<pb::DirectionVerdict>,
    /// `allowed_by` and `denied_by` lists, in their order.
    policies: Table<Box<[pb::PolicyRef]>>,
    /// DNS records with id 0.
    dns: Table<pb::Dns>,
    /// Destination name lists, in their order.
    names: Table<Box<[Box<str>]>>,
    /// Encoding buffer for hashing verdicts.
    scratch: Vec<u8>,
}

fn hash_str(s: &str) -> u64 {
    FxBuildHasher.hash_one(s)
}

/// The parts of a `node/run/sequence` id whose numbers are written as Rust
/// writes them (no sign, no leading zero), so that the parts give back the
/// same text.
fn id_parts(id: &str) -> Option<(&str, u64, u64)> {
    let mut parts = id.split('/');
    let (node, run, sequence) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let number = |s: &str| -> Option<u64> {
        let canonical = s.bytes().all(|b| b.is_ascii_digit())
            && !s.is_empty()
            && (s == "0" || !s.starts_with('0'));
        if canonical { s.parse().ok() } else { None }
    };
    Some((node, number(run)?, number(sequence)?))
}

/// A text written into a stack buffer (addresses are at most 45 bytes).
struct StackText {
    bytes: [u8; 64],
    len: usize,
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dest = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Whether `ip` is written exactly as `text`.
fn writes_as(ip: IpAddr, text: &str) -> bool {
    let mut buf = StackText {
        bytes: [0; 64],
        len: 0,
    };
    write!(buf, "{ip}").is_ok() && buf.bytes.get(..buf.len) == Some(text.as_bytes())
}

fn identity_hash(e: &pb::Endpoint) -> u64 {
    let pb::Endpoint {
        ip: _,
        port: _,
        kind,
        namespace,
        pod_name,
        labels,
        workload,
        node_name,
    } = e;
    let mut h = FxHasher::default();
    (kind, namespace, pod_name, workload, node_name).hash(&mut h);
    // Independent of the map's order.
    let labels_hash = labels
        .iter()
        .map(|pair| FxBuildHasher.hash_one(pair))
        .fold(0u64, u64::wrapping_add);
    (labels.len(), labels_hash).hash(&mut h);
    h.finish()
}

/// Whether two endpoints have the same identity (all but `ip` and `port`).
fn identity_eq(a: &pb::Endpoint, b: &pb::Endpoint) -> bool {
    let pb::Endpoint {
        ip: _,
        port: _,
        kind,
        namespace,
        pod_name,
        labels,
        workload,
        node_name,
    } = a;
    *kind == b.kind
        && *namespace == b.namespace
        && *pod_name == b.pod_name
        && *workload == b.workload
        && *node_name == b.node_name
        && *labels == b.labels
}

fn policies_hash(list: &[pb::PolicyRef]) -> u64 {
    let mut h = FxHasher::default();
    list.len().hash(&mut h);
    for p in list {
        let pb::PolicyRef {
            namespace,
            name,
            kind,
            tier,
        } = p;
        (namespace, name, kind, tier).hash(&mut h);
    }
    h.finish()
}

fn dns_hash(d: &pb::Dns) -> u64 {
    let pb::Dns {
        id: _,
        query,
        qtype,
        rcode,
        answers,
        egress_allows_cluster_dns,
    } = d;
    FxBuildHasher.hash_one((query, qtype, rcode, answers, egress_allows_cluster_dns))
}

/// Whether two DNS records are equal but for their ids.
fn dns_eq(a: &pb::Dns, b: &pb::Dns) -> bool {
    let pb::Dns {
        id: _,
        query,
        qtype,
        rcode,
        answers,
        egress_allows_cluster_dns,
    } = a;
    *query == b.query
        && *qtype == b.qtype
        && *rcode == b.rcode
        && *answers == b.answers
        && *egress_allows_cluster_dns == b.egress_allows_cluster_dns
}

fn string_heap(s: &str) -> usize {
    s.len()
}

impl Value for pb::Endpoint {
    fn heap_bytes(&self) -> usize {
        let labels =
            super::intern::hash_table_bytes(self.labels.capacity(), size_of::<(String, String)>())
                + self
                    .labels
                    .iter()
                    .map(|(k, v)| k.capacity() + v.capacity())
                    .sum::<usize>();
        string_heap(&self.namespace)
            + string_heap(&self.pod_name)
            + string_heap(&self.workload)
            + string_heap(&self.node_name)
            + labels
    }
}

/// Nested messages: four times their encoded size, which is above what
/// their vectors and strings take (each element's fixed size included).
impl Value for pb::DirectionVerdict {
    fn heap_bytes(&self) -> usize {
        4 * self.encoded_len()
    }
}

impl Value for Box<[pb::PolicyRef]> {
    fn heap_bytes(&self) -> usize {
        self.iter()
            .map(|p| size_of::<pb::PolicyRef>() + p.namespace.len() + p.name.len())
            .sum()
    }
}

impl Value for Box<[Box<str>]> {
    fn heap_bytes(&self) -> usize {
        self.iter().map(|n| size_of::<Box<str>>() + n.len()).sum()
    }
}

fn names_hash(list: &[String]) -> u64 {
    FxBuildHasher.hash_one(list)
}

impl Value for pb::Dns {
    fn heap_bytes(&self) -> usize {
        self.query.len() + self.qtype.len() + self.rcode.len()
    }
}

fn nanos(t: &prost_types::Timestamp) -> i64 {
    UnixNanos::from_timestamp(t).nanos_saturating()
}

fn timestamp(nanos: i64) -> prost_types::Timestamp {
    UnixNanos::from_nanos(nanos).to_timestamp()
}

impl Tables {
    fn text(&mut self, s: &str) -> Option<Sym> {
        if s.is_empty() {
            return None;
        }
        self.texts
            .intern(s, hash_str(s), |v, p| **v == *p, |s: &str| Box::from(s))
    }

    fn text_of(&self, sym: Option<Sym>) -> &str {
        sym.map_or("", |s| &**self.texts.get(s))
    }

    fn release_text(&mut self, sym: Option<Sym>) {
        if let Some(s) = sym {
            self.texts.release(s);
        }
    }

    /// The id of a stored flow with id `id`, if the tables could hold it
    /// (None: no stored flow has it). Takes no reference.
    pub(super) fn find_id(&self, id: &str) -> Option<FlowId> {
        let find = |s: &str| self.texts.find(s, hash_str(s), |v, p| **v == *p);
        match id_parts(id) {
            Some((node, run, sequence)) => Some(FlowId::Parts {
                node: if node.is_empty() {
                    None
                } else {
                    Some(find(node)?)
                },
                run,
                sequence,
            }),
            None => find(id).map(FlowId::Text),
        }
    }

    fn intern_id(&mut self, id: &str) -> FlowId {
        match id_parts(id) {
            Some((node, run, sequence)) => FlowId::Parts {
                node: self.text(node),
                run,
                sequence,
            },
            None => match self.text(id) {
                Some(sym) => FlowId::Text(sym),
                // Only when 4 billion texts are held: kept as its node-less parts.
                None => FlowId::Parts {
                    node: None,
                    run: 0,
                    sequence: 0,
                },
            },
        }
    }

    /// Writes a flow id's text into `out` (cleared first).
    pub(super) fn write_id(&self, id: &FlowId, out: &mut String) {
        out.clear();
        match id {
            FlowId::Parts {
                node,
                run,
                sequence,
            } => {
                let _ = write!(out, "{}/{run}/{sequence}", self.text_of(*node));
            }
            FlowId::Text(sym) => out.push_str(self.texts.get(*sym)),
        }
    }

    /// The order of two ids' texts.
    pub(super) fn cmp_ids(&self, a: &FlowId, b: &FlowId) -> std::cmp::Ordering {
        if a == b {
            return std::cmp::Ordering::Equal;
        }
        let (mut x, mut y) = (String::new(), String::new());
        self.write_id(a, &mut x);
        self.write_id(b, &mut y);
        x.cmp(&y)
    }

    fn intern_ip(&mut self, text: &str) -> Ip {
        if text.is_empty() {
            return Ip::Empty;
        }
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if writes_as(IpAddr::V4(a), text) => Ip::V4(a.octets()),
            Ok(IpAddr::V6(a)) if writes_as(IpAddr::V6(a), text) => Ip::V6(a.octets()),
            _ => self.text(text).map_or(Ip::Empty, Ip::Text),
        }
    }

    /// Writes an address's text into `out` (cleared first).
    pub(super) fn write_ip(&self, ip: &Ip, out: &mut String) {
        out.clear();
        match ip {
            Ip::Empty => {}
            Ip::V4(b) => {
                let _ = write!(out, "{}", Ipv4Addr::from(*b));
            }
            Ip::V6(b) => {
                let _ = write!(out, "{}", Ipv6Addr::from(*b));
            }
            Ip::Text(sym) => out.push_str(self.texts.get(*sym)),
        }
    }

    fn side(&mut self, endpoint: Option<&pb::Endpoint>) -> Side {
        match endpoint {
            None => Side {
                identity: None,
                ip: Ip::Empty,
                port: 0,
            },
            Some(e) => Side {
                identity: self
                    .endpoints
                    .intern(e, identity_hash(e), identity_eq, |e| pb::Endpoint {
                        ip: String::new(),
                        port: 0,
                        ..e.clone()
                    }),
                ip: self.intern_ip(&e.ip),
                port: e.port,
            },
        }
    }

    fn verdict(&mut self, v: Option<&pb::DirectionVerdict>) -> Option<Sym> {
        let v = v?;
        self.scratch.clear();
        // Encoding into a Vec cannot fail; the bytes are deterministic (no maps).
        let _ = v.encode(&mut self.scratch);
        let hash = FxBuildHasher.hash_one(&self.scratch);
        self.verdicts.intern(v, hash, |a, b| a == b, Clone::clone)
    }

    fn policies(&mut self, list: &[pb::PolicyRef]) -> Option<Sym> {
        if list.is_empty() {
            return None;
        }
        self.policies.intern(
            list,
            policies_hash(list),
            |a, b| **a == *b,
            |l| l.to_vec().into_boxed_slice(),
        )
    }

    /// The identity of an endpoint symbol.
    pub(super) fn identity(&self, sym: Sym) -> &pb::Endpoint {
        self.endpoints.get(sym)
    }

    /// A policy list.
    pub(super) fn policy_list(&self, sym: Option<Sym>) -> &[pb::PolicyRef] {
        sym.map_or(&[], |s| &**self.policies.get(s))
    }

    fn names(&mut self, list: &[String]) -> Option<Sym> {
        if list.is_empty() {
            return None;
        }
        self.names.intern(
            list,
            names_hash(list),
            |a, b| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| **x == **y),
            |l| l.iter().map(|n| Box::from(n.as_str())).collect(),
        )
    }

    /// A destination name list, rendered.
    pub(super) fn name_list(&self, sym: Option<Sym>) -> Vec<String> {
        sym.map_or_else(Vec::new, |s| {
            self.names.get(s).iter().map(|n| n.to_string()).collect()
        })
    }

    /// A DNS record (id 0).
    pub(super) fn dns_record(&self, sym: Sym) -> &pb::Dns {
        self.dns.get(sym)
    }

    /// A text (empty for None).
    pub(super) fn text_str(&self, sym: Option<Sym>) -> &str {
        self.text_of(sym)
    }

    /// The row of `flow`, taking a reference to each of its symbols.
    pub(super) fn compact(&mut self, flow: &pb::Flow) -> Row {
        let pb::Flow {
            id,
            first_seen,
            last_seen,
            count,
            node_name,
            source,
            destination,
            protocol,
            service,
            traffic_direction,
            verdict,
            reason,
            egress,
            ingress,
            allowed_by,
            denied_by,
            outcome,
            drop_reason,
            drop_count,
            mismatch,
            dns,
            observation_point,
            counted_elsewhere,
            destination_names,
            packets,
            bytes,
        } = flow;
        let denied = |d: &Option<pb::DirectionVerdict>| {
            d.as_ref()
                .is_some_and(|d| d.status == pb::PolicyStatus::Denied as i32)
        };
        let mut flags = 0;
        for (set, flag) in [
            (*verdict == pb::Verdict::Denied as i32, Flags::DENIED),
            (is_dns_failure(flow), Flags::DNS_FAILURE),
            (denied(egress), Flags::EGRESS_DENIED),
            (denied(ingress), Flags::INGRESS_DENIED),
            (*counted_elsewhere, Flags::COUNTED_ELSEWHERE),
        ] {
            if set {
                flags |= flag;
            }
        }
        let dns_sym = dns.as_ref().and_then(|d| {
            self.dns
                .intern(d, dns_hash(d), dns_eq, |d| pb::Dns { id: 0, ..d.clone() })
        });
        Row {
            id: self.intern_id(id),
            first_seen: first_seen.as_ref().map_or(NO_TIME, nanos),
            last_seen: last_seen.as_ref().map_or(NO_TIME, nanos),
            count: *count,
            drop_count: *drop_count,
            packets: *packets,
            bytes: *bytes,
            source: self.side(source.as_ref()),
            destination: self.side(destination.as_ref()),
            node_name: self.text(node_name),
            service: self.text(service),
            reason: self.text(reason),
            drop_reason: self.text(drop_reason),
            egress: self.verdict(egress.as_ref()),
            ingress: self.verdict(ingress.as_ref()),
            allowed_by: self.policies(allowed_by),
            denied_by: self.policies(denied_by),
            dns: dns_sym,
            dns_id: dns.as_ref().map_or(0, |d| d.id),
            destination_names: self.names(destination_names),
            protocol: *protocol,
            traffic_direction: *traffic_direction,
            verdict: *verdict,
            outcome: *outcome,
            mismatch: *mismatch,
            observation_point: *observation_point,
            flags: Flags(flags),
        }
    }

    /// Drops the references `row` holds.
    pub(super) fn release(&mut self, row: &Row) {
        match row.id {
            FlowId::Parts { node, .. } => self.release_text(node),
            FlowId::Text(sym) => self.texts.release(sym),
        }
        for side in [&row.source, &row.destination] {
            if let Some(s) = side.identity {
                self.endpoints.release(s);
            }
            if let Ip::Text(s) = side.ip {
                self.texts.release(s);
            }
        }
        for t in [row.node_name, row.service, row.reason, row.drop_reason] {
            self.release_text(t);
        }
        for v in [row.egress, row.ingress].into_iter().flatten() {
            self.verdicts.release(v);
        }
        for p in [row.allowed_by, row.denied_by].into_iter().flatten() {
            self.policies.release(p);
        }
        if let Some(d) = row.dns {
            self.dns.release(d);
        }
        if let Some(n) = row.destination_names {
            self.names.release(n);
        }
    }

    fn render_side(&self, side: &Side) -> Option<pb::Endpoint> {
        let identity = side.identity?;
        let mut e = self.endpoints.get(identity).clone();
        self.write_ip(&side.ip, &mut e.ip);
        e.port = side.port;
        Some(e)
    }

    /// The flow `row` was made from (its [`Probe`] is the same rendering
    /// without allocations).
    pub(super) fn render(&self, row: &Row) -> pb::Flow {
        let mut id = String::new();
        self.write_id(&row.id, &mut id);
        let text = |s: Option<Sym>| self.text_of(s).to_string();
        pb::Flow {
            id,
            first_seen: (row.first_seen != NO_TIME).then(|| timestamp(row.first_seen)),
            last_seen: (row.last_seen != NO_TIME).then(|| timestamp(row.last_seen)),
            count: row.count,
            node_name: text(row.node_name),
            source: self.render_side(&row.source),
            destination: self.render_side(&row.destination),
            protocol: row.protocol,
            service: text(row.service),
            traffic_direction: row.traffic_direction,
            verdict: row.verdict,
            reason: text(row.reason),
            egress: row.egress.map(|s| self.verdicts.get(s).clone()),
            ingress: row.ingress.map(|s| self.verdicts.get(s).clone()),
            allowed_by: self.policy_list(row.allowed_by).to_vec(),
            denied_by: self.policy_list(row.denied_by).to_vec(),
            outcome: row.outcome,
            drop_reason: text(row.drop_reason),
            drop_count: row.drop_count,
            mismatch: row.mismatch,
            dns: row.dns.map(|s| pb::Dns {
                id: row.dns_id,
                ..self.dns.get(s).clone()
            }),
            observation_point: row.observation_point,
            counted_elsewhere: row.flags.has(Flags::COUNTED_ELSEWHERE),
            destination_names: self.name_list(row.destination_names),
            packets: row.packets,
            bytes: row.bytes,
        }
    }

    /// A probe that renders rows for a filter's matcher.
    pub(super) fn probe(&self) -> Probe<'_> {
        Probe {
            tables: self,
            flow: pb::Flow::default(),
            endpoints: Vec::new(),
            verdicts: Vec::new(),
            policies: Vec::new(),
            dns: Vec::new(),
            names: Vec::new(),
        }
    }

    /// The bytes the tables take.
    pub(super) fn bytes(&self) -> usize {
        self.texts.bytes()
            + self.endpoints.bytes()
            + self.verdicts.bytes()
            + self.policies.bytes()
            + self.dns.bytes()
            + self.names.bytes()
            + self.scratch.capacity()
    }

    /// The references to an endpoint identity (tests check the counts).
    #[cfg(test)]
    pub(super) fn identity_refs(&self, sym: Sym) -> u32 {
        self.endpoints.refs(sym)
    }

    /// How many values the tables hold.
    #[cfg(test)]
    pub(super) fn values(&self) -> usize {
        self.texts.len()
            + self.endpoints.len()
            + self.verdicts.len()
            + self.policies.len()
            + self.dns.len()
            + self.names.len()
    }
}

/// A rendered value per symbol slot, made on first use.
type Cache<T> = Vec<Option<T>>;

/// Takes the rendered value of `sym` out of `cache` (rendering it with
/// `make` the first time); [`put`] gives it back.
fn take<T>(cache: &mut Cache<T>, slots: usize, sym: Sym, make: impl FnOnce() -> T) -> T {
    if cache.len() < slots {
        cache.resize_with(slots, || None);
    }
    match cache.get_mut(sym.slot()).and_then(Option::take) {
        Some(v) => v,
        None => make(),
    }
}

fn put<T>(cache: &mut Cache<T>, sym: Sym, value: T) {
    if let Some(slot) = cache.get_mut(sym.slot()) {
        *slot = Some(value);
    }
}

/// Whether a partial probe renders the endpoints' addresses.
#[derive(Debug, Clone, Copy)]
pub(super) struct Addresses(pub(super) bool);

/// Renders rows into one reused flow for a filter's matcher: texts are
/// copied into its strings, and endpoints, verdicts, policy lists and DNS
/// records are rendered once per symbol and moved in and out of the flow,
/// so that matching a row allocates nothing once warm.
pub(super) struct Probe<'t> {
    tables: &'t Tables,
    flow: pb::Flow,
    endpoints: Cache<pb::Endpoint>,
    verdicts: Cache<pb::DirectionVerdict>,
    policies: Cache<Vec<pb::PolicyRef>>,
    dns: Cache<pb::Dns>,
    names: Cache<Vec<String>>,
}

impl Probe<'_> {
    /// Whether `row`'s flow passes `check`. With `partial`, only what
    /// flow filters read is rendered (the row's [`Signature`]); the rest of
    /// the flow is left empty.
    pub(super) fn check(
        &mut self,
        row: &Row,
        partial: Option<Addresses>,
        check: impl FnOnce(&pb::Flow) -> bool,
    ) -> bool {
        let t = self.tables;
        let f = &mut self.flow;
        let text = |into: &mut String, sym: Option<Sym>| {
            into.clear();
            into.push_str(t.text_of(sym));
        };
        text(&mut f.node_name, row.node_name);
        f.protocol = row.protocol;
        f.verdict = row.verdict;
        f.outcome = row.outcome;
        text(&mut f.drop_reason, row.drop_reason);
        f.mismatch = row.mismatch;
        let addresses = match partial {
            None => {
                t.write_id(&row.id, &mut f.id);
                f.first_seen = (row.first_seen != NO_TIME).then(|| timestamp(row.first_seen));
                f.last_seen = (row.last_seen != NO_TIME).then(|| timestamp(row.last_seen));
                f.count = row.count;
                text(&mut f.service, row.service);
                f.traffic_direction = row.traffic_direction;
                text(&mut f.reason, row.reason);
                f.drop_count = row.drop_count;
                f.packets = row.packets;
                f.bytes = row.bytes;
                f.observation_point = row.observation_point;
                f.counted_elsewhere = row.flags.has(Flags::COUNTED_ELSEWHERE);
                true
            }
            Some(Addresses(read)) => read,
        };
        let slots = t.endpoints.slots();
        for (side, end) in [
            (&row.source, &mut f.source),
            (&row.destination, &mut f.destination),
        ] {
            *end = side.identity.map(|s| {
                let mut e = take(&mut self.endpoints, slots, s, || t.endpoints.get(s).clone());
                if addresses {
                    t.write_ip(&side.ip, &mut e.ip);
                }
                e.port = side.port;
                e
            });
        }
        let slots = t.verdicts.slots();
        for (sym, into) in [(row.egress, &mut f.egress), (row.ingress, &mut f.ingress)] {
            *into = sym
                .filter(|_| partial.is_none())
                .map(|s| take(&mut self.verdicts, slots, s, || t.verdicts.get(s).clone()));
        }
        let slots = t.policies.slots();
        for (sym, into) in [
            (row.allowed_by, &mut f.allowed_by),
            (row.denied_by, &mut f.denied_by),
        ] {
            *into = sym.map_or_else(Vec::new, |s| {
                take(&mut self.policies, slots, s, || t.policies.get(s).to_vec())
            });
        }
        f.dns = row.dns.map(|s| {
            let mut d = take(&mut self.dns, t.dns.slots(), s, || t.dns.get(s).clone());
            d.id = row.dns_id;
            d
        });
        f.destination_names = row.destination_names.map_or_else(Vec::new, |s| {
            take(&mut self.names, t.names.slots(), s, || t.name_list(Some(s)))
        });
        let passes = check(f);
        // The rendered values go back to their caches.
        for (side, end) in [
            (&row.source, &mut f.source),
            (&row.destination, &mut f.destination),
        ] {
            if let (Some(s), Some(e)) = (side.identity, end.take()) {
                put(&mut self.endpoints, s, e);
            }
        }
        for (sym, from) in [(row.egress, &mut f.egress), (row.ingress, &mut f.ingress)] {
            if let (Some(s), Some(v)) = (sym, from.take()) {
                put(&mut self.verdicts, s, v);
            }
        }
        for (sym, from) in [
            (row.allowed_by, &mut f.allowed_by),
            (row.denied_by, &mut f.denied_by),
        ] {
            if let Some(s) = sym {
                put(&mut self.policies, s, std::mem::take(from));
            }
        }
        if let (Some(s), Some(d)) = (row.dns, f.dns.take()) {
            put(&mut self.dns, s, d);
        }
        if let Some(s) = row.destination_names {
            put(&mut self.names, s, std::mem::take(&mut f.destination_names));
        }
        passes
    }
}
