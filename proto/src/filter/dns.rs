//! `dns_query`: the flow's DNS query name equals a value (case-insensitive, a
//! trailing dot ignored), or is a subdomain of `example.com` for a value
//! `"*.example.com"`.

use super::{FilterError, FlowCheck, Result};
use crate::v1 as pb;

#[derive(Debug)]
enum NameMatch {
    Exact(String),
    /// The suffix, with its leading dot: `.example.com`.
    Subdomain(String),
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn parse(value: &str) -> Result<NameMatch> {
    let invalid = |reason| FilterError::invalid("dns_query", value, reason);
    let (wild, rest) = match value.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let name = normalize(rest);
    if name.is_empty() {
        return Err(invalid("empty name"));
    }
    if name.contains('*') {
        return Err(invalid("'*' is only allowed as a leading \"*.\""));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("a DNS name has no control characters"));
    }
    Ok(if wild {
        NameMatch::Subdomain(format!(".{name}"))
    } else {
        NameMatch::Exact(name)
    })
}

pub(super) fn build(filter: &pb::FlowFilter) -> Result<Option<FlowCheck>> {
    if filter.dns_query.is_empty() {
        return Ok(None);
    }
    let names = filter
        .dns_query
        .iter()
        .map(|v| parse(v))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Box::new(move |flow| {
        let Some(dns) = &flow.dns else {
            return false;
        };
        let query = normalize(&dns.query);
        names.iter().any(|m| match m {
            NameMatch::Exact(n) => *n == query,
            NameMatch::Subdomain(s) => query.len() > s.len() && query.ends_with(s.as_str()),
        })
    })))
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
}
