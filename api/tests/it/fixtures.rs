//! Flows more than one of the API server's test modules stores.

use std::time::{Duration, SystemTime};

use netverdict_proto::v1 as pb;
use netverdict_testing::{flow, pod};

/// Six flows `n/1/0`..`n/1/5`, `step` apart from `base`: the even ones denied
/// on their way to payments/db-0:5432 by payments/default-deny; then
/// `n/1/hostile`, from a namespace named `x' OR 1=1 --`, `10 * step` after
/// `base`.
pub fn payments_and_a_hostile_namespace(base: SystemTime, step: Duration) -> Vec<pb::Flow> {
    let mut flows = Vec::new();
    for i in 0..6 {
        let mut f = flow(format!("n/1/{i}")).at(base + step * i);
        if i % 2 == 0 {
            f = f
                .denied()
                .outcome(pb::Outcome::Dropped)
                .to(pod("payments", "db-0").workload("db").port(5432))
                .denied_by(["payments/default-deny"]);
        }
        flows.push(f.build());
    }
    let hostile = flow("n/1/hostile")
        .from(pod("x' OR 1=1 --", "evil").workload("evil").port(1))
        .at(base + step * 10);
    flows.push(hostile.build());
    flows
}

/// `n` connections between two pods on two nodes, 1 s apart from `base`
/// (nanoseconds since the epoch), each seen by both nodes' collectors: the
/// source's record of account (no answer, denied) and the destination's
/// second observation (its drops); and a DNS query of each, unanswered, seen
/// at both ends too.
pub fn both_ends(n: usize, base: i64) -> Vec<pb::Flow> {
    let mut flows = Vec::new();
    for i in 0..n {
        let at = base + i as i64 * 1_000_000_000;
        let source = flow(format!("node-0/1/{i}"))
            .at_nanos(at)
            .node("node-0")
            .denied()
            .outcome(pb::Outcome::NoAnswer)
            .denied_by(["shop/api-ingress"])
            .ingress(pb::DirectionVerdict {
                status: pb::PolicyStatus::Denied as i32,
                isolated: true,
                ..Default::default()
            })
            .observation_point(pb::ObservationPoint::Source);
        let destination = source
            .clone()
            .id(format!("node-1/1/{i}"))
            .node("node-1")
            .outcome(pb::Outcome::Dropped)
            .drop_reason("TC_EGRESS")
            .drop_count(2)
            .observation_point(pb::ObservationPoint::Destination)
            .counted_elsewhere();
        let query = source
            .clone()
            .id(format!("node-0/2/{i}"))
            .udp()
            .dns("api.shop.svc.cluster.local", "A");
        let seen_there = query
            .clone()
            .id(format!("node-1/2/{i}"))
            .counted_elsewhere()
            .observation_point(pb::ObservationPoint::Destination);
        flows.extend([source, destination, query, seen_there].map(|f| f.build()));
    }
    flows
}
