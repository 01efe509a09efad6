//! `labels`, `source_labels` and `destination_labels`: a label selector
//! matches either endpoint's labels, the source's or the destination's. An
//! absent endpoint has no labels for any selector to match, not even `!k`.
//!
//! The syntax is Kubernetes' set-based selector: comma-separated requirements,
//! all of which must hold on the same endpoint:
//! `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists) and `!k`
//! (does not exist). As in Kubernetes, `k!=v` and `k notin (..)` also hold when
//! the key is absent.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use super::{FilterError, Result, each};
use crate::v1 as pb;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `k=v` or `k==v`.
    Equals(String, String),
    /// `k!=v`.
    NotEquals(String, String),
    /// `k in (a,b)`.
    In(String, Vec<String>),
    /// `k notin (a,b)`.
    NotIn(String, Vec<String>),
    /// `k`.
    Exists(String),
    /// `!k`.
    DoesNotExist(String),
}

/// Labels a selector can be matched against: a flow endpoint's (a
/// `HashMap`) or a pod's in the cluster state (a `BTreeMap`).
pub trait LabelSet {
    /// The value of label `key`, if the set has it.
    fn label(&self, key: &str) -> Option<&str>;
}

impl<S: BuildHasher> LabelSet for HashMap<String, String, S> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl LabelSet for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Requirement {
    fn matches<L: LabelSet + ?Sized>(&self, labels: &L) -> bool {
        let in_set =
            |k: &str, vs: &[String]| labels.label(k).is_some_and(|v| vs.iter().any(|x| x == v));
        match self {
            Requirement::Equals(k, v) => labels.label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => labels.label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => in_set(k, vs),
            Requirement::NotIn(k, vs) => !in_set(k, vs),
            Requirement::Exists(k) => labels.label(k).is_some(),
            Requirement::DoesNotExist(k) => labels.label(k).is_none(),
        }
    }
}

/// A parsed selector: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses `text`; the error names `field` and the offending part.
    pub fn parse(field: &'static str, text: &str) -> Result<Self> {
        let err = |part: &str, reason: &str| {
            FilterError::invalid(field, text, format!("at {part:?}: {reason}"))
        };
        if text.trim().is_empty() {
            return Err(err(text, "empty selector"));
        }
        let mut requirements = Vec::new();
        for part in split_top_level(text).map_err(|reason| err(text, reason))? {
            requirements.push(parse_requirement(part).map_err(|reason| err(part, reason))?);
        }
        Ok(LabelSelector { requirements })
    }

    /// The requirements, in order.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether every requirement holds on `labels`.
    pub fn matches<L: LabelSet + ?Sized>(&self, labels: &L) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// Splits on commas outside parentheses; rejects unbalanced parentheses.
fn split_top_level(text: &str) -> std::result::Result<Vec<&str>, &'static str> {
    let mut parts = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err("nested parentheses"),
            ')' if depth == 1 => depth = 0,
            ')' => return Err("unbalanced ')'"),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unclosed '('");
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn is_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn key(text: &str) -> std::result::Result<String, &'static str> {
    if text.is_empty() {
        return Err("missing key");
    }
    if !text.chars().all(is_key_char) {
        return Err("a key has only letters, digits, '-', '_', '.' and '/'");
    }
    if text.starts_with('/') || text.ends_with('/') || text.matches('/').count() > 1 {
        return Err("a key is \"name\" or \"prefix/name\"");
    }
    Ok(text.to_string())
}

fn value(text: &str) -> std::result::Result<String, &'static str> {
    if text.len() > 63 {
        return Err("a value is at most 63 characters");
    }
    if !text.chars().all(is_value_char) {
        return Err("a value has only letters, digits, '-', '_' and '.'");
    }
    Ok(text.to_string())
}

fn set(text: &str) -> std::result::Result<Vec<String>, &'static str> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or("expected a set \"(a,b)\"")?;
    let values = inner
        .split(',')
        .map(|v| value(v.trim()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if values.iter().any(String::is_empty) {
        return Err("empty value in a set");
    }
    Ok(values)
}

fn parse_requirement(part: &str) -> std::result::Result<Requirement, &'static str> {
    let part = part.trim();
    if part.is_empty() {
        return Err("empty requirement");
    }
    if let Some(rest) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key(rest.trim())?));
    }
    let key_end = part.find(|c: char| !is_key_char(c)).unwrap_or(part.len());
    let k = key(&part[..key_end])?;
    let rest = &part[key_end..];
    if rest.is_empty() {
        return Ok(Requirement::Exists(k));
    }
    if let Some(v) = rest.strip_prefix("!=") {
        return Ok(Requirement::NotEquals(k, value(v.trim())?));
    }
    if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
        return Ok(Requirement::Equals(k, value(v.trim())?));
    }
    // Set operators need whitespace after the key: "k in (a)", "k notin (a)".
    let trimmed = rest.trim_start();
    if trimmed.len() == rest.len() {
        return Err("expected an operator: =, ==, !=, in or notin");
    }
    if trimmed.is_empty() {
        return Ok(Requirement::Exists(k));
    }
    if let Some(s) = trimmed.strip_prefix("notin") {
        return Ok(Requirement::NotIn(k, set(s.trim())?));
    }
    if let Some(s) = trimmed.strip_prefix("in") {
        return Ok(Requirement::In(k, set(s.trim())?));
    }
    if let Some(v) = trimmed.strip_prefix("!=") {
        return Ok(Requirement::NotEquals(k, value(v.trim())?));
    }
    if let Some(v) = trimmed
        .strip_prefix("==")
        .or_else(|| trimmed.strip_prefix('='))
    {
        return Ok(Requirement::Equals(k, value(v.trim())?));
    }
    Err("expected an operator: =, ==, !=, in or notin")
}

/// The selectors of the field.
pub(super) fn parse(field: &'static str, values: &[String]) -> Result<Vec<LabelSelector>> {
    each(values, |v| LabelSelector::parse(field, v))
}

/// Whether one of `selectors` holds on either endpoint's labels (all its
/// requirements on the same endpoint).
pub(super) fn matches_either(selectors: &[LabelSelector], flow: &pb::Flow) -> bool {
    selectors.is_empty()
        || [&flow.source, &flow.destination]
            .into_iter()
            .any(|ep| holds(selectors, ep.as_ref()))
}

/// Whether one of `selectors` holds on the endpoint's labels.
pub(super) fn matches(selectors: &[LabelSelector], endpoint: Option<&pb::Endpoint>) -> bool {
    selectors.is_empty() || holds(selectors, endpoint)
}

fn holds(selectors: &[LabelSelector], endpoint: Option<&pb::Endpoint>) -> bool {
    endpoint.is_some_and(|ep| selectors.iter().any(|s| s.matches(&ep.labels)))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, error, flow};
    use super::*;

    fn f(v: &[&str]) -> pb::FlowFilter {
        pb::FlowFilter {
            labels: v.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn reqs(text: &str) -> Vec<Requirement> {
        LabelSelector::parse("labels", text)
            .unwrap()
            .requirements()
            .to_vec()
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn parses_every_operator() {
        use Requirement::*;
        assert_eq!(reqs("app=web"), [Equals(s("app"), s("web"))]);
        assert_eq!(reqs("app == web"), [Equals(s("app"), s("web"))]);
        assert_eq!(reqs("app!=web"), [NotEquals(s("app"), s("web"))]);
        assert_eq!(
            reqs("tier in (web, api)"),
            [In(s("tier"), vec![s("web"), s("api")])]
        );
        assert_eq!(reqs("tier notin (db)"), [NotIn(s("tier"), vec![s("db")])]);
        assert_eq!(reqs("app"), [Exists(s("app"))]);
        assert_eq!(reqs(" !app "), [DoesNotExist(s("app"))]);
        assert_eq!(
            reqs("app.kubernetes.io/name=api,tier in (a,b),!canary"),
            [
                Equals(s("app.kubernetes.io/name"), s("api")),
                In(s("tier"), vec![s("a"), s("b")]),
                DoesNotExist(s("canary")),
            ]
        );
        assert_eq!(reqs("app="), [Equals(s("app"), s(""))]);
    }

    #[test]
    fn matches_either_endpoint_with_all_requirements_on_one() {
        assert!(check(f(&["app=web"]), &flow()));
        assert!(check(f(&["app=api,tier=backend"]), &flow()));
        assert!(check(f(&["tier in (frontend, backend)"]), &flow()));
        assert!(
            check(f(&["app notin (web)"]), &flow()),
            "holds on the destination"
        );
        assert!(check(f(&["!tier"]), &flow()), "holds on the source");
        assert!(
            !check(f(&["app=web,tier=backend"]), &flow()),
            "not split across endpoints"
        );
        assert!(!check(f(&["app in (db)"]), &flow()));
        assert!(check(f(&["app=db", "tier"]), &flow()), "any selector");
    }

    #[test]
    fn one_endpoint() {
        let src = |v: &str| pb::FlowFilter {
            source_labels: vec![v.to_string()],
            ..Default::default()
        };
        let dst = |v: &str| pb::FlowFilter {
            destination_labels: vec![v.to_string()],
            ..Default::default()
        };
        assert!(check(src("app=web"), &flow()));
        assert!(!check(src("app=api"), &flow()));
        assert!(check(dst("app=api,tier=backend"), &flow()));
        assert!(!check(dst("app=web"), &flow()));
        assert!(check(src("!tier"), &flow()));
        assert!(!check(dst("!tier"), &flow()));
        let mut flow = flow();
        flow.source = None;
        assert!(
            !check(src("!tier"), &flow),
            "an absent endpoint matches nothing"
        );
        let e = error(dst("app in (")).to_string();
        assert!(e.contains("destination_labels"), "{e}");
    }

    #[test]
    fn not_equals_holds_when_absent() {
        let labels = HashMap::new();
        assert!(
            LabelSelector::parse("labels", "a!=b")
                .unwrap()
                .matches(&labels)
        );
        assert!(
            LabelSelector::parse("labels", "a notin (b)")
                .unwrap()
                .matches(&labels)
        );
    }

    #[test]
    fn errors_name_the_field_and_the_text() {
        for (bad, part) in [
            ("", ""),
            ("app=web,", ""),
            ("app=web,,tier", ""),
            ("app in (a,b", "app in (a,b"),
            ("app in a,b)", "app in a,b)"),
            ("app in ()", "app in ()"),
            ("app in (a,)", "app in (a,)"),
            ("app in ((a))", "app in ((a))"),
            ("app=we b", "app=we b"),
            ("=web", "=web"),
            ("!", "!"),
            ("app ~ web", "app ~ web"),
            ("app>1", "app>1"),
            ("/app=x", "/app=x"),
        ] {
            let e = error(f(&[bad])).to_string();
            assert!(e.contains("labels"), "{bad}: {e}");
            assert!(e.contains(part), "{bad}: {e}");
        }
    }

    #[test]
    fn hostile_value_is_rejected_not_run() {
        let e = error(f(&["app=x' OR 1=1 --"])).to_string();
        assert!(e.contains("labels") && e.contains("x' OR 1=1 --"), "{e}");
        // As a bare key it is not a key either.
        assert!(error(f(&["x' OR 1=1 --"])).to_string().contains("labels"));
    }
}
