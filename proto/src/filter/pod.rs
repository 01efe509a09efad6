//! `source_pod` and `destination_pod`: the endpoint is the pod
//! `"namespace/name"`, or a pod whose name starts with the prefix of
//! `"namespace/prefix*"`. An endpoint that is not a pod never matches.

use super::{FilterError, Result, each};
use crate::v1 as pb;

/// One parsed pod value: a namespace and a pod name or name prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodPattern {
    namespace: String,
    name: String,
    prefix: bool,
}

impl PodPattern {
    /// Parses `"namespace/name"` or `"namespace/prefix*"`; the error names `field`.
    pub fn parse(field: &'static str, value: &str) -> Result<Self> {
        let Some((ns, name)) = value.split_once('/') else {
            return Err(FilterError::invalid(
                field,
                value,
                "expected \"namespace/name\" or \"namespace/prefix*\"",
            ));
        };
        if ns.is_empty() || ns.contains('*') {
            return Err(FilterError::invalid(
                field,
                value,
                "needs a namespace, without '*'",
            ));
        }
        let (name, prefix) = match name.strip_suffix('*') {
            Some(p) => (p, true),
            None => (name, false),
        };
        if name.contains(['*', '/']) {
            return Err(FilterError::invalid(
                field,
                value,
                "'*' only ends a name prefix, and a name has no '/'",
            ));
        }
        if name.is_empty() && !prefix {
            return Err(FilterError::invalid(field, value, "needs a pod name"));
        }
        Ok(PodPattern {
            namespace: ns.to_string(),
            name: name.to_string(),
            prefix,
        })
    }

    /// The pod's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The pod's name, or the prefix of its name (without the `*`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether [`name`](Self::name) is a prefix.
    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    /// Whether `ep` is a pod this pattern names.
    pub fn matches(&self, ep: &pb::Endpoint) -> bool {
        !ep.pod_name.is_empty()
            && ep.namespace == self.namespace
            && if self.prefix {
                ep.pod_name.starts_with(&self.name)
            } else {
                ep.pod_name == self.name
            }
    }
}

/// The patterns of the field.
pub(super) fn parse(field: &'static str, values: &[String]) -> Result<Vec<PodPattern>> {
    each(values, |v| PodPattern::parse(field, v))
}

/// Whether the endpoint is a pod one of `pods` names.
pub(super) fn matches(pods: &[PodPattern], endpoint: Option<&pb::Endpoint>) -> bool {
    pods.is_empty() || endpoint.is_some_and(|ep| pods.iter().any(|p| p.matches(ep)))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, error, flow};
    use crate::v1 as pb;

    fn src(v: &[&str]) -> pb::FlowFilter {
        pb::FlowFilter {
            source_pod: v.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn dst(v: &[&str]) -> pb::FlowFilter {
        pb::FlowFilter {
            destination_pod: v.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn exact_name() {
        assert!(check(src(&["shop/web-1"]), &flow()));
        assert!(!check(src(&["shop/web"]), &flow()));
        assert!(!check(src(&["other/web-1"]), &flow()));
        assert!(check(dst(&["shop/x", "shop/api-7"]), &flow()));
        assert!(
            !check(dst(&["shop/web-1"]), &flow()),
            "source is not destination"
        );
    }

    #[test]
    fn prefix() {
        assert!(check(src(&["shop/web*"]), &flow()));
        assert!(check(src(&["shop/*"]), &flow()));
        assert!(!check(src(&["shop/api*"]), &flow()));
        assert!(check(dst(&["shop/api*"]), &flow()));
    }

    #[test]
    fn non_pods_never_match() {
        let mut flow = flow();
        flow.source.as_mut().unwrap().pod_name.clear();
        assert!(!check(src(&["shop/*"]), &flow));
    }

    #[test]
    fn hostile_value_matches_nothing() {
        assert!(!check(src(&["shop/x' OR 1=1 --"]), &flow()));
    }

    #[test]
    fn invalid_values() {
        for bad in ["web-1", "/web-1", "shop/", "shop/w*b", "*/web", "shop/a/b"] {
            let e = error(src(&[bad])).to_string();
            assert!(e.contains("source_pod") && e.contains(bad), "{e}");
        }
        assert!(
            error(dst(&["nope"]))
                .to_string()
                .contains("destination_pod")
        );
    }
}
