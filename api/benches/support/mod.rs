//! Flows for the store benchmarks: denied and allowed TCP flows between a
//! few dozen workloads in three namespaces, flow `i` last seen at
//! `base + i * 3 ms` (`spread_flow` spreads them over a window instead).

#![allow(
    dead_code,
    clippy::allow_attributes,
    reason = "each benchmark uses a part of this module"
)]

use std::time::{Duration, SystemTime};

use netverdict_proto::v1 as pb;

/// Flow `i` at `base + i * 3 ms`.
pub fn flow(i: u64, base: SystemTime) -> pb::Flow {
    let t = netverdict_proto::time::timestamp(base + Duration::from_millis(i * 3));
    let pod = |ns: &str, name: String, port| {
        Some(pb::Endpoint {
            kind: pb::EndpointKind::Pod as i32,
            namespace: ns.into(),
            workload: name.clone(),
            pod_name: format!("{name}-{}", i % 7),
            port,
            ip: "10.244.1.1".into(),
            ..Default::default()
        })
    };
    let denied = !i.is_multiple_of(3);
    pb::Flow {
        id: format!("node-{}/1/{i}", i % 10),
        first_seen: Some(t),
        last_seen: Some(t),
        count: 1 + i % 4,
        source: pod(
            ["shop", "default", "web"][(i % 3) as usize],
            format!("client{}", i % 50),
            40000,
        ),
        destination: pod("default", format!("api{}", i % 20), 8080 + (i % 5) as u32),
        protocol: pb::Protocol::Tcp as i32,
        verdict: if denied {
            pb::Verdict::Denied
        } else {
            pb::Verdict::Allowed
        } as i32,
        outcome: pb::Outcome::Dropped as i32,
        denied_by: if denied {
            vec![pb::PolicyRef {
                namespace: "default".into(),
                name: "default-deny".into(),
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        reason: "ingress of default/api is isolated by default/default-deny".into(),
        ..Default::default()
    }
}

/// Flow `i` of `n`, last seen evenly spread over `window` ending at `end`.
pub fn spread_flow(i: u64, n: u64, end: SystemTime, window: Duration) -> pb::Flow {
    let back = window.mul_f64((n - i) as f64 / n as f64);
    let mut f = flow(i, end - back);
    let t = netverdict_proto::time::timestamp(end - back);
    f.first_seen = Some(t);
    f.last_seen = Some(t);
    f
}
