//! `netverdict recommend -n NS`: the least-privilege NetworkPolicies of a
//! namespace from its observed flows, and the check by replay that they keep
//! every observed allowed flow allowed. This file only wires: the cluster
//! (`ClusterArgs`), the flows (`flow_source`: a flows file, or the API
//! server's flows of the namespace, page by page), then
//! `netverdict_policy::recommend` decides; the objects go to standard output
//! (or one file each with --output-dir), the summary and the check to
//! standard error. Exit 0 when the check passes, 1 when it fails.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use netverdict_policy::recommend::{Recommendation, Recommender};
use netverdict_proto::v1 as pb;

use crate::flow_source::FlowSourceArgs;
use crate::output::{self, Output};
use crate::policy_cmds::ClusterArgs;
use crate::render;

#[derive(Args, Debug)]
pub struct RecommendArgs {
    /// The namespace whose pods the policies are for.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    namespace: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    source: FlowSourceArgs,
    /// Output format: yaml (documents for `kubectl apply -f -`, each ipBlock
    /// commented with what the address is) or json (one `List`).
    #[arg(short = 'o', long = "output", value_parser = output::parser(output::OBJECTS), default_value = "yaml")]
    output: Output,
    /// Write each policy to its own file in DIR (NAME.yaml or NAME.json,
    /// the directory made if missing) instead of standard output.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
}

/// Prints the policies and the check; exit 1 when the check fails.
pub fn run(args: RecommendArgs) -> Result<ExitCode> {
    args.source.require()?;
    let state = args.cluster.load()?;
    let mut recommender = Recommender::new(&state, &args.namespace)?;
    // Only the namespace's flows are asked of the server.
    let include = vec![pb::FlowFilter {
        namespace: vec![args.namespace.clone()],
        ..Default::default()
    }];
    let skipped = args
        .source
        .read(&state, include, &mut |flow| recommender.add(flow))?;
    let recommendation = recommender.finish()?;
    match &args.output_dir {
        Some(dir) => {
            let written = write_files(dir, &recommendation, args.output)?;
            let mut out = std::io::stdout().lock();
            for path in written {
                writeln!(out, "{}", path.display())?;
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(objects(&recommendation, args.output)?.as_bytes())?;
            out.flush()?;
        }
    }
    eprint!("{}", report(&recommendation, skipped));
    Ok(if recommendation.check.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Every object, as YAML documents or one JSON `List`.
fn objects(recommendation: &Recommendation, output: Output) -> Result<String> {
    if output == Output::Json {
        let list = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": recommendation.objects(),
        });
        return Ok(serde_json::to_string_pretty(&list)? + "\n");
    }
    let mut out = String::new();
    for (index, object) in recommendation.objects().into_iter().enumerate() {
        out.push_str("---\n");
        out.push_str(&heading(recommendation, index));
        out.push_str(&yaml(recommendation, object)?);
    }
    Ok(out)
}

/// What the `index`th object is for, as a YAML comment.
fn heading(recommendation: &Recommendation, index: usize) -> String {
    match recommendation.policies.get(index) {
        Some(p) => format!(
            "# {}/{}: {} as observed\n",
            recommendation.namespace, p.workload, p.direction
        ),
        None => format!(
            "# {}: everything else denied, both ways\n",
            recommendation.namespace
        ),
    }
}

fn yaml<T: serde::Serialize>(recommendation: &Recommendation, object: &T) -> Result<String> {
    render::object_yaml(object, &|cidr| {
        recommendation.address_comments.get(cidr).cloned()
    })
}

/// One file per object in `dir`, named after it; returns the paths.
fn write_files(
    dir: &Path,
    recommendation: &Recommendation,
    output: Output,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    let mut written = Vec::new();
    for (index, object) in recommendation.objects().into_iter().enumerate() {
        let name = object.metadata.name.as_deref().unwrap_or("policy");
        let (path, text) = if output == Output::Json {
            (
                dir.join(format!("{name}.json")),
                serde_json::to_string_pretty(object)? + "\n",
            )
        } else {
            (
                dir.join(format!("{name}.yaml")),
                heading(recommendation, index) + &yaml(recommendation, object)?,
            )
        };
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The summary, the check and the notes, for a person.
fn report(r: &Recommendation, skipped: u64) -> String {
    let t = &r.tally;
    let mut s = String::new();
    let mut left_out = vec![format!("{} denied left out", t.denied)];
    if t.elsewhere > 0 {
        left_out.push(format!("{} not of {}", t.elsewhere, r.namespace));
    }
    if t.unresolved > 0 {
        left_out.push(format!(
            "{} of pods the cluster no longer has",
            t.unresolved
        ));
    }
    if t.host_network > 0 {
        left_out.push(format!("{} of host-network pods", t.host_network));
    }
    if skipped > 0 {
        left_out.push(format!(
            "{skipped} stored flows not usable (second observations, no port or protocol)"
        ));
    }
    let _ = writeln!(
        s,
        "recommend {}: {} policies and a default deny from {} observed allowed flows of {} read ({})",
        r.namespace,
        r.policies.len(),
        t.allowed,
        t.flows,
        left_out.join(", ")
    );
    let c = &r.check;
    let instead = if c.replaced.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = c.replaced.iter().map(ToString::to_string).collect();
        format!(", in place of {}", names.join(", "))
    };
    let _ = writeln!(
        s,
        "check: {} of {} observed flows stay allowed with these policies and the default deny{instead}",
        c.stay_allowed, c.flows
    );
    if !c.passed() {
        let _ = writeln!(s, "check FAILED: these would be denied:");
        for f in &c.failures {
            let sides: Vec<&str> = f.directions.iter().map(|d| d.as_str()).collect();
            let _ = writeln!(
                s,
                "  {} -> {} {}/{} ({} of {}; {} flows): {}",
                f.src,
                f.dst,
                f.port,
                f.protocol.as_str().to_ascii_lowercase(),
                sides.join(" and "),
                r.namespace,
                f.flows,
                f.reason
            );
        }
    }
    if c.denied_now_allowed > 0 {
        let _ = writeln!(
            s,
            "note: {} denied flows would be allowed: their workloads, peers and ports match allowed ones (policies select workloads, not pods)",
            c.denied_now_allowed
        );
    }
    for note in &r.notes {
        let _ = writeln!(s, "note: {note}");
    }
    s
}
