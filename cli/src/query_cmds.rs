//! The query subcommands against an API server (or a collector's observer):
//! `observe`, `denied`, `dns`, `mismatches` and `status`. Flags are parsed
//! into the protobuf requests by pure functions (each error names its flag;
//! the filter flags are [`crate::filter_flags`]); the answers are printed by
//! [`crate::render`] in the `-o` formats of [`crate::output`].

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{ArgMatches, Args};
use netverdict_proto::time::timestamp;
use netverdict_proto::v1 as pb;
use pb::observer_client::ObserverClient;
use pb::query_client::QueryClient;
use prost_types::Timestamp;

use crate::filter_flags::{self, FilterArgs, Flag, Occurrence, RequestFilters, ScopeArgs};
use crate::output::{self, Output};
use crate::render;
use crate::tls_args::ClientTlsArgs;

/// Where the server is, and how to connect.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// The API server's gRPC address: host:port, https://host:port or
    /// http://host:port (a collector's Observer, on 4254, answers `observe`,
    /// `mismatches` and `status` too) [default: localhost:4255].
    #[arg(long, value_name = "ADDR", env = "NETVERDICT_SERVER")]
    pub server: Option<String>,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
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

/// How flows are printed.
#[derive(Args, Debug, Clone)]
pub struct FlowOutputArgs {
    /// Print the observing node's name with each flow (compact and table;
    /// wide and JSON always have it).
    #[arg(long)]
    pub print_node_name: bool,
    /// Output format: compact (one line per flow), table, wide (the table
    /// with the node and the denial reason), json, jsonl.
    #[arg(short = 'o', long, value_parser = output::parser(output::FLOWS), default_value = "compact")]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct ObserveArgs {
    #[command(flatten)]
    pub server: ServerArgs,
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
    #[command(flatten)]
    pub print: FlowOutputArgs,
    /// Last, under their own heading.
    #[command(flatten)]
    pub filters: FilterArgs,
}

/// The flags of a report (`denied`, `dns`).
#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Flows last seen at or after this: a duration ago (15m, 1h) or an RFC
    /// 3339 time (default: 15m for `denied`, 1h for `dns`).
    #[arg(long)]
    pub since: Option<String>,
    /// Flows last seen before this: a duration ago or an RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// The most groups to show (0: the server's default).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// Output format: table, wide (with the reason of each group's latest
    /// flow), json.
    #[arg(short = 'o', long, value_parser = output::parser(output::REPORTS), default_value = "table")]
    pub output: Output,
}

#[derive(Args, Debug)]
pub struct MismatchesArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub time: TimeArgs,
    /// The last N mismatched flows (default: the server's, 20).
    #[arg(long)]
    pub last: Option<u64>,
    /// Keep streaming new mismatched flows.
    #[arg(short = 'f', long)]
    pub follow: bool,
    #[command(flatten)]
    pub print: FlowOutputArgs,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Output format: table, json.
    #[arg(short = 'o', long, value_parser = output::parser(output::STATUS), default_value = "table")]
    pub output: Output,
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

/// The `GetFlows` request of `observe`'s flags (`matches` are the ones
/// `args` came from: they give the flags' order, for `--not`).
pub fn observe_request(args: &ObserveArgs, matches: &ArgMatches) -> Result<pb::GetFlowsRequest> {
    let (since, until) = parse_times(args.time.since.as_deref(), args.time.until.as_deref())?;
    let (number, first) = match (args.last, args.first) {
        (_, Some(0)) => bail!("--first: must be at least 1"),
        (Some(0), _) => bail!("--last: must be at least 1"),
        (_, Some(n)) => (n, true),
        (Some(n), None) => (n, false),
        (None, None) => (0, false),
    };
    let RequestFilters { include, exclude } =
        filter_flags::build(&filter_flags::occurrences(&args.filters, matches)?)?;
    Ok(pb::GetFlowsRequest {
        number,
        first,
        follow: args.follow,
        include,
        exclude,
        since,
        until,
    })
}

/// The `GetFlows` request of `mismatches`' flags.
pub fn mismatches_request(args: &MismatchesArgs) -> Result<pb::GetFlowsRequest> {
    let (since, until) = parse_times(args.time.since.as_deref(), args.time.until.as_deref())?;
    if args.last == Some(0) {
        bail!("--last: must be at least 1");
    }
    let mut flags: Vec<Occurrence> = args
        .scope
        .namespace
        .iter()
        .map(|ns| Occurrence::include(Flag::Namespace, ns))
        .collect();
    flags.extend(
        args.scope
            .selector
            .iter()
            .map(|s| Occurrence::include(Flag::Selector, s)),
    );
    flags.push(Occurrence::include(Flag::Mismatch, ""));
    let RequestFilters { include, exclude } = filter_flags::build(&flags)?;
    Ok(pb::GetFlowsRequest {
        number: args.last.unwrap_or(0),
        follow: args.follow,
        include,
        exclude,
        since,
        until,
        ..Default::default()
    })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The server's address as given (or the default API server).
fn address(server: &ServerArgs) -> String {
    server
        .server
        .clone()
        .unwrap_or_else(|| format!("localhost:{}", netverdict_proto::ports::API_GRPC))
}

/// The server to connect to, checked against the TLS rules.
pub(crate) fn target(server: &ServerArgs) -> Result<netverdict_tls::Target> {
    netverdict_tls::Target::new(
        &address(server),
        netverdict_proto::ports::API_GRPC,
        server.tls.files()?,
        server.tls.insecure,
    )
    .context("--server")
}

pub(crate) async fn channel(server: &ServerArgs) -> Result<tonic::transport::Channel> {
    let target = target(server)?;
    target
        .connect_default(Duration::from_secs(5))
        .await
        .with_context(|| format!("cannot reach the netverdict server at {target}"))
}

pub(crate) fn status_error(what: &str, status: tonic::Status) -> anyhow::Error {
    // A TLS server that refuses this client's certificate closes the
    // connection; gRPC only says "transport error", or that the request was
    // cancelled when the close comes while it is under way.
    let closed = match status.code() {
        tonic::Code::Unknown | tonic::Code::Unavailable => {
            status.message().contains("transport error")
        }
        tonic::Code::Cancelled => true,
        _ => false,
    };
    let hint = if closed {
        " (if the server requires client certificates: give --tls-cert and --tls-key, signed by the server's client CA and valid now)"
    } else {
        ""
    };
    anyhow::anyhow!("{what}: {} ({:?}){hint}", status.message(), status.code())
}

/// Prints the flows of `request` as they come (compact, jsonl) or once all
/// have come (table, wide, json); with `follow` until Ctrl-C.
async fn stream_flows(
    server: &ServerArgs,
    request: pb::GetFlowsRequest,
    print: &FlowOutputArgs,
) -> Result<()> {
    let output = print.output;
    if request.follow && matches!(output, Output::Table | Output::Wide) {
        bail!(
            "-o {}: a table is aligned over the whole answer, which --follow never ends: \
             use compact, jsonl or json",
            if output == Output::Table {
                "table"
            } else {
                "wide"
            }
        );
    }
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
            Output::Compact => {
                writeln!(out, "{}", render::flow_line(&flow, print.print_node_name))?
            }
            Output::Jsonl => writeln!(out, "{}", render::flow_json(&flow))?,
            _ => all.push(flow),
        }
        out.flush()?;
    }
    let mut out = stdout.lock();
    match output {
        Output::Json => {
            let flows: Vec<_> = all.iter().map(render::flow_json).collect();
            serde_json::to_writer_pretty(&mut out, &flows)?;
            writeln!(out)?;
        }
        Output::Table | Output::Wide if !all.is_empty() => write!(
            out,
            "{}",
            render::flow_table(&all, output == Output::Wide, print.print_node_name)
        )?,
        _ => {}
    }
    Ok(())
}

pub fn observe(args: ObserveArgs, matches: &ArgMatches) -> Result<()> {
    let request = observe_request(&args, matches)?;
    runtime()?.block_on(stream_flows(&args.server, request, &args.print))
}

pub fn mismatches(args: MismatchesArgs) -> Result<()> {
    let request = mismatches_request(&args)?;
    runtime()?.block_on(stream_flows(&args.server, request, &args.print))
}

/// What a server (the API server or a collector's observer) holds and has lost.
pub fn status(args: StatusArgs) -> Result<()> {
    let server = address(&args.server);
    let status = runtime()?.block_on(async {
        let mut client = ObserverClient::new(channel(&args.server).await?);
        let r = client
            .server_status(pb::ServerStatusRequest {})
            .await
            .map_err(|s| status_error("ServerStatus", s))?;
        anyhow::Ok(r.into_inner())
    })?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &render::status_json(&server, &status))?;
            writeln!(out)?;
        }
        _ => write!(out, "{}", render::status_table(&server, &status))?,
    }
    Ok(())
}

/// The report request of a report's flags; `since` unless `--since` is given.
pub fn report_request(since: &str, args: &ReportArgs) -> Result<pb::ReportRequest> {
    let since = args.since.as_deref().unwrap_or(since);
    let (since, until) = parse_times(Some(since), args.until.as_deref())?;
    Ok(pb::ReportRequest {
        since,
        until,
        namespace: args.scope.namespace.clone(),
        labels: args.scope.selectors()?,
        limit: args.limit,
    })
}

pub fn denied(args: ReportArgs) -> Result<()> {
    let request = report_request("15m", &args)?;
    let groups = runtime()?.block_on(async {
        let mut client = QueryClient::new(channel(&args.server).await?);
        let r = client
            .denied(request)
            .await
            .map_err(|s| status_error("Denied", s))?;
        anyhow::Ok(r.into_inner().groups)
    })?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &render::denied_json(&groups))?;
            writeln!(out)?;
        }
        o => write!(out, "{}", render::denied_table(&groups, o == Output::Wide))?,
    }
    Ok(())
}

pub fn dns(args: ReportArgs) -> Result<()> {
    let request = report_request("1h", &args)?;
    let report = runtime()?.block_on(async {
        let mut client = QueryClient::new(channel(&args.server).await?);
        let r = client
            .dns_report(request)
            .await
            .map_err(|s| status_error("DnsReport", s))?;
        anyhow::Ok(r.into_inner())
    })?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &render::dns_json(&report))?;
            writeln!(out)?;
        }
        o => write!(out, "{}", render::dns_table(&report, o == Output::Wide))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Mismatches {
        #[command(flatten)]
        args: MismatchesArgs,
    }

    #[test]
    fn mismatches_narrow_by_namespace_and_labels() {
        let parse = |flags: &[&str]| {
            let cmd = Mismatches::try_parse_from(
                std::iter::once("mismatches").chain(flags.iter().copied()),
            )
            .unwrap();
            mismatches_request(&cmd.args)
        };
        let r = parse(&["-n", "shop", "-l", "app=api", "-f"]).unwrap();
        assert!(r.follow && r.exclude.is_empty());
        let [f] = &r.include[..] else { panic!("{r:?}") };
        assert_eq!(f.namespace, ["shop"]);
        assert_eq!(f.labels, ["app=api"]);
        assert_eq!(f.mismatch.len(), 3, "every kind of mismatch");
        let e = parse(&["-l", "app in ("]).unwrap_err().to_string();
        assert!(e.starts_with("-l/--selector: "), "{e}");
        assert!(Mismatches::try_parse_from(["mismatches", "-A", "-n", "x"]).is_err());
    }

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
}
