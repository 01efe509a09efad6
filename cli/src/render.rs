//! Rendering of flows and reports for people (tables, one line per flow) and
//! for programs (JSON), and of Kubernetes objects as YAML, as pure functions
//! so they are tested without a server.
//! Enum values are written in their display form (`netverdict_proto::names`:
//! `denied`, `no-answer`, `tcp`), in tables and JSON alike.

use std::borrow::Cow;
use std::fmt::Write as _;

use netverdict_proto::names::name_of;
use netverdict_proto::time::{is_normalized, system_time};
use netverdict_proto::v1 as pb;
use prost_types::Timestamp;
use serde_json::{Value, json};

fn verdict(v: i32) -> Cow<'static, str> {
    name_of::<pb::Verdict>(v)
}

fn outcome(v: i32) -> Cow<'static, str> {
    name_of::<pb::Outcome>(v)
}

fn protocol(v: i32) -> Cow<'static, str> {
    name_of::<pb::Protocol>(v)
}

fn mismatch(v: i32) -> Cow<'static, str> {
    name_of::<pb::Mismatch>(v)
}

fn kind(v: i32) -> Cow<'static, str> {
    name_of::<pb::EndpointKind>(v)
}

fn status(v: i32) -> Cow<'static, str> {
    name_of::<pb::PolicyStatus>(v)
}

fn direction(v: i32) -> Cow<'static, str> {
    name_of::<pb::TrafficDirection>(v)
}

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const LAST_RFC3339_SECOND: i64 = 253_402_300_799;

/// RFC 3339 with milliseconds, or "-" when unset or outside 1970..=9999.
/// A Kubernetes object as one YAML document (no `---`), keys in JSON's
/// sorted order (so `apiVersion` and `kind` come first), each `cidr:` line
/// ending in `# <comment>` when `comment` has one for that CIDR.
pub fn object_yaml<T: serde::Serialize>(
    object: &T,
    comment: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<String> {
    let yaml = serde_yaml_ng::to_string(&serde_json::to_value(object)?)?;
    let mut out = String::with_capacity(yaml.len());
    for line in yaml.lines() {
        out.push_str(line);
        let field = line.trim_start().trim_start_matches("- ");
        if let Some(value) = field.strip_prefix("cidr: ") {
            let cidr = value.trim().trim_matches(['\'', '"']);
            if let Some(note) = comment(cidr) {
                let note: String = note
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                let _ = write!(out, "  # {note}");
            }
        }
        out.push('\n');
    }
    Ok(out)
}

pub fn time(t: Option<&Timestamp>) -> String {
    t.filter(|t| is_normalized(t) && (0..=LAST_RFC3339_SECOND).contains(&t.seconds))
        .and_then(system_time)
        .map_or_else(
            || "-".to_string(),
            |t| humantime::format_rfc3339_millis(t).to_string(),
        )
}

fn time_json(t: Option<&Timestamp>) -> Value {
    match time(t).as_str() {
        "-" => Value::Null,
        s => Value::String(s.to_string()),
    }
}

fn policy(p: &pb::PolicyRef) -> String {
    format!("{}/{}", p.namespace, p.name)
}

fn policies(ps: &[pb::PolicyRef]) -> String {
    if ps.is_empty() {
        return "-".into();
    }
    ps.iter().map(policy).collect::<Vec<_>>().join(",")
}

fn policies_json(ps: &[pb::PolicyRef]) -> Value {
    Value::Array(ps.iter().map(|p| Value::String(policy(p))).collect())
}

/// An endpoint for a person: `ns/pod:port`, or `ip:port` outside the cluster.
pub fn endpoint(e: Option<&pb::Endpoint>) -> String {
    let Some(e) = e else { return "?".into() };
    let who = if e.pod_name.is_empty() {
        match pb::EndpointKind::try_from(e.kind) {
            Ok(pb::EndpointKind::Node) => format!("node {}", e.ip),
            _ => e.ip.clone(),
        }
    } else {
        format!("{}/{}", e.namespace, e.pod_name)
    };
    if e.port == 0 {
        who
    } else {
        format!("{who}:{}", e.port)
    }
}

/// The names a source resolved to an address, for a person: ` (name)`, or
/// ` (name +N)` when it had more; empty when none.
fn names_suffix(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => format!(" ({one})"),
        [first, more @ ..] => format!(" ({first} +{})", more.len()),
    }
}

/// A flow's destination for a person: [`endpoint`], then the name its
/// source resolved to it when it is outside the cluster:
/// `203.0.113.7:443 (api.example.com)`.
pub fn destination(f: &pb::Flow) -> String {
    endpoint(f.destination.as_ref()) + &names_suffix(&f.destination_names)
}

fn endpoint_json(e: Option<&pb::Endpoint>) -> Value {
    let Some(e) = e else { return Value::Null };
    json!({
        "ip": e.ip,
        "port": e.port,
        "kind": kind(e.kind),
        "namespace": e.namespace,
        "pod_name": e.pod_name,
        "labels": e.labels,
        "workload": e.workload,
        "node_name": e.node_name,
    })
}

fn direction_json(d: Option<&pb::DirectionVerdict>) -> Value {
    let Some(d) = d else { return Value::Null };
    json!({
        "status": status(d.status),
        "isolated": d.isolated,
        "selected_by": policies_json(&d.selected_by),
        "allowed_by": d.allowed_by.iter().map(|r| json!({
            "policy": r.policy.as_ref().map(policy),
            "rule": r.rule,
            "peer": r.peer,
            "port": r.port,
        })).collect::<Vec<_>>(),
        "without_rules": policies_json(&d.without_rules),
        "failures": d.failures.iter().map(|f| json!({
            "kind": f.kind,
            "description": f.description,
        })).collect::<Vec<_>>(),
    })
}

/// A flow as a JSON object (enum values by name, times in RFC 3339).
pub fn flow_json(f: &pb::Flow) -> Value {
    json!({
        "id": f.id,
        "first_seen": time_json(f.first_seen.as_ref()),
        "last_seen": time_json(f.last_seen.as_ref()),
        "count": f.count,
        "node_name": f.node_name,
        "source": endpoint_json(f.source.as_ref()),
        "destination": endpoint_json(f.destination.as_ref()),
        "destination_names": f.destination_names,
        "protocol": protocol(f.protocol),
        "service": f.service,
        "traffic_direction": direction(f.traffic_direction),
        "verdict": verdict(f.verdict),
        "reason": f.reason,
        "egress": direction_json(f.egress.as_ref()),
        "ingress": direction_json(f.ingress.as_ref()),
        "allowed_by": policies_json(&f.allowed_by),
        "denied_by": policies_json(&f.denied_by),
        "outcome": outcome(f.outcome),
        "drop_reason": f.drop_reason,
        "drop_count": f.drop_count,
        "packets": f.packets,
        "bytes": f.bytes,
        "mismatch": mismatch(f.mismatch),
        "observation_point": name_of::<pb::ObservationPoint>(f.observation_point),
        "counted_elsewhere": f.counted_elsewhere,
        "dns": f.dns.as_ref().map(|d| json!({
            "id": d.id,
            "query": d.query,
            "qtype": d.qtype,
            "rcode": d.rcode,
            "answers": d.answers,
            "egress_allows_cluster_dns": d.egress_allows_cluster_dns,
        })),
    })
}

/// The short details of a flow: DNS, a mismatch, a second observation of a
/// connection counted elsewhere, the denying policies.
fn flow_details(f: &pb::Flow) -> String {
    let mut parts = Vec::new();
    if let Some(d) = &f.dns {
        let mut dns = format!("dns {} {}", d.qtype, d.query);
        if !d.rcode.is_empty() {
            let _ = write!(dns, " {}", d.rcode);
        }
        parts.push(dns);
    }
    if f.mismatch != pb::Mismatch::None as i32 {
        parts.push(format!("MISMATCH {}", mismatch(f.mismatch)));
    }
    if f.counted_elsewhere {
        parts.push(format!("(second observation, by {})", f.node_name));
    }
    if !f.denied_by.is_empty() {
        parts.push(format!("denied by {}", policies(&f.denied_by)));
    }
    parts.join("  ")
}

/// A denied flow's reason; "-" for others.
fn flow_reason(f: &pb::Flow) -> String {
    if f.verdict == pb::Verdict::Denied as i32 && !f.reason.is_empty() {
        f.reason.clone()
    } else {
        "-".into()
    }
}

/// The observing node for a person ("-" when unknown).
fn node(f: &pb::Flow) -> &str {
    if f.node_name.is_empty() {
        "-"
    } else {
        &f.node_name
    }
}

/// One line per flow (`-o compact`), in the spirit of `hubble observe`:
/// `TIME [NODE] SOURCE -> DESTINATION PROTO VERDICT OUTCOME [xCOUNT] DETAILS`,
/// the node with `--print-node-name`. The denial reason is left out (`-o
/// wide` shows it).
pub fn flow_line(f: &pb::Flow, print_node: bool) -> String {
    let mut line = time(f.last_seen.as_ref());
    if print_node {
        let _ = write!(line, " [{}]", node(f));
    }
    let _ = write!(
        line,
        "  {} -> {}  {}  {}  {}",
        endpoint(f.source.as_ref()),
        destination(f),
        protocol(f.protocol),
        verdict(f.verdict),
        outcome(f.outcome),
    );
    if f.count > 1 {
        let _ = write!(line, " x{}", f.count);
    }
    let details = flow_details(f);
    if !details.is_empty() {
        let _ = write!(line, "  {details}");
    }
    line
}

/// What the source sent, for a person: `3/252` (packets/bytes), `-` when
/// not counted (TCP).
fn sent(f: &pb::Flow) -> String {
    if f.packets == 0 && f.bytes == 0 {
        "-".into()
    } else {
        format!("{}/{}", f.packets, f.bytes)
    }
}

/// Flows as a table (`-o table`; the node with `--print-node-name`), or with
/// the node, the packets and bytes the source sent, and the denial reason
/// (`-o wide`).
pub fn flow_table(flows: &[pb::Flow], wide: bool, print_node: bool) -> String {
    let node_column = wide || print_node;
    let mut headers = vec!["TIME"];
    if node_column {
        headers.push("NODE");
    }
    headers.extend([
        "SOURCE",
        "DESTINATION",
        "PROTOCOL",
        "VERDICT",
        "OUTCOME",
        "COUNT",
    ]);
    if wide {
        headers.push("SENT (PKTS/BYTES)");
    }
    headers.push("DETAILS");
    if wide {
        headers.push("REASON");
    }
    let rows: Vec<Vec<String>> = flows
        .iter()
        .map(|f| {
            let mut row = vec![time(f.last_seen.as_ref())];
            if node_column {
                row.push(node(f).to_string());
            }
            let details = flow_details(f);
            row.extend([
                endpoint(f.source.as_ref()),
                destination(f),
                protocol(f.protocol).into_owned(),
                verdict(f.verdict).into_owned(),
                outcome(f.outcome).into_owned(),
                f.count.to_string(),
            ]);
            if wide {
                row.push(sent(f));
            }
            row.push(if details.is_empty() {
                "-".into()
            } else {
                details
            });
            if wide {
                row.push(flow_reason(f));
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

/// Columns padded to their widest cell, two spaces apart, header first.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            if i + 1 < widths.len() {
                l.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A report's workload for a person: `ns/workload`, `node NAME (ip)`, or the address.
pub fn workload(w: Option<&pb::WorkloadRef>) -> String {
    let Some(w) = w else { return "?".into() };
    match pb::EndpointKind::try_from(w.kind) {
        Ok(pb::EndpointKind::Pod | pb::EndpointKind::HostNetworkPod) => {
            format!("{}/{}", w.namespace, w.workload)
        }
        Ok(pb::EndpointKind::Node) if !w.workload.is_empty() => {
            format!("node {} ({})", w.workload, w.ip)
        }
        Ok(pb::EndpointKind::Node) => format!("node {}", w.ip),
        _ if w.ip.is_empty() => "?".into(),
        _ => w.ip.clone(),
    }
}

fn side(g: &pb::DeniedGroup) -> &'static str {
    match (g.egress_denied, g.ingress_denied) {
        (true, true) => "egress+ingress",
        (true, false) => "egress",
        (false, true) => "ingress",
        (false, false) => "-",
    }
}

/// The denied report as a table; `wide` adds the reason of each group's most
/// recent flow (a sentence: it makes lines long).
pub fn denied_table(groups: &[pb::DeniedGroup], wide: bool) -> String {
    if groups.is_empty() {
        return "No denied flows.\n".into();
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            let mut row = vec![
                workload(g.source.as_ref()),
                workload(g.destination.as_ref()) + &names_suffix(&g.destination_names),
                format!("{}/{}", g.destination_port, protocol(g.protocol)),
                policies(&g.denied_by),
                side(g).to_string(),
                g.count.to_string(),
                time(g.last_seen.as_ref()),
            ];
            if wide {
                row.push(if g.reason.is_empty() {
                    "-".into()
                } else {
                    g.reason.clone()
                });
            }
            row
        })
        .collect();
    let mut headers = vec![
        "SOURCE",
        "DESTINATION",
        "PORT",
        "DENIED BY",
        "DENIED ON",
        "COUNT",
        "LAST SEEN",
    ];
    if wide {
        headers.push("REASON");
    }
    table(&headers, &rows)
}

fn workload_json(w: Option<&pb::WorkloadRef>) -> Value {
    let Some(w) = w else { return Value::Null };
    json!({
        "kind": kind(w.kind),
        "namespace": w.namespace,
        "workload": w.workload,
        "ip": w.ip,
    })
}

/// The denied report as JSON.
pub fn denied_json(groups: &[pb::DeniedGroup]) -> Value {
    Value::Array(
        groups
            .iter()
            .map(|g| {
                json!({
                    "source": workload_json(g.source.as_ref()),
                    "destination": workload_json(g.destination.as_ref()),
                    "destination_names": g.destination_names,
                    "protocol": protocol(g.protocol),
                    "destination_port": g.destination_port,
                    "denied_by": policies_json(&g.denied_by),
                    "egress_denied": g.egress_denied,
                    "ingress_denied": g.ingress_denied,
                    "count": g.count,
                    "flows": g.flows,
                    "first_seen": time_json(g.first_seen.as_ref()),
                    "last_seen": time_json(g.last_seen.as_ref()),
                    "reason": g.reason,
                    "outcome": outcome(g.outcome),
                })
            })
            .collect(),
    )
}

fn protocols(ps: &[i32]) -> String {
    ps.iter()
        .map(|p| format!("{}/53", protocol(*p)))
        .collect::<Vec<_>>()
        .join(",")
}

fn failure_what(f: &pb::DnsFailure) -> String {
    if f.rcode.is_empty() {
        outcome(f.outcome).into_owned()
    } else {
        format!("{} {}", outcome(f.outcome), f.rcode)
    }
}

/// The DNS report as two tables: policy gaps, then failed queries; `wide`
/// adds the denial reason of each failure's most recent query.
pub fn dns_table(report: &pb::DnsReportResponse, wide: bool) -> String {
    let mut out = String::from("Pods whose egress policies block DNS to the cluster DNS:\n");
    if report.policy_gaps.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .policy_gaps
            .iter()
            .map(|g| {
                vec![
                    format!("{}/{}", g.namespace, g.pod),
                    protocols(&g.denied_protocols),
                    policies(&g.egress_policies),
                ]
            })
            .collect();
        out.push_str(&table(&["POD", "BLOCKED", "EGRESS POLICIES"], &rows));
    }
    out.push_str("\nFailed DNS queries:\n");
    if report.failures.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .failures
            .iter()
            .map(|f| {
                let mut row = vec![
                    format!("{}/{}", f.namespace, f.pod),
                    f.query.clone(),
                    f.qtype.clone(),
                    failure_what(f),
                    f.count.to_string(),
                    time(f.last_seen.as_ref()),
                    policies(&f.denied_by),
                    if f.egress_allows_cluster_dns {
                        "yes"
                    } else {
                        "no"
                    }
                    .into(),
                ];
                if wide {
                    row.push(if f.reason.is_empty() {
                        "-".into()
                    } else {
                        f.reason.clone()
                    });
                }
                row
            })
            .collect();
        let mut headers = vec![
            "POD",
            "QUERY",
            "TYPE",
            "OUTCOME",
            "COUNT",
            "LAST SEEN",
            "DENIED BY",
            "DNS ALLOWED",
        ];
        if wide {
            headers.push("REASON");
        }
        out.push_str(&table(&headers, &rows));
    }
    out
}

/// The DNS report as JSON.
pub fn dns_json(report: &pb::DnsReportResponse) -> Value {
    json!({
        "policy_gaps": report.policy_gaps.iter().map(|g| json!({
            "namespace": g.namespace,
            "pod": g.pod,
            "denied_protocols": g.denied_protocols.iter().map(|p| protocol(*p)).collect::<Vec<_>>(),
            "egress_policies": policies_json(&g.egress_policies),
        })).collect::<Vec<_>>(),
        "failures": report.failures.iter().map(|f| json!({
            "namespace": f.namespace,
            "pod": f.pod,
            "query": f.query,
            "qtype": f.qtype,
            "outcome": outcome(f.outcome),
            "rcode": f.rcode,
            "count": f.count,
            "last_seen": time_json(f.last_seen.as_ref()),
            "denied_by": policies_json(&f.denied_by),
            "egress_allows_cluster_dns": f.egress_allows_cluster_dns,
            "reason": f.reason,
        })).collect::<Vec<_>>(),
    })
}

/// A server's status for a person: what it holds and what it has lost.
pub fn status_table(server: &str, s: &pb::ServerStatusResponse) -> String {
    // Refusals (part of the flows lost) and dead letters only when there are
    // some: a collector has neither.
    let rows = [
        Some(("Server", server.to_string())),
        Some(("Flows held", s.flows_stored.to_string())),
        Some(("Flows lost", s.flows_dropped.to_string())),
        (s.flows_refused > 0).then(|| ("  refused", s.flows_refused.to_string())),
        (s.flows_dead_lettered > 0).then(|| ("Dead letters", s.flows_dead_lettered.to_string())),
        Some(("Oldest", time(s.oldest.as_ref()))),
        Some(("Newest", time(s.newest.as_ref()))),
    ];
    let rows: Vec<_> = rows.into_iter().flatten().collect();
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(k, v)| format!("{:width$}  {v}\n", format!("{k}:")))
        .collect()
}

/// A server's status as JSON (the `ServerStatusResponse` fields).
pub fn status_json(server: &str, s: &pb::ServerStatusResponse) -> Value {
    json!({
        "server": server,
        "flows_stored": s.flows_stored,
        "flows_dropped": s.flows_dropped,
        "flows_refused": s.flows_refused,
        "flows_dead_lettered": s.flows_dead_lettered,
        "oldest": time_json(s.oldest.as_ref()),
        "newest": time_json(s.newest.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_yaml_comments_cidrs_it_knows_on_one_line() {
        let object = json!({
            "kind": "NetworkPolicy",
            "apiVersion": "networking.k8s.io/v1",
            "spec": {"egress": [{"to": [
                {"ipBlock": {"cidr": "203.0.113.7/32"}},
                {"ipBlock": {"cidr": "198.51.100.1/32"}},
            ]}]},
        });
        let yaml = object_yaml(&object, &|cidr| {
            (cidr == "203.0.113.7/32").then(|| "evil\nname".to_string())
        })
        .unwrap();
        assert!(
            yaml.starts_with("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains("cidr: 203.0.113.7/32  # evil name\n"),
            "{yaml}"
        );
        assert!(yaml.contains("cidr: 198.51.100.1/32\n"), "{yaml}");
        // Still the same object when read back.
        let back: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, object);
    }

    fn pod(ns: &str, name: &str, port: u32) -> Option<pb::Endpoint> {
        Some(pb::Endpoint {
            kind: pb::EndpointKind::Pod as i32,
            namespace: ns.into(),
            pod_name: name.into(),
            port,
            ..Default::default()
        })
    }

    fn policy_ref(ns: &str, name: &str) -> pb::PolicyRef {
        pb::PolicyRef {
            namespace: ns.into(),
            name: name.into(),
            kind: pb::PolicyKind::NetworkPolicy as i32,
            tier: pb::PolicyTier::NetworkPolicy as i32,
        }
    }

    #[test]
    fn a_denied_flow_names_its_policies_and_wide_its_reason() {
        let f = pb::Flow {
            last_seen: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000_000,
            }),
            count: 3,
            source: pod("shop", "np-client", 42000),
            destination: pod("default", "api", 8080),
            protocol: pb::Protocol::Tcp as i32,
            verdict: pb::Verdict::Denied as i32,
            outcome: pb::Outcome::Dropped as i32,
            denied_by: vec![policy_ref("default", "api-from-web")],
            reason: "needs team=web".into(),
            ..Default::default()
        };
        assert_eq!(
            flow_line(&f, false),
            "2023-11-14T22:13:20.005Z  shop/np-client:42000 -> default/api:8080  tcp  denied  dropped x3  \
             denied by default/api-from-web"
        );
        let f = pb::Flow {
            node_name: "node-a".into(),
            ..f
        };
        assert!(
            flow_line(&f, true).starts_with("2023-11-14T22:13:20.005Z [node-a]  shop/np-client"),
            "{}",
            flow_line(&f, true)
        );
        let t = flow_table(std::slice::from_ref(&f), false, false);
        assert!(
            !t.contains("needs team=web") && !t.contains("node-a"),
            "{t}"
        );
        assert!(t.starts_with("TIME  "), "{t}");
        let w = flow_table(std::slice::from_ref(&f), true, false);
        let lines: Vec<&str> = w.lines().collect();
        assert!(
            lines[0].starts_with("TIME") && lines[0].ends_with("REASON"),
            "{w}"
        );
        assert!(
            lines[1].contains("node-a") && lines[1].ends_with("needs team=web"),
            "{w}"
        );
        let j = flow_json(&f);
        assert_eq!(j["verdict"], "denied");
        assert_eq!(j["outcome"], "dropped");
        assert_eq!(j["denied_by"][0], "default/api-from-web");
        assert_eq!(j["last_seen"], "2023-11-14T22:13:20.005Z");
        assert_eq!(j["dns"], Value::Null);
        assert!(lines[1].contains("  -  "), "TCP sends are not counted: {w}");
        // A ping: its packets and bytes in wide and JSON.
        let ping = pb::Flow {
            protocol: pb::Protocol::Icmp as i32,
            packets: 3,
            bytes: 252,
            ..f
        };
        let w = flow_table(std::slice::from_ref(&ping), true, false);
        assert!(
            w.lines().next().unwrap().contains("SENT (PKTS/BYTES)"),
            "{w}"
        );
        assert!(w.contains("  icmp  ") && w.contains("  3/252  "), "{w}");
        let j = flow_json(&ping);
        assert_eq!(
            (
                j["protocol"].as_str(),
                j["packets"].as_u64(),
                j["bytes"].as_u64()
            ),
            (Some("icmp"), Some(3), Some(252))
        );
    }

    #[test]
    fn times_outside_rfc3339_and_unknown_enums_do_not_panic() {
        for seconds in [i64::MIN, -1, LAST_RFC3339_SECOND + 1, i64::MAX] {
            assert_eq!(time(Some(&Timestamp { seconds, nanos: 0 })), "-");
        }
        let t = Timestamp {
            seconds: LAST_RFC3339_SECOND,
            nanos: 999_999_999,
        };
        assert_eq!(time(Some(&t)), "9999-12-31T23:59:59.999Z");
        let f = pb::Flow {
            verdict: 42,
            outcome: pb::Outcome::NoAnswer as i32,
            ..Default::default()
        };
        let j = flow_json(&f);
        assert_eq!(
            (j["verdict"].as_str(), j["outcome"].as_str()),
            (Some("42"), Some("no-answer"))
        );
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONG HEADER", "C"],
            &[vec!["wide cell".into(), "x".into(), "y".into()]],
        );
        assert_eq!(t, "A          LONG HEADER  C\nwide cell  x            y\n");
    }

    #[test]
    fn denied_table_and_json() {
        let g = pb::DeniedGroup {
            source: Some(pb::WorkloadRef {
                kind: pb::EndpointKind::Pod as i32,
                namespace: "shop".into(),
                workload: "np-client".into(),
                ip: String::new(),
            }),
            destination: Some(pb::WorkloadRef {
                kind: pb::EndpointKind::World as i32,
                ip: "1.1.1.1".into(),
                ..Default::default()
            }),
            protocol: pb::Protocol::Tcp as i32,
            destination_port: 443,
            denied_by: vec![policy_ref("shop", "default-deny")],
            egress_denied: true,
            count: 4,
            reason: "egress isolated".into(),
            ..Default::default()
        };
        let t = denied_table(std::slice::from_ref(&g), false);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("SOURCE") && lines[0].ends_with("LAST SEEN"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("shop/np-client  1.1.1.1      443/tcp  shop/default-deny  egress"),
            "{t}"
        );
        assert!(
            !t.contains("egress isolated"),
            "the reason is for -o wide: {t}"
        );
        let w = denied_table(std::slice::from_ref(&g), true);
        let lines: Vec<&str> = w.lines().collect();
        assert!(lines[0].ends_with("REASON"), "{w}");
        assert!(lines[1].ends_with("egress isolated"), "{w}");
        let j = denied_json(&[g]);
        assert_eq!(j[0]["destination"]["ip"], "1.1.1.1");
        assert_eq!(j[0]["count"], 4);
        assert_eq!(j[0]["source"]["kind"], "pod");
        assert_eq!(denied_table(&[], false), "No denied flows.\n");
    }

    #[test]
    fn names_of_outside_destinations() {
        let mut g = pb::DeniedGroup {
            destination: Some(pb::WorkloadRef {
                kind: pb::EndpointKind::World as i32,
                ip: "203.0.113.7".into(),
                ..Default::default()
            }),
            destination_port: 443,
            destination_names: vec!["api.example.com".into()],
            ..Default::default()
        };
        let t = denied_table(std::slice::from_ref(&g), false);
        assert!(t.contains("203.0.113.7 (api.example.com)  443/"), "{t}");
        g.destination_names.push("edge.cdn.test".into());
        let t = denied_table(std::slice::from_ref(&g), false);
        assert!(t.contains("203.0.113.7 (api.example.com +1)"), "{t}");
        assert_eq!(
            denied_json(&[g])[0]["destination_names"][1],
            "edge.cdn.test"
        );
        let f = pb::Flow {
            destination: Some(pb::Endpoint {
                ip: "203.0.113.7".into(),
                port: 443,
                kind: pb::EndpointKind::World as i32,
                ..Default::default()
            }),
            destination_names: vec!["api.example.com".into()],
            ..Default::default()
        };
        assert!(
            flow_line(&f, false).contains("-> 203.0.113.7:443 (api.example.com)  "),
            "{}",
            flow_line(&f, false)
        );
        assert_eq!(flow_json(&f)["destination_names"][0], "api.example.com");
        let unnamed = pb::Flow {
            destination_names: Vec::new(),
            ..f
        };
        assert!(!flow_line(&unnamed, false).contains('('));
    }

    #[test]
    fn status_for_people_and_programs() {
        let s = pb::ServerStatusResponse {
            flows_stored: 12,
            flows_dropped: 3,
            oldest: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            newest: None,
            flows_refused: 2,
            flows_dead_lettered: 1,
        };
        assert_eq!(
            status_table("localhost:4255", &s),
            "Server:        localhost:4255\n\
             Flows held:    12\n\
             Flows lost:    3\n\
             \x20 refused:     2\n\
             Dead letters:  1\n\
             Oldest:        2023-11-14T22:13:20.000Z\n\
             Newest:        -\n"
        );
        let j = status_json("x", &s);
        assert_eq!(
            (
                j["flows_stored"].as_u64(),
                j["flows_dropped"].as_u64(),
                j["flows_refused"].as_u64(),
                j["flows_dead_lettered"].as_u64()
            ),
            (Some(12), Some(3), Some(2), Some(1))
        );
        assert_eq!(j["newest"], Value::Null);
    }

    #[test]
    fn dns_report_lists_gaps_then_failures() {
        let report = pb::DnsReportResponse {
            policy_gaps: vec![pb::DnsPolicyGap {
                namespace: "default".into(),
                pod: "api".into(),
                denied_protocols: vec![pb::Protocol::Udp as i32, pb::Protocol::Tcp as i32],
                egress_policies: vec![policy_ref("default", "default-deny")],
            }],
            failures: vec![pb::DnsFailure {
                namespace: "shop".into(),
                pod: "np-client".into(),
                query: "nope.example".into(),
                qtype: "A".into(),
                outcome: pb::Outcome::Answered as i32,
                rcode: "NXDOMAIN".into(),
                count: 2,
                ..Default::default()
            }],
        };
        let t = dns_table(&report, false);
        assert!(!t.contains("REASON"), "{t}");
        assert!(dns_table(&report, true).contains("REASON"));
        assert!(
            t.contains("default/api  udp/53,tcp/53  default/default-deny"),
            "{t}"
        );
        assert!(
            t.contains("shop/np-client  nope.example  A     answered NXDOMAIN  2"),
            "{t}"
        );
        let j = dns_json(&report);
        assert_eq!(j["policy_gaps"][0]["denied_protocols"][1], "tcp");
        assert_eq!(j["failures"][0]["rcode"], "NXDOMAIN");
    }
}
