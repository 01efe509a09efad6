//! Flow filters, compiled once from the protobuf [`FlowFilter`](pb::FlowFilter)
//! into predicates, then run against every flow.
//!
//! Each dimension (verdict, namespace, labels, IPs...) lives in its own file and
//! turns one field of the filter into a check, validating its values once. A
//! field with several values matches when any value matches; within a filter
//! every set field must match (AND); a [`FlowPredicate`] matches a flow when the
//! flow matches any include filter (or there is none) and no exclude filter
//! (OR across filters). A filter with no field set matches every flow, so an
//! empty exclude filter excludes everything.
//!
//! Values are data, never code: a namespace like `x' OR 1=1 --` is just a name
//! that matches no flow.

mod dns;
mod ip;
mod labels;
mod mismatch;
mod namespace;
mod node;
mod outcome;
mod pod;
mod policy;
mod port;
mod protocol;
mod verdict;

use crate::v1 as pb;

pub use labels::{LabelSelector, Requirement};

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
}

/// The result of compiling filters.
pub type Result<T, E = FilterError> = std::result::Result<T, E>;

/// One compiled check of one dimension.
pub type FlowCheck = Box<dyn Fn(&pb::Flow) -> bool + Send + Sync>;

/// Compiles one field of a filter; `None` when the field is not set.
type Builder = fn(&pb::FlowFilter) -> Result<Option<FlowCheck>>;

/// One compiled [`FlowFilter`](pb::FlowFilter): every check must pass.
pub struct CompiledFilter {
    checks: Vec<(&'static str, FlowCheck)>,
}

impl std::fmt::Debug for CompiledFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.checks.iter().map(|(name, _)| name))
            .finish()
    }
}

impl CompiledFilter {
    /// Compiles every set field of `filter`.
    pub fn compile(filter: &pb::FlowFilter) -> Result<Self> {
        let builders: [(&'static str, Builder); 14] = [
            ("verdict", verdict::build),
            ("outcome", outcome::build),
            ("namespace", namespace::build),
            ("source_pod", pod::build_source),
            ("destination_pod", pod::build_destination),
            ("labels", labels::build),
            ("policy", policy::build),
            ("destination_port", port::build),
            ("protocol", protocol::build),
            ("dns_query", dns::build),
            ("mismatch", mismatch::build),
            ("node_name", node::build),
            ("source_ip", ip::build_source),
            ("destination_ip", ip::build_destination),
        ];
        let mut checks = Vec::new();
        for (name, build) in builders {
            if let Some(check) = build(filter)? {
                checks.push((name, check));
            }
        }
        Ok(CompiledFilter { checks })
    }

    /// Whether every set field matches `flow`.
    pub fn matches(&self, flow: &pb::Flow) -> bool {
        self.checks.iter().all(|(_, check)| check(flow))
    }

    /// The names of the fields this filter checks.
    pub fn fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.checks.iter().map(|(name, _)| *name)
    }
}

/// Include and exclude filters of a request, compiled.
#[derive(Debug, Default)]
pub struct FlowPredicate {
    include: Vec<CompiledFilter>,
    exclude: Vec<CompiledFilter>,
}

impl FlowPredicate {
    /// Compiles a request's filters; the first invalid value is the error.
    pub fn new(include: &[pb::FlowFilter], exclude: &[pb::FlowFilter]) -> Result<Self> {
        Ok(FlowPredicate {
            include: include
                .iter()
                .map(CompiledFilter::compile)
                .collect::<Result<_>>()?,
            exclude: exclude
                .iter()
                .map(CompiledFilter::compile)
                .collect::<Result<_>>()?,
        })
    }

    /// A predicate that matches every flow.
    pub fn everything() -> Self {
        FlowPredicate::default()
    }

    /// Whether `flow` matches any include filter (or there are none) and no
    /// exclude filter.
    pub fn matches(&self, flow: &pb::Flow) -> bool {
        (self.include.is_empty() || self.include.iter().any(|f| f.matches(flow)))
            && !self.exclude.iter().any(|f| f.matches(flow))
    }
}

/// Splits `"namespace/name"` into its parts, both non-empty.
pub(crate) fn namespaced<'a>(field: &'static str, value: &'a str) -> Result<(&'a str, &'a str)> {
    match value.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns, name))
        }
        _ => Err(FilterError::invalid(
            field,
            value,
            "expected \"namespace/name\"",
        )),
    }
}

/// Compiles the values of an enum field, rejecting numbers the enum does not know.
pub(crate) fn enum_values<E: TryFrom<i32> + Copy + Send + Sync + 'static>(
    field: &'static str,
    values: &[i32],
) -> Result<Vec<i32>> {
    for &v in values {
        if E::try_from(v).is_err() {
            return Err(FilterError::invalid(
                field,
                v.to_string(),
                "unknown enum value",
            ));
        }
    }
    Ok(values.to_vec())
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
            }],
            ..Default::default()
        }
    }

    /// Compiles `filter` and runs it on `flow`.
    pub fn check(filter: pb::FlowFilter, flow: &pb::Flow) -> bool {
        super::CompiledFilter::compile(&filter)
            .unwrap()
            .matches(flow)
    }

    /// The error `filter` compiles to.
    pub fn error(filter: pb::FlowFilter) -> super::FilterError {
        super::CompiledFilter::compile(&filter).unwrap_err()
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
        assert!(FlowPredicate::everything().matches(&flow()));
        assert!(FlowPredicate::new(&[], &[]).unwrap().matches(&flow()));
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(testing::check(pb::FlowFilter::default(), &flow()));
    }

    #[test]
    fn include_is_or_across_filters() {
        let p = FlowPredicate::new(&[ns("other"), ns("shop")], &[]).unwrap();
        assert!(p.matches(&flow()));
        let p = FlowPredicate::new(&[ns("other"), ns("nope")], &[]).unwrap();
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
        let p = FlowPredicate::new(&[ns("shop")], &[ns("shop")]).unwrap();
        assert!(!p.matches(&flow()));
        let p = FlowPredicate::new(&[ns("shop")], &[ns("other")]).unwrap();
        assert!(p.matches(&flow()));
        let p = FlowPredicate::new(&[], &[ns("shop")]).unwrap();
        assert!(!p.matches(&flow()));
    }

    #[test]
    fn an_invalid_exclude_value_is_an_error() {
        let bad = pb::FlowFilter {
            source_ip: vec!["10.0.0.0/99".into()],
            ..Default::default()
        };
        let err = FlowPredicate::new(&[], &[bad]).unwrap_err();
        assert!(err.to_string().contains("source_ip"), "{err}");
    }
}
