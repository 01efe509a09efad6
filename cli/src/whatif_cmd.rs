//! `netverdict whatif`: replays flows against the cluster with candidate
//! policies added (or replacing those of the same name) or named policies
//! deleted, and prints the flow groups whose verdict would change. This file
//! only wires: it loads the cluster (`ClusterArgs`: manifests or a live
//! cluster listed once), reads the flows (`flow_source`: a flows file, or
//! the API server's stored flows, page by page), and prints;
//! `netverdict_policy::whatif` decides and groups.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use netverdict_policy::Manifests;
use netverdict_policy::whatif::{self, Change, Changes, Rollout, WhatIf};

use crate::flow_source::FlowSourceArgs;
use crate::output::{self, Output};
use crate::policy_cmds::ClusterArgs;
use crate::render;

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
    #[command(flatten)]
    source: FlowSourceArgs,
    /// Output format: table, wide (with the reason after the rollout), json
    /// or jsonl (one JSON object per changed group and line).
    #[arg(short = 'o', long = "output", value_parser = output::parser(output::WHATIF), default_value = "table")]
    output: Output,
}

/// Prints the changed groups; exit 1 when some flow goes from allow to deny.
pub fn run(args: WhatIfArgs) -> Result<ExitCode> {
    let rollout = read_rollout(&args)?;
    args.source.require()?;
    let whatif = WhatIf::new(args.cluster.load()?, &rollout)?;
    let mut replay = whatif.replay();
    let skipped = args
        .source
        .read(whatif.before(), Vec::new(), &mut |flow| replay.add(flow))?;
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
