//! Aggregation: repeated attempts of the same flow (same endpoints, destination
//! port, protocol, verdict, outcome, direction, mismatch and DNS question) within
//! a window become one record with a count and first/last seen, so a retrying
//! client does not flood the store. Denied flows use a shorter window than
//! allowed ones (finer granularity where incidents are investigated); drops,
//! packets and bytes are summed, never lost.
//!
//! The open records are bounded in bytes (an estimate of what each holds):
//! a flood of distinct flows (a pod asking for random names, a port scan)
//! would otherwise open records until the collector is OOM-killed. When a new
//! record does not fit, the records whose windows end first (the oldest) are
//! closed early, one at a time, and counted ([`Aggregator::evicted`]): their
//! flows are emitted, not lost, with less merging.

use std::collections::BTreeMap;
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

/// The default bound of the open records: 64 MiB, an eighth of the
/// DaemonSet's memory limit (about 100,000 records of random DNS names).
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// What a map or index entry costs beyond its key and value, roughly.
const ENTRY_OVERHEAD: usize = 24;

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

/// An open record: the flows merged so far, and what it costs in memory.
#[derive(Debug)]
struct Open {
    flow: Annotated,
    bytes: usize,
}

/// Open records and their deadlines, within a bound in bytes.
#[derive(Debug)]
pub struct Aggregator {
    windows: Windows,
    max_bytes: usize,
    open: FxHashMap<Key, Open>,
    /// The open records by the end of their window (then by when they were
    /// opened): what a flush closes, and what the bound closes early.
    closing: BTreeMap<(SystemTime, u64), Key>,
    next_seq: u64,
    bytes: usize,
    /// Flows merged into an existing record, since start.
    merged: u64,
    /// Records closed before their window ended to keep within the bound.
    evicted: u64,
}

impl Default for Aggregator {
    fn default() -> Self {
        Aggregator::new(Windows::default(), DEFAULT_MAX_BYTES)
    }
}

/// What one open record costs in memory, estimated: the record, its key
/// (held twice: in the map and in the deadline index), the DNS name (in the
/// record and in each key) and the Service's name; the pods, verdicts and
/// drop reasons it points to are shared with the cluster state and the
/// verdict cache.
fn record_bytes(flow: &Annotated) -> usize {
    let name = flow
        .obs
        .dns
        .as_ref()
        .and_then(|d| d.query.as_ref())
        .map_or(0, String::capacity);
    let service = flow
        .service
        .as_ref()
        .map_or(0, |(ns, name)| ns.capacity() + name.capacity());
    2 * (size_of::<Key>() + ENTRY_OVERHEAD) + size_of::<Open>() + 3 * name + service
}

impl Aggregator {
    /// An aggregator with these windows holding at most about `max_bytes` of
    /// open records.
    pub fn new(windows: Windows, max_bytes: usize) -> Self {
        Aggregator {
            windows,
            max_bytes,
            open: FxHashMap::default(),
            closing: BTreeMap::new(),
            next_seq: 0,
            bytes: 0,
            merged: 0,
            evicted: 0,
        }
    }

    /// Records currently open.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// The memory the open records take, estimated.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Flows merged into an earlier record, since start.
    pub fn merged(&self) -> u64 {
        self.merged
    }

    /// Records closed before their window ended to keep within the bound,
    /// since start.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Adds a flow: merged into the open record of the same flow, or opening
    /// one. When the new record does not fit the bound, the records whose
    /// windows end first are closed now, into `closed`, one at a time until
    /// it fits.
    pub fn push(&mut self, flow: Annotated, closed: &mut Vec<Annotated>) {
        let key = key(&flow);
        if let Some(open) = self.open.get_mut(&key) {
            self.merged += 1;
            let record = &mut open.flow;
            record.count = record.count.saturating_add(flow.count);
            let (r, f) = (&mut record.obs, flow.obs);
            r.drops = r.drops.saturating_add(f.drops);
            r.packets = r.packets.saturating_add(f.packets);
            r.bytes = r.bytes.saturating_add(f.bytes);
            r.last_seen = r.last_seen.max(f.last_seen);
            r.first_seen = r.first_seen.min(f.first_seen);
            if r.drop_reason.is_none() {
                r.drop_reason = f.drop_reason;
            }
            return;
        }
        let bytes = record_bytes(&flow);
        while self.bytes + bytes > self.max_bytes && self.close_first(closed) {
            self.evicted += 1;
        }
        let fine = flow.denied() || flow.mismatch != pb::Mismatch::None;
        let window = if fine {
            self.windows.denied
        } else {
            self.windows.allowed
        };
        // A window that would end past what the clock holds ends when it
        // starts instead.
        let deadline = flow
            .obs
            .first_seen
            .checked_add(window)
            .unwrap_or(flow.obs.first_seen);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += bytes;
        self.closing.insert((deadline, seq), key.clone());
        self.open.insert(key, Open { flow, bytes });
    }

    /// Closes the record whose window ends first; false when none is open.
    fn close_first(&mut self, out: &mut Vec<Annotated>) -> bool {
        let Some((_, key)) = self.closing.pop_first() else {
            return false;
        };
        if let Some(open) = self.open.remove(&key) {
            self.bytes -= open.bytes;
            out.push(open.flow);
        }
        true
    }

    /// Emits the records whose window ended by `now`, oldest first.
    pub fn flush(&mut self, now: SystemTime, out: &mut Vec<Annotated>) {
        let start = out.len();
        while self
            .closing
            .first_key_value()
            .is_some_and(|((deadline, _), _)| *deadline <= now)
        {
            self.close_first(out);
        }
        out[start..].sort_by_key(|f| f.obs.first_seen);
    }

    /// Emits every open record (at shutdown).
    pub fn flush_all(&mut self, out: &mut Vec<Annotated>) {
        let start = out.len();
        while self.close_first(out) {}
        out[start..].sort_by_key(|f| f.obs.first_seen);
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
            packets: 1,
            bytes: 100,
            dns: None,
        };
        Annotator::new("n").annotate(state, obs)
    }

    /// shop/np-client asks the cluster DNS for `name`.
    fn dns_flow(state: &ClusterState, s: u64, name: &str) -> Annotated {
        let obs = Observation {
            first_seen: at(s),
            last_seen: at(s),
            netns: 1,
            direction: TrafficDirection::Egress,
            seen_by: crate::correlate::SeenBy::Packets,
            protocol: Protocol::Udp,
            src: SocketAddr::new("10.244.2.20".parse().unwrap(), 40000),
            dst: SocketAddr::new("10.96.0.10".parse().unwrap(), 53),
            backend: None,
            outcome: pb::Outcome::Answered,
            drops: 0,
            drop_reason: None,
            drop_location: None,
            packets: 1,
            bytes: 100,
            dns: Some(crate::correlate::DnsSeen {
                id: 7,
                query: Some(name.to_string()),
                qtype: Some(1),
                rcode: Some("NXDOMAIN"),
                answers: 0,
            }),
        };
        Annotator::new("n").annotate(state, obs)
    }

    #[test]
    fn a_flood_of_distinct_flows_stays_within_the_byte_bound_closing_the_oldest_first() {
        let state = state();
        let bound = 256 * 1024;
        let mut a = Aggregator::new(Windows::default(), bound);
        let mut closed = Vec::new();
        let flows = 20_000u64;
        for i in 0..flows {
            let before = closed.len();
            a.push(
                dns_flow(&state, i, &format!("x{i:08}.random.example.com")),
                &mut closed,
            );
            assert!(a.bytes() <= bound, "{} bytes after {i} flows", a.bytes());
            assert!(
                closed.len() - before <= 2,
                "one flow closed {} records at once",
                closed.len() - before
            );
        }
        assert!(a.open() > 100, "{} records open", a.open());
        assert_eq!(a.evicted(), closed.len() as u64);
        assert_eq!(closed.len() as u64 + a.open() as u64, flows, "none lost");
        let newest_closed = closed.iter().map(|f| f.obs.first_seen).max().unwrap();
        let mut rest = Vec::new();
        a.flush_all(&mut rest);
        assert!(rest.iter().all(|f| f.obs.first_seen > newest_closed));
        assert!(
            closed.is_sorted_by_key(|f| f.obs.first_seen),
            "oldest first"
        );
    }

    #[test]
    fn counts_and_drops_saturate_when_merged() {
        let state = state();
        let mut a = Aggregator::default();
        let mut out = Vec::new();
        for s in 0..3 {
            let mut f = flow(&state, s, 40000, 8080, pb::Outcome::Dropped);
            f.count = u64::MAX - 1;
            f.obs.drops = u32::MAX - 1;
            a.push(f, &mut out);
        }
        a.flush_all(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].count, out[0].obs.drops), (u64::MAX, u32::MAX));
    }

    #[test]
    fn retries_become_one_record_with_a_count() {
        let state = state();
        let mut a = Aggregator::default();
        let mut out = Vec::new();
        for (i, s) in [0, 1, 2, 5].into_iter().enumerate() {
            a.push(
                flow(&state, s, 40000 + i as u16, 8080, pb::Outcome::Dropped),
                &mut out,
            );
        }
        assert_eq!(a.open(), 1);
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
        assert_eq!((rendered.packets, rendered.bytes), (4, 400), "summed");
    }

    #[test]
    fn different_outcomes_and_verdicts_stay_apart_and_allowed_flows_wait_longer() {
        let state = state();
        let mut a = Aggregator::default();
        let mut out = Vec::new();
        // 8080 from shop is denied (namespace), 9999 to np-client is allowed.
        a.push(flow(&state, 0, 1, 8080, pb::Outcome::Dropped), &mut out);
        a.push(flow(&state, 1, 2, 8080, pb::Outcome::Established), &mut out);
        let mut allowed = flow(&state, 2, 3, 9999, pb::Outcome::Established);
        allowed.obs.dst = SocketAddr::new("10.244.1.20".parse().unwrap(), 9999);
        let allowed = Annotator::new("n").annotate(&state, allowed.obs);
        assert!(!allowed.denied());
        a.push(allowed, &mut out);
        assert_eq!(a.open(), 3);
        a.flush(at(30), &mut out);
        assert_eq!(out.len(), 2, "only the denied records' windows have ended");
        assert!(out.iter().all(|f| f.denied()));
        a.flush(at(62), &mut out);
        assert_eq!(out.len(), 3);
        assert!(!out[2].denied());
        a.push(flow(&state, 100, 4, 8080, pb::Outcome::Dropped), &mut out);
        a.flush_all(&mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(a.open(), 0);
    }
}
