//! What-if replay throughput on the synthetic cluster of 10,000 pods, 500
//! namespaces and 2,000 policies, with a rollout that adds egress default
//! denies to 50 namespaces and deletes 100 policies: 1,000,000 flows (100,000
//! distinct, each replayed ten times, cloned as a decoded flow would be made)
//! through `Replay::add` on one core. The first pass decides each connection
//! in both states (cold engine caches); later passes find it in the replay's
//! memo of connections seen.
//!
//! `cargo bench -p netverdict-policy --bench whatif`. Prints flows/s per core.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use netverdict_policy::ClusterState;
use netverdict_policy::manifest::Manifests;
use netverdict_policy::synthetic::{self, Size};
use netverdict_policy::whatif::{ReplayFlow, Rollout, WhatIf, parse_policy_key};

fn main() {
    let size = Size::LARGE;
    let mut state = ClusterState::new();
    for object in synthetic::cluster(size, 7) {
        state.apply(&object).expect("synthetic objects are valid");
    }
    let denies: String = (0..50)
        .map(|i| {
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny-egress, namespace: ns-{}}}\n\
                 spec: {{podSelector: {{}}, policyTypes: [Egress]}}\n---\n",
                i * 10
            )
        })
        .collect();
    let mut manifests = Manifests::default();
    manifests.read_str(Path::new("rollout.yaml"), &denies);
    let delete = state
        .policies()
        .iter()
        .step_by(20)
        .map(|p| parse_policy_key(&p.key.to_string()).expect("a policy name"))
        .collect();
    let rollout = Rollout {
        apply: manifests.objects,
        delete,
    };
    let start = Instant::now();
    let whatif = WhatIf::new(state, &rollout).expect("the rollout applies");
    println!(
        "rollout: {} policies added, {} deleted, in {:.1} ms (the cluster copied once)",
        rollout.apply.len(),
        rollout.delete.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
    let distinct: Vec<ReplayFlow> = synthetic::connections(size, 100_000, 11)
        .into_iter()
        .map(|c| ReplayFlow::of_connection(whatif.before(), c))
        .collect();
    const PASSES: usize = 10;
    let total = distinct.len() * PASSES;
    let mut first_pass = 0.0;
    let mut first_elapsed = std::time::Duration::ZERO;
    let mut replay = whatif.replay();
    let start = Instant::now();
    for pass in 0..PASSES {
        let pass_start = Instant::now();
        for flow in &distinct {
            replay.add(black_box(flow.clone()));
        }
        if pass == 0 {
            first_elapsed = pass_start.elapsed();
            first_pass = distinct.len() as f64 / first_elapsed.as_secs_f64();
        }
    }
    let elapsed = start.elapsed();
    let changes = replay.finish();
    let denied = changes.changes.iter().filter(|c| c.newly_denied()).count();
    println!(
        "replayed {total} flows in {:.2} s: {} changed groups ({denied} newly denied), {} unresolved",
        elapsed.as_secs_f64(),
        changes.changes.len(),
        changes.unresolved
    );
    let repeat = (total - distinct.len()) as f64 / (elapsed - first_elapsed).as_secs_f64();
    println!(
        "first pass (each connection decided in both states, cold): {first_pass:.0} flows/s/core"
    );
    println!("later passes (connections seen before): {repeat:.0} flows/s/core (goal 1,000,000)");
    println!(
        "all {PASSES} passes: {:.0} flows/s/core",
        total as f64 / elapsed.as_secs_f64()
    );
}
