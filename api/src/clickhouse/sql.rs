//! Flow filters as SQL over the flattened `flows` columns, with exactly the
//! semantics of `netverdict_proto::filter` (whose matcher is the reference:
//! `api/tests/it/clickhouse_filters.rs` checks both agree). The builder receives
//! compiled [`Filter`]s: it never parses a value, and it destructures each
//! filter without `..`, so a new filter field does not compile until it has
//! its SQL. User values never become SQL text: each is a `?` bound by the
//! `clickhouse` crate, which escapes it as a literal; only numbers from parsed
//! values (ports, IPv4 bounds, hex IPv6 bounds) are written as SQL text.

use ipnet::IpNet;
use netverdict_proto::filter::{
    DnsMatch, DnsPattern, DropReason, Filter, FilterSet, LabelSelector, PodPattern, PolicyName,
    Requirement,
};
use netverdict_proto::names::EnumName;
use netverdict_proto::time::TimeWindow;
use netverdict_proto::v1 as pb;

/// Splits SQL text at the commas outside parentheses and quoted strings
/// (a backslash escapes the next character inside quotes): a column list,
/// a function's arguments. Each piece is trimmed; an empty text has none,
/// and a trailing comma leaves an empty last piece.
pub fn split_top_level_commas(text: &str) -> Vec<String> {
    let (mut out, mut current) = (Vec::new(), String::new());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            ',' if !quoted && depth == 0 => {
                out.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() || !out.is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

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

/// Appends `(include) AND NOT (exclude)` for a request's filters.
pub(crate) fn predicate(sql: &mut Sql, filters: &FilterSet) {
    let FilterSet { include, exclude } = filters;
    sql.push("(");
    any_of(sql, include, "1");
    sql.push(") AND NOT (");
    any_of(sql, exclude, "0");
    sql.push(")");
}

fn any_of(sql: &mut Sql, filters: &[Filter], empty: &str) {
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

/// Appends ` AND (condition)` for a set field; nothing for an empty one.
fn dimension<T>(sql: &mut Sql, values: &[T], condition: impl FnOnce(&mut Sql, &[T])) {
    if !values.is_empty() {
        sql.push(" AND (");
        condition(sql, values);
        sql.push(")");
    }
}

/// One filter: every set field must match.
pub(crate) fn filter(sql: &mut Sql, f: &Filter) {
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
    } = f;
    sql.push("1");
    dimension(sql, verdict, |sql, v| enum_in(sql, "verdict", v));
    dimension(sql, outcome, |sql, v| enum_in(sql, "outcome", v));
    dimension(sql, namespace, |sql, v| {
        namespaces(sql, "src", v);
        sql.push(" OR ");
        namespaces(sql, "dst", v);
    });
    dimension(sql, source_pod, |sql, v| pods(sql, "src", v));
    dimension(sql, destination_pod, |sql, v| pods(sql, "dst", v));
    dimension(sql, labels, |sql, v| {
        label_selectors(sql, "src", v);
        sql.push(" OR ");
        label_selectors(sql, "dst", v);
    });
    dimension(sql, policy, policies);
    dimension(sql, destination_port, |sql, ports| {
        let ports: Vec<String> = ports.iter().map(|p| p.get().to_string()).collect();
        // Ports are numbers from parsed values: safe as SQL text.
        sql.push(&format!(
            "dst_present = 1 AND dst_port IN ({})",
            ports.join(", ")
        ));
    });
    dimension(sql, protocol, |sql, v| enum_in(sql, "protocol", v));
    dimension(sql, dns_query, dns_names);
    dimension(sql, mismatch, |sql, v| enum_in(sql, "mismatch", v));
    dimension(sql, node_name, |sql, v| {
        sql.push("has(").strs(v.to_vec()).push(", node)");
    });
    dimension(sql, source_ip, |sql, v| ips(sql, "src", v));
    dimension(sql, destination_ip, |sql, v| ips(sql, "dst", v));
    dimension(sql, source_namespace, |sql, v| namespaces(sql, "src", v));
    dimension(sql, destination_namespace, |sql, v| {
        namespaces(sql, "dst", v)
    });
    dimension(sql, source_labels, |sql, v| label_selectors(sql, "src", v));
    dimension(sql, destination_labels, |sql, v| {
        label_selectors(sql, "dst", v)
    });
    dimension(sql, drop_reason, drop_reasons);
    dimension(sql, destination_fqdn, |sql, v| {
        sql.push("arrayExists(name -> ");
        name_matches(sql, "name", v);
        sql.push(", dst_names)");
    });
    dimension(sql, flow_type, flow_types);
}

/// Whether `f` reads no column but each end's namespace (`namespace`,
/// `source_namespace`, `destination_namespace`): the columns the `denied`
/// rollup (`denied_groups_by_minute`) has besides the report key.
pub(crate) fn namespaces_only(f: &Filter) -> bool {
    let Filter {
        verdict,
        outcome,
        namespace: _,
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
        source_namespace: _,
        destination_namespace: _,
        source_labels,
        destination_labels,
        drop_reason,
        flow_type,
        destination_fqdn,
    } = f;
    verdict.is_empty()
        && outcome.is_empty()
        && source_pod.is_empty()
        && destination_pod.is_empty()
        && labels.is_empty()
        && policy.is_empty()
        && destination_port.is_empty()
        && protocol.is_empty()
        && dns_query.is_empty()
        && mismatch.is_empty()
        && node_name.is_empty()
        && source_ip.is_empty()
        && destination_ip.is_empty()
        && source_labels.is_empty()
        && destination_labels.is_empty()
        && drop_reason.is_empty()
        && flow_type.is_empty()
        && destination_fqdn.is_empty()
}

/// `column IN (names)`: an `Enum8` column against its members' names.
fn enum_in<E: EnumName>(sql: &mut Sql, column: &str, values: &[E]) {
    sql.push(&format!("{column} IN ("));
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.str(v.sql_name());
    }
    sql.push(")");
}

/// An enum value as a SQL literal, for conditions of our own (never user
/// input): the `Enum8` member name, quoted.
pub(crate) fn enum_literal<E: EnumName>(value: E) -> String {
    format!("'{}'", value.sql_name())
}

/// The endpoint's (non-empty) namespace is one of `values` (an absent
/// endpoint's columns are empty).
fn namespaces(sql: &mut Sql, p: &str, values: &[String]) {
    sql.push(&format!("({p}_namespace != '' AND has("))
        .strs(values.to_vec())
        .push(&format!(", {p}_namespace))"));
}

fn pods(sql: &mut Sql, p: &str, patterns: &[PodPattern]) {
    sql.push(&format!("{p}_pod != '' AND (0"));
    for pod in patterns {
        sql.push(&format!(" OR ({p}_namespace = "))
            .str(pod.namespace())
            .push(" AND ");
        if pod.is_prefix() {
            // substring counts bytes, as str::starts_with compares them.
            sql.push(&format!("substring({p}_pod, 1, {}) = ", pod.name().len()))
                .str(pod.name());
        } else {
            sql.push(&format!("{p}_pod = ")).str(pod.name());
        }
        sql.push(")");
    }
    sql.push(")");
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

/// One of the selectors holds on the endpoint (all its requirements there).
fn label_selectors(sql: &mut Sql, p: &str, selectors: &[LabelSelector]) {
    sql.push("(0");
    for selector in selectors {
        sql.push(&format!(" OR ({p}_present = 1"));
        for r in selector.requirements() {
            sql.push(" AND ");
            requirement(sql, p, r);
        }
        sql.push(")");
    }
    sql.push(")");
}

/// The flow's drop reason (as the collector wrote it) is one of `reasons`.
fn drop_reasons(sql: &mut Sql, reasons: &[DropReason]) {
    let names: Vec<String> = reasons.iter().map(|r| r.as_str().to_string()).collect();
    sql.push("has(").strs(names).push(", drop_reason)");
}

/// The flow is of one of `kinds` (`netverdict_proto::filter`'s `flow_type`
/// table; the conditions are ours, never user input).
fn flow_types(sql: &mut Sql, kinds: &[pb::FlowType]) {
    sql.push("0");
    for kind in kinds {
        let condition = match kind {
            pb::FlowType::Unspecified => "0".to_string(),
            pb::FlowType::Allowed => format!("verdict = {}", enum_literal(pb::Verdict::Allowed)),
            pb::FlowType::Denied => format!("verdict = {}", enum_literal(pb::Verdict::Denied)),
            pb::FlowType::Dropped => format!("outcome = {}", enum_literal(pb::Outcome::Dropped)),
            pb::FlowType::Dns => "has_dns = 1".to_string(),
            pb::FlowType::Mismatch => format!("mismatch != {}", enum_literal(pb::Mismatch::None)),
        };
        sql.push(&format!(" OR ({condition})"));
    }
}

/// One of the policies is in `allowed_by` or `denied_by` (stored as
/// `namespace/name`, the policies' display form).
fn policies(sql: &mut Sql, policies: &[PolicyName]) {
    let names: Vec<String> = policies.iter().map(PolicyName::to_string).collect();
    sql.push("hasAny(allowed_by, ")
        .strs(names.clone())
        .push(") OR hasAny(denied_by, ")
        .strs(names)
        .push(")");
}

/// The flow has DNS and its normalized query (`dns_query_norm`, normalized
/// at insert by the filter's own function) matches one of the patterns.
fn dns_names(sql: &mut Sql, patterns: &[DnsPattern]) {
    sql.push("has_dns = 1 AND ");
    name_matches(sql, "dns_query_norm", patterns);
}

/// The normalized name `expr` matches one of `patterns`.
fn name_matches(sql: &mut Sql, expr: &str, patterns: &[DnsPattern]) {
    sql.push("(0");
    for pattern in patterns {
        match pattern.as_match() {
            DnsMatch::Subdomains { suffix } => {
                // length and endsWith count bytes, as the matcher does.
                sql.push(&format!(
                    " OR (length({expr}) > {} AND endsWith({expr}, ",
                    suffix.len()
                ))
                .str(suffix)
                .push("))");
            }
            DnsMatch::Exact(name) => {
                sql.push(&format!(" OR {expr} = ")).str(name);
            }
        }
    }
    sql.push(")");
}

fn ips(sql: &mut Sql, p: &str, nets: &[IpNet]) {
    sql.push("0");
    for net in nets {
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
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `last_seen` in the window: exact on `last_seen_ns` (the window's bounds
/// saturated to `Int64`, exact for every storable time), and on the
/// `DateTime` column by the window's whole seconds too, so partitions and the
/// sort key prune. An empty window matches nothing.
pub(crate) fn time_range(sql: &mut Sql, window: &TimeWindow) {
    let Some(seconds) = window.seconds() else {
        sql.push(" AND 0");
        return;
    };
    // DateTime holds 0..=u32::MAX; the exact bound below decides at the ends.
    let datetime = |s: i64| Value::I64(s.clamp(0, i64::from(u32::MAX)));
    if let (Some(since), Some(first)) = (window.since(), seconds.first) {
        sql.push(" AND last_seen >= toDateTime(")
            .bind(datetime(first))
            .push(") AND last_seen_ns >= ")
            .bind(Value::I64(since.nanos_saturating()));
    }
    if let (Some(until), Some(last)) = (window.until(), seconds.last) {
        sql.push(" AND last_seen <= toDateTime(")
            .bind(datetime(last))
            .push(") AND last_seen_ns < ")
            .bind(Value::I64(until.nanos_saturating()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_commas_split_outside_parentheses_and_quotes() {
        assert_eq!(
            split_top_level_commas(" a, f(b, c) ,'d,\\'e', x "),
            ["a", "f(b, c)", "'d,\\'e'", "x"]
        );
        assert_eq!(split_top_level_commas("a,"), ["a", ""]);
        assert_eq!(split_top_level_commas("a,,b"), ["a", "", "b"]);
        assert!(split_top_level_commas(" ").is_empty());
    }

    fn compile(include: &[pb::FlowFilter], exclude: &[pb::FlowFilter]) -> Sql {
        let mut sql = Sql::default();
        predicate(&mut sql, &FilterSet::compile(include, exclude).unwrap());
        sql
    }

    #[test]
    fn hostile_values_are_bound_not_spliced() {
        let f = pb::FlowFilter {
            namespace: vec!["x' OR 1=1 --".into()],
            source_pod: vec!["x' OR 1=1 --/p".into()],
            node_name: vec!["x' OR 1=1 --".into()],
            dns_query: vec!["*.x' OR 1=1 --".into()],
            policy: vec!["x' OR 1=1 --/p".into()],
            source_namespace: vec!["x' OR 1=1 --".into()],
            destination_namespace: vec!["x' OR 1=1 --".into()],
            ..Default::default()
        };
        let sql = compile(&[f], &[]);
        assert!(!sql.text.contains("1=1"), "{}", sql.text);
        assert!(
            sql.binds
                .contains(&Value::Strs(vec!["x' OR 1=1 --".into()]))
        );
        assert!(sql.binds.contains(&Value::Str(".x' or 1=1 --".into())));
    }

    #[test]
    fn enums_bind_their_stored_names() {
        let f = pb::FlowFilter {
            outcome: vec![pb::Outcome::NoAnswer as i32],
            ..Default::default()
        };
        let sql = compile(&[f], &[]);
        assert_eq!(sql.text, "((1 AND (outcome IN (?)))) AND NOT (0)");
        assert_eq!(sql.binds, [Value::Str("OUTCOME_NO_ANSWER".into())]);
        assert_eq!(enum_literal(pb::Verdict::Denied), "'VERDICT_DENIED'");
    }

    #[test]
    fn empty_filters() {
        assert_eq!(compile(&[], &[]).text, "(1) AND NOT (0)");
        assert_eq!(
            compile(&[], &[pb::FlowFilter::default()]).text,
            "(1) AND NOT ((1))"
        );
    }

    #[test]
    fn extreme_windows_bind_saturated_bounds() {
        use netverdict_proto::time::UnixNanos;
        use prost_types::Timestamp;
        let at = |seconds, nanos| Some(UnixNanos::from_timestamp(&Timestamp { seconds, nanos }));
        let mut sql = Sql::default();
        time_range(
            &mut sql,
            &TimeWindow::new(at(i64::MIN, 0), at(i64::MAX, 999_999_999)),
        );
        assert_eq!(
            sql.binds,
            [
                Value::I64(0),
                Value::I64(i64::MIN),
                Value::I64(i64::from(u32::MAX)),
                Value::I64(i64::MAX)
            ]
        );
        let mut sql = Sql::default();
        time_range(&mut sql, &TimeWindow::new(at(5, 0), at(5, 0)));
        assert_eq!(sql.text, " AND 0");
        let mut sql = Sql::default();
        time_range(&mut sql, &TimeWindow::new(at(10, 0), at(20, 0)));
        assert_eq!(
            sql.binds,
            [
                Value::I64(10),
                Value::I64(10_000_000_000),
                Value::I64(19),
                Value::I64(20_000_000_000)
            ]
        );
    }
}
