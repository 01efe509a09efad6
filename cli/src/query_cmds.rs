//! The query subcommands against an API server (or a collector's observer):
//! `observe`, `denied`, `dns` and `mismatches`. Flags are parsed into the
//! protobuf requests by pure functions (each error names its flag); the
//! answers are printed by [`crate::render`].

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use netverdict_proto::filter::Filter;
use netverdict_proto::names::EnumName;
use netverdict_proto::time::timestamp;
use netverdict_proto::v1 as pb;
use pb::observer_client::ObserverClient;
use pb::query_client::QueryClient;
use prost_types::Timestamp;

use crate::render;

/// Where the server is.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// The API server's gRPC address (a collector's observer, on 4244, answers
    /// `observe` too).
    #[arg(long, default_value = "localhost:4245", env = "NETVERDICT_SERVER")]
    pub server: String,
}

/// Output formats of `observe` and `mismatches`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowOutput {
    /// One line per flow, for people.
    Table,
    /// One JSON array of flows.
    Json,
    /// One JSON object per line (streams with --follow).
    Jsonl,
}

/// Output formats of the reports.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutput {
    /// Aligned tables, for people.
    Table,
    /// JSON.
    Json,
}

/// Time range flags.
#[derive(Args, Debug, Clone, Default)]
pub struct TimeArgs {
    /// Only flows last seen at or after this: a duration ago (15m, 1h) or an
    /// RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only flows last seen before this: a duration ago or an RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
}

/// Filters of `observe`.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Flows with either endpoint in this namespace (repeatable).
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Vec<String>,
    /// Every namespace (the default; for kubectl habits).
    #[arg(short = 'A', long = "all-namespaces", conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Either endpoint matches this label selector ("app=api,tier in (web)").
    #[arg(short = 'l', long = "selector")]
    pub selector: Vec<String>,
    /// Flows from or to this pod: NAMESPACE/NAME or NAME with -n; a trailing * matches a prefix.
    #[arg(long)]
    pub pod: Vec<String>,
    /// Flows from this pod.
    #[arg(long)]
    pub from_pod: Vec<String>,
    /// Flows to this pod.
    #[arg(long)]
    pub to_pod: Vec<String>,
    /// Policy verdict: allowed, denied, unspecified.
    #[arg(long)]
    pub verdict: Vec<String>,
    /// Kernel outcome: established, refused, reset, no-answer, dropped, answered, unspecified.
    #[arg(long)]
    pub outcome: Vec<String>,
    /// Flows allowed or denied by this policy: NAMESPACE/NAME or NAME with -n.
    #[arg(long)]
    pub policy: Vec<String>,
    /// Destination port (after Service DNAT).
    #[arg(long)]
    pub port: Vec<String>,
    /// Transport protocol: tcp, udp, sctp, unspecified.
    #[arg(long)]
    pub protocol: Vec<String>,
    /// DNS query name; "*.example.com" matches subdomains.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Only flows where the kernel contradicts the policy verdict.
    #[arg(long)]
    pub mismatch: bool,
    /// Flows observed on this node.
    #[arg(long)]
    pub node: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ObserveArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub time: TimeArgs,
    /// The last N matching flows (default: the server's, 20).
    #[arg(long, conflicts_with = "first")]
    pub last: Option<u64>,
    /// The first N matching flows of the window.
    #[arg(long, conflicts_with = "follow")]
    pub first: Option<u64>,
    /// Keep streaming new matching flows.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = FlowOutput::Table)]
    pub output: FlowOutput,
}

#[derive(Args, Debug)]
pub struct DeniedArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Denied flows last seen at or after this (duration ago or RFC 3339).
    #[arg(long, default_value = "15m")]
    pub since: String,
    /// ... and before this.
    #[arg(long)]
    pub until: Option<String>,
    /// Flows with either endpoint in this namespace (repeatable).
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Vec<String>,
    /// The most groups to show (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = ReportOutput::Table)]
    pub output: ReportOutput,
}

#[derive(Args, Debug)]
pub struct DnsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Failed queries last seen at or after this (duration ago or RFC 3339).
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// ... and before this.
    #[arg(long)]
    pub until: Option<String>,
    /// Pods in this namespace (repeatable).
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Vec<String>,
    /// The most failure groups to show (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = ReportOutput::Table)]
    pub output: ReportOutput,
}

#[derive(Args, Debug)]
pub struct MismatchesArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub time: TimeArgs,
    /// Flows with either endpoint in this namespace (repeatable).
    #[arg(short = 'n', long = "namespace")]
    pub namespace: Vec<String>,
    /// The last N mismatched flows (default: the server's, 20).
    #[arg(long)]
    pub last: Option<u64>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = FlowOutput::Table)]
    pub output: FlowOutput,
}

/// A `--since`/`--until` value: a duration ago from `now`, or an RFC 3339 time.
pub fn parse_time(flag: &str, value: &str, now: SystemTime) -> Result<Timestamp> {
    let t = if let Ok(d) = humantime::parse_duration(value) {
        now.checked_sub(d)
            .with_context(|| format!("{flag}: {value:?} reaches before 1970"))?
    } else if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        t
    } else {
        bail!(
            "{flag}: invalid value {value:?}: expected a duration ago (30s, 15m, 2h) or an RFC 3339 time (2025-01-31T12:00:00Z)"
        );
    };
    if t < SystemTime::UNIX_EPOCH {
        bail!("{flag}: {value:?} is before 1970");
    }
    Ok(timestamp(t))
}

fn parse_times(
    since: Option<&str>,
    until: Option<&str>,
) -> Result<(Option<Timestamp>, Option<Timestamp>)> {
    let now = SystemTime::now();
    Ok((
        since.map(|v| parse_time("--since", v, now)).transpose()?,
        until.map(|v| parse_time("--until", v, now)).transpose()?,
    ))
}

/// The proto number of a flag's enum value, by its name (`netverdict_proto::names`).
fn enum_value<E: EnumName>(flag: &str, value: &str) -> Result<i32> {
    E::parse_or_list(value)
        .map(E::number)
        .map_err(|reason| anyhow::anyhow!("{flag}: invalid value {value:?}: {reason}"))
}

/// `ns/name`, or `name` qualified by the only `-n` namespace.
fn qualified(flag: &str, value: &str, namespaces: &[String]) -> Result<String> {
    if value.contains('/') {
        let (ns, name) = value.split_once('/').unwrap_or_default();
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            bail!("{flag}: invalid value {value:?}: expected NAMESPACE/NAME");
        }
        return Ok(value.to_string());
    }
    match namespaces {
        [ns] => Ok(format!("{ns}/{value}")),
        _ => bail!("{flag}: {value:?} needs a namespace: write NAMESPACE/NAME or give one -n"),
    }
}

/// The include filters of `observe`'s flags (one, or two for `--pod`: from or to).
pub fn build_filters(args: &FilterArgs) -> Result<Vec<pb::FlowFilter>> {
    let ns = &args.namespace;
    let base = pb::FlowFilter {
        verdict: args
            .verdict
            .iter()
            .map(|v| enum_value::<pb::Verdict>("--verdict", v))
            .collect::<Result<_>>()?,
        outcome: args
            .outcome
            .iter()
            .map(|v| enum_value::<pb::Outcome>("--outcome", v))
            .collect::<Result<_>>()?,
        namespace: ns.clone(),
        source_pod: args
            .from_pod
            .iter()
            .map(|p| qualified("--from-pod", p, ns))
            .collect::<Result<_>>()?,
        destination_pod: args
            .to_pod
            .iter()
            .map(|p| qualified("--to-pod", p, ns))
            .collect::<Result<_>>()?,
        labels: args.selector.clone(),
        policy: args
            .policy
            .iter()
            .map(|p| qualified("--policy", p, ns))
            .collect::<Result<_>>()?,
        destination_port: args
            .port
            .iter()
            .map(|p| match p.parse::<u32>() {
                Ok(n) if (1..=65535).contains(&n) => Ok(n),
                _ => bail!("--port: invalid value {p:?}: expected a port number 1-65535"),
            })
            .collect::<Result<_>>()?,
        protocol: args
            .protocol
            .iter()
            .map(|v| enum_value::<pb::Protocol>("--protocol", v))
            .collect::<Result<_>>()?,
        dns_query: args.dns.clone(),
        mismatch: if args.mismatch {
            vec![
                pb::Mismatch::DroppedThoughAllowed as i32,
                pb::Mismatch::AllowedThoughDenied as i32,
                pb::Mismatch::NoAnswerThoughAllowed as i32,
            ]
        } else {
            Vec::new()
        },
        node_name: args.node.clone(),
        ..Default::default()
    };
    // Check every value the server would reject, here, naming our flag.
    let check = |f: &pb::FlowFilter| {
        Filter::compile(f).map_err(|e| {
            let flag = match e.field() {
                "labels" => "-l/--selector",
                "dns_query" => "--dns",
                "source_pod" => "--from-pod/--pod",
                "destination_pod" => "--to-pod/--pod",
                "policy" => "--policy",
                "node_name" => "--node",
                "namespace" => "-n/--namespace",
                _ => "filter",
            };
            anyhow::anyhow!("{flag}: {e}")
        })
    };
    if args.pod.is_empty() {
        check(&base)?;
        return Ok(vec![base]);
    }
    let pods: Vec<String> = args
        .pod
        .iter()
        .map(|p| qualified("--pod", p, ns))
        .collect::<Result<_>>()?;
    let mut from = base.clone();
    from.source_pod.extend(pods.iter().cloned());
    let mut to = base;
    to.destination_pod.extend(pods);
    check(&from)?;
    check(&to)?;
    Ok(vec![from, to])
}

/// The `GetFlows` request of `observe`'s flags.
pub fn observe_request(args: &ObserveArgs) -> Result<pb::GetFlowsRequest> {
    let (since, until) = parse_times(args.time.since.as_deref(), args.time.until.as_deref())?;
    let (number, first) = match (args.last, args.first) {
        (_, Some(0)) => bail!("--first: must be at least 1"),
        (Some(0), _) => bail!("--last: must be at least 1"),
        (_, Some(n)) => (n, true),
        (Some(n), None) => (n, false),
        (None, None) => (0, false),
    };
    Ok(pb::GetFlowsRequest {
        number,
        first,
        follow: args.follow,
        include: build_filters(&args.filters)?,
        exclude: Vec::new(),
        since,
        until,
    })
}

fn endpoint(server: &str) -> String {
    if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn channel(server: &str) -> Result<tonic::transport::Channel> {
    let url = endpoint(server);
    tonic::transport::Endpoint::from_shared(url.clone())
        .with_context(|| format!("--server: invalid address {server:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the netverdict server at {url}"))
}

fn status_error(what: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {} ({:?})", status.message(), status.code())
}

async fn stream_flows(
    server: &str,
    request: pb::GetFlowsRequest,
    output: FlowOutput,
) -> Result<()> {
    let mut client = ObserverClient::new(channel(server).await?);
    let mut stream = client
        .get_flows(request)
        .await
        .map_err(|s| status_error("GetFlows", s))?
        .into_inner();
    let stdout = std::io::stdout();
    let mut all = Vec::new();
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(response) = message.map_err(|s| status_error("GetFlows", s))? else {
            break;
        };
        let Some(flow) = response.flow else { continue };
        let mut out = stdout.lock();
        match output {
            FlowOutput::Table => writeln!(out, "{}", render::flow_line(&flow))?,
            FlowOutput::Jsonl => writeln!(out, "{}", render::flow_json(&flow))?,
            FlowOutput::Json => all.push(render::flow_json(&flow)),
        }
        out.flush()?;
    }
    if output == FlowOutput::Json {
        let mut out = stdout.lock();
        serde_json::to_writer_pretty(&mut out, &all)?;
        writeln!(out)?;
    }
    Ok(())
}

pub fn observe(args: ObserveArgs) -> Result<()> {
    let request = observe_request(&args)?;
    runtime()?.block_on(stream_flows(&args.server.server, request, args.output))
}

pub fn mismatches(args: MismatchesArgs) -> Result<()> {
    let filters = FilterArgs {
        namespace: args.namespace,
        mismatch: true,
        ..Default::default()
    };
    let (since, until) = parse_times(args.time.since.as_deref(), args.time.until.as_deref())?;
    if args.last == Some(0) {
        bail!("--last: must be at least 1");
    }
    let request = pb::GetFlowsRequest {
        number: args.last.unwrap_or(0),
        include: build_filters(&filters)?,
        since,
        until,
        ..Default::default()
    };
    runtime()?.block_on(stream_flows(&args.server.server, request, args.output))
}

/// The report request of the report flags.
pub fn report_request(
    since: &str,
    until: Option<&str>,
    namespaces: &[String],
    limit: u32,
) -> Result<pb::ReportRequest> {
    let (since, until) = parse_times(Some(since), until)?;
    Ok(pb::ReportRequest {
        since,
        until,
        namespace: namespaces.to_vec(),
        limit,
    })
}

pub fn denied(args: DeniedArgs) -> Result<()> {
    let request = report_request(
        &args.since,
        args.until.as_deref(),
        &args.namespace,
        args.limit,
    )?;
    let groups = runtime()?.block_on(async {
        let mut client = QueryClient::new(channel(&args.server.server).await?);
        let r = client
            .denied(request)
            .await
            .map_err(|s| status_error("Denied", s))?;
        anyhow::Ok(r.into_inner().groups)
    })?;
    let mut out = std::io::stdout().lock();
    match args.output {
        ReportOutput::Table => write!(out, "{}", render::denied_table(&groups))?,
        ReportOutput::Json => {
            serde_json::to_writer_pretty(&mut out, &render::denied_json(&groups))?;
            writeln!(out)?;
        }
    }
    Ok(())
}

pub fn dns(args: DnsArgs) -> Result<()> {
    let request = report_request(
        &args.since,
        args.until.as_deref(),
        &args.namespace,
        args.limit,
    )?;
    let report = runtime()?.block_on(async {
        let mut client = QueryClient::new(channel(&args.server.server).await?);
        let r = client
            .dns_report(request)
            .await
            .map_err(|s| status_error("DnsReport", s))?;
        anyhow::Ok(r.into_inner())
    })?;
    let mut out = std::io::stdout().lock();
    match args.output {
        ReportOutput::Table => write!(out, "{}", render::dns_table(&report))?,
        ReportOutput::Json => {
            serde_json::to_writer_pretty(&mut out, &render::dns_json(&report))?;
            writeln!(out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_durations_ago_or_rfc3339() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(
            parse_time("--since", "15m", now).unwrap().seconds,
            10_000 - 900
        );
        assert_eq!(
            parse_time("--since", "2025-01-31T12:00:00Z", now)
                .unwrap()
                .seconds,
            1_738_324_800
        );
        let err = parse_time("--since", "yesterday", now)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--since: invalid value \"yesterday\""),
            "{err}"
        );
    }

    #[test]
    fn filters_from_flags() {
        let args = FilterArgs {
            namespace: vec!["shop".into()],
            verdict: vec!["denied".into()],
            outcome: vec![
                "no_answer".into(),
                "no-answer".into(),
                "OUTCOME_NO_ANSWER".into(),
            ],
            protocol: vec!["TCP".into()],
            port: vec!["8080".into()],
            policy: vec!["default-deny".into()],
            pod: vec!["np-client".into()],
            ..Default::default()
        };
        let filters = build_filters(&args).unwrap();
        assert_eq!(filters.len(), 2);
        assert_eq!(filters[0].source_pod, ["shop/np-client"]);
        assert_eq!(filters[1].destination_pod, ["shop/np-client"]);
        assert_eq!(filters[0].policy, ["shop/default-deny"]);
        assert_eq!(filters[0].outcome, [pb::Outcome::NoAnswer as i32; 3]);
        assert_eq!(filters[0].verdict, [pb::Verdict::Denied as i32]);
        assert_eq!(filters[0].destination_port, [8080]);
    }

    #[test]
    fn bad_flag_values_name_the_flag() {
        let err = |args: FilterArgs| build_filters(&args).unwrap_err().to_string();
        let e = err(FilterArgs {
            verdict: vec!["maybe".into()],
            ..Default::default()
        });
        assert!(e.starts_with("--verdict: invalid value \"maybe\""), "{e}");
        assert!(
            e.ends_with("expected one of unspecified, allowed, denied"),
            "{e}"
        );
        let e = err(FilterArgs {
            port: vec!["70000".into()],
            ..Default::default()
        });
        assert!(e.starts_with("--port:"), "{e}");
        let e = err(FilterArgs {
            from_pod: vec!["api".into()],
            ..Default::default()
        });
        assert!(e.starts_with("--from-pod:"), "{e}");
        let e = err(FilterArgs {
            selector: vec!["app in (".into()],
            ..Default::default()
        });
        assert!(e.starts_with("-l/--selector:"), "{e}");
    }
}
