//! `topologySpreadConstraints`, as the kube-scheduler's PodTopologySpread plugin decides them:
//! the pods a constraint selects (in the pod's namespace) are counted per domain of its
//! `topologyKey`, over the nodes the pod could go to by its nodeSelector and required node
//! affinity. `DoNotSchedule` refuses a node whose domain would then exceed the smallest count
//! by more than `maxSkew`; `ScheduleAnyway` prefers the domains with fewer.

use super::affinity::{AffinityMisfit, View};
use shoal_api::{Pod, TopologySpreadConstraint};
use std::collections::HashMap;

/// The counts one decision needs: per constraint, the selected pods in each domain.
pub(super) struct Spread<'p> {
    constraints: Vec<(&'p TopologySpreadConstraint, HashMap<String, usize>)>,
    self_match: Vec<bool>,
}

impl<'p> Spread<'p> {
    pub fn new(view: &View<'_>, pod: &'p Pod) -> Spread<'p> {
        if pod.spec.topology_spread_constraints.is_empty() {
            return Spread {
                constraints: Vec::new(),
                self_match: Vec::new(),
            };
        }
        let namespace = pod.metadata.namespace_or_default();
        let eligible: Vec<bool> = (0..view.nodes.len())
            .map(|i| {
                let node = view.nodes[i];
                let labels = &node.metadata.labels;
                pod.spec
                    .node_selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
                    && pod
                        .spec
                        .affinity
                        .as_ref()
                        .and_then(|a| a.node_affinity.as_ref())
                        .and_then(|n| {
                            n.required_during_scheduling_ignored_during_execution
                                .as_ref()
                        })
                        .is_none_or(|r| r.matches(labels, &node.metadata.name))
            })
            .collect();
        let selects = |c: &TopologySpreadConstraint, ns: &str, labels| {
            ns == namespace && c.label_selector.as_ref().is_some_and(|s| s.matches(labels))
        };
        let mut constraints = Vec::new();
        let mut self_match = Vec::new();
        for c in &pod.spec.topology_spread_constraints {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for (i, ok) in eligible.iter().enumerate() {
                if let (true, Some(v)) = (ok, view.domain(i, &c.topology_key)) {
                    counts.entry(v.to_string()).or_default();
                }
            }
            for p in view.placed.iter().filter(|p| eligible[p.node]) {
                if let Some(v) = view.domain(p.node, &c.topology_key) {
                    if selects(c, &p.namespace, &p.labels) {
                        *counts.entry(v.to_string()).or_default() += 1;
                    }
                }
            }
            self_match.push(selects(c, namespace, &pod.metadata.labels));
            constraints.push((c, counts));
        }
        Spread {
            constraints,
            self_match,
        }
    }

    /// The `DoNotSchedule` constraints, for node `i`.
    pub fn fits(&self, view: &View<'_>, i: usize) -> Result<(), AffinityMisfit> {
        for ((c, counts), own) in self.constraints.iter().zip(&self.self_match) {
            if c.when_unsatisfiable != "DoNotSchedule" {
                continue;
            }
            let Some(domain) = view.domain(i, &c.topology_key) else {
                return Err(AffinityMisfit::SpreadLabel);
            };
            let too_few_domains = c
                .min_domains
                .is_some_and(|m| counts.len() < usize::try_from(m).unwrap_or(usize::MAX));
            let min = match too_few_domains {
                true => 0,
                false => counts.values().copied().min().unwrap_or(0),
            };
            let here = counts.get(domain).copied().unwrap_or(0) + usize::from(*own);
            if here.saturating_sub(min) > usize::try_from(c.max_skew).unwrap_or(0) {
                return Err(AffinityMisfit::Spread);
            }
        }
        Ok(())
    }

    /// The `ScheduleAnyway` constraints' preference for node `i`: fewer selected pods in its
    /// domains is better (a node without the key counts as the fullest).
    pub fn score(&self, view: &View<'_>, i: usize) -> i64 {
        let mut score = 0i64;
        for (c, counts) in &self.constraints {
            if c.when_unsatisfiable != "ScheduleAnyway" {
                continue;
            }
            let fullest = counts.values().copied().max().unwrap_or(0) + 1;
            let here = view
                .domain(i, &c.topology_key)
                .map_or(fullest, |d| counts.get(d).copied().unwrap_or(0));
            score -= i64::try_from(here).unwrap_or(i64::MAX);
        }
        score
    }
}
