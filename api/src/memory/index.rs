//! The reports' incremental index: per bucket, a tally of its denied flows
//! and one of its failed DNS queries, each keyed finer than the report's
//! groups, kept up to date as rows are inserted and dropped with their bucket.
//!
//! A denied tally is keyed by both endpoints' identity symbols and addresses,
//! the protocol, the destination port and the `denied_by` list's symbol; a
//! DNS tally by both endpoints' identities, the DNS record's symbol and the
//! outcome. Both keys hold everything a report's filter (namespaces and
//! labels of either endpoint: the endpoints' identities) and its grouping
//! read, so a report over whole buckets merges tallies instead of reading
//! rows: the filter is decided once per pair of identities, and tallies
//! merge into the report's groups (`report::WorkloadKey` of each end, the
//! sorted policies) as `report::denied_groups` and `report::dns_failures`
//! merge flows. A bucket the window cuts (at most the first and the last),
//! or one without an index (a partial eviction dropped it), is tallied from
//! its rows in the window on the spot. Groups are then ordered and cut with
//! the reports' own order (`report::denied_order`, `report::dns_order`).
//!
//! Records that are counted elsewhere are never tallied: every report skips them.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, VecDeque};

use netverdict_proto::filter::{Filter, PolicyName, normalize_dns_names};
use netverdict_proto::names::known_or_zero;
use netverdict_proto::time::{TimeWindow, UnixNanos};
use netverdict_proto::v1 as pb;
use rustc_hash::FxHashMap;

use super::intern::{Sym, hash_table_bytes};
use super::row::{Flags, FlowId, Ip, NO_TIME, Row, Tables};
use crate::report::{WorkloadKey, denied_order, dns_order, sort_and_cut};
use crate::store::ReportQuery;

/// The most recent record of a tally: what a report shows of it.
#[derive(Debug, Clone, Copy)]
struct Latest {
    last_seen: i64,
    id: FlowId,
    reason: Option<Sym>,
    outcome: i32,
    denied: bool,
    dns: Option<Sym>,
    destination_names: Option<Sym>,
}

impl Latest {
    fn of(row: &Row) -> Self {
        Latest {
            last_seen: row.last_seen,
            id: row.id,
            reason: row.reason,
            outcome: row.outcome,
            denied: row.flags.has(Flags::DENIED),
            dns: row.dns,
            destination_names: row.destination_names,
        }
    }

    /// Keeps the more recent of the two: the later `last_seen`, then the
    /// larger id (as text), as the reports do.
    fn keep_latest(&mut self, other: &Latest, tables: &Tables) {
        let newer = other
            .last_seen
            .cmp(&self.last_seen)
            .then_with(|| tables.cmp_ids(&other.id, &self.id))
            .is_gt();
        if newer {
            *self = *other;
        }
    }
}

/// The earlier of two optional times ([`NO_TIME`]: not set).
fn earliest(a: i64, b: i64) -> i64 {
    match (a, b) {
        (NO_TIME, t) | (t, NO_TIME) => t,
        (a, b) => a.min(b),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DeniedKey {
    source: Option<Sym>,
    source_ip: Ip,
    destination: Option<Sym>,
    destination_ip: Ip,
    /// Known or zero.
    protocol: i32,
    port: u32,
    denied_by: Option<Sym>,
}

#[derive(Debug, Clone, Copy)]
struct DeniedTally {
    count: u64,
    flows: u64,
    first_seen: i64,
    last_seen: i64,
    latest: Latest,
    egress_denied: bool,
    ingress_denied: bool,
}

impl DeniedTally {
    fn of(row: &Row) -> Self {
        DeniedTally {
            count: row.count,
            flows: 1,
            first_seen: row.first_seen,
            last_seen: row.last_seen,
            latest: Latest::of(row),
            egress_denied: row.flags.has(Flags::EGRESS_DENIED),
            ingress_denied: row.flags.has(Flags::INGRESS_DENIED),
        }
    }

    fn merge(&mut self, other: &DeniedTally, tables: &Tables) {
        // Counts come from the network: saturate, never overflow.
        self.count = self.count.saturating_add(other.count);
        self.flows = self.flows.saturating_add(other.flows);
        self.first_seen = earliest(self.first_seen, other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.latest.keep_latest(&other.latest, tables);
        self.egress_denied |= other.egress_denied;
        self.ingress_denied |= other.ingress_denied;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DnsKey {
    source: Option<Sym>,
    destination: Option<Sym>,
    dns: Sym,
    outcome: i32,
}

#[derive(Debug, Clone)]
struct DnsTally {
    count: u64,
    last_seen: i64,
    latest: Latest,
    /// The `denied_by` lists of denied records, each once.
    denied_by: Vec<Sym>,
}

impl DnsTally {
    fn of(row: &Row) -> Self {
        let denied_by = match row.denied_by {
            Some(list) if row.flags.has(Flags::DENIED) => vec![list],
            _ => Vec::new(),
        };
        DnsTally {
            count: row.count,
            last_seen: row.last_seen,
            latest: Latest::of(row),
            denied_by,
        }
    }

    fn merge(&mut self, other: &DnsTally, tables: &Tables) {
        self.count = self.count.saturating_add(other.count);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.latest.keep_latest(&other.latest, tables);
        for list in &other.denied_by {
            if !self.denied_by.contains(list) {
                self.denied_by.push(*list);
            }
        }
    }
}

/// One bucket's tallies.
#[derive(Debug, Default)]
pub(super) struct BucketIndex {
    denied: FxHashMap<DeniedKey, DeniedTally>,
    dns: FxHashMap<DnsKey, DnsTally>,
}

impl BucketIndex {
    /// Adds a row to the tallies it takes part in.
    pub(super) fn add(&mut self, row: &Row, tables: &Tables) {
        self.add_denied(row, tables);
        self.add_dns(row, tables);
    }

    fn add_denied(&mut self, row: &Row, tables: &Tables) {
        if !row.flags.has(Flags::DENIED) || row.flags.has(Flags::COUNTED_ELSEWHERE) {
            return;
        }
        let key = DeniedKey {
            source: row.source.identity,
            source_ip: row.source.ip,
            destination: row.destination.identity,
            destination_ip: row.destination.ip,
            protocol: known_or_zero::<pb::Protocol>(row.protocol),
            port: row.destination.port,
            denied_by: row.denied_by,
        };
        let tally = DeniedTally::of(row);
        match self.denied.entry(key) {
            Entry::Occupied(mut e) => e.get_mut().merge(&tally, tables),
            Entry::Vacant(e) => {
                e.insert(tally);
            }
        }
    }

    fn add_dns(&mut self, row: &Row, tables: &Tables) {
        if !row.flags.has(Flags::DNS_FAILURE) || row.flags.has(Flags::COUNTED_ELSEWHERE) {
            return;
        }
        let Some(dns) = row.dns else { return };
        let key = DnsKey {
            source: row.source.identity,
            destination: row.destination.identity,
            dns,
            outcome: row.outcome,
        };
        let tally = DnsTally::of(row);
        match self.dns.entry(key) {
            Entry::Occupied(mut e) => e.get_mut().merge(&tally, tables),
            Entry::Vacant(e) => {
                e.insert(tally);
            }
        }
    }

    /// The bytes the tallies take (hash tables by capacity, the DNS
    /// tallies' policy lists).
    pub(super) fn bytes(&self) -> usize {
        hash_table_bytes(
            self.denied.capacity(),
            size_of::<(DeniedKey, DeniedTally)>(),
        ) + hash_table_bytes(self.dns.capacity(), size_of::<(DnsKey, DnsTally)>())
            + self
                .dns
                .values()
                .map(|t| t.denied_by.capacity() * size_of::<Sym>())
                .sum::<usize>()
    }
}

/// A bucket as a report reads it.
pub(super) struct BucketView<'a> {
    /// Its rows.
    pub(super) rows: &'a VecDeque<Row>,
    /// Its index, if it has one.
    pub(super) index: Option<&'a BucketIndex>,
    /// Whether the whole bucket is in the report's window.
    pub(super) whole: bool,
}

impl<'a> BucketView<'a> {
    /// The bucket's index, or for a bucket the window cuts (or without
    /// one) an index of its rows in `window`.
    fn tallies(&self, window: &TimeWindow, tables: &Tables, dns: bool) -> Tallies<'a> {
        if let (true, Some(index)) = (self.whole, self.index) {
            return Tallies::Kept(index);
        }
        let mut index = BucketIndex::default();
        for row in self
            .rows
            .iter()
            .filter(|r| window.contains(UnixNanos::from_nanos(r.last_seen)))
        {
            if dns {
                index.add_dns(row, tables);
            } else {
                index.add_denied(row, tables);
            }
        }
        Tallies::Made(index)
    }
}

enum Tallies<'a> {
    Kept(&'a BucketIndex),
    Made(BucketIndex),
}

impl Tallies<'_> {
    fn get(&self) -> &BucketIndex {
        match self {
            Tallies::Kept(i) => i,
            Tallies::Made(i) => i,
        }
    }
}

/// A report's filter, decided once per pair of endpoint identities.
struct Scope<'t> {
    filter: Filter,
    decided: FxHashMap<(Option<Sym>, Option<Sym>), bool>,
    tables: &'t Tables,
}

impl<'t> Scope<'t> {
    fn new(query: &ReportQuery, tables: &'t Tables) -> Self {
        Scope {
            // Its namespaces and labels: both read only the endpoints'
            // identities (tests check flow_filter sets nothing else).
            filter: query.flow_filter(),
            decided: FxHashMap::default(),
            tables,
        }
    }

    fn admits(&mut self, source: Option<Sym>, destination: Option<Sym>) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let (filter, tables) = (&self.filter, self.tables);
        *self
            .decided
            .entry((source, destination))
            .or_insert_with(|| {
                let probe = pb::Flow {
                    source: source.map(|s| tables.identity(s).clone()),
                    destination: destination.map(|s| tables.identity(s).clone()),
                    ..Default::default()
                };
                filter.matches(&probe)
            })
    }
}

/// The workload references and policy sets of a report's groups, each made once.
#[derive(Default)]
struct GroupParts {
    ends: Vec<pb::WorkloadRef>,
    end_ids: FxHashMap<(i32, String, String, String), u32>,
    end_of: FxHashMap<(Option<Sym>, Ip), u32>,
    policy_sets: Vec<Vec<PolicyName>>,
    policy_set_ids: FxHashMap<Vec<PolicyName>, u32>,
    policy_set_of: FxHashMap<Option<Sym>, u32>,
    ip: String,
}

impl GroupParts {
    fn end(&mut self, identity: Option<Sym>, ip: Ip, tables: &Tables) -> u32 {
        if let Some(&id) = self.end_of.get(&(identity, ip)) {
            return id;
        }
        tables.write_ip(&ip, &mut self.ip);
        let key = match identity {
            Some(s) => WorkloadKey::of_parts(tables.identity(s), &self.ip),
            None => WorkloadKey::of(None),
        };
        let r = key.to_ref();
        let dedup = (
            r.kind,
            r.namespace.clone(),
            r.workload.clone(),
            r.ip.clone(),
        );
        let next = self.ends.len() as u32;
        let id = *self.end_ids.entry(dedup).or_insert(next);
        if id == next {
            self.ends.push(r);
        }
        self.end_of.insert((identity, ip), id);
        id
    }

    fn policy_set(&mut self, list: Option<Sym>, tables: &Tables) -> u32 {
        if let Some(&id) = self.policy_set_of.get(&list) {
            return id;
        }
        let mut set: Vec<PolicyName> = tables
            .policy_list(list)
            .iter()
            .map(PolicyName::of)
            .collect();
        set.sort_unstable();
        set.dedup();
        let next = self.policy_sets.len() as u32;
        let id = *self.policy_set_ids.entry(set.clone()).or_insert(next);
        if id == next {
            self.policy_sets.push(set);
        }
        self.policy_set_of.insert(list, id);
        id
    }
}

fn timestamp(nanos: i64) -> Option<prost_types::Timestamp> {
    (nanos != NO_TIME).then(|| UnixNanos::from_nanos(nanos).to_timestamp())
}

/// The denied report over `buckets` (those overlapping `query.window`).
pub(super) fn denied<'a>(
    buckets: impl Iterator<Item = BucketView<'a>>,
    query: &ReportQuery,
    tables: &Tables,
) -> Vec<pb::DeniedGroup> {
    let mut scope = Scope::new(query, tables);
    let mut parts = GroupParts::default();
    let mut groups: FxHashMap<(u32, u32, i32, u32, u32), DeniedTally> = FxHashMap::default();
    for bucket in buckets {
        let tallies = bucket.tallies(&query.window, tables, false);
        for (k, tally) in &tallies.get().denied {
            if !scope.admits(k.source, k.destination) {
                continue;
            }
            let group = (
                parts.end(k.source, k.source_ip, tables),
                parts.end(k.destination, k.destination_ip, tables),
                k.protocol,
                k.port,
                parts.policy_set(k.denied_by, tables),
            );
            match groups.entry(group) {
                Entry::Occupied(mut e) => e.get_mut().merge(tally, tables),
                Entry::Vacant(e) => {
                    e.insert(*tally);
                }
            }
        }
    }
    let mut out: Vec<pb::DeniedGroup> = groups
        .into_iter()
        .map(
            |((src, dst, protocol, port, policies), t)| pb::DeniedGroup {
                source: Some(parts.ends[src as usize].clone()),
                destination: Some(parts.ends[dst as usize].clone()),
                protocol,
                destination_port: port,
                denied_by: parts.policy_sets[policies as usize]
                    .iter()
                    .map(PolicyName::to_ref)
                    .collect(),
                egress_denied: t.egress_denied,
                ingress_denied: t.ingress_denied,
                count: t.count,
                flows: t.flows,
                first_seen: timestamp(t.first_seen),
                last_seen: timestamp(t.last_seen),
                reason: tables.text_str(t.latest.reason).to_string(),
                outcome: known_or_zero::<pb::Outcome>(t.latest.outcome),
                destination_names: normalize_dns_names(
                    &tables.name_list(t.latest.destination_names),
                ),
            },
        )
        .collect();
    sort_and_cut(&mut out, denied_order, query.limit);
    out
}

/// The DNS failures report over `buckets` (those overlapping `query.window`).
pub(super) fn dns_failures<'a>(
    buckets: impl Iterator<Item = BucketView<'a>>,
    query: &ReportQuery,
    tables: &Tables,
) -> Vec<pb::DnsFailure> {
    let mut scope = Scope::new(query, tables);
    type Key<'t> = (&'t str, &'t str, &'t str, &'t str, i32, &'t str);
    let mut groups: FxHashMap<Key<'_>, DnsTally> = FxHashMap::default();
    for bucket in buckets {
        let tallies = bucket.tallies(&query.window, tables, true);
        for (k, tally) in &tallies.get().dns {
            if !scope.admits(k.source, k.destination) {
                continue;
            }
            let (namespace, pod) = k.source.map_or(("", ""), |s| {
                let e = tables.identity(s);
                (e.namespace.as_str(), e.pod_name.as_str())
            });
            let dns = tables.dns_record(k.dns);
            let group = (
                namespace,
                pod,
                dns.query.as_str(),
                dns.qtype.as_str(),
                k.outcome,
                dns.rcode.as_str(),
            );
            match groups.entry(group) {
                Entry::Occupied(mut e) => e.get_mut().merge(tally, tables),
                Entry::Vacant(e) => {
                    e.insert(tally.clone());
                }
            }
        }
    }
    let mut out: Vec<pb::DnsFailure> = groups
        .into_iter()
        .map(|((namespace, pod, q, qtype, outcome, rcode), t)| {
            let denied_by: BTreeSet<PolicyName> = t
                .denied_by
                .iter()
                .flat_map(|list| tables.policy_list(Some(*list)))
                .map(PolicyName::of)
                .collect();
            pb::DnsFailure {
                namespace: namespace.to_string(),
                pod: pod.to_string(),
                query: q.to_string(),
                qtype: qtype.to_string(),
                outcome,
                rcode: rcode.to_string(),
                count: t.count,
                last_seen: timestamp(t.last_seen),
                denied_by: denied_by.iter().map(PolicyName::to_ref).collect(),
                egress_allows_cluster_dns: t
                    .latest
                    .dns
                    .is_some_and(|d| tables.dns_record(d).egress_allows_cluster_dns),
                reason: if t.latest.denied {
                    tables.text_str(t.latest.reason).to_string()
                } else {
                    String::new()
                },
            }
        })
        .collect();
    sort_and_cut(&mut out, dns_order, query.limit);
    out
}
