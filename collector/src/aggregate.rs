//! Aggregation: repeated attempts of the same flow (same endpoints, destination
//! port, protocol, verdict, outcome, direction, mismatch and DNS question) within
//! a window become one record with a count and first/last seen, so a retrying
//! client does not flood the store. Denied flows use a shorter window than
//! allowed ones (finer granularity where incidents are investigated); drops are
//! summed, never lost.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use netverdict_proto::v1 as pb;
use rustc_hash::FxHashMap;

use crate::annotate::Annotated;
use crate::correlate::TrafficDirection;

/// Aggregation windows.
#[derive(Clone, Debug)]
pub struct Windows {
    /// For allowed (and unevaluated) flows.
    pub allowed: Duration,
    /// For denied flows and mismatches.
    pub denied: Duration,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            allowed: Duration::from_secs(60),
            denied: Duration::from_secs(10),
        }
    }
}

/// What makes two flows "the same flow" for aggregation. Source ports vary per
/// attempt and are left out; the verdict is keyed by its shared allocation, so a
/// policy change starts a new record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    source: IpAddr,
    destination: SocketAddr,
    addressed: SocketAddr,
    protocol: netverdict_policy::Protocol,
    verdict: usize,
    outcome: pb::Outcome,
    direction: TrafficDirection,
    point: pb::ObservationPoint,
    mismatch: pb::Mismatch,
    dns: Option<(Option<String>, Option<&'static str>)>,
}

fn key(a: &Annotated) -> Key {
    Key {
        source: a.obs.src.ip(),
        destination: a.destination.addr,
        addressed: a.obs.dst,
        protocol: a.obs.protocol,
        verdict: match &a.verdict {
            Ok(v) => Arc::as_ptr(v) as usize,
            Err(_) => 0,
        },
        outcome: a.obs.outcome,
        direction: a.obs.direction,
        point: a.point,
        mismatch: a.mismatch,
        dns: a.obs.dns.as_ref().map(|d| (d.query.clone(), d.rcode)),
    }
}

/// Open records and their deadlines.
#[derive(Debug, Default)]
pub struct Aggregator {
    windows: Windows,
    open: FxHashMap<Key, (SystemTime, Annotated)>,
    /// Flows merged into an existing record, since start.
    merged: u64,
}

impl Aggregator {
    pub fn new(windows: Windows) -> Self {
        Aggregator {
            windows,
            ..Default::default()
        }
    }

    /// Records currently open.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// Flows merged into an earlier record, since start.
    pub fn merged(&self) -> u64 {
        self.merged
    }

    /// Adds a flow: merged into the open record of the same flow, or opening one.
    pub fn push(&mut self, flow: Annotated) {
        let key = key(&flow);
        match self.open.get_mut(&key) {
            Some((_, record)) => {
                self.merged += 1;
                record.count += flow.count;
                let (r, f) = (&mut record.obs, flow.obs);
                r.drops += f.drops;
                r.last_seen = r.last_seen.max(f.last_seen);
                r.first_seen = r.first_seen.min(f.first_seen);
                if r.drop_reason.is_none() {
                    r.drop_reason = f.drop_reason;
                }
            }
            None => {
                let fine = flow.denied() || flow.mismatch != pb::Mismatch::None;
                let window = if fine {
                    self.windows.denied
                } else {
                    self.windows.allowed
                };
                let deadline = flow.obs.first_seen + window;
                self.open.insert(key, (deadline, flow));
            }
        }
    }

    /// Emits the records whose window ended by `now`, oldest first.
    pub fn flush(&mut self, now: SystemTime, out: &mut Vec<Annotated>) {
        let mut done: Vec<Annotated> = Vec::new();
        let open = std::mem::take(&mut self.open);
        for (key, (deadline, flow)) in open {
            if deadline <= now {
                done.push(flow);
            } else {
                self.open.insert(key, (deadline, flow));
            }
        }
        done.sort_by_key(|f| f.obs.first_seen);
        out.extend(done);
    }

    /// Emits every open record (at shutdown).
    pub fn flush_all(&mut self, out: &mut Vec<Annotated>) {
        let mut done: Vec<Annotated> = self.open.drain().map(|(_, (_, f))| f).collect();
        done.sort_by_key(|f| f.obs.first_seen);
        out.extend(done);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use netverdict_policy::{ClusterState, Protocol};

    use super::*;
    use crate::annotate::Annotator;
    use crate::correlate::Observation;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn state() -> ClusterState {
        let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/examples/seed");
        ClusterState::load_paths(&[
            Path::new(seed).join("cluster.yaml"),
            Path::new(seed).join("policies/api-from-web.yaml"),
        ])
        .unwrap()
    }

    /// shop/np-client -> default/api:port, denied by api-from-web.
    fn flow(
        state: &ClusterState,
        s: u64,
        src_port: u16,
        port: u16,
        outcome: pb::Outcome,
    ) -> Annotated {
        let obs = Observation {
            first_seen: at(s),
            last_seen: at(s),
            netns: 1,
            direction: TrafficDirection::Egress,
            seen_by: crate::correlate::SeenBy::InitiatorSocket,
            protocol: Protocol::Tcp,
            src: SocketAddr::new("10.244.2.20".parse().unwrap(), src_port),
            dst: SocketAddr::new("10.244.1.10".parse().unwrap(), port),
            backend: None,
            outcome,
            drops: if outcome == pb::Outcome::Dropped {
                3
            } else {
                0
            },
            drop_reason: None,
            drop_location: None,
            dns: None,
        };
        Annotator::new("n").annotate(state, obs)
    }

    #[test]
    fn retries_become_one_record_with_a_count() {
        let state = state();
        let mut a = Aggregator::default();
        for (i, s) in [0, 1, 2, 5].into_iter().enumerate() {
            a.push(flow(
                &state,
                s,
                40000 + i as u16,
                8080,
                pb::Outcome::Dropped,
            ));
        }
        assert_eq!(a.open(), 1);
        let mut out = Vec::new();
        a.flush(at(9), &mut out);
        assert!(out.is_empty(), "the denied window is 10 s");
        a.flush(at(10), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].count, 4);
        assert_eq!(out[0].obs.drops, 12);
        assert_eq!(out[0].obs.first_seen, at(0));
        assert_eq!(out[0].obs.last_seen, at(5));
        assert_eq!(a.merged(), 3);
        let rendered = Annotator::new("n").render(&out[0], "n/1".into());
        assert_eq!(rendered.count, 4);
        assert_eq!(rendered.drop_count, 12);
    }

    #[test]
    fn different_outcomes_and_verdicts_stay_apart_and_allowed_flows_wait_longer() {
        let state = state();
        let mut a = Aggregator::default();
        // 8080 from shop is denied (namespace), 9999 to np-client is allowed.
        a.push(flow(&state, 0, 1, 8080, pb::Outcome::Dropped));
        a.push(flow(&state, 1, 2, 8080, pb::Outcome::Established));
        let mut allowed = flow(&state, 2, 3, 9999, pb::Outcome::Established);
        allowed.obs.dst = SocketAddr::new("10.244.1.20".parse().unwrap(), 9999);
        let allowed = Annotator::new("n").annotate(&state, allowed.obs);
        assert!(!allowed.denied());
        a.push(allowed);
        assert_eq!(a.open(), 3);
        let mut out = Vec::new();
        a.flush(at(30), &mut out);
        assert_eq!(out.len(), 2, "only the denied records' windows have ended");
        assert!(out.iter().all(|f| f.denied()));
        a.flush(at(62), &mut out);
        assert_eq!(out.len(), 3);
        assert!(!out[2].denied());
        a.push(flow(&state, 100, 4, 8080, pb::Outcome::Dropped));
        a.flush_all(&mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(a.open(), 0);
    }
}
