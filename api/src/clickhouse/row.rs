//! A flow as one row of the `flows` table: every filter dimension and report
//! grouping flattened into its own column, plus the encoded protobuf `Flow`
//! that queries return.
//!
//! The columns are computed by the definitions the rest of the code uses: the
//! report grouping key ([`WorkloadKey`]), DNS name normalisation
//! ([`normalize_dns_name`]) and the enums' stored names. Conversion fails only
//! on values the columns cannot hold, and it accepts exactly the flows that
//! `netverdict_proto::validate::check_storable` accepts (a property test below
//! checks both ways, and the `ingest_row` fuzz target), so a flow ingest
//! accepted never jams the writer.
//!
//! An enum number this build does not know (a newer collector) goes into its
//! `Enum8` column as the enum's zero value (`names::known_or_zero`: an `Enum8`
//! cannot hold a value it does not list, and ClickHouse 18.16 takes one in
//! RowBinary only to fail every later read of the column); the `flow` column
//! keeps the number as sent.

use std::net::IpAddr;

use netverdict_proto::filter::{PolicyName, normalize_dns_name, normalize_dns_names};
use netverdict_proto::names::{EnumName, known_or_zero};
use netverdict_proto::v1 as pb;
use netverdict_proto::validate::{FlowError, Problem};
use prost::Message;

use crate::report::WorkloadKey;
use crate::store::StoreError;

/// One row of `flows`, in column order of `INSERT INTO flows (...)`.
/// Enum columns are `Enum8` whose values are the protobuf enum numbers.
#[derive(Debug, Clone, clickhouse::Row, serde::Serialize)]
pub(crate) struct FlowRow {
    pub id: String,
    pub node: String,
    pub first_seen: u32,
    pub last_seen: u32,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
    pub count: u64,
    pub verdict: i8,
    pub outcome: i8,
    pub mismatch: i8,
    pub protocol: i8,
    pub traffic_direction: i8,
    pub drop_reason: String,
    pub drop_count: u64,
    pub service: String,
    pub reason: String,

    pub src_present: u8,
    pub src_ip: String,
    pub src_ip_family: u8,
    pub src_ipv4: u32,
    pub src_ipv6: [u8; 16],
    pub src_port: u16,
    pub src_kind: i8,
    pub src_namespace: String,
    pub src_pod: String,
    pub src_workload: String,
    pub src_node: String,
    pub src_label_keys: Vec<String>,
    pub src_labels: Vec<String>,
    pub src_group_kind: i8,
    pub src_group_namespace: String,
    pub src_group_workload: String,
    pub src_group_ip: String,

    pub dst_present: u8,
    pub dst_ip: String,
    pub dst_ip_family: u8,
    pub dst_ipv4: u32,
    pub dst_ipv6: [u8; 16],
    pub dst_port: u16,
    pub dst_kind: i8,
    pub dst_namespace: String,
    pub dst_pod: String,
    pub dst_workload: String,
    pub dst_node: String,
    pub dst_label_keys: Vec<String>,
    pub dst_labels: Vec<String>,
    pub dst_group_kind: i8,
    pub dst_group_namespace: String,
    pub dst_group_workload: String,
    pub dst_group_ip: String,

    pub allowed_by: Vec<String>,
    pub denied_by: Vec<String>,
    pub egress_status: i8,
    pub egress_tier: i8,
    pub egress_isolated: u8,
    pub egress_selected_by: Vec<String>,
    pub ingress_status: i8,
    pub ingress_tier: i8,
    pub ingress_isolated: u8,
    pub ingress_selected_by: Vec<String>,

    pub has_dns: u8,
    pub dns_query: String,
    pub dns_query_norm: String,
    pub dns_qtype: String,
    pub dns_rcode: String,
    pub dns_answers: u32,
    pub egress_allows_cluster_dns: u8,

    #[serde(with = "serde_bytes")]
    pub flow: Vec<u8>,

    pub observation_point: i8,
    pub counted_elsewhere: u8,

    /// The destination's names as its source resolved them, normalized.
    pub dst_names: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
}

/// The endpoint columns of one side.
struct Side {
    present: u8,
    ip: String,
    family: u8,
    v4: u32,
    v6: [u8; 16],
    port: u16,
    kind: i8,
    namespace: String,
    pod: String,
    workload: String,
    node: String,
    label_keys: Vec<String>,
    labels: Vec<String>,
    group: Group,
}

/// The report grouping key's columns (see [`WorkloadKey`]).
struct Group {
    kind: i8,
    namespace: String,
    workload: String,
    ip: String,
}

impl Group {
    fn of(endpoint: Option<&pb::Endpoint>) -> Group {
        let key = WorkloadKey::of(endpoint);
        Group {
            // Every EndpointKind number is below 128 (the Enum8 holds them).
            kind: i8::try_from(key.kind.number()).unwrap_or(0),
            namespace: key.namespace.to_string(),
            workload: key.workload.to_string(),
            ip: key.ip.to_string(),
        }
    }
}

/// `"namespace/name"` or `"Kind/name"` of a policy (`PolicyName`'s spelling).
pub(crate) fn policy_name(p: &pb::PolicyRef) -> String {
    PolicyName::of(p).to_string()
}

/// Sorted, deduplicated policy names.
fn policy_names(refs: &[pb::PolicyRef]) -> Vec<String> {
    let mut v: Vec<String> = refs.iter().map(policy_name).collect();
    v.sort();
    v.dedup();
    v
}

fn invalid(flow: &pb::Flow, field: &'static str, problem: Problem) -> StoreError {
    StoreError::InvalidFlow(FlowError {
        id: flow.id.clone(),
        field,
        problem,
    })
}

/// An `Enum8` column's value: the proto number of a value the enum knows,
/// the zero value for any other number.
fn enum8<E: EnumName>(v: i32) -> i8 {
    // Every known number is below 128 (`every_enum_fits_an_enum8` below).
    i8::try_from(known_or_zero::<E>(v)).unwrap_or(0)
}

/// Nanoseconds since the epoch, and the whole seconds for a `DateTime`.
fn time(
    flow: &pb::Flow,
    field: &'static str,
    t: Option<&prost_types::Timestamp>,
) -> Result<(u32, i64), StoreError> {
    let t = t.ok_or_else(|| invalid(flow, field, Problem::Missing))?;
    let secs = u32::try_from(t.seconds)
        .map_err(|_| invalid(flow, field, Problem::TimeOutOfRange(t.seconds)))?;
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(invalid(flow, field, Problem::InvalidNanos(t.nanos)));
    }
    Ok((secs, i64::from(secs) * 1_000_000_000 + i64::from(t.nanos)))
}

fn side(
    flow: &pb::Flow,
    ep: Option<&pb::Endpoint>,
    port_field: &'static str,
) -> Result<Side, StoreError> {
    let group = Group::of(ep);
    let Some(ep) = ep else {
        return Ok(Side {
            present: 0,
            ip: String::new(),
            family: 0,
            v4: 0,
            v6: [0; 16],
            port: 0,
            kind: 0,
            namespace: String::new(),
            pod: String::new(),
            workload: String::new(),
            node: String::new(),
            label_keys: Vec::new(),
            labels: Vec::new(),
            group,
        });
    };
    let (family, v4, v6) = match ep.ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => (4, u32::from(a), [0; 16]),
        Ok(IpAddr::V6(a)) => (6, 0, a.octets()),
        Err(_) => (0, 0, [0; 16]),
    };
    let port = u16::try_from(ep.port)
        .map_err(|_| invalid(flow, port_field, Problem::PortOutOfRange(ep.port)))?;
    let mut keys: Vec<&String> = ep.labels.keys().collect();
    keys.sort();
    Ok(Side {
        present: 1,
        ip: ep.ip.clone(),
        family,
        v4,
        v6,
        port,
        kind: enum8::<pb::EndpointKind>(ep.kind),
        namespace: ep.namespace.clone(),
        pod: ep.pod_name.clone(),
        workload: ep.workload.clone(),
        node: ep.node_name.clone(),
        labels: keys
            .iter()
            .map(|k| format!("{k}={}", ep.labels[*k]))
            .collect(),
        label_keys: keys.into_iter().cloned().collect(),
        group,
    })
}

impl FlowRow {
    /// Flattens `flow`; fails on values the columns cannot hold (never on a
    /// flow `check_storable` accepts).
    pub(crate) fn from_flow(flow: &pb::Flow) -> Result<FlowRow, StoreError> {
        if flow.id.is_empty() {
            return Err(invalid(flow, "id", Problem::Empty));
        }
        let (last_seen, last_seen_ns) = time(flow, "last_seen", flow.last_seen.as_ref())?;
        let (first_seen, first_seen_ns) = match flow.first_seen.as_ref() {
            Some(t) => time(flow, "first_seen", Some(t))?,
            None => (last_seen, last_seen_ns),
        };
        let src = side(flow, flow.source.as_ref(), "source.port")?;
        let dst = side(flow, flow.destination.as_ref(), "destination.port")?;
        let egress = flow.egress.clone().unwrap_or_default();
        let ingress = flow.ingress.clone().unwrap_or_default();
        let dns = flow.dns.as_ref();
        Ok(FlowRow {
            id: flow.id.clone(),
            node: flow.node_name.clone(),
            first_seen,
            last_seen,
            first_seen_ns,
            last_seen_ns,
            count: flow.count,
            verdict: enum8::<pb::Verdict>(flow.verdict),
            outcome: enum8::<pb::Outcome>(flow.outcome),
            mismatch: enum8::<pb::Mismatch>(flow.mismatch),
            protocol: enum8::<pb::Protocol>(flow.protocol),
            traffic_direction: enum8::<pb::TrafficDirection>(flow.traffic_direction),
            drop_reason: flow.drop_reason.clone(),
            drop_count: flow.drop_count,
            service: flow.service.clone(),
            reason: flow.reason.clone(),

            src_present: src.present,
            src_ip: src.ip,
            src_ip_family: src.family,
            src_ipv4: src.v4,
            src_ipv6: src.v6,
            src_port: src.port,
            src_kind: src.kind,
            src_namespace: src.namespace,
            src_pod: src.pod,
            src_workload: src.workload,
            src_node: src.node,
            src_label_keys: src.label_keys,
            src_labels: src.labels,
            src_group_kind: src.group.kind,
            src_group_namespace: src.group.namespace,
            src_group_workload: src.group.workload,
            src_group_ip: src.group.ip,

            dst_present: dst.present,
            dst_ip: dst.ip,
            dst_ip_family: dst.family,
            dst_ipv4: dst.v4,
            dst_ipv6: dst.v6,
            dst_port: dst.port,
            dst_kind: dst.kind,
            dst_namespace: dst.namespace,
            dst_pod: dst.pod,
            dst_workload: dst.workload,
            dst_node: dst.node,
            dst_label_keys: dst.label_keys,
            dst_labels: dst.labels,
            dst_group_kind: dst.group.kind,
            dst_group_namespace: dst.group.namespace,
            dst_group_workload: dst.group.workload,
            dst_group_ip: dst.group.ip,

            allowed_by: policy_names(&flow.allowed_by),
            denied_by: policy_names(&flow.denied_by),
            egress_status: enum8::<pb::PolicyStatus>(egress.status),
            egress_tier: enum8::<pb::PolicyTier>(egress.tier),
            egress_isolated: u8::from(egress.isolated),
            egress_selected_by: policy_names(&egress.selected_by),
            ingress_status: enum8::<pb::PolicyStatus>(ingress.status),
            ingress_tier: enum8::<pb::PolicyTier>(ingress.tier),
            ingress_isolated: u8::from(ingress.isolated),
            ingress_selected_by: policy_names(&ingress.selected_by),

            has_dns: u8::from(dns.is_some()),
            dns_query: dns.map(|d| d.query.clone()).unwrap_or_default(),
            dns_query_norm: dns
                .map(|d| normalize_dns_name(&d.query))
                .unwrap_or_default(),
            dns_qtype: dns.map(|d| d.qtype.clone()).unwrap_or_default(),
            dns_rcode: dns.map(|d| d.rcode.clone()).unwrap_or_default(),
            dns_answers: dns.map_or(0, |d| d.answers),
            egress_allows_cluster_dns: u8::from(dns.is_some_and(|d| d.egress_allows_cluster_dns)),

            flow: flow.encode_to_vec(),

            observation_point: enum8::<pb::ObservationPoint>(flow.observation_point),
            counted_elsewhere: u8::from(flow.counted_elsewhere),

            dst_names: normalize_dns_names(&flow.destination_names),
            packets: flow.packets,
            bytes: flow.bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use netverdict_proto::validate::check_storable;
    use proptest::prelude::*;
    use prost_types::Timestamp;

    use super::*;

    /// Values at and around every limit the columns have.
    fn seconds() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(i64::MIN),
            Just(-1i64),
            Just(0i64),
            Just(1_700_000_000i64),
            Just(i64::from(u32::MAX)),
            Just(i64::from(u32::MAX) + 1),
            Just(i64::MAX),
            any::<i64>(),
        ]
    }

    fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
        let nanos = prop_oneof![
            Just(0i32),
            Just(999_999_999i32),
            Just(1_000_000_000i32),
            Just(-1i32),
            any::<i32>()
        ];
        proptest::option::weighted(0.9, (seconds(), nanos))
            .prop_map(|t| t.map(|(seconds, nanos)| Timestamp { seconds, nanos }))
    }

    fn number() -> impl Strategy<Value = i32> {
        prop_oneof![8 => 0..8i32, 1 => Just(-1i32), 1 => Just(127i32), 1 => Just(128i32), 1 => any::<i32>()]
    }

    fn port() -> impl Strategy<Value = u32> {
        prop_oneof![
            Just(0u32),
            Just(65535u32),
            Just(65536u32),
            any::<u32>(),
            0..65536u32
        ]
    }

    fn endpoint() -> impl Strategy<Value = Option<pb::Endpoint>> {
        proptest::option::weighted(0.8, (port(), number(), "[a-z0-9.:]{0,12}", "[a-z/]{0,6}"))
            .prop_map(|t| {
                t.map(|(port, kind, ip, name)| pb::Endpoint {
                    ip,
                    port,
                    kind,
                    namespace: name.clone(),
                    pod_name: name,
                    ..Default::default()
                })
            })
    }

    fn direction() -> impl Strategy<Value = Option<pb::DirectionVerdict>> {
        proptest::option::of(number().prop_map(|status| pb::DirectionVerdict {
            status,
            ..Default::default()
        }))
    }

    fn flow() -> impl Strategy<Value = pb::Flow> {
        (
            prop_oneof![Just(String::new()), "[a-z0-9/]{1,12}"],
            timestamp(),
            timestamp(),
            (endpoint(), endpoint()),
            (number(), number(), number(), number(), number()),
            (direction(), direction()),
        )
            .prop_map(
                |(id, first_seen, last_seen, (source, destination), enums, (egress, ingress))| {
                    let (verdict, outcome, mismatch, protocol, traffic_direction) = enums;
                    pb::Flow {
                        id,
                        first_seen,
                        last_seen,
                        source,
                        destination,
                        verdict,
                        outcome,
                        mismatch,
                        protocol,
                        traffic_direction,
                        egress,
                        ingress,
                        ..Default::default()
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The row conversion accepts exactly what validation accepts: a flow
        /// ingest lets through is never refused by the ClickHouse writer.
        #[test]
        fn the_row_accepts_exactly_what_validation_accepts(f in flow()) {
            let valid = check_storable(&f);
            let row = FlowRow::from_flow(&f);
            prop_assert_eq!(valid.is_ok(), row.is_ok(), "{:?} vs {:?}", valid, row.err());
            if let Ok(row) = row {
                let last = f.last_seen.unwrap();
                prop_assert_eq!(row.last_seen_ns, last.seconds * 1_000_000_000 + i64::from(last.nanos));
                // Unknown enum numbers are filed under the zero value; the
                // flow column keeps them.
                prop_assert_eq!(i32::from(row.verdict), known_or_zero::<pb::Verdict>(f.verdict));
                prop_assert_eq!(i32::from(row.mismatch), known_or_zero::<pb::Mismatch>(f.mismatch));
                prop_assert_eq!(pb::Flow::decode(row.flow.as_slice()).unwrap(), f);
            }
        }
    }

    #[test]
    fn every_enum_fits_an_enum8() {
        fn fits<E: EnumName>() {
            assert!(E::ALL.iter().all(|e| i8::try_from(e.number()).is_ok()));
        }
        fits::<pb::Verdict>();
        fits::<pb::Outcome>();
        fits::<pb::Mismatch>();
        fits::<pb::Protocol>();
        fits::<pb::TrafficDirection>();
        fits::<pb::EndpointKind>();
        fits::<pb::PolicyStatus>();
    }

    #[test]
    fn group_columns_are_the_report_key() {
        let flow = pb::Flow {
            id: "n/1/1".into(),
            last_seen: Some(Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            source: Some(pb::Endpoint {
                kind: pb::EndpointKind::Pod as i32,
                namespace: "shop".into(),
                pod_name: "web-1".into(),
                ip: "10.0.0.1".into(),
                ..Default::default()
            }),
            destination: Some(pb::Endpoint {
                kind: pb::EndpointKind::Node as i32,
                node_name: "node-a".into(),
                ip: "192.168.0.1".into(),
                ..Default::default()
            }),
            dns: Some(pb::Dns {
                query: "API.Example.com.".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let row = FlowRow::from_flow(&flow).unwrap();
        let src = WorkloadKey::of(flow.source.as_ref());
        assert_eq!(
            (
                row.src_group_kind,
                row.src_group_namespace.as_str(),
                row.src_group_workload.as_str(),
                row.src_group_ip.as_str()
            ),
            (src.kind as i8, "shop", "web-1", "")
        );
        assert_eq!(
            (
                row.dst_group_kind,
                row.dst_group_workload.as_str(),
                row.dst_group_ip.as_str()
            ),
            (pb::EndpointKind::Node as i8, "node-a", "192.168.0.1")
        );
        assert_eq!(row.dns_query_norm, "api.example.com");
    }
}
