//! `dns_query` and `destination_fqdn`: the flow's DNS query name, or one of
//! the names its source resolved to its destination, equals a value
//! (case-insensitive, a trailing dot ignored), or is a subdomain of
//! `example.com` for a value `"*.example.com"`.
//!
//! [`normalize_dns_name`] is the one definition of how names compare: the
//! matcher applies it to the flow's query and destination names, and the
//! ClickHouse store to the `dns_query_norm` and `destination_names` columns
//! it filters on (the collector stores names normalized).

use super::{FilterError, Result, each};
use crate::v1 as pb;

/// A DNS name as filters compare it: ASCII-lowercased, trailing dots removed.
pub fn normalize_dns_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Names as filters and reports compare them: [`normalize_dns_name`] each.
pub fn normalize_dns_names<S: AsRef<str>>(names: &[S]) -> Vec<String> {
    names
        .iter()
        .map(|n| normalize_dns_name(n.as_ref()))
        .collect()
}

/// One parsed `dns_query` value, normalized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DnsPattern {
    /// The name, or for subdomains the suffix with its leading dot (`.example.com`).
    text: String,
    subdomains: bool,
}

impl DnsPattern {
    /// Parses `"name"` or `"*.name"`; the error names `field`.
    pub fn parse(field: &'static str, value: &str) -> Result<Self> {
        Self::new(value).map_err(|reason| FilterError::invalid(field, value, reason))
    }

    /// Parses `"name"` or `"*.name"`; the error is the reason it is refused.
    /// AdminNetworkPolicy's `domainNames` peers use the same form (upstream's
    /// `DomainName`: `*` only as a leading label, matching one or more whole
    /// labels), so the engine matches them with this type too.
    pub fn new(value: &str) -> Result<Self, &'static str> {
        let (subdomains, rest) = match value.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let name = normalize_dns_name(rest);
        if name.is_empty() {
            return Err("empty name");
        }
        if name.contains('*') {
            return Err("'*' is only allowed as a leading \"*.\"");
        }
        if name.chars().any(char::is_control) {
            return Err("a DNS name has no control characters");
        }
        Ok(DnsPattern {
            text: if subdomains { format!(".{name}") } else { name },
            subdomains,
        })
    }

    /// What the pattern matches, for backends that match in their own terms.
    pub fn as_match(&self) -> DnsMatch<'_> {
        if self.subdomains {
            DnsMatch::Subdomains { suffix: &self.text }
        } else {
            DnsMatch::Exact(&self.text)
        }
    }

    /// Whether a name, in any case and with or without its trailing dot, matches.
    pub fn matches(&self, name: &str) -> bool {
        self.matches_normalized(&normalize_dns_name(name))
    }

    /// Whether a name already normalized by [`normalize_dns_name`] matches.
    pub fn matches_normalized(&self, name: &str) -> bool {
        if self.subdomains {
            name.len() > self.text.len() && name.ends_with(self.text.as_str())
        } else {
            name == self.text
        }
    }
}

impl std::fmt::Display for DnsPattern {
    /// As written, normalized: `api.example.com` or `*.example.com`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.subdomains {
            write!(f, "*{}", self.text)
        } else {
            f.write_str(&self.text)
        }
    }
}

/// What a [`DnsPattern`] matches, names normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsMatch<'a> {
    /// Exactly this name.
    Exact(&'a str),
    /// Names longer than `suffix` that end with it (`suffix` has its leading
    /// dot: `.example.com`).
    Subdomains {
        /// The suffix, leading dot included.
        suffix: &'a str,
    },
}

/// The patterns of the field.
pub(super) fn parse(field: &'static str, values: &[String]) -> Result<Vec<DnsPattern>> {
    each(values, |v| DnsPattern::parse(field, v))
}

/// Whether the flow has DNS whose query matches one of `patterns`.
pub(super) fn matches(patterns: &[DnsPattern], flow: &pb::Flow) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let Some(dns) = &flow.dns else {
        return false;
    };
    let query = normalize_dns_name(&dns.query);
    patterns.iter().any(|p| p.matches_normalized(&query))
}

/// Whether one of the flow's destination names matches one of `patterns`.
pub(super) fn matches_destination_name(patterns: &[DnsPattern], flow: &pb::Flow) -> bool {
    if patterns.is_empty() {
        return true;
    }
    flow.destination_names.iter().any(|name| {
        let name = normalize_dns_name(name);
        patterns.iter().any(|p| p.matches_normalized(&name))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, error, flow};
    use crate::v1 as pb;

    fn f(v: &[&str]) -> pb::FlowFilter {
        pb::FlowFilter {
            dns_query: v.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn dns_flow(query: &str) -> pb::Flow {
        pb::Flow {
            dns: Some(pb::Dns {
                query: query.into(),
                ..Default::default()
            }),
            ..flow()
        }
    }

    #[test]
    fn exact() {
        let flow = dns_flow("api.example.com.");
        assert!(check(f(&["api.example.com"]), &flow));
        assert!(check(f(&["API.Example.com."]), &flow));
        assert!(!check(f(&["example.com"]), &flow));
    }

    #[test]
    fn subdomains() {
        assert!(check(f(&["*.example.com"]), &dns_flow("a.b.example.com")));
        assert!(!check(f(&["*.example.com"]), &dns_flow("example.com")));
        assert!(!check(f(&["*.example.com"]), &dns_flow("badexample.com")));
    }

    #[test]
    fn flows_without_dns_never_match() {
        assert!(!check(f(&["*.example.com"]), &flow()));
    }

    #[test]
    fn hostile_and_invalid_values() {
        assert!(!check(f(&["x' OR 1=1 --"]), &dns_flow("x")), "just a name");
        for bad in ["", "*.", "a.*.com", "*example.com", "a\nb"] {
            let e = error(f(&[bad])).to_string();
            assert!(e.contains("dns_query"), "{e}");
        }
    }

    #[test]
    fn destination_names() {
        let named = pb::Flow {
            destination_names: vec!["edge.cdn.test".into(), "API.example.com.".into()],
            ..flow()
        };
        let fqdn = |v: &[&str]| pb::FlowFilter {
            destination_fqdn: v.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(check(fqdn(&["api.example.com"]), &named));
        assert!(check(fqdn(&["*.example.com"]), &named));
        assert!(check(fqdn(&["nope.test", "*.cdn.test"]), &named));
        assert!(!check(fqdn(&["*.api.example.com"]), &named));
        assert!(!check(fqdn(&["*.example.com"]), &flow()), "no names");
        // A DNS flow's query is not a destination name.
        assert!(!check(fqdn(&["x.example.com"]), &dns_flow("x.example.com")));
        let e = error(fqdn(&["a.*.com"])).to_string();
        assert!(e.contains("destination_fqdn"), "{e}");
    }
}
