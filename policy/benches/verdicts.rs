//! Verdict throughput on the synthetic cluster of 10,000 pods, 500 namespaces and
//! 2,000 policies: warm cache, cold (label index, no cache) and a plain scan of
//! every policy, measured in one run on one core, plus the load time and the
//! memory of the state.
//!
//! `cargo bench -p netverdict-policy --bench verdicts` (add `-- --quick` for a
//! shorter run). Prints one line per figure.

use std::hint::black_box;
use std::time::{Duration, Instant};

use netverdict_policy::synthetic::{self, Size};
use netverdict_policy::{ClusterState, Connection};

/// Resident memory of this process, from /proc (bytes).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Runs `f` over `flows` repeatedly for at least `min` and returns verdicts/s.
fn rate(flows: &[Connection], min: Duration, mut f: impl FnMut(&Connection) -> bool) -> f64 {
    let start = Instant::now();
    let mut done = 0u64;
    let mut allowed = 0u64;
    while start.elapsed() < min {
        for flow in flows {
            allowed += f(flow) as u64;
        }
        done += flows.len() as u64;
    }
    black_box(allowed);
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let min = if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    };
    let size = Size::LARGE;

    let objects = synthetic::cluster(size, 7);
    let rss_before = rss_bytes();
    let start = Instant::now();
    let mut state = ClusterState::new();
    for object in &objects {
        state.apply(object).expect("synthetic objects are valid");
    }
    let load = start.elapsed();
    let rss_state = rss_bytes().saturating_sub(rss_before);
    drop(objects);
    println!(
        "cluster: {} pods, {} namespaces, {} policies",
        state.pod_count(),
        size.namespaces,
        state.policy_count()
    );
    println!(
        "load time: {:.1} ms (apply of every object)",
        load.as_secs_f64() * 1e3
    );
    println!(
        "state memory: {:.1} MiB (resident growth)",
        rss_state as f64 / (1 << 20) as f64
    );

    let flows = synthetic::connections(size, 100_000, 11);
    let denied = flows
        .iter()
        .filter(|f| !state.verdict(f).unwrap().allowed)
        .count();
    println!(
        "flows: {} distinct random flows, {:.0}% denied, {} cached verdicts",
        flows.len(),
        100.0 * denied as f64 / flows.len() as f64,
        state.cached_verdicts()
    );

    let warm = rate(&flows, min, |f| state.verdict(f).unwrap().allowed);
    // A node sees far fewer distinct identity pairs than 100k: the same measure
    // with 10k distinct flows, whose cached verdicts stay in the CPU caches.
    let node_sized = &flows[..10_000];
    let warm_node = rate(node_sized, min, |f| state.verdict(f).unwrap().allowed);
    let cold_flows = &flows[..20_000];
    let cold = rate(cold_flows, min, |f| {
        state.verdict_uncached(f).unwrap().allowed
    });
    let scan_flows = &flows[..2_000];
    let scan = rate(scan_flows, min, |f| {
        state.verdict_by_scan(f).unwrap().allowed
    });
    println!("warm cache, 100k distinct flows: {warm:.0} verdicts/s/core (goal 5,000,000)");
    println!("warm cache, 10k distinct flows: {warm_node:.0} verdicts/s/core (goal 5,000,000)");
    println!("cold (label index, no cache): {cold:.0} verdicts/s/core (goal 200,000)");
    println!("plain scan of all policies (no cache): {scan:.0} verdicts/s/core");
    println!(
        "index speed-up over scan: {:.1}x cold, {:.1}x warm",
        cold / scan,
        warm / scan
    );
}
