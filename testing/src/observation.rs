//! Correlated connections as the collector's correlator reports them to the
//! annotator, and their annotated, rendered flows: for tests of annotation on
//! a known cluster without events or a kernel.

use std::net::SocketAddr;
use std::time::SystemTime;

use netverdict_collector::annotate::Annotator;
use netverdict_collector::correlate::{Observation, SeenBy, TrafficDirection};
use netverdict_policy::{ClusterState, Protocol};
use netverdict_proto::v1 as pb;

/// An egress connection from `src` to `dst` (`ip:port`) seen at `at` by the
/// initiator's socket, with this outcome: no Service backend, drops or DNS
/// until the test sets them.
pub fn observation(
    src: &str,
    dst: &str,
    protocol: Protocol,
    outcome: pb::Outcome,
    at: SystemTime,
) -> Observation {
    Observation {
        first_seen: at,
        last_seen: at,
        netns: 1,
        direction: TrafficDirection::Egress,
        seen_by: SeenBy::InitiatorSocket,
        protocol,
        src: addr(src),
        dst: addr(dst),
        backend: None,
        outcome,
        drops: 0,
        drop_reason: None,
        drop_location: None,
        packets: 0,
        bytes: 0,
        dns: None,
    }
}

/// `ip:port` as a socket address.
pub fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is not ip:port: {e}"))
}

/// The flow the collector makes of `o` on `node` against `state`: annotated
/// and rendered with id `id`, as it does per record.
pub fn annotated(state: &ClusterState, o: Observation, node: &str, id: String) -> pb::Flow {
    let annotator = Annotator::new(node);
    annotator.render(&annotator.annotate(state, o), id)
}
