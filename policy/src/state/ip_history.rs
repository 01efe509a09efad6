//! IP history: which pod holds each pod IP now, and which pods held it before.
//!
//! The current holder of an IP carries what the engine needs to decide a flow
//! in one lookup (the pod, its identity and the IP's class) and since when it
//! holds the address. When a pod departs, or changes what the engine sees of
//! it (labels, ports, IPs), its holding is kept for a retention (five minutes
//! by default), so that a flow that started before the change is judged as the
//! pod that used the address then ([`IpHistory::holder_at`]). Times are the
//! state's time, set by the caller: nothing here reads a clock.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustc_hash::FxHashMap;

use crate::model::{Pod, PodKey};

/// What a pod IP resolves to now.
#[derive(Clone, Debug)]
pub(crate) struct IpEntry {
    pub pod: Arc<Pod>,
    pub identity: u32,
    pub ip_class: u32,
    /// When this pod (in this version) started holding the IP, in the state's
    /// time when it was applied.
    pub since: SystemTime,
}

/// A past holder of a pod IP: the pod as it was, and when it held the IP
/// (`from` inclusive, `until` exclusive), in the state's time.
#[derive(Clone, Debug)]
struct Holding {
    pod: Arc<Pod>,
    from: SystemTime,
    until: SystemTime,
}

/// Most past holders kept per IP, whatever the retention: bounds the memory of
/// an address that churns very fast.
const MAX_HOLDINGS_PER_IP: usize = 16;

/// The default of [`ClusterState::set_departed_retention`](crate::ClusterState::set_departed_retention).
pub const DEFAULT_DEPARTED_RETENTION: Duration = Duration::from_secs(300);

/// The pod an IP resolved to at some time ([`ClusterState::holder_at`](crate::ClusterState::holder_at)).
#[derive(Clone, Copy, Debug)]
pub struct Holder<'a> {
    pub pod: &'a Arc<Pod>,
    /// Whether it is the IP's current holder (in its current version); if not,
    /// the pod departed (or changed) since, and verdicts on it are not cached.
    pub current: bool,
}

/// Current and past holders of every (non-host-network) pod IP.
#[derive(Clone, Debug)]
pub(crate) struct IpHistory {
    /// The pod holding each IP now.
    current: FxHashMap<IpAddr, IpEntry>,
    /// Every pod holding each IP, in the order they were applied (usually one).
    holders: FxHashMap<IpAddr, Vec<PodKey>>,
    /// Past holders (departed pods, or earlier versions of a pod whose labels,
    /// ports or IPs changed), oldest first, kept for `retention` after they ended.
    past: FxHashMap<IpAddr, VecDeque<Holding>>,
    retention: Duration,
    /// The time changes are applied at, given by the caller.
    now: SystemTime,
}

impl Default for IpHistory {
    fn default() -> Self {
        IpHistory {
            current: FxHashMap::default(),
            holders: FxHashMap::default(),
            past: FxHashMap::default(),
            retention: DEFAULT_DEPARTED_RETENTION,
            now: SystemTime::UNIX_EPOCH,
        }
    }
}

impl IpHistory {
    /// Moves the time changes are applied at forward (never back).
    pub fn set_time(&mut self, now: SystemTime) {
        self.now = self.now.max(now);
    }

    pub fn time(&self) -> SystemTime {
        self.now
    }

    pub fn set_retention(&mut self, retention: Duration) {
        self.retention = retention;
    }

    /// Forgets past holders that ended more than the retention before `now`;
    /// returns how many.
    pub fn prune(&mut self, now: SystemTime) -> usize {
        let retention = self.retention;
        let mut pruned = 0;
        self.past.retain(|_, holdings| {
            while holdings.front().is_some_and(|h| h.until + retention <= now) {
                holdings.pop_front();
                pruned += 1;
            }
            !holdings.is_empty()
        });
        pruned
    }

    /// How many past holders are kept.
    pub fn past_count(&self) -> usize {
        self.past.values().map(VecDeque::len).sum()
    }

    /// The current holder of an IP.
    #[inline]
    pub fn current(&self, ip: IpAddr) -> Option<&IpEntry> {
        self.current.get(&ip)
    }

    /// Every current holding, for re-keying identities or IP classes.
    pub fn current_mut(&mut self) -> impl Iterator<Item = (&IpAddr, &mut IpEntry)> {
        self.current.iter_mut()
    }

    /// The pod that held an IP at time `at`: the current holder if it held it
    /// by then, else the past holder whose interval contains `at`, else the
    /// current holder (a flow seen before its pod was applied: watches lag the
    /// kernel).
    pub fn holder_at(&self, ip: IpAddr, at: SystemTime) -> Option<Holder<'_>> {
        let current = self.current.get(&ip);
        if let Some(entry) = current
            && at >= entry.since
        {
            return Some(Holder {
                pod: &entry.pod,
                current: true,
            });
        }
        if let Some(past) = self
            .past
            .get(&ip)
            .and_then(|hs| hs.iter().rev().find(|h| h.from <= at && at < h.until))
        {
            return Some(Holder {
                pod: &past.pod,
                current: false,
            });
        }
        current.map(|entry| Holder {
            pod: &entry.pod,
            current: true,
        })
    }

    /// `pod` holds `ip` from now on (or from `since`, for an update that keeps
    /// an earlier holding). A different pod holding it before (its deletion
    /// not seen yet) is recorded as having held it until now.
    pub fn hold(
        &mut self,
        ip: IpAddr,
        pod: Arc<Pod>,
        identity: u32,
        ip_class: u32,
        since: Option<SystemTime>,
    ) {
        let key = pod.key.clone();
        let entry = IpEntry {
            pod,
            identity,
            ip_class,
            since: since.unwrap_or(self.now),
        };
        if let Some(previous) = self.current.insert(ip, entry)
            && previous.pod.key != key
        {
            self.record_departure(ip, &previous);
        }
        self.holders.entry(ip).or_default().push(key);
    }

    /// The pod `key` no longer holds `ip`; with `record`, it is recorded as
    /// having held it until now. When it was the current holder and another
    /// pod holds the address too (a finished pod's IP reused, events out of
    /// order), returns the latest such pod, which the caller makes the current
    /// holder with [`IpHistory::take_over`].
    pub fn release(&mut self, ip: IpAddr, key: &PodKey, record: bool) -> Option<PodKey> {
        if let Some(holders) = self.holders.get_mut(&ip) {
            holders.retain(|k| k != key);
            if holders.is_empty() {
                self.holders.remove(&ip);
            }
        }
        if self.current.get(&ip).is_none_or(|e| e.pod.key != *key) {
            return None;
        }
        if let Some(removed) = self.current.remove(&ip)
            && record
        {
            self.record_departure(ip, &removed);
        }
        self.holders
            .get(&ip)
            .and_then(|holders| holders.iter().rev().find(|k| *k != key))
            .cloned()
    }

    /// Makes `pod`, already one of the IP's holders, its current holder from now.
    pub fn take_over(&mut self, ip: IpAddr, pod: Arc<Pod>, identity: u32, ip_class: u32) {
        let entry = IpEntry {
            pod,
            identity,
            ip_class,
            since: self.now,
        };
        self.current.insert(ip, entry);
    }

    /// Records that `entry` stopped holding `ip` now.
    fn record_departure(&mut self, ip: IpAddr, entry: &IpEntry) {
        let holdings = self.past.entry(ip).or_default();
        holdings.push_back(Holding {
            pod: entry.pod.clone(),
            from: entry.since,
            until: self.now,
        });
        while holdings.len() > MAX_HOLDINGS_PER_IP {
            holdings.pop_front();
        }
    }
}
