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
//!
//! The `flow` column is the flow's canonical encoding ([`canonical_encoding`]:
//! labels in key order), so the same flow makes the same bytes in every API
//! server: replicated tables recognize a batch resent through another server
//! as the block they already hold (cluster mode, see `writer.rs`).

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

/// The port of an endpoint, checked to fit its column.
fn port(
    flow: &pb::Flow,
    ep: Option<&pb::Endpoint>,
    port_field: &'static str,
) -> Result<u16, StoreError> {
    let port = ep.map_or(0, |ep| ep.port);
    u16::try_from(port).map_err(|_| invalid(flow, port_field, Problem::PortOutOfRange(port)))
}

/// The columns of one side, its strings moved out of the endpoint.
fn side(ep: Option<pb::Endpoint>, port: u16) -> Side {
    let group = Group::of(ep.as_ref());
    let Some(ep) = ep else {
        return Side {
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
        };
    };
    let (family, v4, v6) = match ep.ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => (4, u32::from(a), [0; 16]),
        Ok(IpAddr::V6(a)) => (6, 0, a.octets()),
        Err(_) => (0, 0, [0; 16]),
    };
    let mut labels: Vec<(String, String)> = ep.labels.into_iter().collect();
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Side {
        present: 1,
        ip: ep.ip,
        family,
        v4,
        v6,
        port,
        kind: enum8::<pb::EndpointKind>(ep.kind),
        namespace: ep.namespace,
        pod: ep.pod_name,
        workload: ep.workload,
        node: ep.node_name,
        labels: labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        label_keys: labels.into_iter().map(|(k, _)| k).collect(),
        group,
    }
}

/// A direction's columns: status, tier, isolated and the selecting policies.
fn direction(d: Option<&pb::DirectionVerdict>) -> (i8, i8, u8, Vec<String>) {
    match d {
        Some(d) => (
            enum8::<pb::PolicyStatus>(d.status),
            enum8::<pb::PolicyTier>(d.tier),
            u8::from(d.isolated),
            policy_names(&d.selected_by),
        ),
        None => (0, 0, 0, Vec::new()),
    }
}

/// Field numbers of `Flow.source`, `Flow.destination` and `Endpoint.labels`.
const FLOW_SOURCE: u32 = 6;
const FLOW_DESTINATION: u32 = 7;
const ENDPOINT_LABELS: u32 = 6;

/// An endpoint encoded with its labels in key order (prost encodes a map in
/// its `HashMap`'s order, which differs between processes). The labels are
/// taken out for the rest's encoding and put back: nothing is copied.
fn canonical_endpoint(endpoint: &mut pb::Endpoint, buf: &mut Vec<u8>) {
    use prost::encoding::{WireType, btree_map, encode_key, encode_varint};
    let labels = std::mem::take(&mut endpoint.labels);
    endpoint
        .encode(buf)
        .unwrap_or_else(|_| unreachable!("a Vec grows as needed"));
    let sorted: std::collections::BTreeMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // What `prost::encoding::string` does for a String, for a &str.
    let encode_str = |tag: u32, value: &&str, buf: &mut Vec<u8>| {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value.as_bytes());
    };
    let str_len = |tag: u32, value: &&str| {
        prost::encoding::key_len(tag)
            + prost::encoding::encoded_len_varint(value.len() as u64)
            + value.len()
    };
    btree_map::encode(
        encode_str,
        str_len,
        encode_str,
        str_len,
        ENDPOINT_LABELS,
        &sorted,
        buf,
    );
    drop(sorted);
    endpoint.labels = labels;
}

/// The flow's encoding, the same bytes for the same flow in every process:
/// the endpoints (whose labels are a map) are appended after the other
/// fields, each with its labels in key order. Protobuf fields may come in
/// any order, so it decodes to the same flow.
#[cfg(test)]
pub(crate) fn canonical_encoding(flow: &pb::Flow) -> Vec<u8> {
    canonical_encoding_of(&mut flow.clone())
}

/// [`canonical_encoding`] of a flow the caller owns: the endpoints are
/// taken out for the encoding of the rest and put back, so nothing is
/// copied.
pub(crate) fn canonical_encoding_of(flow: &mut pb::Flow) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let source = flow.source.take();
    let destination = flow.destination.take();
    let mut buf = flow.encode_to_vec();
    let mut inner = Vec::new();
    for (tag, endpoint) in [(FLOW_SOURCE, source), (FLOW_DESTINATION, destination)] {
        let Some(mut endpoint) = endpoint else {
            continue;
        };
        inner.clear();
        canonical_endpoint(&mut endpoint, &mut inner);
        encode_key(tag, WireType::LengthDelimited, &mut buf);
        encode_varint(inner.len() as u64, &mut buf);
        buf.extend_from_slice(&inner);
        match tag {
            FLOW_SOURCE => flow.source = Some(endpoint),
            _ => flow.destination = Some(endpoint),
        }
    }
    buf
}

impl FlowRow {
    /// Flattens `flow`; fails on values the columns cannot hold (never on a
    /// flow `check_storable` accepts). Tests and fuzz targets use it; the
    /// store hands its flows over ([`FlowRow::from_owned`]).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_flow(flow: &pb::Flow) -> Result<FlowRow, StoreError> {
        FlowRow::from_owned(flow.clone())
    }

    /// [`FlowRow::from_flow`] of a flow the caller hands over: its strings
    /// move into the row rather than being copied.
    pub(crate) fn from_owned(mut flow: pb::Flow) -> Result<FlowRow, StoreError> {
        use std::mem::take;
        if flow.id.is_empty() {
            return Err(invalid(&flow, "id", Problem::Empty));
        }
        let (last_seen, last_seen_ns) = time(&flow, "last_seen", flow.last_seen.as_ref())?;
        let (first_seen, first_seen_ns) = match flow.first_seen.as_ref() {
            Some(t) => time(&flow, "first_seen", Some(t))?,
            None => (last_seen, last_seen_ns),
        };
        let src_port = port(&flow, flow.source.as_ref(), "source.port")?;
        let dst_port = port(&flow, flow.destination.as_ref(), "destination.port")?;
        let encoded = canonical_encoding_of(&mut flow);
        let src = side(flow.source.take(), src_port);
        let dst = side(flow.destination.take(), dst_port);
        let (egress_status, egress_tier, egress_isolated, egress_selected_by) =
            direction(flow.egress.as_ref());
        let (ingress_status, ingress_tier, ingress_isolated, ingress_selected_by) =
            direction(flow.ingress.as_ref());
        let dns = flow.dns.take();
        let dns_query_norm = dns
            .as_ref()
            .map(|d| normalize_dns_name(&d.query))
            .unwrap_or_default();
        let (has_dns, dns_answers, egress_allows_cluster_dns) = match &dns {
            Some(d) => (1, d.answers, u8::from(d.egress_allows_cluster_dns)),
            None => (0, 0, 0),
        };
        let (dns_query, dns_qtype, dns_rcode) = match dns {
            Some(d) => (d.query, d.qtype, d.rcode),
            None => Default::default(),
        };
        Ok(FlowRow {
            id: take(&mut flow.id),
            node: take(&mut flow.node_name),
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
            drop_reason: take(&mut flow.drop_reason),
            drop_count: flow.drop_count,
            service: take(&mut flow.service),
            reason: take(&mut flow.reason),

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
            egress_status,
            egress_tier,
            egress_isolated,
            egress_selected_by,
            ingress_status,
            ingress_tier,
            ingress_isolated,
            ingress_selected_by,

            has_dns,
            dns_query,
            dns_query_norm,
            dns_qtype,
            dns_rcode,
            dns_answers,
            egress_allows_cluster_dns,

            flow: encoded,

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

    /// The same flow makes the same `flow` bytes whatever its labels'
    /// `HashMap` order (each map has its own random order), and they decode
    /// to the flow.
    #[test]
    fn the_flow_column_is_the_same_bytes_for_the_same_flow() {
        let labels: Vec<(String, String)> = (0..32)
            .map(|i| (format!("key-{i}"), format!("value-{i}")))
            .collect();
        let with_labels = |order: &mut dyn Iterator<Item = &(String, String)>| pb::Flow {
            id: "n/1/7".into(),
            source: Some(pb::Endpoint {
                ip: "10.0.0.1".into(),
                labels: order.map(|(k, v)| (k.clone(), v.clone())).collect(),
                ..Default::default()
            }),
            destination: Some(pb::Endpoint {
                ip: "10.0.0.2".into(),
                port: 443,
                ..Default::default()
            }),
            count: 3,
            ..Default::default()
        };
        let forward = with_labels(&mut labels.iter());
        let backward = with_labels(&mut labels.iter().rev());
        assert_eq!(forward, backward);
        let bytes = canonical_encoding(&forward);
        assert_eq!(bytes, canonical_encoding(&backward));
        assert_eq!(pb::Flow::decode(bytes.as_slice()).unwrap(), forward);
        // A map's own order is not the canonical one for some of 32 keys.
        let plain = (0..8).any(|_| with_labels(&mut labels.iter()).encode_to_vec() != bytes);
        assert!(
            plain,
            "prost's map order happened to be the key order every time"
        );
    }

    /// A flow with something in every part the canonical encoding orders.
    fn golden_flow() -> pb::Flow {
        let endpoint = |ip: &str, labels: &[(&str, &str)]| pb::Endpoint {
            ip: ip.into(),
            port: 8080,
            kind: pb::EndpointKind::Pod as i32,
            namespace: "shop".into(),
            pod_name: "web-1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            workload: "Deployment/web".into(),
            node_name: "n1".into(),
        };
        pb::Flow {
            id: "n1/1/2".into(),
            last_seen: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
            count: 3,
            source: Some(endpoint("10.0.0.1", &[("z", "1"), ("a", ""), ("m", "x")])),
            destination: Some(endpoint("10.0.0.2", &[("", "empty key"), ("b", "2")])),
            egress: Some(pb::DirectionVerdict {
                selected_by: vec![pb::PolicyRef {
                    namespace: "shop".into(),
                    name: "p".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            destination_names: vec!["api.example.com".into()],
            ..Default::default()
        }
    }

    /// The canonical bytes never change between builds: API servers of two
    /// versions during a rolling upgrade must make the same blocks.
    #[test]
    fn the_canonical_encoding_is_stable() {
        let hex: String = canonical_encoding(&golden_flow())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, GOLDEN_HEX);
    }

    /// What the first canonical encoding (commit 9ccd551's) made of it.
    const GOLDEN_HEX: &str = "0a066e312f312f321a080880e2cfaa06100520036a0b1a090a0473686f70120170c2010f6170692e6578616d706c652e636f6d32450a0831302e302e302e3110903f1801220473686f702a057765622d313a0e4465706c6f796d656e742f77656242026e3132030a016132060a016d12017832060a017a1201313a450a0831302e302e302e3210903f1801220473686f702a057765622d313a0e4465706c6f796d656e742f77656242026e31320b1209656d707479206b657932060a0162120132";

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
