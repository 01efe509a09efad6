//! Protobuf flows for tests, built by what differs from a plain one:
//!
//! ```text
//! flow("node-a/1/2").at_nanos(base).denied().outcome(pb::Outcome::Dropped)
//!     .from(pod("other", "batch-x").port(5555)).to(world("203.0.113.9").port(443))
//!     .denied_by(["other/egress-lockdown"]).build()
//! ```
//!
//! [`flow`] starts from an allowed, established TCP connection seen once on
//! `node-a` now, from `shop/web-1` (workload `web`, `10.244.1.5:40000`) to
//! `shop/api-1` (workload `api`, `10.244.2.7:8080`); every method replaces one
//! part. Also policy references by `"namespace/name"`, the time conversions
//! tests need, and a one-line description of a flow for failure messages.

use std::time::{Duration, SystemTime};

use netverdict_proto::time::UnixNanos;
use netverdict_proto::v1 as pb;
use prost_types::Timestamp;

/// A flow being built; [`FlowBuilder::build`] (or `.into()`) gives the flow.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until built"]
pub struct FlowBuilder {
    flow: pb::Flow,
}

/// An allowed, established TCP flow with id `id` (see the module doc).
pub fn flow(id: impl Into<String>) -> FlowBuilder {
    let now = timestamp(SystemTime::now());
    FlowBuilder {
        flow: pb::Flow {
            id: id.into(),
            first_seen: Some(now),
            last_seen: Some(now),
            count: 1,
            node_name: "node-a".into(),
            source: Some(
                pod("shop", "web-1")
                    .workload("web")
                    .ip("10.244.1.5")
                    .port(40000)
                    .labels(&[("app", "web")])
                    .build(),
            ),
            destination: Some(
                pod("shop", "api-1")
                    .workload("api")
                    .ip("10.244.2.7")
                    .port(8080)
                    .labels(&[("app", "api")])
                    .build(),
            ),
            protocol: pb::Protocol::Tcp as i32,
            verdict: pb::Verdict::Allowed as i32,
            outcome: pb::Outcome::Established as i32,
            ..Default::default()
        },
    }
}

impl FlowBuilder {
    /// The flow.
    pub fn build(self) -> pb::Flow {
        self.flow
    }

    /// The observing node.
    pub fn node(mut self, name: &str) -> Self {
        self.flow.node_name = name.into();
        self
    }

    /// First and last seen at `t`.
    pub fn at(self, t: SystemTime) -> Self {
        self.seen(t, t)
    }

    /// First and last seen at `nanos` since the epoch.
    pub fn at_nanos(self, nanos: i64) -> Self {
        self.seen_nanos(nanos, nanos)
    }

    /// First seen at `first`, last seen at `last`.
    pub fn seen(mut self, first: SystemTime, last: SystemTime) -> Self {
        self.flow.first_seen = Some(timestamp(first));
        self.flow.last_seen = Some(timestamp(last));
        self
    }

    /// First and last seen, in nanoseconds since the epoch.
    pub fn seen_nanos(mut self, first: i64, last: i64) -> Self {
        self.flow.first_seen = Some(timestamp_nanos(first));
        self.flow.last_seen = Some(timestamp_nanos(last));
        self
    }

    /// How many attempts the record stands for.
    pub fn count(mut self, count: u64) -> Self {
        self.flow.count = count;
        self
    }

    /// The source endpoint.
    pub fn from(mut self, source: impl Into<pb::Endpoint>) -> Self {
        self.flow.source = Some(source.into());
        self
    }

    /// The destination endpoint.
    pub fn to(mut self, destination: impl Into<pb::Endpoint>) -> Self {
        self.flow.destination = Some(destination.into());
        self
    }

    /// No destination endpoint at all.
    pub fn no_destination(mut self) -> Self {
        self.flow.destination = None;
        self
    }

    /// The transport protocol.
    pub fn protocol(mut self, protocol: pb::Protocol) -> Self {
        self.flow.protocol = protocol as i32;
        self
    }

    /// UDP instead of TCP.
    pub fn udp(self) -> Self {
        self.protocol(pb::Protocol::Udp)
    }

    /// The policy verdict.
    pub fn verdict(mut self, verdict: pb::Verdict) -> Self {
        self.flow.verdict = verdict as i32;
        self
    }

    /// Denied by policy (the outcome stays as it is: see [`Self::outcome`]).
    pub fn denied(self) -> Self {
        self.verdict(pb::Verdict::Denied)
    }

    /// What the kernel did.
    pub fn outcome(mut self, outcome: pb::Outcome) -> Self {
        self.flow.outcome = outcome as i32;
        self
    }

    /// The Service the destination was reached through (`namespace/name`).
    pub fn service(mut self, service: &str) -> Self {
        self.flow.service = service.into();
        self
    }

    /// Whether the observing node saw the flow leave or enter its pod.
    pub fn traffic_direction(mut self, direction: pb::TrafficDirection) -> Self {
        self.flow.traffic_direction = direction as i32;
        self
    }

    /// Where the node that observed the flow saw it.
    pub fn observation_point(mut self, point: pb::ObservationPoint) -> Self {
        self.flow.observation_point = point as i32;
        self
    }

    /// Another node's record of the same connection is the one that counts.
    pub fn counted_elsewhere(mut self) -> Self {
        self.flow.counted_elsewhere = true;
        self
    }

    /// The verdict/outcome contradiction.
    pub fn mismatch(mut self, mismatch: pb::Mismatch) -> Self {
        self.flow.mismatch = mismatch as i32;
        self
    }

    /// The sentence on why.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.flow.reason = reason.into();
        self
    }

    /// The kernel's drop reason name.
    pub fn drop_reason(mut self, reason: &str) -> Self {
        self.flow.drop_reason = reason.into();
        self
    }

    /// How many packets the kernel dropped.
    pub fn drop_count(mut self, count: u64) -> Self {
        self.flow.drop_count = count;
        self
    }

    /// Policies that isolated a denying endpoint, as `"namespace/name"`.
    pub fn denied_by<'a>(mut self, policies: impl IntoIterator<Item = &'a str>) -> Self {
        self.flow.denied_by = policies.into_iter().map(policy_ref).collect();
        self
    }

    /// Policies whose rules allowed the flow, as `"namespace/name"`.
    pub fn allowed_by<'a>(mut self, policies: impl IntoIterator<Item = &'a str>) -> Self {
        self.flow.allowed_by = policies.into_iter().map(policy_ref).collect();
        self
    }

    /// The destination's ingress decision.
    pub fn ingress(mut self, verdict: pb::DirectionVerdict) -> Self {
        self.flow.ingress = Some(verdict);
        self
    }

    /// The source's egress decision.
    pub fn egress(mut self, verdict: pb::DirectionVerdict) -> Self {
        self.flow.egress = Some(verdict);
        self
    }

    /// An ingress decision with this status only.
    pub fn ingress_status(self, status: pb::PolicyStatus) -> Self {
        self.ingress(direction(status))
    }

    /// An egress decision with this status only.
    pub fn egress_status(self, status: pb::PolicyStatus) -> Self {
        self.egress(direction(status))
    }

    /// DNS details: a query for `query` of type `qtype` (no answer yet).
    pub fn dns(mut self, query: &str, qtype: &str) -> Self {
        self.flow.dns = Some(pb::Dns {
            query: query.into(),
            qtype: qtype.into(),
            ..Default::default()
        });
        self
    }

    /// DNS details with an answer's rcode.
    pub fn dns_answer(self, query: &str, qtype: &str, rcode: &str) -> Self {
        self.dns_record(pb::Dns {
            query: query.into(),
            qtype: qtype.into(),
            rcode: rcode.into(),
            ..Default::default()
        })
    }

    /// DNS details, every field given.
    pub fn dns_record(mut self, dns: pb::Dns) -> Self {
        self.flow.dns = Some(dns);
        self
    }

    /// The flow's id (for a copy of a built-up flow).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.flow.id = id.into();
        self
    }

    /// Any other change, on the flow itself.
    pub fn with(mut self, change: impl FnOnce(&mut pb::Flow)) -> Self {
        change(&mut self.flow);
        self
    }
}

impl From<FlowBuilder> for pb::Flow {
    fn from(b: FlowBuilder) -> pb::Flow {
        b.build()
    }
}

/// An endpoint being built; `.into()` or [`EndpointBuilder::build`] gives it.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until built"]
pub struct EndpointBuilder {
    endpoint: pb::Endpoint,
}

/// Pod `namespace/name` (no workload, address, port, labels or node until set).
pub fn pod(namespace: &str, name: &str) -> EndpointBuilder {
    EndpointBuilder {
        endpoint: pb::Endpoint {
            kind: pb::EndpointKind::Pod as i32,
            namespace: namespace.into(),
            pod_name: name.into(),
            ..Default::default()
        },
    }
}

/// An address outside the cluster.
pub fn world(ip: &str) -> EndpointBuilder {
    EndpointBuilder {
        endpoint: pb::Endpoint {
            kind: pb::EndpointKind::World as i32,
            ip: ip.into(),
            ..Default::default()
        },
    }
}

impl EndpointBuilder {
    /// The endpoint.
    pub fn build(self) -> pb::Endpoint {
        self.endpoint
    }

    /// The kind (pod, host-network pod, node, world...).
    pub fn kind(mut self, kind: pb::EndpointKind) -> Self {
        self.endpoint.kind = kind as i32;
        self
    }

    /// The owning workload.
    pub fn workload(mut self, workload: &str) -> Self {
        self.endpoint.workload = workload.into();
        self
    }

    /// The IP address.
    pub fn ip(mut self, ip: &str) -> Self {
        self.endpoint.ip = ip.into();
        self
    }

    /// The port.
    pub fn port(mut self, port: u32) -> Self {
        self.endpoint.port = port;
        self
    }

    /// The pod's labels.
    pub fn labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.endpoint.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    /// The node the endpoint runs on.
    pub fn node(mut self, node: &str) -> Self {
        self.endpoint.node_name = node.into();
        self
    }
}

impl From<EndpointBuilder> for pb::Endpoint {
    fn from(b: EndpointBuilder) -> pb::Endpoint {
        b.build()
    }
}

impl From<EndpointBuilder> for Option<pb::Endpoint> {
    fn from(b: EndpointBuilder) -> Option<pb::Endpoint> {
        Some(b.build())
    }
}

/// A reference to the NetworkPolicy `"namespace/name"`.
pub fn policy_ref(policy: &str) -> pb::PolicyRef {
    let (namespace, name) = policy
        .split_once('/')
        .unwrap_or_else(|| panic!("policy {policy:?} is not namespace/name"));
    pb::PolicyRef {
        namespace: namespace.into(),
        name: name.into(),
        kind: pb::PolicyKind::NetworkPolicy as i32,
        tier: pb::PolicyTier::NetworkPolicy as i32,
    }
}

/// A direction's decision with this status only.
pub fn direction(status: pb::PolicyStatus) -> pb::DirectionVerdict {
    pb::DirectionVerdict {
        status: status as i32,
        ..Default::default()
    }
}

/// A protobuf timestamp of a system time.
pub fn timestamp(t: SystemTime) -> Timestamp {
    netverdict_proto::time::timestamp(t)
}

/// A protobuf timestamp `nanos` after the epoch.
pub fn timestamp_nanos(nanos: i64) -> Timestamp {
    UnixNanos::from_nanos(nanos).to_timestamp()
}

/// Now, in nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    UnixNanos::from_system(SystemTime::now()).nanos_saturating()
}

/// `secs` seconds before now.
pub fn ago(secs: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(secs)
}

/// The endpoint as a test names it: `namespace/pod`, else its IP (`-` when
/// there is none).
pub fn who(e: &Option<pb::Endpoint>) -> String {
    match e {
        Some(e) if !e.pod_name.is_empty() => format!("{}/{}", e.namespace, e.pod_name),
        Some(e) => e.ip.clone(),
        None => "-".into(),
    }
}

/// One line on a flow, for failure messages: id, node, endpoints, what
/// policy and kernel said, counts, and where it was observed (`node-a/1/1
/// node-a shop/web-1 -> shop/api-1:8080 Tcp Allowed Established None count=1
/// drops=0 denied_by=[] dns=None Unspecified elsewhere=false`).
pub fn describe(f: &pb::Flow) -> String {
    let denied_by: Vec<String> = f
        .denied_by
        .iter()
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect();
    format!(
        "{} {} {} -> {}:{} {:?} {:?} {:?} {:?} count={} drops={} {} denied_by={denied_by:?} \
         dns={:?} {:?} elsewhere={}",
        f.id,
        f.node_name,
        who(&f.source),
        who(&f.destination),
        f.destination.as_ref().map(|d| d.port).unwrap_or_default(),
        f.protocol(),
        f.verdict(),
        f.outcome(),
        f.mismatch(),
        f.count,
        f.drop_count,
        f.drop_reason,
        f.dns.as_ref().map(|d| &d.query),
        f.observation_point(),
        f.counted_elsewhere
    )
}

/// [`describe`] for each flow, one per line.
pub fn describe_all(flows: &[pb::Flow]) -> String {
    flows.iter().map(describe).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_flow_is_storable_and_each_method_changes_one_part() {
        let plain = flow("node-a/1/1").build();
        netverdict_proto::validate::check_storable(&plain).unwrap();
        assert_eq!(plain.verdict(), pb::Verdict::Allowed);
        assert_eq!(plain.source.as_ref().unwrap().workload, "web");

        let f = flow("node-a/1/2")
            .at_nanos(5_000_000_000)
            .denied()
            .outcome(pb::Outcome::Dropped)
            .to(world("203.0.113.9").port(443))
            .denied_by(["other/egress-lockdown"])
            .build();
        assert_eq!(f.last_seen, Some(timestamp_nanos(5_000_000_000)));
        assert_eq!(f.first_seen, f.last_seen);
        assert_eq!(
            (f.verdict(), f.outcome()),
            (pb::Verdict::Denied, pb::Outcome::Dropped)
        );
        let dst = f.destination.as_ref().unwrap();
        assert_eq!(
            (dst.kind(), dst.ip.as_str(), dst.port),
            (pb::EndpointKind::World, "203.0.113.9", 443)
        );
        assert_eq!(f.denied_by, [policy_ref("other/egress-lockdown")]);
        assert_eq!(f.source, plain.source, "the rest stays");
        assert!(
            describe(&f).contains("shop/web-1 -> 203.0.113.9:443"),
            "{}",
            describe(&f)
        );
    }

    #[test]
    #[should_panic(expected = "not namespace/name")]
    fn a_policy_without_namespace_is_refused() {
        policy_ref("default-deny");
    }
}
