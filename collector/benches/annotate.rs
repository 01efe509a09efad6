//! Flows annotated per second on one core, from a replayed stream of decoded
//! observations over the synthetic cluster of 10,000 pods (warm verdict cache),
//! and the resident memory of that cluster's state; then records rendered, and
//! records counted per policy, per second.
//!
//! `cargo bench -p netverdict-collector --bench annotate` (`-- --quick` for a
//! shorter run).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use netverdict_collector::annotate::Annotator;
use netverdict_collector::correlate::{Observation, SeenBy, TrafficDirection};
use netverdict_collector::policy_verdicts::PolicyVerdicts;
use netverdict_policy::synthetic::{self, Size};
use netverdict_policy::{ClusterState, Endpoint};
use netverdict_proto::v1::Outcome;

/// The process's resident memory (`VmRSS` of /proc/self/status), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let min = if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    };
    let size = Size::LARGE;
    let before = rss_bytes();
    let mut state = ClusterState::new();
    for object in synthetic::cluster(size, 7) {
        state.apply(&object).expect("valid");
    }
    let after = rss_bytes();
    println!(
        "cluster state: {} pods, {} policies; VmRSS {:.1} MiB ({:.1} MiB for the state)",
        state.pod_count(),
        state.policy_count(),
        after as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / (1 << 20) as f64
    );
    let now = SystemTime::now();
    let observations: Vec<Observation> = synthetic::connections(size, 20_000, 3)
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let ip = |e: &Endpoint| match e {
                Endpoint::Ip(ip) => *ip,
                Endpoint::Pod(_) => unreachable!("synthetic flows are by IP"),
            };
            Observation {
                first_seen: now,
                last_seen: now,
                netns: 1,
                direction: TrafficDirection::Egress,
                seen_by: SeenBy::InitiatorSocket,
                protocol: f.protocol,
                src: SocketAddr::new(ip(&f.src), 30000 + (i % 30000) as u16),
                dst: SocketAddr::new(ip(&f.dst), f.port),
                backend: None,
                outcome: if i % 3 == 0 {
                    Outcome::Dropped
                } else {
                    Outcome::Established
                },
                drops: 0,
                drop_reason: None,
                drop_location: None,
                packets: 0,
                bytes: 0,
                dns: None,
            }
        })
        .collect();
    let annotator = Annotator::new("node-0");
    for o in &observations {
        black_box(annotator.annotate(&state, o.clone()));
    }
    let start = Instant::now();
    let mut done = 0u64;
    let mut last = None;
    while start.elapsed() < min {
        for o in &observations {
            last = Some(annotator.annotate(&state, o.clone()));
        }
        done += observations.len() as u64;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    println!(
        "annotated flows: {rate:.0} per second per core (one thread), warm verdict cache (goal 1,000,000)"
    );
    let annotated: Vec<_> = observations
        .iter()
        .map(|o| annotator.annotate(&state, o.clone()))
        .collect();
    black_box(last);
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < min {
        for (i, a) in annotated.iter().enumerate() {
            black_box(annotator.render(a, format!("node-0/{i}")));
        }
        done += annotated.len() as u64;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    println!("rendered records (protobuf, once per aggregated record): {rate:.0}/s/core");
    let rendered: Vec<_> = annotated
        .iter()
        .enumerate()
        .map(|(i, a)| annotator.render(a, format!("node-0/{i}")))
        .collect();
    let mut by_policy = PolicyVerdicts::default();
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < min {
        for flow in &rendered {
            by_policy.count(flow);
        }
        done += rendered.len() as u64;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    println!(
        "records counted per policy (policy_verdicts, {} policies): {rate:.0}/s/core",
        by_policy.policies()
    );
    println!(
        "resident memory (VmRSS) now: {:.1} MiB",
        rss_bytes() as f64 / (1 << 20) as f64
    );
}
