//! Names of addresses as the pods resolved them: each DNS answer a client
//! receives maps the addresses it carried (through the question's CNAME
//! chain) to the name the client asked for, for as long as the answer may be
//! cached (its TTL, at least [`ResolvedNamesConfig::min_ttl`]). A flow from
//! that client to one of those addresses, started while the mapping held,
//! carries the name: `203.0.113.7` becomes `api.example.com`, as the pod knew
//! it.
//!
//! Mappings are kept per client, so one pod's answers never name another
//! pod's flows, and bounded: past [`ResolvedNamesConfig::max_entries`]
//! client-address pairs, the pairs that expire first are let go (counted).
//! An expired mapping is kept a while longer ([`ResolvedNames::new`]'s
//! `hold`), because correlation may hold a flow that started while it held
//! (a TCP attempt waiting for its outcome) and annotate it later.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustc_hash::FxHashMap;

/// Settings of the resolved-names map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedNamesConfig {
    /// How many client-address pairs are kept at most.
    pub max_entries: usize,
    /// The shortest time a mapping holds, whatever the answer's TTL (many
    /// answers carry TTLs of a few seconds or 0, and clients connect right
    /// after resolving).
    pub min_ttl: Duration,
}

/// Default [`ResolvedNamesConfig::max_entries`].
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
/// Default [`ResolvedNamesConfig::min_ttl`].
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(5);
/// Names kept per client-address pair (several names can share an address,
/// as on a CDN); past it the one that expires first is replaced.
const NAMES_PER_PAIR: usize = 4;

impl Default for ResolvedNamesConfig {
    fn default() -> Self {
        ResolvedNamesConfig {
            max_entries: DEFAULT_MAX_ENTRIES,
            min_ttl: DEFAULT_MIN_TTL,
        }
    }
}

/// One name an address had for a client, and when.
#[derive(Clone, Debug)]
struct Named {
    name: Arc<str>,
    /// When the first answer was seen.
    from: SystemTime,
    /// When the latest answer was seen (orders a pair's names).
    latest: SystemTime,
    /// When it stops holding (seen + TTL).
    until: SystemTime,
}

/// Counters of the map, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolvedNamesStats {
    /// Address mappings learned or refreshed from answers.
    pub learned: u64,
    /// Client-address pairs let go before their time to stay within the bound.
    pub evicted: u64,
    /// Flows to outside addresses that found a name.
    pub named: u64,
    /// Flows to outside addresses that found none.
    pub unnamed: u64,
}

/// The names addresses had for their clients ([module docs](self)).
#[derive(Debug)]
pub struct ResolvedNames {
    config: ResolvedNamesConfig,
    hold: Duration,
    /// (client, address) → the names, most recent answer last.
    pairs: FxHashMap<(IpAddr, IpAddr), Vec<Named>>,
    stats: ResolvedNamesStats,
}

impl ResolvedNames {
    /// An empty map; mappings are kept `hold` past their expiry.
    pub fn new(config: ResolvedNamesConfig, hold: Duration) -> Self {
        ResolvedNames {
            config,
            hold,
            pairs: FxHashMap::default(),
            stats: ResolvedNamesStats::default(),
        }
    }

    /// Records that `client` learned, at `at`, that `name` has these
    /// addresses, each for its TTL in seconds.
    pub fn learn(
        &mut self,
        client: IpAddr,
        name: &str,
        addresses: &[(IpAddr, u32)],
        at: SystemTime,
    ) {
        if addresses.is_empty() || name.is_empty() {
            return;
        }
        let mut shared: Option<Arc<str>> = None;
        for &(address, ttl) in addresses {
            let until = at + Duration::from_secs(u64::from(ttl)).max(self.config.min_ttl);
            if !self.pairs.contains_key(&(client, address))
                && self.pairs.len() >= self.config.max_entries
            {
                self.make_room(at);
                if self.config.max_entries == 0 {
                    return;
                }
            }
            let names = self.pairs.entry((client, address)).or_default();
            self.stats.learned += 1;
            if let Some(known) = names.iter_mut().find(|n| &*n.name == name) {
                known.from = known.from.min(at);
                known.latest = known.latest.max(at);
                known.until = known.until.max(until);
                continue;
            }
            let name = shared.get_or_insert_with(|| Arc::from(name)).clone();
            let named = Named {
                name,
                from: at,
                latest: at,
                until,
            };
            if names.len() < NAMES_PER_PAIR {
                names.push(named);
            } else if let Some(first) = names.iter_mut().min_by_key(|n| n.until) {
                *first = named;
            }
        }
    }

    /// The names `address` had for `client` at `at`, the latest answer's
    /// first; empty when none held then.
    pub fn lookup(&mut self, client: IpAddr, address: IpAddr, at: SystemTime) -> Vec<Arc<str>> {
        let mut found: Vec<&Named> = self
            .pairs
            .get(&(client, address))
            .map(|names| {
                names
                    .iter()
                    .filter(|n| n.from <= at && at <= n.until)
                    .collect()
            })
            .unwrap_or_default();
        found.sort_by(|a, b| b.latest.cmp(&a.latest).then_with(|| a.name.cmp(&b.name)));
        let out: Vec<Arc<str>> = found.into_iter().map(|n| n.name.clone()).collect();
        if out.is_empty() {
            self.stats.unnamed += 1;
        } else {
            self.stats.named += 1;
        }
        out
    }

    /// Lets go of mappings that expired more than `hold` before `now`.
    pub fn expire(&mut self, now: SystemTime) {
        let hold = self.hold;
        self.pairs.retain(|_, names| {
            names.retain(|n| n.until + hold >= now);
            !names.is_empty()
        });
    }

    /// How many client-address pairs are held.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> ResolvedNamesStats {
        self.stats
    }

    /// Drops what expired, then, if still full, the eighth of the pairs that
    /// expire first (at least one), so that a flood of answers costs one
    /// sort per eighth rather than one scan per answer.
    fn make_room(&mut self, now: SystemTime) {
        self.expire(now);
        if self.pairs.len() < self.config.max_entries {
            return;
        }
        let mut by_expiry: Vec<(SystemTime, (IpAddr, IpAddr))> = self
            .pairs
            .iter()
            .map(|(k, names)| (names.iter().map(|n| n.until).max().unwrap_or(now), *k))
            .collect();
        let n = (by_expiry.len() / 8).max(1);
        by_expiry.select_nth_unstable_by_key(n - 1, |(until, _)| *until);
        for (_, key) in &by_expiry[..n] {
            self.pairs.remove(key);
        }
        self.stats.evicted += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn names(v: Vec<Arc<str>>) -> Vec<String> {
        v.into_iter().map(|n| n.to_string()).collect()
    }

    fn map(max_entries: usize) -> ResolvedNames {
        ResolvedNames::new(
            ResolvedNamesConfig {
                max_entries,
                min_ttl: Duration::from_secs(5),
            },
            Duration::from_secs(60),
        )
    }

    #[test]
    fn a_name_holds_for_its_client_during_its_ttl() {
        let mut m = map(100);
        let (pod, other, addr) = (ip("10.0.0.5"), ip("10.0.0.6"), ip("203.0.113.7"));
        m.learn(pod, "api.example.com", &[(addr, 30)], t(10));
        assert_eq!(names(m.lookup(pod, addr, t(10))), ["api.example.com"]);
        assert_eq!(names(m.lookup(pod, addr, t(40))), ["api.example.com"]);
        assert!(m.lookup(pod, addr, t(41)).is_empty(), "past its TTL");
        assert!(m.lookup(pod, addr, t(9)).is_empty(), "before the answer");
        assert!(
            m.lookup(other, addr, t(20)).is_empty(),
            "another pod's answer"
        );
        assert_eq!(m.stats().named, 2);
        assert_eq!(m.stats().unnamed, 3);
    }

    #[test]
    fn short_ttls_hold_for_the_minimum_and_names_share_an_address() {
        let mut m = map(100);
        let (pod, addr) = (ip("10.0.0.5"), ip("2001:db8::1"));
        m.learn(pod, "a.cdn.test", &[(addr, 0)], t(0));
        assert_eq!(names(m.lookup(pod, addr, t(5))), ["a.cdn.test"]);
        assert!(m.lookup(pod, addr, t(6)).is_empty());
        m.learn(pod, "b.cdn.test", &[(addr, 60)], t(7));
        m.learn(pod, "a.cdn.test", &[(addr, 60)], t(8));
        // The latest answer first.
        assert_eq!(
            names(m.lookup(pod, addr, t(9))),
            ["a.cdn.test", "b.cdn.test"]
        );
    }

    #[test]
    fn expired_mappings_are_held_then_let_go() {
        let mut m = map(100);
        let (pod, addr) = (ip("10.0.0.5"), ip("203.0.113.7"));
        m.learn(pod, "api.example.com", &[(addr, 30)], t(0));
        m.expire(t(90));
        // A flow that started while the name held, annotated late.
        assert_eq!(names(m.lookup(pod, addr, t(20))), ["api.example.com"]);
        m.expire(t(91));
        assert!(m.is_empty());
    }

    #[test]
    fn the_bound_lets_go_of_what_expires_first() {
        let mut m = map(16);
        let pod = ip("10.0.0.5");
        for i in 0..16u8 {
            let addr = IpAddr::from([198, 51, 100, i]);
            m.learn(pod, "many.test", &[(addr, 100 + u32::from(i))], t(0));
        }
        assert_eq!(m.len(), 16);
        m.learn(pod, "new.test", &[(ip("203.0.113.1"), 30)], t(1));
        assert_eq!(m.len(), 15, "two evicted, one added");
        assert_eq!(m.stats().evicted, 2);
        assert!(
            m.lookup(pod, IpAddr::from([198, 51, 100, 0]), t(2))
                .is_empty()
        );
        assert!(
            m.lookup(pod, IpAddr::from([198, 51, 100, 1]), t(2))
                .is_empty()
        );
        assert_eq!(
            names(m.lookup(pod, IpAddr::from([198, 51, 100, 2]), t(2))),
            ["many.test"]
        );
        assert_eq!(names(m.lookup(pod, ip("203.0.113.1"), t(2))), ["new.test"]);
    }

    #[test]
    fn a_pair_keeps_a_bounded_number_of_names() {
        let mut m = map(100);
        let (pod, addr) = (ip("10.0.0.5"), ip("203.0.113.7"));
        for i in 0..10u32 {
            m.learn(pod, &format!("n{i}.test"), &[(addr, 100 + i)], t(0));
        }
        let found = names(m.lookup(pod, addr, t(1)));
        assert_eq!(found.len(), NAMES_PER_PAIR);
        assert!(found.contains(&"n9.test".to_string()));
    }
}
