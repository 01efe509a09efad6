//! The one `netverdict` binary: parses the command line and wires the crates
//! together. Each subcommand lives in its own module; this file only dispatches.

mod api_cmd;
mod capture;
mod certs_cmd;
mod collector;
mod completion;
mod demo;
mod diagnose;
mod filter_flags;
mod flow_source;
mod lab;
mod output;
mod policy_cmds;
mod query_cmds;
mod recommend_cmd;
mod render;
mod soak;
mod tls_args;
mod whatif_cmd;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Policy-aware flow observability for Kubernetes NetworkPolicy.
#[derive(Parser)]
#[command(name = "netverdict", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decide flows read as JSON lines (file or stdin): one verdict line per input.
    Verdicts(policy_cmds::VerdictsArgs),
    /// Explain for a person what NetworkPolicy says about one flow, and why.
    Explain(policy_cmds::ExplainArgs),
    /// Report the pitfalls of a cluster's policies (DNS, selectors, named ports).
    Lint(policy_cmds::LintArgs),
    /// Why is this traffic denied, and what would fix it: the seed guide's
    /// debugging steps for one source and destination (enforcement, the
    /// policies and which select whom, the labels that matter, DNS, each
    /// direction, observed flows), then the least-privilege NetworkPolicies
    /// that allow exactly this flow. Exit 0 when allowed, 1 when denied.
    Diagnose(Box<diagnose::DiagnoseArgs>),
    /// Print what the eBPF probes see (connection attempts, DNS, kernel drops) as
    /// JSON lines, until stopped (as root).
    Capture(capture::CaptureArgs),
    /// The node agent: annotate the flows the eBPF probes see with pods,
    /// policies and verdicts; serve them (Observer API), export them to the
    /// API server, serve /metrics (as root). Stops cleanly on SIGTERM/Ctrl-C.
    Collector(collector::CollectorArgs),
    /// A cluster on this machine: pods as network namespaces, NetworkPolicy
    /// enforced by nftables, probes from inside pods (as root).
    Lab(lab::LabArgs),
    /// The seed guide's scenario on one machine (as root): a lab, the collector
    /// and the API server in one process, the rollout of default-deny, the
    /// denied flows and DNS breakage it causes, and the fix.
    Demo(demo::DemoArgs),
    /// Run the API server: flow ingest from collectors, the store (ClickHouse
    /// with --clickhouse, else bounded in memory), flow queries and incident
    /// reports, and Prometheus metrics.
    Api(api_cmd::ApiArgs),
    /// Replay flows (a file, or the API server's) against the cluster with
    /// candidate policies added or policies deleted, and print the flows whose
    /// verdict would change, DNS first. Exit status 1 when some flow would be
    /// newly denied.
    Whatif(Box<whatif_cmd::WhatIfArgs>),
    /// Write a namespace's least-privilege NetworkPolicies from its observed
    /// flows (a file, or the API server's): one per workload and direction,
    /// allowing every observed allowed flow (DNS included) and nothing more,
    /// and a default deny; then check by replay that every observed allowed
    /// flow stays allowed. Exit status 1 when the check fails.
    Recommend(Box<recommend_cmd::RecommendArgs>),
    /// Print flows from the API server (or a collector's observer), filtered
    /// like `hubble observe`: every filter flag narrows, a repeated flag
    /// matches any of its values, --ip and --pod match either end, and --not
    /// excludes the flows the next filter flag matches.
    Observe(Box<query_cmds::ObserveArgs>),
    /// Denied flows grouped by workload pair, port and the policies that denied them.
    Denied(query_cmds::ReportArgs),
    /// DNS breakage: pods whose egress policies block DNS, and failed queries.
    Dns(query_cmds::ReportArgs),
    /// Flows where the kernel's outcome contradicts the policy verdict.
    Mismatches(query_cmds::MismatchesArgs),
    /// What a server (the API server or a collector's observer) holds and has
    /// lost: flow records held and lost, the oldest and the newest.
    Status(query_cmds::StatusArgs),
    /// Print a shell completion script: `source <(netverdict completion bash)`.
    Completion(completion::CompletionArgs),
    /// Make a CA and the certificates for mutual TLS: the API server's, one
    /// per collector node, and a reader's.
    Certs(certs_cmd::CertsArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Verdicts(args) => policy_cmds::verdicts(args),
        Command::Explain(args) => policy_cmds::explain(args),
        Command::Lint(args) => policy_cmds::lint(args),
        Command::Whatif(args) => whatif_cmd::run(*args),
        Command::Recommend(args) => recommend_cmd::run(*args),
        Command::Diagnose(args) => diagnose::diagnose(*args),
        Command::Capture(args) => capture::run(args).map(|()| ExitCode::SUCCESS),
        Command::Collector(args) => collector::run(args).map(|()| ExitCode::SUCCESS),
        Command::Lab(args) => lab::run(args),
        Command::Demo(args) => demo::run(args).map(|()| ExitCode::SUCCESS),
        Command::Api(args) => api_cmd::run(args).map(|()| ExitCode::SUCCESS),
        Command::Observe(args) => {
            // `observe` reads its filter flags in command-line order (for --not).
            let observe = matches.subcommand_matches("observe").unwrap_or(&matches);
            query_cmds::observe(*args, observe).map(|()| ExitCode::SUCCESS)
        }
        Command::Denied(args) => query_cmds::denied(args).map(|()| ExitCode::SUCCESS),
        Command::Dns(args) => query_cmds::dns(args).map(|()| ExitCode::SUCCESS),
        Command::Mismatches(args) => query_cmds::mismatches(args).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => query_cmds::status(args).map(|()| ExitCode::SUCCESS),
        Command::Completion(args) => completion::run(&args, Cli::command()),
        Command::Certs(args) => certs_cmd::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("netverdict: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// A closed stdout (`netverdict verdicts | head`) ends the program quietly.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand and every argument has a help text.
    #[test]
    fn every_command_and_argument_is_documented() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_help().is_none() && !matches!(id, "help" | "version") {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "netverdict", &mut missing);
        assert!(missing.is_empty(), "undocumented: {missing:#?}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
