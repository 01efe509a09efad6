//! Per-policy verdict counters: which policies allow and deny the traffic
//! this node sees, for `netverdict_collector_policy_verdicts_total`.
//!
//! Each flow record of account credits, for each direction a tier decided:
//! - allowed by NetworkPolicy: every policy with an allowing rule;
//! - denied by NetworkPolicy: every policy isolating the pod for the
//!   direction (a default-deny is counted under the policy that isolated it);
//! - allowed or denied by an admin tier: the policy of the deciding rule.
//!
//! Counts are connection attempts (a record's `count`). Policies are the
//! series' labels, so their number is capped: past the cap, a policy not yet
//! counted goes to one `_other` series, itself always present so that the
//! family is exposed before any flow. A policy counted once keeps its series
//! (counters never go back), deleted or not, until the collector restarts.

use netverdict_proto::names::EnumName;
use netverdict_proto::v1 as pb;
use rustc_hash::FxHashMap;

/// The default cap on policies with their own series.
pub const DEFAULT_MAX_POLICIES: usize = 1000;

/// The `policy` label of the series past the cap.
pub const OTHER_POLICY: &str = "_other";

/// Attempts by direction (egress, ingress) and verdict (allowed, denied).
pub type Counts = [[u64; 2]; 2];

/// The counters, keyed by namespace (empty for cluster-scoped kinds), name
/// and kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyVerdicts {
    by_namespace: FxHashMap<String, FxHashMap<String, Vec<(pb::PolicyKind, Counts)>>>,
    policies: usize,
    max_policies: usize,
    other: Counts,
}

impl Default for PolicyVerdicts {
    fn default() -> Self {
        PolicyVerdicts::with_cap(DEFAULT_MAX_POLICIES)
    }
}

/// One series: its labels and count.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series<'a> {
    pub namespace: &'a str,
    pub policy: &'a str,
    /// Kebab name (`network-policy`, `admin-network-policy`...), empty for `_other`.
    pub kind: &'static str,
    pub direction: &'static str,
    pub verdict: &'static str,
    pub attempts: u64,
}

const DIRECTIONS: [&str; 2] = ["egress", "ingress"];
const VERDICTS: [&str; 2] = ["allowed", "denied"];

impl PolicyVerdicts {
    /// Counters with their own series for at most `max_policies` policies.
    pub fn with_cap(max_policies: usize) -> Self {
        PolicyVerdicts {
            by_namespace: FxHashMap::default(),
            policies: 0,
            max_policies,
            other: Counts::default(),
        }
    }

    /// Policies with their own series.
    pub fn policies(&self) -> usize {
        self.policies
    }

    /// Credits the policies that decided `flow` (a record of account).
    pub fn count(&mut self, flow: &pb::Flow) {
        let attempts = flow.count.max(1);
        for (d, decision) in [&flow.egress, &flow.ingress].into_iter().enumerate() {
            let Some(decision) = decision else { continue };
            let verdict = match decision.status() {
                pb::PolicyStatus::Allowed => 0,
                pb::PolicyStatus::Denied => 1,
                _ => continue,
            };
            match decision.tier() {
                pb::PolicyTier::Admin => {
                    if let Some(p) = decision.admin_rule.as_ref().and_then(|r| r.policy.as_ref()) {
                        self.add(p, d, verdict, attempts);
                    }
                }
                pb::PolicyTier::Baseline => {
                    if let Some(p) = decision
                        .baseline_rule
                        .as_ref()
                        .and_then(|r| r.policy.as_ref())
                    {
                        self.add(p, d, verdict, attempts);
                    }
                }
                // NetworkPolicy (or a flow from before tiers).
                _ if verdict == 0 => {
                    let mut seen: Vec<&pb::PolicyRef> = Vec::new();
                    for p in decision.allowed_by.iter().filter_map(|r| r.policy.as_ref()) {
                        if !seen.contains(&p) {
                            seen.push(p);
                            self.add(p, d, verdict, attempts);
                        }
                    }
                }
                _ => {
                    for p in &decision.selected_by {
                        self.add(p, d, verdict, attempts);
                    }
                }
            }
        }
    }

    fn add(&mut self, policy: &pb::PolicyRef, direction: usize, verdict: usize, n: u64) {
        let kind = match policy.kind() {
            pb::PolicyKind::Unspecified => pb::PolicyKind::NetworkPolicy,
            kind => kind,
        };
        let slot = match self.by_namespace.get_mut(policy.namespace.as_str()) {
            Some(names) => match names.get_mut(policy.name.as_str()) {
                Some(kinds) => kinds.iter_mut().find(|(k, _)| *k == kind).map(|(_, c)| c),
                None => None,
            },
            None => None,
        };
        let counts = match slot {
            Some(counts) => counts,
            None if self.policies < self.max_policies => {
                self.policies += 1;
                let kinds = self
                    .by_namespace
                    .entry(policy.namespace.clone())
                    .or_default()
                    .entry(policy.name.clone())
                    .or_default();
                kinds.push((kind, Counts::default()));
                &mut kinds.last_mut().expect("just pushed").1
            }
            None => &mut self.other,
        };
        let cell = &mut counts[direction][verdict];
        *cell = cell.saturating_add(n);
    }

    /// Every series, sorted by labels; `_other` always has its four.
    pub fn series(&self) -> Vec<Series<'_>> {
        let mut out = Vec::new();
        let mut push = |namespace, policy, kind, counts: &Counts, all: bool| {
            for (d, direction) in DIRECTIONS.iter().enumerate() {
                for (v, verdict) in VERDICTS.iter().enumerate() {
                    if all || counts[d][v] > 0 {
                        out.push(Series {
                            namespace,
                            policy,
                            kind,
                            direction,
                            verdict,
                            attempts: counts[d][v],
                        });
                    }
                }
            }
        };
        for (namespace, names) in &self.by_namespace {
            for (name, kinds) in names {
                for (kind, counts) in kinds {
                    push(
                        namespace.as_str(),
                        name.as_str(),
                        kind.name(),
                        counts,
                        false,
                    );
                }
            }
        }
        push("", OTHER_POLICY, "", &self.other, true);
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(kind: pb::PolicyKind, namespace: &str, name: &str) -> pb::PolicyRef {
        pb::PolicyRef {
            namespace: namespace.into(),
            name: name.into(),
            kind: kind as i32,
            tier: 0,
        }
    }

    fn np(name: &str) -> pb::PolicyRef {
        policy(pb::PolicyKind::NetworkPolicy, "shop", name)
    }

    fn rule(p: pb::PolicyRef) -> pb::RuleRef {
        pb::RuleRef {
            policy: Some(p),
            ..Default::default()
        }
    }

    fn decision(status: pb::PolicyStatus, tier: pb::PolicyTier) -> pb::DirectionVerdict {
        pb::DirectionVerdict {
            status: status as i32,
            tier: tier as i32,
            ..Default::default()
        }
    }

    fn flow(count: u64, egress: pb::DirectionVerdict, ingress: pb::DirectionVerdict) -> pb::Flow {
        pb::Flow {
            count,
            egress: Some(egress),
            ingress: Some(ingress),
            ..Default::default()
        }
    }

    fn table(v: &PolicyVerdicts) -> Vec<String> {
        v.series()
            .into_iter()
            .filter(|s| s.attempts > 0)
            .map(|s| {
                format!(
                    "{}/{} {} {} {} {}",
                    s.namespace, s.policy, s.kind, s.direction, s.verdict, s.attempts
                )
            })
            .collect()
    }

    #[test]
    fn each_tier_credits_the_policies_that_decided() {
        let mut v = PolicyVerdicts::default();
        // Egress allowed by two rules of one policy and one of another;
        // ingress denied by NetworkPolicy: both isolating policies count.
        let mut egress = decision(pb::PolicyStatus::Allowed, pb::PolicyTier::NetworkPolicy);
        egress.allowed_by = vec![rule(np("a")), rule(np("a")), rule(np("b"))];
        let mut ingress = decision(pb::PolicyStatus::Denied, pb::PolicyTier::NetworkPolicy);
        ingress.selected_by = vec![np("default-deny"), np("web")];
        v.count(&flow(3, egress, ingress));
        // An admin Deny on egress, a baseline Allow on ingress, a pod no
        // policy selects (not counted).
        let mut egress = decision(pb::PolicyStatus::Denied, pb::PolicyTier::Admin);
        egress.admin_rule = Some(pb::AdminRuleRef {
            policy: Some(policy(pb::PolicyKind::AdminNetworkPolicy, "", "lockdown")),
            ..Default::default()
        });
        let mut ingress = decision(pb::PolicyStatus::Allowed, pb::PolicyTier::Baseline);
        ingress.baseline_rule = Some(pb::AdminRuleRef {
            policy: Some(policy(
                pb::PolicyKind::BaselineAdminNetworkPolicy,
                "",
                "default",
            )),
            ..Default::default()
        });
        v.count(&flow(1, egress, ingress));
        v.count(&flow(
            5,
            decision(pb::PolicyStatus::NotIsolated, pb::PolicyTier::Unspecified),
            decision(pb::PolicyStatus::NotIsolated, pb::PolicyTier::Unspecified),
        ));
        assert_eq!(
            table(&v),
            [
                "/default baseline-admin-network-policy ingress allowed 1",
                "/lockdown admin-network-policy egress denied 1",
                "shop/a network-policy egress allowed 3",
                "shop/b network-policy egress allowed 3",
                "shop/default-deny network-policy ingress denied 3",
                "shop/web network-policy ingress denied 3",
            ]
        );
        assert_eq!(v.policies(), 6);
    }

    #[test]
    fn past_the_cap_new_policies_count_as_other() {
        let mut v = PolicyVerdicts::with_cap(2);
        for name in ["a", "b", "c", "d", "a"] {
            let mut ingress = decision(pb::PolicyStatus::Denied, pb::PolicyTier::NetworkPolicy);
            ingress.selected_by = vec![np(name)];
            v.count(&flow(
                1,
                decision(pb::PolicyStatus::NotIsolated, pb::PolicyTier::Unspecified),
                ingress,
            ));
        }
        assert_eq!(
            table(&v),
            [
                "/_other  ingress denied 2",
                "shop/a network-policy ingress denied 2",
                "shop/b network-policy ingress denied 1",
            ]
        );
        // `_other` is always there, zero or not.
        let empty = PolicyVerdicts::default();
        assert_eq!(empty.series().len(), 4);
        assert!(empty.series().iter().all(|s| s.policy == OTHER_POLICY));
    }
}
