//! A policy change while correlation holds a flow: a connection attempted
//! under a default-deny, whose outcome (the application gave up on its SYNs)
//! comes after an allow landed, is judged by the default-deny it met. Judged by the
//! allow it would read as "no answer though allowed", a mismatch the kernel
//! never made.

use netverdict_testing::objects;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use netverdict_cluster::SharedState;
use netverdict_collector::pipeline::{Pipeline, PipelineConfig};
use netverdict_ebpf::{StreamItem, TcpOutcome};

use crate::tcp_events;
use netverdict_policy::K8sObject;
use netverdict_proto::v1 as pb;

fn api(port: u16) -> SocketAddr {
    SocketAddr::new("10.244.0.3".parse().unwrap(), port)
}

fn db() -> SocketAddr {
    "10.244.0.2:8080".parse().unwrap()
}

fn attempt(time: SystemTime, sock_id: u64, src_port: u16) -> StreamItem {
    tcp_events::attempt(time, sock_id, api(src_port), db())
}

/// The application gave up on its SYNs.
fn gave_up(time: SystemTime, sock_id: u64, src_port: u16) -> StreamItem {
    tcp_events::outcome(time, sock_id, api(src_port), db(), TcpOutcome::NoAnswer)
}

fn names(policies: &[pb::PolicyRef]) -> Vec<String> {
    policies
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

fn by_port(flows: &[pb::Flow], port: u32) -> &pb::Flow {
    flows
        .iter()
        .find(|f| f.source.as_ref().unwrap().port == port)
        .unwrap_or_else(|| panic!("no flow from port {port}: {flows:#?}"))
}

#[test]
fn a_held_flow_is_judged_by_the_policies_it_met() {
    let shared = SharedState::default();
    shared.update(|s| {
        for o in [
            K8sObject::NetworkPolicy(Box::new(objects::deny_all("default", "default-deny"))),
            K8sObject::Pod(Box::new(objects::pod(
                "default",
                "db",
                &[("app", "db")],
                "10.244.0.2",
            ))),
            K8sObject::Pod(Box::new(objects::pod(
                "default",
                "api",
                &[("app", "api")],
                "10.244.0.3",
            ))),
        ] {
            s.apply(&o).unwrap();
        }
    });
    let mut pipeline = Pipeline::new(PipelineConfig::default(), shared.clone());

    // api connects under the default-deny; no answer comes.
    let before = SystemTime::now();
    pipeline.push(&attempt(before, 1, 40000));
    // The allow lands while the attempt is held.
    shared.update(|s| {
        s.apply(&K8sObject::NetworkPolicy(Box::new(objects::allow_from(
            "default",
            "db-from-api",
            "db",
            "api",
            8080,
        ))))
        .unwrap();
    });
    assert_eq!(shared.read().earlier_policy_sets(), 1);
    // api connects again, under the allow; no answer either.
    let after = SystemTime::now();
    pipeline.push(&attempt(after, 2, 40001));

    let later = after + Duration::from_secs(2);
    let mut flows = pipeline.push(&gave_up(later, 1, 40000));
    flows.extend(pipeline.push(&gave_up(later, 2, 40001)));
    flows.extend(pipeline.flush_windows());
    assert_eq!(flows.len(), 2, "{flows:#?}");

    let met_deny = by_port(&flows, 40000);
    assert_eq!(met_deny.outcome(), pb::Outcome::NoAnswer);
    assert_eq!(met_deny.verdict(), pb::Verdict::Denied, "{met_deny:#?}");
    assert_eq!(names(&met_deny.denied_by), ["default/default-deny"]);
    assert_eq!(met_deny.mismatch(), pb::Mismatch::None);

    let met_allow = by_port(&flows, 40001);
    assert_eq!(met_allow.verdict(), pb::Verdict::Allowed, "{met_allow:#?}");
    assert_eq!(names(&met_allow.allowed_by), ["default/db-from-api"]);
    assert_eq!(met_allow.mismatch(), pb::Mismatch::NoAnswerThoughAllowed);
}
