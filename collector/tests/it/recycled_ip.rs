//! A recycled pod IP through the pipeline: decoded events replayed while the
//! cluster state changes between them (pod A deleted, pod B given its IP). A
//! connection A started before its deletion, whose outcome arrives after B
//! took the IP, is still A's flow, judged as A; B's later flow is B's.

use netverdict_testing::objects;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use netverdict_cluster::SharedState;
use netverdict_collector::pipeline::{Pipeline, PipelineConfig};
use netverdict_ebpf::{StreamItem, TcpOutcome};

use crate::tcp_events;
use netverdict_policy::{K8sObject, ObjectKind};
use netverdict_proto::v1 as pb;

const RECYCLED: &str = "10.244.0.7";

fn src(port: u16) -> SocketAddr {
    SocketAddr::new(RECYCLED.parse().unwrap(), port)
}

fn db() -> SocketAddr {
    "10.244.0.2:8080".parse().unwrap()
}

fn attempt(time: SystemTime, sock_id: u64, src_port: u16) -> StreamItem {
    tcp_events::attempt(time, sock_id, src(src_port), db())
}

fn outcome(time: SystemTime, sock_id: u64, src_port: u16) -> StreamItem {
    tcp_events::outcome(time, sock_id, src(src_port), db(), TcpOutcome::Established)
}

fn source(flow: &pb::Flow) -> String {
    let s = flow.source.as_ref().unwrap();
    format!("{}/{}", s.namespace, s.pod_name)
}

#[test]
fn a_recycled_ip_is_attributed_to_the_pod_that_held_it_when_the_flow_started() {
    let shared = SharedState::default();
    shared.update(|s| {
        for o in [
            K8sObject::NetworkPolicy(Box::new(objects::allow_from(
                "default", "db", "db", "api", 8080,
            ))),
            K8sObject::Pod(Box::new(objects::pod(
                "default",
                "db",
                &[("app", "db")],
                "10.244.0.2",
            ))),
            K8sObject::Pod(Box::new(objects::pod(
                "default",
                "a",
                &[("app", "api")],
                RECYCLED,
            ))),
        ] {
            s.apply(&o).unwrap();
        }
    });
    let mut pipeline = Pipeline::new(PipelineConfig::default(), shared.clone());

    // A connects; its outcome is not in yet.
    let a_started = SystemTime::now();
    pipeline.push(&attempt(a_started, 1, 40000));

    // A is deleted; B gets its IP.
    shared.update(|s| s.delete(ObjectKind::Pod, "default", "a"));
    shared.update(|s| {
        s.apply(&K8sObject::Pod(Box::new(objects::pod(
            "default",
            "b",
            &[("app", "web")],
            RECYCLED,
        ))))
        .unwrap();
    });
    assert_eq!(
        shared
            .read()
            .pod_by_ip(RECYCLED.parse().unwrap())
            .unwrap()
            .key
            .to_string(),
        "default/b"
    );

    // A's outcome arrives now, after the switch; then B connects.
    let b_started = SystemTime::now();
    pipeline.push(&outcome(b_started, 1, 40000));
    pipeline.push(&attempt(b_started, 2, 40001));
    pipeline.push(&outcome(b_started + Duration::from_millis(1), 2, 40001));

    let flows = pipeline.flush_windows();
    assert_eq!(flows.len(), 2, "{flows:#?}");
    let a = flows
        .iter()
        .find(|f| f.source.as_ref().unwrap().port == 40000)
        .unwrap();
    let b = flows
        .iter()
        .find(|f| f.source.as_ref().unwrap().port == 40001)
        .unwrap();
    assert_eq!(source(a), "default/a", "{a:#?}");
    assert_eq!(
        a.verdict(),
        pb::Verdict::Allowed,
        "A (app=api) may reach db"
    );
    assert_eq!(source(b), "default/b", "{b:#?}");
    assert_eq!(b.verdict(), pb::Verdict::Denied, "B (app=web) may not");
    assert_eq!(
        b.mismatch(),
        pb::Mismatch::AllowedThoughDenied,
        "established though denied"
    );
}
