//! The incident reports as pure functions over flows: denied flows grouped by
//! workload pair ([`denied_groups`]), failed DNS queries grouped by pod and name
//! ([`dns_failures`]), and pods whose egress policies block DNS
//! ([`dns_policy_gaps`], from the cluster state alone).
//!
//! These functions are the reference: the in-memory store answers from its
//! index of per-bucket tallies (with these groups' keys and order, checked
//! against these functions by a property test), the ClickHouse store computes
//! the same groups in SQL, and its tests compare both on the same flows. Grouping follows `query.proto` exactly:
//!
//! - a [`pb::DeniedGroup`] is keyed by source and destination [`pb::WorkloadRef`],
//!   protocol, destination port and the sorted set of `denied_by` policies; it
//!   sums `count`, counts records (`flows`), keeps the earliest `first_seen`,
//!   the latest `last_seen`, and the `reason`, `outcome` and destination
//!   names (normalized) of the most recent record (latest `last_seen`, ties
//!   broken by the larger flow id);
//!   `egress_denied` / `ingress_denied` are set when any merged record's source
//!   egress / destination ingress was denied;
//! - a [`pb::DnsFailure`] is keyed by the querying pod (source namespace and
//!   name), query name, type, outcome and rcode; it counts flows whose DNS query
//!   was dropped, not answered, or answered with an rcode other than NOERROR;
//!   `denied_by` is the union over denied records, and
//!   `egress_allows_cluster_dns` and `reason` come from the most recent record
//!   (`reason` only if that record was denied);
//! - both are ordered by count (largest first), then latest `last_seen` (most
//!   recent first), then key ([`denied_order`], [`dns_order`]), and cut to
//!   `limit` (0: no limit).
//!
//! Which flows take part: records of account only (a record that is a second
//! observation of a connection, `counted_elsewhere`, is skipped, so a
//! connection seen at both ends counts once), `last_seen` within
//! `[since, until)`, the source or the destination in one of the query's
//! namespaces (any, when none), and one of its label selectors holding on the
//! source or the destination (any, when none).

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeSet;

use netverdict_policy::lint::{cluster_dns_pods, dns_denied};
use netverdict_policy::{ClusterState, ObjectKind};
use netverdict_proto::filter::{Filter, PolicyName, normalize_dns_names};
use netverdict_proto::names::known_or_zero;
use netverdict_proto::time::{TimeWindow, UnixNanos};
use netverdict_proto::v1 as pb;
use rustc_hash::FxHashMap;

use crate::store::ReportQuery;

/// A compiled report query: the window and the flow filter of its namespaces
/// and labels ([`ReportQuery::flow_filter`]).
#[derive(Debug, Clone, Default)]
pub struct ReportFilter {
    window: TimeWindow,
    flows: Filter,
}

impl ReportFilter {
    /// Compiles `query`'s window and filter.
    pub fn new(query: &ReportQuery) -> Self {
        ReportFilter {
            window: query.window,
            flows: query.flow_filter(),
        }
    }

    /// Whether `flow` is a record of account, in the window, and passes the
    /// filter.
    pub fn matches(&self, flow: &pb::Flow) -> bool {
        !flow.counted_elsewhere && self.window.contains_flow(flow) && self.flows.matches(flow)
    }
}

/// How a report groups an endpoint, defined once: the memory store groups by
/// it, and the ClickHouse store stores it per row (`{src,dst}_group_*`
/// columns) and groups by those columns.
///
/// - a pod or host-network pod: its namespace and workload (the pod name when
///   it has none);
/// - a node: the node's name and address;
/// - the world or an unresolved endpoint: the address;
/// - no endpoint: all empty.
///
/// The kind is the endpoint's (unspecified for a number this build does not know).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey<'a> {
    /// What the endpoint is.
    pub kind: pb::EndpointKind,
    /// A pod's namespace; empty otherwise.
    pub namespace: &'a str,
    /// A pod's workload (else its name), a node's name; empty otherwise.
    pub workload: &'a str,
    /// The address of anything but a pod; empty for pods.
    pub ip: &'a str,
}

impl<'a> WorkloadKey<'a> {
    /// The key of `endpoint`.
    pub fn of(endpoint: Option<&'a pb::Endpoint>) -> Self {
        match endpoint {
            Some(e) => WorkloadKey::of_parts(e, &e.ip),
            None => WorkloadKey {
                kind: pb::EndpointKind::Unspecified,
                namespace: "",
                workload: "",
                ip: "",
            },
        }
    }

    /// The key of `endpoint` with the address `ip` instead of its own (the
    /// memory store keeps addresses apart from the rest of an endpoint).
    pub fn of_parts(e: &'a pb::Endpoint, ip: &'a str) -> Self {
        let kind = pb::EndpointKind::try_from(e.kind).unwrap_or_default();
        match kind {
            pb::EndpointKind::Pod | pb::EndpointKind::HostNetworkPod => WorkloadKey {
                kind,
                namespace: &e.namespace,
                workload: if e.workload.is_empty() {
                    &e.pod_name
                } else {
                    &e.workload
                },
                ip: "",
            },
            pb::EndpointKind::Node => WorkloadKey {
                kind,
                namespace: "",
                workload: &e.node_name,
                ip,
            },
            pb::EndpointKind::World | pb::EndpointKind::Unspecified => WorkloadKey {
                kind,
                namespace: "",
                workload: "",
                ip,
            },
        }
    }

    /// The key as `query.proto`'s `WorkloadRef`.
    pub fn to_ref(&self) -> pb::WorkloadRef {
        pb::WorkloadRef {
            kind: self.kind as i32,
            namespace: self.namespace.to_string(),
            workload: self.workload.to_string(),
            ip: self.ip.to_string(),
        }
    }
}

/// A policy as reports group it (kind and name; see `PolicyName`).
type PolicyPair = PolicyName;

#[derive(PartialEq, Eq, Hash)]
struct DeniedKey<'a> {
    source: WorkloadKey<'a>,
    destination: WorkloadKey<'a>,
    protocol: i32,
    port: u32,
    policies: Vec<PolicyPair>,
}

struct DeniedAcc<'a> {
    count: u64,
    flows: u64,
    first_seen: Option<UnixNanos>,
    last_seen: Option<UnixNanos>,
    latest: &'a pb::Flow,
    egress_denied: bool,
    ingress_denied: bool,
}

/// The recency order of records: latest `last_seen`, then the larger id.
fn more_recent(a: &pb::Flow, b: &pb::Flow) -> bool {
    (last_seen(a), &a.id) > (last_seen(b), &b.id)
}

fn sorted_policies(refs: &[pb::PolicyRef]) -> Vec<PolicyPair> {
    let mut out: Vec<PolicyPair> = refs.iter().map(PolicyName::of).collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn denied(direction: Option<&pb::DirectionVerdict>) -> bool {
    direction.is_some_and(|d| d.status == pb::PolicyStatus::Denied as i32)
}

fn first_seen(flow: &pb::Flow) -> Option<UnixNanos> {
    flow.first_seen.as_ref().map(UnixNanos::from_timestamp)
}

fn last_seen(flow: &pb::Flow) -> Option<UnixNanos> {
    flow.last_seen.as_ref().map(UnixNanos::from_timestamp)
}

fn min_opt(a: Option<UnixNanos>, b: Option<UnixNanos>) -> Option<UnixNanos> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Denied flows (verdict DENIED) of `flows` matching `query`, grouped as
/// `query.proto` documents (see the module comment).
pub fn denied_groups<'a>(
    flows: impl IntoIterator<Item = &'a pb::Flow>,
    query: &ReportQuery,
) -> Vec<pb::DeniedGroup> {
    let filter = ReportFilter::new(query);
    let mut groups: FxHashMap<DeniedKey<'a>, DeniedAcc<'a>> = FxHashMap::default();
    for flow in flows {
        if flow.verdict != pb::Verdict::Denied as i32 || !filter.matches(flow) {
            continue;
        }
        let k = DeniedKey {
            source: WorkloadKey::of(flow.source.as_ref()),
            destination: WorkloadKey::of(flow.destination.as_ref()),
            protocol: known_or_zero::<pb::Protocol>(flow.protocol),
            port: flow.destination.as_ref().map_or(0, |d| d.port),
            policies: sorted_policies(&flow.denied_by),
        };
        let first = first_seen(flow);
        let last = last_seen(flow);
        let acc = groups.entry(k).or_insert_with(|| DeniedAcc {
            count: 0,
            flows: 0,
            first_seen: first,
            last_seen: last,
            latest: flow,
            egress_denied: false,
            ingress_denied: false,
        });
        // Counts come from the network: saturate, never overflow.
        acc.count = acc.count.saturating_add(flow.count);
        acc.flows = acc.flows.saturating_add(1);
        acc.first_seen = min_opt(acc.first_seen, first);
        acc.last_seen = acc.last_seen.max(last);
        if more_recent(flow, acc.latest) {
            acc.latest = flow;
        }
        acc.egress_denied |= denied(flow.egress.as_ref());
        acc.ingress_denied |= denied(flow.ingress.as_ref());
    }
    let mut out: Vec<pb::DeniedGroup> = groups
        .into_iter()
        .map(|(k, acc)| pb::DeniedGroup {
            source: Some(k.source.to_ref()),
            destination: Some(k.destination.to_ref()),
            protocol: k.protocol,
            destination_port: k.port,
            denied_by: k.policies.iter().map(PolicyName::to_ref).collect(),
            egress_denied: acc.egress_denied,
            ingress_denied: acc.ingress_denied,
            count: acc.count,
            flows: acc.flows,
            first_seen: acc.first_seen.map(UnixNanos::to_timestamp),
            last_seen: acc.last_seen.map(UnixNanos::to_timestamp),
            reason: acc.latest.reason.clone(),
            outcome: known_or_zero::<pb::Outcome>(acc.latest.outcome),
            destination_names: normalize_dns_names(&acc.latest.destination_names),
        })
        .collect();
    sort_and_cut(&mut out, denied_order, query.limit);
    out
}

/// Sorts `groups` by `order` and keeps the first `limit` (all when 0).
pub fn sort_and_cut<T>(groups: &mut Vec<T>, order: fn(&T, &T) -> Ordering, limit: usize) {
    groups.sort_unstable_by(order);
    if limit > 0 {
        groups.truncate(limit);
    }
}

fn timestamp_nanos(t: Option<&prost_types::Timestamp>) -> Option<UnixNanos> {
    t.map(UnixNanos::from_timestamp)
}

/// The order of the largest first: count descending, then latest `last_seen`
/// descending.
fn largest_first(count: u64, last_seen: Option<&prost_types::Timestamp>) -> impl Ord {
    (Reverse(count), Reverse(timestamp_nanos(last_seen)))
}

/// A workload reference in [`WorkloadKey`]'s order.
fn workload_order(r: Option<&pb::WorkloadRef>) -> (i32, &str, &str, &str) {
    r.map_or((0, "", "", ""), |r| {
        (
            r.kind,
            r.namespace.as_str(),
            r.workload.as_str(),
            r.ip.as_str(),
        )
    })
}

/// The order of denied groups (see the module comment): the largest count
/// first, then the latest `last_seen`, then the key (source, destination,
/// protocol, port, policies as spelled).
pub fn denied_order(a: &pb::DeniedGroup, b: &pb::DeniedGroup) -> Ordering {
    largest_first(a.count, a.last_seen.as_ref())
        .cmp(&largest_first(b.count, b.last_seen.as_ref()))
        .then_with(|| {
            fn key(g: &pb::DeniedGroup) -> impl Ord + '_ {
                (
                    workload_order(g.source.as_ref()),
                    workload_order(g.destination.as_ref()),
                    g.protocol,
                    g.destination_port,
                )
            }
            key(a).cmp(&key(b))
        })
        .then_with(|| {
            let policies = |g: &pb::DeniedGroup| -> Vec<PolicyName> {
                g.denied_by.iter().map(PolicyName::of).collect()
            };
            policies(a).cmp(&policies(b))
        })
}

/// The order of DNS failures (see the module comment): the largest count
/// first, then the latest `last_seen`, then the key (namespace, pod, query,
/// type, outcome, rcode).
pub fn dns_order(a: &pb::DnsFailure, b: &pb::DnsFailure) -> Ordering {
    fn key(f: &pb::DnsFailure) -> impl Ord + '_ {
        (
            f.namespace.as_str(),
            f.pod.as_str(),
            f.query.as_str(),
            f.qtype.as_str(),
            f.outcome,
            f.rcode.as_str(),
        )
    }
    largest_first(a.count, a.last_seen.as_ref())
        .cmp(&largest_first(b.count, b.last_seen.as_ref()))
        .then_with(|| key(a).cmp(&key(b)))
}

/// Whether a flow is a failed DNS query: dropped, not answered, or answered
/// with an error rcode.
pub fn is_dns_failure(flow: &pb::Flow) -> bool {
    let Some(dns) = &flow.dns else {
        return false;
    };
    match pb::Outcome::try_from(flow.outcome) {
        Ok(pb::Outcome::Dropped | pb::Outcome::NoAnswer) => true,
        Ok(pb::Outcome::Answered) => !dns.rcode.is_empty() && dns.rcode != "NOERROR",
        _ => false,
    }
}

#[derive(PartialEq, Eq, Hash)]
struct DnsKey<'a> {
    namespace: &'a str,
    pod: &'a str,
    query: &'a str,
    qtype: &'a str,
    outcome: i32,
    rcode: &'a str,
}

struct DnsAcc<'a> {
    count: u64,
    last_seen: Option<UnixNanos>,
    latest: &'a pb::Flow,
    denied_by: BTreeSet<PolicyPair>,
}

/// Failed DNS queries of `flows` matching `query`, grouped as `query.proto`
/// documents (see the module comment).
pub fn dns_failures<'a>(
    flows: impl IntoIterator<Item = &'a pb::Flow>,
    query: &ReportQuery,
) -> Vec<pb::DnsFailure> {
    let filter = ReportFilter::new(query);
    let mut groups: FxHashMap<DnsKey<'a>, DnsAcc<'a>> = FxHashMap::default();
    for flow in flows {
        if !is_dns_failure(flow) || !filter.matches(flow) {
            continue;
        }
        let Some(dns) = &flow.dns else { continue };
        let (namespace, pod) = flow
            .source
            .as_ref()
            .map_or(("", ""), |s| (s.namespace.as_str(), s.pod_name.as_str()));
        let k = DnsKey {
            namespace,
            pod,
            query: &dns.query,
            qtype: &dns.qtype,
            outcome: flow.outcome,
            rcode: &dns.rcode,
        };
        let last = last_seen(flow);
        let acc = groups.entry(k).or_insert_with(|| DnsAcc {
            count: 0,
            last_seen: last,
            latest: flow,
            denied_by: BTreeSet::new(),
        });
        acc.count = acc.count.saturating_add(flow.count);
        acc.last_seen = acc.last_seen.max(last);
        if more_recent(flow, acc.latest) {
            acc.latest = flow;
        }
        if flow.verdict == pb::Verdict::Denied as i32 {
            acc.denied_by
                .extend(flow.denied_by.iter().map(PolicyName::of));
        }
    }
    let mut out: Vec<pb::DnsFailure> = groups
        .into_iter()
        .map(|(k, acc)| {
            let latest_denied = acc.latest.verdict == pb::Verdict::Denied as i32;
            pb::DnsFailure {
                namespace: k.namespace.to_string(),
                pod: k.pod.to_string(),
                query: k.query.to_string(),
                qtype: k.qtype.to_string(),
                outcome: k.outcome,
                rcode: k.rcode.to_string(),
                count: acc.count,
                last_seen: acc.last_seen.map(UnixNanos::to_timestamp),
                denied_by: acc.denied_by.iter().map(PolicyName::to_ref).collect(),
                egress_allows_cluster_dns: acc
                    .latest
                    .dns
                    .as_ref()
                    .is_some_and(|d| d.egress_allows_cluster_dns),
                reason: if latest_denied {
                    acc.latest.reason.clone()
                } else {
                    String::new()
                },
            }
        })
        .collect();
    sort_and_cut(&mut out, dns_order, query.limit);
    out
}

/// The kinds of cluster object the API server reads, all for
/// [`dns_policy_gaps`]: Namespaces (their labels), Pods, NetworkPolicies,
/// Services (the cluster DNS Service's selector finds the DNS pods) and Nodes
/// (traffic between a pod and its own node is always allowed, which decides
/// for a host-network DNS pod on the querying pod's node). EndpointSlices are
/// not read: DNS pods are found by the Service's selector or their label,
/// never through a Service address. The admin policy kinds are read: their
/// tiers decide before and after NetworkPolicy. `netverdict api` watches only
/// these, so its RBAC role grants only these.
pub const CLUSTER_KINDS: [ObjectKind; 8] = [
    ObjectKind::Namespace,
    ObjectKind::Pod,
    ObjectKind::NetworkPolicy,
    ObjectKind::Service,
    ObjectKind::Node,
    ObjectKind::AdminNetworkPolicy,
    ObjectKind::BaselineAdminNetworkPolicy,
    ObjectKind::ClusterNetworkPolicy,
];

/// Pods isolated for egress whose policies deny DNS (UDP or TCP 53) to every
/// cluster DNS pod, in the query's namespaces (all when none) with labels one
/// of its selectors holds on (any when none), sorted by namespace and name.
/// Host-network pods and the DNS pods themselves are left out; with no
/// cluster DNS pod known there is nothing to check against, so no gap.
pub fn dns_policy_gaps(state: &ClusterState, query: &ReportQuery) -> Vec<pb::DnsPolicyGap> {
    let dns = cluster_dns_pods(state);
    let mut gaps: Vec<pb::DnsPolicyGap> = state
        .pods()
        .into_iter()
        .filter(|pod| !pod.host_network && !dns.iter().any(|d| d.key == pod.key))
        .filter(|pod| query.namespaces.is_empty() || query.namespaces.contains(&pod.key.namespace))
        .filter(|pod| {
            query.labels.is_empty() || query.labels.iter().any(|s| s.matches(&*pod.labels))
        })
        .filter_map(|pod| {
            let (denied, isolating) = dns_denied(state, pod)?;
            if denied.is_empty() {
                return None;
            }
            let mut egress_policies: Vec<pb::PolicyRef> =
                isolating.iter().map(pb::PolicyRef::from).collect();
            egress_policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            Some(pb::DnsPolicyGap {
                namespace: pod.key.namespace.clone(),
                pod: pod.key.name.clone(),
                denied_protocols: denied
                    .into_iter()
                    .map(|p| pb::Protocol::from(p) as i32)
                    .collect(),
                egress_policies,
            })
        })
        .collect();
    gaps.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    gaps
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    fn ts(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    fn pod(ns: &str, name: &str, workload: &str, port: u32) -> Option<pb::Endpoint> {
        Some(pb::Endpoint {
            kind: pb::EndpointKind::Pod as i32,
            namespace: ns.into(),
            pod_name: name.into(),
            workload: workload.into(),
            port,
            ip: "10.0.0.1".into(),
            ..Default::default()
        })
    }

    fn policy(ns: &str, name: &str) -> pb::PolicyRef {
        pb::PolicyRef {
            namespace: ns.into(),
            name: name.into(),
            kind: pb::PolicyKind::NetworkPolicy as i32,
            tier: pb::PolicyTier::NetworkPolicy as i32,
        }
    }

    fn denied_flow(id: &str, src: &str, last: i64, count: u64) -> pb::Flow {
        pb::Flow {
            id: id.into(),
            first_seen: ts(last - 5),
            last_seen: ts(last),
            count,
            source: pod("shop", src, "client", 40000),
            destination: pod("default", "api-1", "api", 8080),
            protocol: pb::Protocol::Tcp as i32,
            verdict: pb::Verdict::Denied as i32,
            outcome: pb::Outcome::Dropped as i32,
            reason: format!("reason {id}"),
            ingress: Some(pb::DirectionVerdict {
                status: pb::PolicyStatus::Denied as i32,
                ..Default::default()
            }),
            denied_by: vec![policy("default", "b"), policy("default", "a")],
            ..Default::default()
        }
    }

    #[test]
    fn denied_merges_pods_of_one_workload_and_keeps_the_latest_reason() {
        let mut other_port = denied_flow("4", "client-1", 50, 1);
        other_port.destination.as_mut().unwrap().port = 5432;
        let mut allowed = denied_flow("5", "client-1", 50, 9);
        allowed.verdict = pb::Verdict::Allowed as i32;
        let flows = [
            denied_flow("1", "client-1", 10, 2),
            denied_flow("2", "client-2", 30, 3),
            denied_flow("3", "client-1", 20, 1),
            other_port,
            allowed,
        ];
        let groups = denied_groups(&flows, &ReportQuery::default());
        assert_eq!(groups.len(), 2);
        let g = &groups[0];
        assert_eq!((g.count, g.flows, g.destination_port), (6, 3, 8080));
        assert_eq!(g.first_seen, ts(5));
        assert_eq!(g.last_seen, ts(30));
        assert_eq!(g.reason, "reason 2");
        assert_eq!(
            g.denied_by,
            [policy("default", "a"), policy("default", "b")]
        );
        assert!(g.ingress_denied && !g.egress_denied);
        assert_eq!(g.source.as_ref().unwrap().workload, "client");
        assert_eq!(groups[1].destination_port, 5432);
    }

    #[test]
    fn counts_from_the_network_saturate_and_unknown_enums_group_as_unspecified() {
        let mut newer = denied_flow("3", "c", 30, 1);
        newer.protocol = 99;
        newer.outcome = 42;
        let flows = [
            denied_flow("1", "c", 10, u64::MAX),
            denied_flow("2", "c", 20, u64::MAX),
            newer,
        ];
        let groups = denied_groups(&flows, &ReportQuery::default());
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!((groups[0].count, groups[0].flows), (u64::MAX, 2));
        // A newer collector's numbers: as ClickHouse files them.
        assert_eq!(groups[1].protocol, pb::Protocol::Unspecified as i32);
        assert_eq!(groups[1].outcome, pb::Outcome::Unspecified as i32);
        let mut dns: Vec<pb::Flow> = flows.to_vec();
        for f in &mut dns {
            f.dns = Some(pb::Dns {
                query: "a.example".into(),
                ..Default::default()
            });
        }
        let failures = dns_failures(&dns, &ReportQuery::default());
        assert_eq!(failures[0].count, u64::MAX);
    }

    #[test]
    fn denied_window_namespaces_labels_and_limit() {
        let mut labelled = denied_flow("2", "c", 20, 1);
        labelled.destination.as_mut().unwrap().labels = [("app".into(), "api".into())].into();
        let flows = [denied_flow("1", "c", 10, 1), labelled];
        let q = |since: u64, ns: &[&str], limit| ReportQuery {
            window: TimeWindow::from_system(
                Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(since)),
                None,
            ),
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            labels: Vec::new(),
            limit,
        };
        assert_eq!(denied_groups(&flows, &q(15, &[], 0))[0].count, 1);
        assert_eq!(denied_groups(&flows, &q(0, &["default"], 0))[0].count, 2);
        assert!(denied_groups(&flows, &q(0, &["x' OR 1=1 --"], 0)).is_empty());
        let selector =
            |text| vec![netverdict_proto::filter::LabelSelector::parse("labels", text).unwrap()];
        let with_labels = |text| ReportQuery {
            labels: selector(text),
            ..q(0, &["shop"], 0)
        };
        assert_eq!(denied_groups(&flows, &with_labels("app=api"))[0].count, 1);
        assert_eq!(
            denied_groups(&flows, &with_labels("!app"))[0].count,
            2,
            "the source has none"
        );
        assert!(denied_groups(&flows, &with_labels("app=web")).is_empty());
        let mut more = flows.to_vec();
        let mut f = denied_flow("3", "c", 20, 1);
        f.protocol = pb::Protocol::Udp as i32;
        more.push(f);
        assert_eq!(denied_groups(&more, &q(0, &[], 1)).len(), 1);
    }

    fn dns_flow(id: &str, query: &str, outcome: pb::Outcome, rcode: &str, last: i64) -> pb::Flow {
        pb::Flow {
            id: id.into(),
            last_seen: ts(last),
            count: 1,
            source: pod("default", "np-client", "np-client", 33333),
            protocol: pb::Protocol::Udp as i32,
            outcome: outcome as i32,
            dns: Some(pb::Dns {
                query: query.into(),
                qtype: "A".into(),
                rcode: rcode.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn dns_failures_are_drops_timeouts_and_error_rcodes() {
        let mut dropped = dns_flow("1", "a.example", pb::Outcome::Dropped, "", 10);
        dropped.verdict = pb::Verdict::Denied as i32;
        dropped.reason = "egress denied".into();
        dropped.denied_by = vec![policy("default", "default-deny")];
        let flows = [
            dropped.clone(),
            pb::Flow {
                id: "2".into(),
                last_seen: ts(11),
                ..dropped
            },
            dns_flow("3", "b.example", pb::Outcome::NoAnswer, "", 12),
            dns_flow("4", "c.example", pb::Outcome::Answered, "NXDOMAIN", 13),
            dns_flow("5", "d.example", pb::Outcome::Answered, "NOERROR", 14),
            dns_flow("6", "e.example", pb::Outcome::Established, "", 15),
        ];
        let failures = dns_failures(&flows, &ReportQuery::default());
        let names: Vec<_> = failures.iter().map(|f| f.query.as_str()).collect();
        assert_eq!(names, ["a.example", "c.example", "b.example"]);
        assert_eq!(failures[0].count, 2);
        assert_eq!(failures[0].denied_by, [policy("default", "default-deny")]);
        assert_eq!(failures[0].reason, "egress denied");
        assert_eq!(failures[1].rcode, "NXDOMAIN");
        assert!(failures[1].reason.is_empty());
    }

    #[test]
    fn workload_keys() {
        let node = pb::Endpoint {
            kind: pb::EndpointKind::Node as i32,
            ip: "192.168.1.1".into(),
            ..Default::default()
        };
        let r = WorkloadKey::of(Some(&node)).to_ref();
        assert_eq!((r.workload.as_str(), r.ip.as_str()), ("", "192.168.1.1"));
        let unknown = pb::Endpoint {
            kind: 42,
            ip: "1.1.1.1".into(),
            pod_name: "p".into(),
            ..Default::default()
        };
        assert_eq!(
            WorkloadKey::of(Some(&unknown)),
            WorkloadKey {
                kind: pb::EndpointKind::Unspecified,
                namespace: "",
                workload: "",
                ip: "1.1.1.1"
            }
        );
        assert_eq!(WorkloadKey::of(None).to_ref(), pb::WorkloadRef::default());
        let p = pod("ns", "web-1", "", 80).unwrap();
        let r = WorkloadKey::of(Some(&p)).to_ref();
        assert_eq!(
            (r.namespace.as_str(), r.workload.as_str(), r.ip.as_str()),
            ("ns", "web-1", "")
        );
    }
}
