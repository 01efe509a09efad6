//! Label sets and label selectors (matchLabels + matchExpressions), compiled once
//! from the Kubernetes types and matched against labels without allocation.
//!
//! A selector that fails to match can say which of its requirements failed and
//! what the labels actually hold, which is what explanations are made of.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Serialize;

use crate::error::FieldError;

/// A label set, shared between the objects and the identities that carry it.
pub type Labels = Arc<BTreeMap<String, String>>;

/// The set operator of one selector requirement.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "operator", content = "values")]
pub enum Operator {
    /// The label is present and its value is one of these.
    In(Vec<String>),
    /// The label is absent, or its value is none of these.
    NotIn(Vec<String>),
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One requirement of a selector: a key and what its value must be.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Requirement {
    pub key: String,
    #[serde(flatten)]
    pub operator: Operator,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            Operator::In(values) => value.is_some_and(|v| values.iter().any(|x| x == v)),
            Operator::NotIn(values) => value.is_none_or(|v| values.iter().all(|x| x != v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }

    /// What the labels hold for this requirement's key, for explanations:
    /// `team=payments` or `no label team`.
    pub fn describe_actual(&self, labels: &BTreeMap<String, String>) -> String {
        match labels.get(&self.key) {
            Some(v) => format!("{}={}", self.key, v),
            None => format!("no label {}", self.key),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.operator {
            Operator::In(values) if values.len() == 1 => write!(f, "{}={}", self.key, values[0]),
            Operator::In(values) => write!(f, "{} in ({})", self.key, values.join(",")),
            Operator::NotIn(values) => write!(f, "{} notin ({})", self.key, values.join(",")),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// A compiled label selector. No requirements selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// A selector from requirements (all must hold).
    pub fn new(requirements: Vec<Requirement>) -> Self {
        Selector { requirements }
    }

    /// A selector requiring each of these labels to have exactly this value.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Selector::new(
            labels
                .into_iter()
                .map(|(k, v)| Requirement {
                    key: k.to_string(),
                    operator: Operator::In(vec![v.to_string()]),
                })
                .collect(),
        )
    }

    /// Compiles a Kubernetes label selector; `field` is the path of the selector in
    /// its object, used in errors (e.g. `spec.ingress[0].from[1].podSelector`).
    pub fn compile(selector: &LabelSelector, field: &str) -> Result<Self, FieldError> {
        let mut requirements = Vec::new();
        if let Some(match_labels) = &selector.match_labels {
            for (key, value) in match_labels {
                validate_label_key(key, &format!("{field}.matchLabels"))?;
                requirements.push(Requirement {
                    key: key.clone(),
                    operator: Operator::In(vec![value.clone()]),
                });
            }
        }
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            validate_label_key(&expr.key, &format!("{at}.key"))?;
            let values = expr.values.clone().unwrap_or_default();
            let operator = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(FieldError::new(
                        format!("{at}.values"),
                        format!("operator {} needs at least one value", expr.operator),
                    ));
                }
                "In" => Operator::In(values),
                "NotIn" => Operator::NotIn(values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(FieldError::new(
                        format!("{at}.values"),
                        format!("operator {} takes no values", expr.operator),
                    ));
                }
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(FieldError::new(
                        format!("{at}.operator"),
                        format!(
                            "unknown operator {other:?} (expected In, NotIn, Exists or DoesNotExist)"
                        ),
                    ));
                }
            };
            requirements.push(Requirement {
                key: expr.key.clone(),
                operator,
            });
        }
        Ok(Selector { requirements })
    }

    /// Whether the selector has no requirement (selects everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, all of which must hold.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The requirements `labels` do not satisfy (empty when the selector matches).
    pub fn failures<'a>(&'a self, labels: &BTreeMap<String, String>) -> Vec<&'a Requirement> {
        self.requirements
            .iter()
            .filter(|r| !r.matches(labels))
            .collect()
    }

    /// One `key=value` requirement that every matching label set must satisfy, if
    /// any: used to index selectors by label.
    pub fn index_label(&self) -> Option<(&str, &str)> {
        self.requirements.iter().find_map(|r| match &r.operator {
            Operator::In(values) if values.len() == 1 => Some((r.key.as_str(), values[0].as_str())),
            _ => None,
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{} (everything)");
        }
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Renders labels as `k=v,k2=v2` (or `no labels`).
pub fn format_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "no labels".to_string();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 characters made of alphanumerics, `-`, `_` and `.`, starting and ending
/// with an alphanumeric.
pub fn validate_label_key(key: &str, field: &str) -> Result<(), FieldError> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err(FieldError::new(
                    field,
                    format!("invalid label key {key:?}: bad prefix"),
                ));
            }
            name
        }
        None => key,
    };
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(field, format!("invalid label key {key:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::compile(&LabelSelector::default(), "spec.podSelector").unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let sel = LabelSelector {
            match_expressions: Some(vec![
                expr("env", "In", &["prod", "staging"]),
                expr("tier", "NotIn", &["db"]),
                expr("app", "Exists", &[]),
                expr("legacy", "DoesNotExist", &[]),
            ]),
            ..Default::default()
        };
        let s = Selector::compile(&sel, "x").unwrap();
        assert!(s.matches(&labels(&[("env", "prod"), ("app", "x")])));
        // NotIn matches when the key is absent.
        assert!(s.matches(&labels(&[
            ("env", "staging"),
            ("app", "x"),
            ("tier", "web")
        ])));
        assert!(!s.matches(&labels(&[("env", "prod"), ("app", "x"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("env", "dev"), ("app", "x")])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
        assert!(!s.matches(&labels(&[("env", "prod"), ("app", "x"), ("legacy", "1")])));
        let failing = s.failures(&labels(&[("env", "dev"), ("legacy", "1")]));
        assert_eq!(failing.len(), 3);
        assert_eq!(failing[0].to_string(), "env in (prod,staging)");
        assert_eq!(
            failing[0].describe_actual(&labels(&[("env", "dev")])),
            "env=dev"
        );
    }

    #[test]
    fn unknown_operator_names_the_field() {
        let sel = LabelSelector {
            match_expressions: Some(vec![expr("env", "Equals", &["x"])]),
            ..Default::default()
        };
        let err = Selector::compile(&sel, "spec.podSelector").unwrap_err();
        assert_eq!(err.field, "spec.podSelector.matchExpressions[0].operator");
        assert!(err.message.contains("Equals"), "{err}");
    }

    #[test]
    fn in_without_values_is_an_error() {
        let sel = LabelSelector {
            match_expressions: Some(vec![expr("env", "In", &[])]),
            ..Default::default()
        };
        let err = Selector::compile(&sel, "s").unwrap_err();
        assert_eq!(err.field, "s.matchExpressions[0].values");
    }

    #[test]
    fn label_keys_are_validated() {
        assert!(validate_label_key("kubernetes.io/metadata.name", "f").is_ok());
        assert!(validate_label_key("app", "f").is_ok());
        assert!(validate_label_key("-app", "f").is_err());
        assert!(validate_label_key("a b", "f").is_err());
        assert!(validate_label_key("/x", "f").is_err());
    }
}
