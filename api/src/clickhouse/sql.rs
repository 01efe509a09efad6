//! Flow filters as SQL over the flattened `flows` columns, with exactly the
//! semantics of `netverdict_proto::filter` (one function per dimension, in
//! the same order). User values never become SQL text: each is a `?` bound by
//! the `clickhouse` crate, which escapes it as a literal.

use std::net::IpAddr;

use ipnet::IpNet;
use netverdict_proto::filter::{FlowPredicate, LabelSelector, Requirement};
use netverdict_proto::v1 as pb;

use super::row::normalize_dns;
use crate::store::Result;

/// A bound value.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub(crate) enum Value {
    Str(String),
    Strs(Vec<String>),
    I64(i64),
}

/// SQL text with `?` placeholders and their values, in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sql {
    pub text: String,
    pub binds: Vec<Value>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Sql {
            text: text.to_string(),
            binds: Vec::new(),
        }
    }

    /// Appends SQL text (never user input).
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind(&mut self, value: Value) -> &mut Self {
        self.text.push('?');
        self.binds.push(value);
        self
    }

    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bind(Value::Str(v.to_string()))
    }

    pub fn strs(&mut self, v: Vec<String>) -> &mut Self {
        self.bind(Value::Strs(v))
    }

    /// The query, with every value bound.
    pub fn query(&self, client: &clickhouse::Client) -> clickhouse::query::Query {
        let mut q = client.query(&self.text);
        for b in &self.binds {
            q = q.bind(b.clone());
        }
        q
    }
}

/// Appends `(include) AND NOT (exclude)` for a request's filters; the filters
/// are first compiled by `FlowPredicate`, so invalid values fail with its error.
pub(crate) fn predicate(
    sql: &mut Sql,
    include: &[pb::FlowFilter],
    exclude: &[pb::FlowFilter],
) -> Result<()> {
    FlowPredicate::new(include, exclude)?;
    sql.push("(");
    any_of(sql, include, "1");
    sql.push(") AND NOT (");
    any_of(sql, exclude, "0");
    sql.push(")");
    Ok(())
}

fn any_of(sql: &mut Sql, filters: &[pb::FlowFilter], empty: &str) {
    if filters.is_empty() {
        sql.push(empty);
        return;
    }
    for (i, f) in filters.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        filter(sql, f);
        sql.push(")");
    }
}

/// One filter: every set field must match.
fn filter(sql: &mut Sql, f: &pb::FlowFilter) {
    type Dim = fn(&mut Sql, &pb::FlowFilter) -> bool;
    let dims: [Dim; 14] = [
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
    ];
    sql.push("1");
    for dim in dims {
        let mark = (sql.text.len(), sql.binds.len());
        sql.push(" AND (");
        if dim(sql, f) {
            sql.push(")");
        } else {
            sql.text.truncate(mark.0);
            sql.binds.truncate(mark.1);
        }
    }
}

/// `column IN (names)` for enum values (already validated).
fn enum_in<E: TryFrom<i32>>(
    sql: &mut Sql,
    column: &str,
    values: &[i32],
    name: fn(E) -> &'static str,
) -> bool {
    if values.is_empty() {
        return false;
    }
    sql.push(&format!("{column} IN ("));
    let mut first = true;
    for v in values {
        if let Ok(e) = E::try_from(*v) {
            if !first {
                sql.push(", ");
            }
            first = false;
            sql.str(name(e));
        }
    }
    if first {
        sql.push("NULL");
    }
    sql.push(")");
    true
}

fn verdict(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    enum_in::<pb::Verdict>(sql, "verdict", &f.verdict, |e| e.as_str_name())
}

fn outcome(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    enum_in::<pb::Outcome>(sql, "outcome", &f.outcome, |e| e.as_str_name())
}

fn protocol(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    enum_in::<pb::Protocol>(sql, "protocol", &f.protocol, |e| e.as_str_name())
}

fn mismatch(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    enum_in::<pb::Mismatch>(sql, "mismatch", &f.mismatch, |e| e.as_str_name())
}

fn namespace(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    if f.namespace.is_empty() {
        return false;
    }
    namespaces_either(sql, &f.namespace);
    true
}

/// Either endpoint's (non-empty) namespace is one of `values`.
pub(crate) fn namespaces_either(sql: &mut Sql, values: &[String]) {
    let values: Vec<String> = values.iter().filter(|v| !v.is_empty()).cloned().collect();
    if values.is_empty() {
        sql.push("0");
        return;
    }
    sql.push("(src_namespace != '' AND has(")
        .strs(values.clone())
        .push(", src_namespace)) OR (dst_namespace != '' AND has(")
        .strs(values)
        .push(", dst_namespace))");
}

fn node_name(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    if f.node_name.is_empty() {
        return false;
    }
    sql.push("has(").strs(f.node_name.clone()).push(", node)");
    true
}

fn pods(sql: &mut Sql, p: &str, values: &[String]) -> bool {
    if values.is_empty() {
        return false;
    }
    sql.push(&format!("{p}_pod != '' AND (0"));
    for v in values {
        let Some((ns, name)) = v.split_once('/') else {
            continue;
        };
        sql.push(&format!(" OR ({p}_namespace = "))
            .str(ns)
            .push(" AND ");
        match name.strip_suffix('*') {
            Some(prefix) => {
                sql.push(&format!("substring({p}_pod, 1, {}) = ", prefix.len()))
                    .str(prefix);
            }
            None => {
                sql.push(&format!("{p}_pod = ")).str(name);
            }
        }
        sql.push(")");
    }
    sql.push(")");
    true
}

fn source_pod(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    pods(sql, "src", &f.source_pod)
}

fn destination_pod(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    pods(sql, "dst", &f.destination_pod)
}

fn requirement(sql: &mut Sql, p: &str, r: &Requirement) {
    let pairs = |k: &str, vs: &[String]| vs.iter().map(|v| format!("{k}={v}")).collect::<Vec<_>>();
    match r {
        Requirement::Equals(k, v) => {
            sql.push(&format!("has({p}_labels, "))
                .str(&format!("{k}={v}"))
                .push(")");
        }
        Requirement::NotEquals(k, v) => {
            sql.push(&format!("NOT has({p}_labels, "))
                .str(&format!("{k}={v}"))
                .push(")");
        }
        Requirement::In(k, vs) => {
            sql.push(&format!("hasAny({p}_labels, "))
                .strs(pairs(k, vs))
                .push(")");
        }
        Requirement::NotIn(k, vs) => {
            sql.push(&format!("NOT hasAny({p}_labels, "))
                .strs(pairs(k, vs))
                .push(")");
        }
        Requirement::Exists(k) => {
            sql.push(&format!("has({p}_label_keys, ")).str(k).push(")");
        }
        Requirement::DoesNotExist(k) => {
            sql.push(&format!("NOT has({p}_label_keys, "))
                .str(k)
                .push(")");
        }
    }
}

fn labels(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    if f.labels.is_empty() {
        return false;
    }
    sql.push("0");
    for text in &f.labels {
        let Ok(selector) = LabelSelector::parse("labels", text) else {
            continue;
        };
        for p in ["src", "dst"] {
            sql.push(&format!(" OR ({p}_present = 1"));
            for r in selector.requirements() {
                sql.push(" AND ");
                requirement(sql, p, r);
            }
            sql.push(")");
        }
    }
    true
}

fn policy(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    if f.policy.is_empty() {
        return false;
    }
    sql.push("hasAny(allowed_by, ")
        .strs(f.policy.clone())
        .push(") OR hasAny(denied_by, ")
        .strs(f.policy.clone())
        .push(")");
    true
}

fn destination_port(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    if f.destination_port.is_empty() {
        return false;
    }
    let ports: Vec<String> = f.destination_port.iter().map(u32::to_string).collect();
    // Ports are validated numbers (1..65535), so they are SQL text safely.
    sql.push(&format!(
        "dst_present = 1 AND dst_port IN ({})",
        ports.join(", ")
    ));
    true
}

fn dns_query(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    if f.dns_query.is_empty() {
        return false;
    }
    sql.push("has_dns = 1 AND (0");
    for v in &f.dns_query {
        match v.strip_prefix("*.") {
            Some(rest) => {
                let suffix = format!(".{}", normalize_dns(rest));
                sql.push(&format!(
                    " OR (length(dns_query_norm) > {} AND endsWith(dns_query_norm, ",
                    suffix.len()
                ))
                .str(&suffix)
                .push("))");
            }
            None => {
                sql.push(" OR dns_query_norm = ").str(&normalize_dns(v));
            }
        }
    }
    sql.push(")");
    true
}

fn ips(sql: &mut Sql, p: &str, values: &[String]) -> bool {
    if values.is_empty() {
        return false;
    }
    sql.push("0");
    for v in values {
        let net = match v.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => match v.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        // Addresses are numbers or hex from parsed values: safe as SQL text.
        match net {
            IpNet::V4(n) => sql.push(&format!(
                " OR ({p}_ip_family = 4 AND {p}_ipv4 BETWEEN {} AND {})",
                u32::from(n.network()),
                u32::from(n.broadcast())
            )),
            IpNet::V6(n) => sql.push(&format!(
                " OR ({p}_ip_family = 6 AND {p}_ipv6 >= toFixedString(unhex('{}'), 16) \
                 AND {p}_ipv6 <= toFixedString(unhex('{}'), 16))",
                hex(&n.network().octets()),
                hex(&n.broadcast().octets())
            )),
        };
    }
    true
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn source_ip(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    ips(sql, "src", &f.source_ip)
}

fn destination_ip(sql: &mut Sql, f: &pb::FlowFilter) -> bool {
    ips(sql, "dst", &f.destination_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_are_bound_not_spliced() {
        let f = pb::FlowFilter {
            namespace: vec!["x' OR 1=1 --".into()],
            source_pod: vec!["x' OR 1=1 --/p".into()],
            ..Default::default()
        };
        let mut sql = Sql::default();
        predicate(&mut sql, &[f], &[]).unwrap();
        assert!(!sql.text.contains("1=1"), "{}", sql.text);
        assert!(
            sql.binds
                .contains(&Value::Strs(vec!["x' OR 1=1 --".into()]))
        );
    }

    #[test]
    fn invalid_values_fail_like_the_predicate() {
        let f = pb::FlowFilter {
            source_ip: vec!["nope".into()],
            ..Default::default()
        };
        let e = predicate(&mut Sql::default(), &[], &[f]).unwrap_err();
        assert!(e.to_string().contains("source_ip"), "{e}");
    }

    #[test]
    fn empty_filters() {
        let mut sql = Sql::default();
        predicate(&mut sql, &[], &[]).unwrap();
        assert_eq!(sql.text, "(1) AND NOT (0)");
        let mut sql = Sql::default();
        predicate(&mut sql, &[], &[pb::FlowFilter::default()]).unwrap();
        assert_eq!(sql.text, "(1) AND NOT ((1))");
    }
}
