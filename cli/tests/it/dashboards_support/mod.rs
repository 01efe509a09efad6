//! What Grafana and the grafana-clickhouse-datasource plugin do to a panel's
//! SQL before ClickHouse sees it, so the dashboards' queries can run in tests:
//! template variables interpolated as Grafana's frontend does (multi-value,
//! "All" with a custom all value, `singlequote`/`sqlstring` formats), then the
//! plugin's macros expanded as its backend does. Anything it does not know is an
//! error, never passed through. Also checks a dashboard's JSON against what
//! Grafana's dashboard schema needs, and runs SQL over ClickHouse's HTTP interface.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use netverdict_api::clickhouse::split_top_level_commas;
use netverdict_testing::clickhouse::http_sql_in;
use serde_json::Value;

/// Why SQL could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError(pub String);

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExpandError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ExpandError> {
    Err(ExpandError(msg.into()))
}

/// A template variable's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarValue {
    /// "All" selected: Grafana substitutes the variable's custom all value
    /// verbatim (no formatting), as it does for every format but text and
    /// percentencode.
    All(String),
    /// The selected values.
    Values(Vec<String>),
}

/// What a query is expanded with: the dashboard's time range (Unix seconds),
/// the panel's interval and the template variables.
#[derive(Debug, Clone)]
pub struct Context {
    pub from: i64,
    pub to: i64,
    pub interval_s: u64,
    pub vars: BTreeMap<String, VarValue>,
}

/// Interpolates template variables, then expands the plugin's macros.
pub fn expand(sql: &str, ctx: &Context) -> Result<String, ExpandError> {
    expand_macros(&interpolate(sql, &ctx.vars)?, ctx)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Grafana's template variable interpolation. Only `${name:singlequote}` and
/// `${name:sqlstring}` are accepted: a bare `$name` or `${name}` of a
/// multi-value variable renders values unquoted, which is not valid SQL.
/// `$__name` is left for the macro stage.
pub fn interpolate(sql: &str, vars: &BTreeMap<String, VarValue>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("[[") {
            return err(format!(
                "deprecated [[variable]] syntax at {:?}",
                &tail[..tail.len().min(30)]
            ));
        }
        if let Some(after) = tail.strip_prefix('[') {
            out.push('[');
            rest = after;
            continue;
        }
        if let Some(after) = tail.strip_prefix("$__") {
            out.push_str("$__");
            rest = after;
            continue;
        }
        if let Some(body) = tail.strip_prefix("${") {
            let Some(end) = body.find('}') else {
                return err(format!(
                    "unterminated ${{ in {:?}",
                    &tail[..tail.len().min(30)]
                ));
            };
            let inner = &body[..end];
            let (name, format) = inner.split_once(':').unwrap_or((inner, ""));
            if name.starts_with("__") {
                return err(format!("unknown Grafana global variable ${{{inner}}}"));
            }
            let value = vars
                .get(name)
                .ok_or_else(|| ExpandError(format!("undefined template variable {name}")))?;
            out.push_str(&format_value(name, format, value)?);
            rest = &body[end + 1..];
            continue;
        }
        let name: String = tail[1..].chars().take_while(|c| is_ident(*c)).collect();
        if name.is_empty() {
            out.push('$');
            rest = &tail[1..];
            continue;
        }
        if vars.contains_key(&name) {
            return err(format!(
                "${name} is not quoted: write ${{{name}:singlequote}}"
            ));
        }
        return err(format!("undefined template variable {name}"));
    }
    out.push_str(rest);
    Ok(out)
}

fn format_value(name: &str, format: &str, value: &VarValue) -> Result<String, ExpandError> {
    let quote: fn(&str) -> String = match format {
        "singlequote" => |v| format!("'{}'", v.replace('\'', "\\'")),
        "sqlstring" => |v| format!("'{}'", v.replace('\'', "''")),
        "" => {
            return err(format!(
                "${{{name}}} is not quoted: write ${{{name}:singlequote}}"
            ));
        }
        other => return err(format!("unsupported format {other:?} of ${{{name}}}")),
    };
    match value {
        VarValue::All(all) => Ok(all.clone()),
        VarValue::Values(values) if values.is_empty() => {
            err(format!("variable {name} has no value"))
        }
        VarValue::Values(values) => Ok(values
            .iter()
            .map(|v| quote(v))
            .collect::<Vec<_>>()
            .join(",")),
    }
}

fn date(secs: i64) -> String {
    // Civil date from days since the epoch (proleptic Gregorian).
    let days = secs.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("toDate('{y:04}-{m:02}-{d:02}')")
}

/// The plugin's macros (pkg/macros of grafana-clickhouse-datasource), as its
/// backend expands them. Unknown macros and wrong argument counts are errors.
pub fn expand_macros(sql: &str, ctx: &Context) -> Result<String, ExpandError> {
    let (from, to) = (ctx.from, ctx.to);
    let interval = ctx.interval_s.max(1);
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find("$__") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 3..];
        let name: String = after.chars().take_while(|c| is_ident(*c)).collect();
        let mut tail = &after[name.len()..];
        let args = if let Some(open) = tail.strip_prefix('(') {
            let mut depth = 1;
            let mut end = None;
            for (j, c) in open.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                return err(format!("unclosed arguments of $__{name}"));
            };
            tail = &open[end + 1..];
            Some(split_top_level_commas(&open[..end]))
        } else {
            None
        };
        let argc = args.as_ref().map_or(0, Vec::len);
        let want = |n: usize| -> Result<&[String], ExpandError> {
            if argc == n {
                Ok(args.as_deref().unwrap_or(&[]))
            } else {
                err(format!("$__{name} takes {n} argument(s), got {argc}"))
            }
        };
        let ms = |t: i64| format!("fromUnixTimestamp64Milli({})", t * 1000);
        let expansion = match name.as_str() {
            "fromTime" => {
                want(0)?;
                format!("toDateTime({from})")
            }
            "toTime" => {
                want(0)?;
                format!("toDateTime({to})")
            }
            "fromTime_ms" => {
                want(0)?;
                ms(from)
            }
            "toTime_ms" => {
                want(0)?;
                ms(to)
            }
            "timeFilter" => {
                let c = &want(1)?[0];
                format!("{c} >= toDateTime({from}) AND {c} <= toDateTime({to})")
            }
            "timeFilter_ms" => {
                let c = &want(1)?[0];
                format!("{c} >= {} AND {c} <= {}", ms(from), ms(to))
            }
            "dateFilter" => {
                let c = &want(1)?[0];
                format!("{c} >= {} AND {c} <= {}", date(from), date(to))
            }
            "dateTimeFilter" | "dt" => {
                let a = want(2)?;
                format!(
                    "({d} >= {} AND {d} <= {}) AND ({t} >= toDateTime({from}) AND {t} <= toDateTime({to}))",
                    date(from),
                    date(to),
                    d = a[0],
                    t = a[1]
                )
            }
            "timeInterval" => {
                let c = &want(1)?[0];
                format!("toStartOfInterval(toDateTime({c}), INTERVAL {interval} second)")
            }
            "timeInterval_ms" => {
                let c = &want(1)?[0];
                format!(
                    "toStartOfInterval(toDateTime64({c}, 3), INTERVAL {} millisecond)",
                    interval * 1000
                )
            }
            "interval_s" => {
                want(0)?;
                interval.to_string()
            }
            "" => return err("a bare $__ without a macro name"),
            other => return err(format!("unknown macro $__{other}")),
        };
        out.push_str(&expansion);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// Every `${name...}` a query refers to.
pub fn referenced_vars(sql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = sql;
    while let Some(i) = rest.find("${") {
        let body = &rest[i + 2..];
        let end = body.find('}').unwrap_or(body.len());
        let inner = &body[..end];
        out.insert(inner.split(':').next().unwrap_or_default().to_string());
        rest = &body[end..];
    }
    out
}

/// One ClickHouse result.
#[derive(Debug, Clone)]
pub struct Rows {
    /// Column names and types.
    pub columns: Vec<(String, String)>,
    pub rows: Vec<Vec<Value>>,
}

impl Rows {
    pub fn column(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.columns))
    }

    /// A cell as text (64-bit integers come quoted, others as JSON numbers).
    pub fn text(&self, row: usize, column: &str) -> String {
        match &self.rows[row][self.column(column)] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    pub fn number(&self, row: usize, column: &str) -> f64 {
        let t = self.text(row, column);
        t.parse()
            .unwrap_or_else(|_| panic!("{column} = {t:?} is not a number"))
    }

    /// The rows as maps of column to text, for assertions and messages.
    pub fn records(&self) -> Vec<BTreeMap<String, String>> {
        (0..self.rows.len())
            .map(|r| {
                self.columns
                    .iter()
                    .map(|(c, _)| (c.clone(), self.text(r, c)))
                    .collect()
            })
            .collect()
    }
}

/// Runs a SELECT in `database` over ClickHouse's HTTP interface, as the
/// datasource does with its default database.
pub fn query(addr: &str, database: &str, sql: &str) -> Result<Rows, String> {
    let sql = format!("{sql}\nFORMAT JSONCompact");
    let body = http_sql_in(addr, Some(database), &sql)?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let columns = v["meta"]
        .as_array()
        .ok_or("no meta")?
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let rows = v["data"]
        .as_array()
        .ok_or("no data")?
        .iter()
        .map(|r| r.as_array().cloned().unwrap_or_default())
        .collect();
    Ok(Rows { columns, rows })
}

/// The datasources the dashboards may use.
pub const CLICKHOUSE: (&str, &str) = ("grafana-clickhouse-datasource", "netverdict-clickhouse");
pub const PROMETHEUS: (&str, &str) = ("prometheus", "netverdict-prometheus");

/// The custom all value of every multi-value variable.
pub const ALL_VALUE: &str = "'__all'";

/// Panel types the dashboards use (Grafana core panels).
const PANEL_TYPES: [&str; 6] = ["timeseries", "table", "stat", "barchart", "bargauge", "row"];

fn datasource_of(v: &Value) -> Option<(String, String)> {
    Some((
        v.get("type")?.as_str()?.to_string(),
        v.get("uid")?.as_str()?.to_string(),
    ))
}

/// One query of a dashboard: a panel target or a variable's query.
#[derive(Debug, Clone)]
pub struct Query {
    /// "panel 3 (Title) A" or "variable namespace".
    pub what: String,
    /// "timeseries", "table" (ClickHouse) or "promql".
    pub kind: String,
    pub text: String,
}

/// Checks a dashboard against what Grafana's dashboard schema and the plugin
/// need, and returns its queries. Each problem is named in the error list.
pub fn check_dashboard(name: &str, d: &Value) -> Result<Vec<Query>, Vec<String>> {
    let mut problems = Vec::new();
    let mut p = |m: String| problems.push(format!("{name}: {m}"));
    let uid = d["uid"].as_str().unwrap_or_default();
    if uid.is_empty()
        || uid.len() > 40
        || !uid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        p(format!("uid {uid:?} must be 1..40 of [A-Za-z0-9_-]"));
    }
    if d["title"].as_str().is_none_or(str::is_empty) {
        p("no title".into());
    }
    if d["schemaVersion"].as_u64().is_none_or(|v| v < 30) {
        p(format!(
            "schemaVersion {} is not a number >= 30",
            d["schemaVersion"]
        ));
    }
    if d.get("id").is_some_and(|id| !id.is_null()) {
        p("a provisioned dashboard must not carry an id".into());
    }
    for key in ["time", "templating", "annotations"] {
        if !d[key].is_object() {
            p(format!("no {key} object"));
        }
    }
    let mut queries = Vec::new();
    let vars = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut var_names = BTreeSet::new();
    for v in &vars {
        let vname = v["name"].as_str().unwrap_or_default().to_string();
        if !var_names.insert(vname.clone()) {
            p(format!("variable {vname} defined twice"));
        }
        if v["type"] != "query" {
            p(format!("variable {vname}: type {} is not query", v["type"]));
        }
        if datasource_of(&v["datasource"])
            != Some((CLICKHOUSE.0.to_string(), CLICKHOUSE.1.to_string()))
        {
            p(format!(
                "variable {vname}: datasource is not {CLICKHOUSE:?}"
            ));
        }
        let sql = v["query"]["rawSql"].as_str().unwrap_or_default();
        if sql.is_empty() || v["query"]["editorType"] != "sql" {
            p(format!(
                "variable {vname}: query is not {{editorType: sql, rawSql}}"
            ));
        }
        if v["definition"].as_str() != Some(sql) {
            p(format!(
                "variable {vname}: definition differs from the query"
            ));
        }
        if v["multi"] == true && (v["includeAll"] != true || v["allValue"] != ALL_VALUE) {
            p(format!(
                "variable {vname}: multi-value needs includeAll and allValue {ALL_VALUE}"
            ));
        }
        queries.push(Query {
            what: format!("variable {vname}"),
            kind: "table".into(),
            text: sql.to_string(),
        });
    }
    let panels = d["panels"].as_array().cloned().unwrap_or_default();
    if panels.is_empty() {
        p("no panels".into());
    }
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(u64, u64, u64, u64, u64)> = Vec::new();
    for panel in &panels {
        let id = panel["id"].as_u64();
        let title = panel["title"].as_str().unwrap_or_default();
        let label = format!("panel {} ({title})", id.unwrap_or(0));
        match id {
            Some(id) if ids.insert(id) => {}
            Some(id) => p(format!("{label}: id {id} used twice")),
            None => p(format!("{label}: no integer id")),
        }
        if title.is_empty() {
            p(format!("{label}: no title"));
        }
        let ptype = panel["type"].as_str().unwrap_or_default();
        if !PANEL_TYPES.contains(&ptype) {
            p(format!("{label}: unknown panel type {ptype:?}"));
        }
        let g = &panel["gridPos"];
        let (Some(x), Some(y), Some(w), Some(h)) = (
            g["x"].as_u64(),
            g["y"].as_u64(),
            g["w"].as_u64(),
            g["h"].as_u64(),
        ) else {
            p(format!("{label}: gridPos needs integer x, y, w, h"));
            continue;
        };
        if w == 0 || h == 0 || x + w > 24 {
            p(format!("{label}: gridPos {g} outside the 24-column grid"));
        }
        for (bid, bx, by, bw, bh) in &boxes {
            if x < bx + bw && *bx < x + w && y < by + bh && *by < y + h {
                p(format!("{label}: overlaps panel {bid}"));
            }
        }
        boxes.push((id.unwrap_or(0), x, y, w, h));
        let Some(ds) = datasource_of(&panel["datasource"]) else {
            p(format!("{label}: no datasource {{type, uid}}"));
            continue;
        };
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            p(format!("{label}: no targets"));
        }
        let mut refs = BTreeSet::new();
        for t in &targets {
            let r = t["refId"].as_str().unwrap_or_default();
            if r.is_empty() || !refs.insert(r.to_string()) {
                p(format!("{label}: target refId {r:?} missing or repeated"));
            }
            if datasource_of(&t["datasource"]).as_ref() != Some(&ds) {
                p(format!(
                    "{label} {r}: target datasource differs from the panel's"
                ));
            }
            let what = format!("{label} {r}");
            if ds == (CLICKHOUSE.0.to_string(), CLICKHOUSE.1.to_string()) {
                let sql = t["rawSql"].as_str().unwrap_or_default();
                let (fmt, qt) = (t["format"].as_u64(), t["queryType"].as_str());
                let kind = match (fmt, qt) {
                    (Some(0), Some("timeseries")) => "timeseries",
                    (Some(1), Some("table")) => "table",
                    _ => {
                        p(format!(
                            "{what}: format {fmt:?} and queryType {qt:?} disagree"
                        ));
                        "table"
                    }
                };
                if t["editorType"] != "sql" || sql.is_empty() {
                    p(format!("{what}: needs editorType sql and a rawSql"));
                }
                if sql.contains(';') {
                    p(format!("{what}: rawSql must be one statement without ';'"));
                }
                if (kind == "timeseries") != (ptype == "timeseries") {
                    p(format!("{what}: a {kind} query in a {ptype} panel"));
                }
                queries.push(Query {
                    what,
                    kind: kind.to_string(),
                    text: sql.to_string(),
                });
            } else if ds == (PROMETHEUS.0.to_string(), PROMETHEUS.1.to_string()) {
                let expr = t["expr"].as_str().unwrap_or_default();
                if expr.is_empty() {
                    p(format!("{what}: no expr"));
                }
                queries.push(Query {
                    what,
                    kind: "promql".into(),
                    text: expr.to_string(),
                });
            } else {
                p(format!("{label}: unknown datasource {ds:?}"));
            }
        }
    }
    let mut used = BTreeSet::new();
    for q in &queries {
        for v in referenced_vars(&q.text) {
            if !var_names.contains(&v) {
                p(format!("{}: refers to undefined variable {v}", q.what));
            }
            used.insert(v);
        }
    }
    for v in var_names.difference(&used) {
        p(format!("variable {v} is used by no query"));
    }
    if problems.is_empty() {
        Ok(queries)
    } else {
        Err(problems)
    }
}

/// PromQL's aggregation operators and keywords (not metric names).
const PROMQL_WORDS: [&str; 21] = [
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
];

/// Metric names in a PromQL expression: identifiers that are neither
/// functions, keywords, label names in `by (...)`, nor Grafana variables.
pub fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut in_by = false;
    let mut brace = 0;
    let mut bracket = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            brace += 1;
        } else if c == '}' {
            brace -= 1;
        } else if c == '[' {
            bracket += 1;
        } else if c == ']' {
            bracket -= 1;
        } else if c == ')' {
            in_by = false;
        }
        if (c.is_ascii_alphabetic() || c == '_')
            && (i == 0 || !is_ident(chars[i - 1]) && chars[i - 1] != '$')
        {
            let start = i;
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if word == "by" || word == "without" {
                in_by = true;
            } else if next != Some(&'(')
                && !PROMQL_WORDS.contains(&word.as_str())
                && !in_by
                && brace == 0
                && bracket == 0
            {
                out.insert(word);
            }
            continue;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(vars: &[(&str, VarValue)]) -> Context {
        Context {
            from: 1_700_000_000,
            to: 1_700_003_600,
            interval_s: 60,
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn values(v: &[&str]) -> VarValue {
        VarValue::Values(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn time_macros_expand_like_the_plugin() {
        let c = ctx(&[]);
        assert_eq!(
            expand("WHERE $__timeFilter(minute) AND x < $__toTime", &c).unwrap(),
            "WHERE minute >= toDateTime(1700000000) AND minute <= toDateTime(1700003600) \
             AND x < toDateTime(1700003600)"
        );
        assert_eq!(
            expand("$__fromTime $__interval_s $__timeInterval(t)", &c).unwrap(),
            "toDateTime(1700000000) 60 toStartOfInterval(toDateTime(t), INTERVAL 60 second)"
        );
        assert_eq!(
            expand("$__dateFilter(d)", &c).unwrap(),
            "d >= toDate('2023-11-14') AND d <= toDate('2023-11-14')"
        );
        assert_eq!(
            expand("$__timeFilter_ms(t)", &c).unwrap(),
            "t >= fromUnixTimestamp64Milli(1700000000000) AND t <= fromUnixTimestamp64Milli(1700003600000)"
        );
    }

    #[test]
    fn unknown_macros_and_wrong_arguments_are_errors() {
        let c = ctx(&[]);
        assert_eq!(
            expand("SELECT $__timeGroup(t, 1m)", &c).unwrap_err().0,
            "unknown macro $__timeGroup"
        );
        assert!(expand("$__timeFilter", &c).is_err(), "missing argument");
        assert!(expand("$__timeFilter(a, b)", &c).is_err(), "two arguments");
        assert!(expand("$__interval_s(1)", &c).is_err());
        assert!(expand("$__timeFilter(a", &c).is_err(), "unclosed");
        assert!(expand("$__ ", &c).is_err());
        assert!(expand("${__from}", &c).is_err(), "unknown global");
    }

    #[test]
    fn variables_are_quoted_and_all_is_the_custom_all_value() {
        let c = ctx(&[
            ("ns", values(&["default", "o'neil"])),
            ("pod", VarValue::All(ALL_VALUE.into())),
        ]);
        assert_eq!(
            expand("x IN (${ns:singlequote}) AND y IN (${pod:singlequote})", &c).unwrap(),
            r"x IN ('default','o\'neil') AND y IN ('__all')"
        );
        assert_eq!(
            expand("${ns:sqlstring}", &c).unwrap(),
            "'default','o''neil'"
        );
    }

    #[test]
    fn unquoted_undefined_or_empty_variables_are_errors() {
        let c = ctx(&[("ns", values(&["default"])), ("none", values(&[]))]);
        assert!(expand("x = $ns", &c).is_err());
        assert!(expand("x = ${ns}", &c).is_err());
        assert!(expand("x = ${ns:csv}", &c).is_err());
        assert!(expand("x = ${other:singlequote}", &c).is_err());
        assert!(expand("x = $other", &c).is_err());
        assert!(expand("x = [[ns]]", &c).is_err());
        assert!(expand("x IN (${none:singlequote})", &c).is_err());
        assert!(expand("x = ${ns:singlequote", &c).is_err());
        // Array subscripts and a lone '$' are not variables.
        assert_eq!(expand("a[1] = '$'", &c).unwrap(), "a[1] = '$'");
    }

    #[test]
    fn references_and_metric_names_are_found() {
        assert_eq!(
            referenced_vars("${a:singlequote} $__timeFilter(t) ${b}"),
            ["a".to_string(), "b".to_string()].into()
        );
        assert_eq!(
            promql_metrics(
                "histogram_quantile(0.99, sum by (le, instance) \
                 (rate(my_metric_bucket{job=\"x\"}[$__rate_interval]))) + other_total \
                 + max without (kind) (third) or fourth"
            ),
            ["fourth", "my_metric_bucket", "other_total", "third"]
                .map(String::from)
                .into()
        );
    }

    #[test]
    fn dashboard_problems_are_named() {
        let d = serde_json::json!({
            "uid": "x", "title": "t", "schemaVersion": 39, "time": {}, "annotations": {},
            "templating": {"list": []},
            "panels": [
                {"id": 1, "type": "table", "title": "a", "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
                 "datasource": {"type": CLICKHOUSE.0, "uid": CLICKHOUSE.1},
                 "targets": [{"refId": "A", "datasource": {"type": CLICKHOUSE.0, "uid": CLICKHOUSE.1},
                              "editorType": "sql", "format": 1, "queryType": "table",
                              "rawSql": "SELECT ${ns:singlequote}"}]},
                {"id": 1, "type": "table", "title": "b", "gridPos": {"x": 6, "y": 0, "w": 12, "h": 8},
                 "datasource": {"type": CLICKHOUSE.0, "uid": CLICKHOUSE.1}, "targets": []}
            ]
        });
        let problems = check_dashboard("d", &d).unwrap_err().join("\n");
        for expected in [
            "undefined variable ns",
            "id 1 used twice",
            "overlaps panel 1",
            "no targets",
        ] {
            assert!(problems.contains(expected), "{expected} not in {problems}");
        }
    }
}
