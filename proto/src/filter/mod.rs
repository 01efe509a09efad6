//! Flow filters, compiled once: a protobuf [`FlowFilter`](pb::FlowFilter)
//! becomes one typed, validated [`Filter`], which every backend consumes.
//!
//! ```text
//! pb::FlowFilter ──Filter::compile──> Filter ──matches(flow)──> memory store, collector ring, follow streams
//!   (strings, i32s)   (validates once;     └──api's clickhouse/sql.rs──> SQL with bound values
//!                      errors name the field and the value)
//! ```
//!
//! Each dimension (verdict, namespace, labels, IPs...) lives in its own file,
//! which parses the field's values into their type and matches a flow against
//! them. A field with several values matches when any value matches; within a
//! filter every set field must match (AND); a [`FilterSet`] matches a flow when
//! the flow matches any include filter (or there is none) and no exclude filter
//! (OR across filters). A filter with no field set matches every flow, so an
//! empty exclude filter excludes everything.
//!
//! [`Filter::compile`] destructures the protobuf filter and the matcher and the
//! SQL builder destructure [`Filter`], all without `..`: a field added to
//! `FlowFilter` does not compile until the parser, the matcher and the SQL
//! handle it.
//!
//! Values are data, never code: a namespace like `x' OR 1=1 --` is just a name
//! that matches no flow.

mod dns;
mod drop_reason;
mod enums;
mod flow_type;
mod ip;
mod labels;
mod namespace;
mod node;
mod pod;
mod policy;
mod port;

use std::num::NonZeroU16;

use ipnet::IpNet;

use crate::v1 as pb;

pub use dns::{DnsMatch, DnsPattern, normalize_dns_name, normalize_dns_names};
pub use drop_reason::DropReason;
pub use labels::{LabelSelector, LabelSet, Requirement};
pub use pod::PodPattern;
pub use policy::PolicyName;

/// Why a filter does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A value of a filter field does not parse.
    #[error("filter field {field}: invalid value {value:?}: {reason}")]
    InvalidValue {
        /// The filter field, as named in `observer.proto`.
        field: &'static str,
        /// The offending text (or number, for enums and ports).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl FilterError {
    pub(crate) fn invalid(
        field: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        FilterError::InvalidValue {
            field,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// The filter field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            FilterError::InvalidValue { field, .. } => field,
        }
    }
}

/// The result of compiling filters.
pub type Result<T, E = FilterError> = std::result::Result<T, E>;

/// One compiled [`FlowFilter`](pb::FlowFilter): each field holds its parsed
/// values (the field's doc says what matches); an empty field is not set and
/// matches every flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The flow's policy verdict is one of these.
    pub verdict: Vec<pb::Verdict>,
    /// What the kernel did is one of these.
    pub outcome: Vec<pb::Outcome>,
    /// Either endpoint's (non-empty) namespace is one of these.
    pub namespace: Vec<String>,
    /// The source is a pod matching one of these.
    pub source_pod: Vec<PodPattern>,
    /// The destination is a pod matching one of these.
    pub destination_pod: Vec<PodPattern>,
    /// One of these selectors holds on either endpoint's labels.
    pub labels: Vec<LabelSelector>,
    /// One of these policies is in the flow's `allowed_by` or `denied_by`.
    pub policy: Vec<PolicyName>,
    /// The destination port (after Service DNAT) is one of these.
    pub destination_port: Vec<NonZeroU16>,
    /// The transport protocol is one of these.
    pub protocol: Vec<pb::Protocol>,
    /// The flow's DNS query name matches one of these.
    pub dns_query: Vec<DnsPattern>,
    /// The verdict/outcome contradiction is one of these (`None`: they agree).
    pub mismatch: Vec<pb::Mismatch>,
    /// The observing node is one of these.
    pub node_name: Vec<String>,
    /// The source address is in one of these networks.
    pub source_ip: Vec<IpNet>,
    /// The destination address is in one of these networks.
    pub destination_ip: Vec<IpNet>,
    /// The source's (non-empty) namespace is one of these.
    pub source_namespace: Vec<String>,
    /// The destination's (non-empty) namespace is one of these.
    pub destination_namespace: Vec<String>,
    /// One of these selectors holds on the source's labels.
    pub source_labels: Vec<LabelSelector>,
    /// One of these selectors holds on the destination's labels.
    pub destination_labels: Vec<LabelSelector>,
    /// The kernel's drop reason is one of these.
    pub drop_reason: Vec<DropReason>,
    /// One of the destination's names matches one of these.
    pub destination_fqdn: Vec<DnsPattern>,
    /// The flow is of one of these kinds (`FlowType::Unspecified` never
    /// compiles).
    pub flow_type: Vec<pb::FlowType>,
}

impl Filter {
    /// Parses every field of `filter`; the first invalid value is the error,
    /// naming its field and the value.
    pub fn compile(filter: &pb::FlowFilter) -> Result<Self> {
        let pb::FlowFilter {
            verdict,
            outcome,
            namespace,
            source_pod,
            destination_pod,
            labels,
            policy,
            destination_port,
            protocol,
            dns_query,
            mismatch,
            node_name,
            source_ip,
            destination_ip,
            source_namespace,
            destination_namespace,
            source_labels,
            destination_labels,
            drop_reason,
            flow_type,
            destination_fqdn,
        } = filter;
        Ok(Filter {
            verdict: enums::parse("verdict", verdict)?,
            outcome: enums::parse("outcome", outcome)?,
            namespace: namespace.clone(),
            source_pod: pod::parse("source_pod", source_pod)?,
            destination_pod: pod::parse("destination_pod", destination_pod)?,
            labels: labels::parse("labels", labels)?,
            policy: policy::parse("policy", policy)?,
            destination_port: port::parse("destination_port", destination_port)?,
            protocol: enums::parse("protocol", protocol)?,
            dns_query: dns::parse("dns_query", dns_query)?,
            mismatch: enums::parse("mismatch", mismatch)?,
            node_name: node_name.clone(),
            source_ip: ip::parse("source_ip", source_ip)?,
            destination_ip: ip::parse("destination_ip", destination_ip)?,
            source_namespace: source_namespace.clone(),
            destination_namespace: destination_namespace.clone(),
            source_labels: labels::parse("source_labels", source_labels)?,
            destination_labels: labels::parse("destination_labels", destination_labels)?,
            drop_reason: drop_reason::parse("drop_reason", drop_reason)?,
            destination_fqdn: dns::parse("destination_fqdn", destination_fqdn)?,
            flow_type: flow_type::parse("flow_type", flow_type)?,
        })
    }

    /// Whether every set field matches `flow`.
    pub fn matches(&self, flow: &pb::Flow) -> bool {
        let Filter {
            verdict,
            outcome,
            namespace,
            source_pod,
            destination_pod,
            labels,
            policy,
            destination_port,
            protocol,
            dns_query,
            mismatch,
            node_name,
            source_ip,
            destination_ip,
            source_namespace,
            destination_namespace,
            source_labels,
            destination_labels,
            drop_reason,
            destination_fqdn,
            flow_type,
        } = self;
        enums::matches(verdict, flow.verdict)
            && enums::matches(outcome, flow.outcome)
            && namespace::matches_either(namespace, flow)
            && pod::matches(source_pod, flow.source.as_ref())
            && pod::matches(destination_pod, flow.destination.as_ref())
            && labels::matches_either(labels, flow)
            && policy::matches(policy, flow)
            && port::matches(destination_port, flow)
            && enums::matches(protocol, flow.protocol)
            && dns::matches(dns_query, flow)
            && enums::matches(mismatch, flow.mismatch)
            && node::matches(node_name, flow)
            && ip::matches(source_ip, flow.source.as_ref())
            && ip::matches(destination_ip, flow.destination.as_ref())
            && namespace::matches(source_namespace, flow.source.as_ref())
            && namespace::matches(destination_namespace, flow.destination.as_ref())
            && labels::matches(source_labels, flow.source.as_ref())
            && labels::matches(destination_labels, flow.destination.as_ref())
            && drop_reason::matches(drop_reason, flow)
            && dns::matches_destination_name(destination_fqdn, flow)
            && flow_type::matches(flow_type, flow)
    }

    /// Whether no field is set (the filter matches every flow).
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

impl TryFrom<&pb::FlowFilter> for Filter {
    type Error = FilterError;

    fn try_from(filter: &pb::FlowFilter) -> Result<Self> {
        Filter::compile(filter)
    }
}

/// A request's include and exclude filters, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSet {
    /// Flows matching any of these (every flow when empty).
    pub include: Vec<Filter>,
    /// Minus flows matching any of these.
    pub exclude: Vec<Filter>,
}

impl FilterSet {
    /// Compiles a request's filters; the first invalid value is the error.
    pub fn compile(include: &[pb::FlowFilter], exclude: &[pb::FlowFilter]) -> Result<Self> {
        Ok(FilterSet {
            include: include.iter().map(Filter::compile).collect::<Result<_>>()?,
            exclude: exclude.iter().map(Filter::compile).collect::<Result<_>>()?,
        })
    }

    /// A set that matches every flow.
    pub fn everything() -> Self {
        FilterSet::default()
    }

    /// Whether `flow` matches any include filter (or there are none) and no
    /// exclude filter.
    pub fn matches(&self, flow: &pb::Flow) -> bool {
        (self.include.is_empty() || self.include.iter().any(|f| f.matches(flow)))
            && !self.exclude.iter().any(|f| f.matches(flow))
    }
}

/// Whether a set field matches: an empty one (not set) always does, a set one
/// when any value matches.
pub(crate) fn any<T>(values: &[T], matches: impl FnMut(&T) -> bool) -> bool {
    values.is_empty() || values.iter().any(matches)
}

/// Parses each value of a field with `parse`.
pub(crate) fn each<V, T>(values: &[V], parse: impl FnMut(&V) -> Result<T>) -> Result<Vec<T>> {
    values.iter().map(parse).collect()
}

#[cfg(test)]
pub(crate) mod testing {
    use crate::v1 as pb;

    /// A denied TCP flow from shop/web-1 (app=web) to shop/api-7 (app=api) on 8080.
    pub fn flow() -> pb::Flow {
        pb::Flow {
            id: "node-a/1".into(),
            node_name: "node-a".into(),
            source: Some(pb::Endpoint {
                ip: "10.0.1.5".into(),
                port: 40000,
                namespace: "shop".into(),
                pod_name: "web-1".into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            destination: Some(pb::Endpoint {
                ip: "10.0.2.7".into(),
                port: 8080,
                namespace: "shop".into(),
                pod_name: "api-7".into(),
                labels: [
                    ("app".to_string(), "api".to_string()),
                    ("tier".to_string(), "backend".to_string()),
                ]
                .into(),
                ..Default::default()
            }),
            protocol: pb::Protocol::Tcp as i32,
            verdict: pb::Verdict::Denied as i32,
            outcome: pb::Outcome::Refused as i32,
            mismatch: pb::Mismatch::None as i32,
            denied_by: vec![pb::PolicyRef {
                namespace: "shop".into(),
                name: "api-ingress".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Compiles `filter` and runs it on `flow`.
    pub fn check(filter: pb::FlowFilter, flow: &pb::Flow) -> bool {
        super::Filter::compile(&filter).unwrap().matches(flow)
    }

    /// The error `filter` compiles to.
    pub fn error(filter: pb::FlowFilter) -> super::FilterError {
        super::Filter::compile(&filter).unwrap_err()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::flow;
    use super::*;

    fn ns(v: &str) -> pb::FlowFilter {
        pb::FlowFilter {
            namespace: vec![v.into()],
            ..Default::default()
        }
    }

    #[test]
    fn no_filters_match_everything() {
        assert!(FilterSet::everything().matches(&flow()));
        assert!(FilterSet::compile(&[], &[]).unwrap().matches(&flow()));
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(testing::check(pb::FlowFilter::default(), &flow()));
        assert!(
            Filter::compile(&pb::FlowFilter::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn include_is_or_across_filters() {
        let p = FilterSet::compile(&[ns("other"), ns("shop")], &[]).unwrap();
        assert!(p.matches(&flow()));
        let p = FilterSet::compile(&[ns("other"), ns("nope")], &[]).unwrap();
        assert!(!p.matches(&flow()));
    }

    #[test]
    fn and_within_a_filter() {
        let f = pb::FlowFilter {
            namespace: vec!["shop".into()],
            destination_port: vec![9999],
            ..Default::default()
        };
        assert!(!testing::check(f, &flow()));
    }

    #[test]
    fn exclude_wins_over_include() {
        let p = FilterSet::compile(&[ns("shop")], &[ns("shop")]).unwrap();
        assert!(!p.matches(&flow()));
        let p = FilterSet::compile(&[ns("shop")], &[ns("other")]).unwrap();
        assert!(p.matches(&flow()));
        let p = FilterSet::compile(&[], &[ns("shop")]).unwrap();
        assert!(!p.matches(&flow()));
    }

    #[test]
    fn an_invalid_exclude_value_is_an_error_naming_field_and_value() {
        let bad = pb::FlowFilter {
            source_ip: vec!["10.0.0.0/99".into()],
            ..Default::default()
        };
        let err = FilterSet::compile(&[], &[bad]).unwrap_err();
        assert_eq!(err.field(), "source_ip");
        assert!(err.to_string().contains("\"10.0.0.0/99\""), "{err}");
    }

    #[test]
    fn compiled_values_are_typed() {
        let f = Filter::compile(&pb::FlowFilter {
            verdict: vec![2],
            source_pod: vec!["shop/web*".into()],
            destination_port: vec![8080],
            dns_query: vec!["*.Example.COM.".into()],
            source_ip: vec!["10.0.0.1".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(f.verdict, [pb::Verdict::Denied]);
        assert_eq!(f.source_pod[0].namespace(), "shop");
        assert_eq!(f.source_pod[0].name(), "web");
        assert!(f.source_pod[0].is_prefix());
        assert_eq!(f.destination_port[0].get(), 8080);
        assert_eq!(
            f.dns_query[0].as_match(),
            DnsMatch::Subdomains {
                suffix: ".example.com"
            }
        );
        assert_eq!(f.source_ip[0].to_string(), "10.0.0.1/32");
    }
}
