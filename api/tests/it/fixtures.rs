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
