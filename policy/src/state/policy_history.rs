//! The policies in effect, and the sets in effect before the latest changes,
//! so that a flow is judged by the policies of the moment it started. A
//! collector holds a TCP attempt until its outcome and a DNS query until its
//! answer or timeout; if a policy changes meanwhile (a default-deny rolled out
//! between a query and its timeout), judging the flow by the new set would
//! call a drop the old set made a mismatch.
//!
//! Policy changes are rare next to flows: each keeps a copy of the set before
//! it (the policies are shared, only the maps are copied), for a retention the
//! caller sets to the longest a flow is held. Off (no retention) by default,
//! for the commands that judge the state as it is now.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::admin_policies::AdminPolicies;
use super::policy_index::PolicyIndex;

/// Most earlier sets kept, whatever the retention: bounds the memory of a
/// cluster whose policies change every few seconds.
const MAX_EARLIER_SETS: usize = 32;

/// One set of policies: every NetworkPolicy and every admin policy.
#[derive(Clone, Debug, Default)]
pub(crate) struct PolicySet {
    pub network: PolicyIndex,
    pub admin: AdminPolicies,
}

/// A set that was in effect until a change at `until` (in the state's time).
#[derive(Clone, Debug)]
struct Earlier {
    until: SystemTime,
    set: Arc<PolicySet>,
}

/// The current set and the earlier ones kept.
#[derive(Clone, Debug, Default)]
pub(crate) struct PolicyHistory {
    current: PolicySet,
    /// Oldest first; each was in effect from the one before's `until`.
    earlier: VecDeque<Earlier>,
    retention: Duration,
}

impl PolicyHistory {
    pub fn current(&self) -> &PolicySet {
        &self.current
    }

    /// The set in effect at `at`: the current one unless a change came after
    /// `at`. Before the oldest set kept, the oldest set kept.
    pub fn at(&self, at: SystemTime) -> &PolicySet {
        match self.earlier.back() {
            Some(last) if at < last.until => {
                let i = self.earlier.partition_point(|e| e.until <= at);
                &self.earlier[i].set
            }
            _ => &self.current,
        }
    }

    /// Whether the set in effect at `at` is the current one.
    pub fn is_current_at(&self, at: SystemTime) -> bool {
        self.earlier.back().is_none_or(|last| at >= last.until)
    }

    /// Keeps earlier sets for `retention` after they ended (zero: none).
    pub fn set_retention(&mut self, retention: Duration) {
        self.retention = retention;
        if retention.is_zero() {
            self.earlier.clear();
        }
    }

    /// How many earlier sets are kept.
    pub fn earlier_count(&self) -> usize {
        self.earlier.len()
    }

    /// The current set, to change at `now`: the set before the change is kept
    /// (once per instant: changes at the same time make one change).
    pub fn change(&mut self, now: SystemTime) -> &mut PolicySet {
        if !self.retention.is_zero() && self.earlier.back().is_none_or(|e| e.until < now) {
            self.earlier.push_back(Earlier {
                until: now,
                set: Arc::new(self.current.clone()),
            });
            self.prune(now);
        }
        &mut self.current
    }

    /// Forgets the sets that ended more than the retention before `now`, and
    /// the oldest beyond the bound.
    pub fn prune(&mut self, now: SystemTime) {
        while self.earlier.len() > MAX_EARLIER_SETS
            || self.earlier.front().is_some_and(|e| {
                e.until
                    .checked_add(self.retention)
                    .is_some_and(|end| end <= now)
            })
        {
            self.earlier.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NetworkPolicy, PolicyKey};
    use std::time::UNIX_EPOCH;

    fn policy(name: &str) -> Arc<NetworkPolicy> {
        Arc::new(NetworkPolicy {
            key: PolicyKey::network_policy("default", name),
            pod_selector: Default::default(),
            ingress: Some(Vec::new()),
            egress: None,
        })
    }

    fn names(set: &PolicySet) -> Vec<String> {
        let mut names: Vec<_> = set
            .network
            .iter()
            .map(|p| p.key.name().to_string())
            .collect();
        names.sort();
        names
    }

    fn secs(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn a_time_before_a_change_sees_the_set_before_it() {
        let mut h = PolicyHistory::default();
        h.set_retention(Duration::from_secs(60));
        h.change(secs(10)).network.insert(policy("a"));
        h.change(secs(20)).network.insert(policy("b"));
        // Two changes at the same instant make one.
        h.change(secs(20)).network.insert(policy("c"));
        assert_eq!(names(h.at(secs(5))), Vec::<String>::new());
        assert_eq!(names(h.at(secs(10))), ["a"]);
        assert_eq!(names(h.at(secs(19))), ["a"]);
        assert_eq!(names(h.at(secs(20))), ["a", "b", "c"]);
        assert_eq!(names(h.at(secs(99))), ["a", "b", "c"]);
        assert!(!h.is_current_at(secs(19)));
        assert!(h.is_current_at(secs(20)));
        assert_eq!(h.earlier_count(), 2);
        let removed = h
            .change(secs(30))
            .network
            .remove(&PolicyKey::network_policy("default", "a"));
        assert!(removed.is_some());
        assert_eq!(names(h.at(secs(25))), ["a", "b", "c"]);
        assert_eq!(names(h.at(secs(30))), ["b", "c"]);
    }

    #[test]
    fn earlier_sets_go_after_the_retention_and_beyond_the_bound() {
        let mut h = PolicyHistory::default();
        h.set_retention(Duration::from_secs(60));
        h.change(secs(10)).network.insert(policy("a"));
        h.change(secs(20)).network.insert(policy("b"));
        h.prune(secs(75));
        // The empty set ended at 10 (gone at 70); the set of `a` ended at 20.
        assert_eq!(h.earlier_count(), 1);
        assert_eq!(names(h.at(secs(0))), ["a"], "the oldest kept stands in");
        for i in 0..100 {
            h.change(secs(100 + i));
        }
        assert_eq!(h.earlier_count(), MAX_EARLIER_SETS);
    }

    #[test]
    fn without_retention_only_the_current_set_is_kept() {
        let mut h = PolicyHistory::default();
        h.change(secs(10)).network.insert(policy("a"));
        assert_eq!(h.earlier_count(), 0);
        assert_eq!(names(h.at(secs(0))), ["a"]);
    }
}
