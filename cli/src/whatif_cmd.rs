//! `netverdict whatif`: replays flows against the cluster with candidate
//! policies added (or replacing those of the same name) or named policies
//! deleted, and prints the flow groups whose verdict would change. This file
//! only wires: it loads the cluster (`ClusterArgs`: manifests or a live
//! cluster listed once), reads
//! the flows (a `verdicts` JSON lines file, or the API server's stored flows
//! over the Observer stream, page by page), and prints;
//! `netverdict_policy::whatif` decides and groups.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::Args;
use netverdict_policy::whatif::{self, Change, Changes, ReplayFlow, Rollout, WhatIf};
use netverdict_policy::{ClusterState, Manifests};
use netverdict_proto::v1 as pb;
use pb::observer_client::ObserverClient;

use crate::output::{self, Output};
use crate::policy_cmds::{ClusterArgs, FlowLine, parse_flow};
use crate::query_cmds::{self, ServerArgs};
use crate::render;

/// Flows asked of the API server per request: each page is one bounded
/// `GetFlows` stream (the oldest flows of what is left of the window), so
/// neither side ever holds the window's flows at once.
const PAGE: u64 = 10_000;

#[derive(Args, Debug)]
pub struct WhatIfArgs {
    /// Candidate policies (any policy kind): files, directories, `-` for
    /// standard input, as `kubectl apply -f` reads them. They are added, or
    /// replace the cluster's policies of the same kind and name. Repeatable.
    #[arg(long = "policies", value_name = "PATH", num_args = 1.., required_unless_present = "delete")]
    policies: Vec<PathBuf>,
    /// Policies to delete: namespace/name (NetworkPolicy) or Kind/name
    /// (AdminNetworkPolicy/x, BaselineAdminNetworkPolicy/default,
    /// ClusterNetworkPolicy/x). Repeatable.
    #[arg(long = "delete", value_name = "POLICY", num_args = 1..)]
    delete: Vec<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Flows to replay: JSON lines as `verdicts` reads them
    /// (`{"src":"x/a","dst":"y/b","port":80,"protocol":"TCP"}`), `-` for
    /// standard input. Without it, the API server's stored flows (--server).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["since", "until"])]
    flows: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
    /// The API server's flows last seen at or after this: a duration ago or
    /// an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    since: String,
    /// The API server's flows last seen before this (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Output format: table, wide (with the reason after the rollout), json
    /// or jsonl (one JSON object per changed group and line).
    #[arg(short = 'o', long = "output", value_parser = output::parser(output::WHATIF), default_value = "table")]
    output: Output,
}

/// Prints the changed groups; exit 1 when some flow goes from allow to deny.
pub fn run(args: WhatIfArgs) -> Result<ExitCode> {
    let rollout = read_rollout(&args)?;
    if args.flows.is_none() && args.server.server.is_none() {
        bail!("give the flows to replay: --flows FILE, or --server ADDR for the API server's");
    }
    let whatif = WhatIf::new(args.cluster.load()?, &rollout)?;
    let mut replay = whatif.replay();
    let mut skipped = 0u64;
    match &args.flows {
        Some(path) => replay_file(path, whatif.before(), &mut replay)?,
        None => {
            skipped = query_cmds::runtime()?.block_on(replay_server(
                &args,
                whatif.before(),
                &mut replay,
            ))?
        }
    }
    let changes = replay.finish();
    print(&args, &changes, skipped)?;
    Ok(if changes.any_newly_denied() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn read_rollout(args: &WhatIfArgs) -> Result<Rollout> {
    let mut rollout = Rollout::default();
    if !args.policies.is_empty() {
        let manifests = Manifests::read_paths(&args.policies);
        if !manifests.errors.is_empty() {
            return Err(netverdict_policy::LoadErrors(manifests.errors))
                .context("reading --policies");
        }
        if manifests.objects.is_empty() {
            bail!("--policies: the manifests hold no policy");
        }
        rollout.apply = manifests.objects;
    }
    for name in &args.delete {
        rollout
            .delete
            .push(whatif::parse_policy_key(name).context("--delete")?);
    }
    Ok(rollout)
}

/// Replays a `verdicts` JSON lines file, line by line.
fn replay_file(
    path: &PathBuf,
    state: &ClusterState,
    replay: &mut whatif::Replay<'_>,
) -> Result<()> {
    let input: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ))
    };
    for (index, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), index + 1);
        let flow: FlowLine =
            serde_json::from_str(&line).with_context(|| format!("{}: invalid flow", at()))?;
        let connection = parse_flow(&flow.src, &flow.dst, flow.port, flow.protocol.as_deref())
            .with_context(|| format!("{}: invalid flow", at()))?;
        replay.add(ReplayFlow::of_connection(state, connection));
    }
    Ok(())
}

/// Replays the API server's flows of the window, a page at a time (oldest
/// first: each page starts at the last page's newest `last_seen`, skipping
/// the flows of that instant already replayed). Returns the flows replay
/// cannot take (see `netverdict_policy::proto::replay_flow`).
async fn replay_server(
    args: &WhatIfArgs,
    state: &ClusterState,
    replay: &mut whatif::Replay<'_>,
) -> Result<u64> {
    let now = SystemTime::now();
    let mut since = query_cmds::parse_time("--since", &args.since, now)?;
    let until = match &args.until {
        Some(u) => query_cmds::parse_time("--until", u, now)?,
        None => netverdict_proto::time::timestamp(now),
    };
    let mut client = ObserverClient::new(query_cmds::channel(&args.server).await?);
    let mut done_at_since: HashSet<String> = HashSet::new();
    let mut page = PAGE;
    let mut skipped = 0u64;
    loop {
        let request = pb::GetFlowsRequest {
            number: page,
            first: true,
            follow: false,
            include: Vec::new(),
            exclude: Vec::new(),
            since: Some(since),
            until: Some(until),
        };
        let mut stream = client
            .get_flows(request)
            .await
            .map_err(|s| query_cmds::status_error("GetFlows", s))?
            .into_inner();
        let mut received = 0u64;
        let mut newest: Option<prost_types::Timestamp> = None;
        let mut done_at_newest: HashSet<String> = HashSet::new();
        while let Some(response) = stream
            .message()
            .await
            .map_err(|s| query_cmds::status_error("GetFlows", s))?
        {
            received += 1;
            let Some(flow) = response.flow else { continue };
            let last_seen = flow.last_seen.unwrap_or_default();
            if newest != Some(last_seen) {
                newest = Some(last_seen);
                done_at_newest.clear();
            }
            done_at_newest.insert(flow.id.clone());
            if last_seen == since && done_at_since.contains(&flow.id) {
                continue;
            }
            match netverdict_policy::proto::replay_flow(state, &flow) {
                Some(replay_flow) => replay.add(replay_flow),
                None => skipped += 1,
            }
        }
        if received < page {
            return Ok(skipped);
        }
        match newest {
            // A whole page at one instant: ask for more of it at once.
            Some(n) if n == since => {
                done_at_since.extend(done_at_newest);
                page = page.saturating_mul(2);
            }
            Some(n) => {
                since = n;
                done_at_since = done_at_newest;
                page = PAGE;
            }
            None => return Ok(skipped),
        }
    }
}

/// Whether a change belongs to a section of the table output.
type Belongs = fn(&Change) -> bool;

fn print(args: &WhatIfArgs, changes: &Changes, skipped: u64) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if matches!(args.output, Output::Json | Output::Jsonl) {
        for c in &changes.changes {
            serde_json::to_writer(&mut out, &change_json(c))?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        return Ok(());
    }
    let wide = args.output == Output::Wide;
    let sections: [(&str, Belongs); 3] = [
        (
            "After this rollout these pods can no longer resolve names (DNS denied):",
            |c| c.dns && c.newly_denied(),
        ),
        ("After this rollout these flows are denied:", |c| {
            !c.dns && c.newly_denied()
        }),
        ("After this rollout these flows are allowed:", |c| {
            !c.newly_denied()
        }),
    ];
    for (heading, belongs) in sections {
        let group: Vec<&Change> = changes.changes.iter().filter(|c| belongs(c)).collect();
        if group.is_empty() {
            continue;
        }
        writeln!(out, "{heading}")?;
        write!(out, "{}", table(&group, wide))?;
        writeln!(out)?;
    }
    let denied = changes.changes.iter().filter(|c| c.newly_denied()).count();
    writeln!(
        out,
        "{} flows replayed: {} groups change ({denied} newly denied, {} newly allowed){}{}",
        changes.flows,
        changes.changes.len(),
        changes.changes.len() - denied,
        if changes.unresolved > 0 {
            format!(
                "; {} flows name pods the cluster does not have",
                changes.unresolved
            )
        } else {
            String::new()
        },
        if skipped > 0 {
            format!(
                "; {skipped} stored flows not replayable (second observations, no port or protocol)"
            )
        } else {
            String::new()
        },
    )?;
    Ok(())
}

fn table(changes: &[&Change], wide: bool) -> String {
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|c| {
            let policies = if c.after == "deny" {
                &c.denied_by
            } else {
                &c.allowed_by
            };
            let policies = if policies.is_empty() {
                "-".to_string()
            } else {
                policies
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut row = vec![
                c.src.to_string(),
                c.dst.to_string(),
                format!("{}/{}", c.port, c.protocol.as_str().to_ascii_lowercase()),
                c.before.to_string(),
                c.after.to_string(),
                policies,
                c.count.to_string(),
            ];
            if wide {
                row.push(c.reason.clone());
            }
            row
        })
        .collect();
    let mut headers = vec![
        "SOURCE",
        "DESTINATION",
        "PORT",
        "BEFORE",
        "AFTER",
        "BY",
        "COUNT",
    ];
    if wide {
        headers.push("REASON AFTER");
    }
    render::table(&headers, &rows)
}

/// One changed group as a JSON line: the fields of `verdicts` where they
/// mean the same (`denied_by`, `reason`), grouped like `denied`.
fn change_json(c: &Change) -> serde_json::Value {
    serde_json::json!({
        "src": c.src,
        "dst": c.dst,
        "port": c.port,
        "protocol": c.protocol.as_str(),
        "before": c.before,
        "after": c.after,
        "count": c.count,
        "flows": c.flows,
        "dns": c.dns,
        "denied_by": c.denied_by,
        "allowed_by": c.allowed_by,
        "reason": c.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_the_policies_of_the_after_verdict() {
        let change = Change {
            src: whatif::Party::Workload {
                namespace: "shop".into(),
                workload: "web".into(),
            },
            dst: whatif::Party::Address("10.0.0.10".into()),
            port: 53,
            protocol: netverdict_policy::Protocol::Udp,
            before: "allow",
            after: "deny",
            count: 7,
            flows: 2,
            dns: true,
            denied_by: vec![netverdict_policy::PolicyKey::network_policy(
                "shop",
                "no-egress",
            )],
            allowed_by: Vec::new(),
            reason: "because".into(),
            example_src: "shop/web-1".into(),
            example_dst: "10.0.0.10".into(),
        };
        let text = table(&[&change], true);
        assert!(text.contains("shop/web"), "{text}");
        assert!(text.contains("53/udp"), "{text}");
        assert!(text.contains("shop/no-egress"), "{text}");
        assert!(text.contains("because"), "{text}");
        let json = change_json(&change);
        assert_eq!(json["src"], "shop/web");
        assert_eq!(json["denied_by"][0], "shop/no-egress");
        assert_eq!(json["protocol"], "UDP");
    }
}
