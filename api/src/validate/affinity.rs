//! `spec.affinity`: operators with the values they need, weights of 1 to 100, topology keys
//! that are label keys, and selectors that parse. Every error names its field.

use super::{check_label_key, Errors};
use crate::objects::{
    requirement_error, Affinity, NodeSelectorTerm, PodAffinity, TopologySpreadConstraint,
};
use crate::selector::Selector;

pub(super) fn affinity(e: &mut Errors, path: &str, a: &Affinity) {
    if let Some(n) = &a.node_affinity {
        let p = format!("{path}.nodeAffinity");
        if let Some(req) = &n.required_during_scheduling_ignored_during_execution {
            let rp = format!("{p}.requiredDuringSchedulingIgnoredDuringExecution");
            if req.node_selector_terms.is_empty() {
                e.add(
                    format!("{rp}.nodeSelectorTerms"),
                    "must have at least one term",
                );
            }
            for (i, t) in req.node_selector_terms.iter().enumerate() {
                term(e, &format!("{rp}.nodeSelectorTerms[{i}]"), t);
            }
        }
        let pp = format!("{p}.preferredDuringSchedulingIgnoredDuringExecution");
        for (i, w) in n
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .enumerate()
        {
            weight(e, &format!("{pp}[{i}].weight"), w.weight);
            term(e, &format!("{pp}[{i}].preference"), &w.preference);
        }
    }
    if let Some(pa) = &a.pod_affinity {
        pod_terms(e, &format!("{path}.podAffinity"), pa);
    }
    if let Some(pa) = &a.pod_anti_affinity {
        pod_terms(e, &format!("{path}.podAntiAffinity"), pa);
    }
}

pub(super) fn spread(e: &mut Errors, path: &str, constraints: &[TopologySpreadConstraint]) {
    for (i, c) in constraints.iter().enumerate() {
        let p = format!("{path}.topologySpreadConstraints[{i}]");
        if c.max_skew < 1 {
            e.add(
                format!("{p}.maxSkew"),
                format!("must be >= 1, got {}", c.max_skew),
            );
        }
        if c.topology_key.is_empty() {
            e.add(format!("{p}.topologyKey"), "must not be empty");
        } else {
            e.check(format!("{p}.topologyKey"), check_label_key(&c.topology_key));
        }
        e.one_of(
            &format!("{p}.whenUnsatisfiable"),
            Some(c.when_unsatisfiable.as_str()),
            &["DoNotSchedule", "ScheduleAnyway"],
        );
        if let Some(m) = c.min_domains {
            if m < 1 {
                e.add(format!("{p}.minDomains"), format!("must be >= 1, got {m}"));
            } else if c.when_unsatisfiable != "DoNotSchedule" {
                e.add(
                    format!("{p}.minDomains"),
                    "may only be set with whenUnsatisfiable: DoNotSchedule",
                );
            }
        }
        if let Some(sel) = &c.label_selector {
            if let Err(err) = Selector::from_label_selector(sel) {
                e.add(format!("{p}.labelSelector"), err.to_string());
            }
        }
    }
}

fn weight(e: &mut Errors, path: &str, w: i32) {
    if !(1..=100).contains(&w) {
        e.add(path, format!("must be between 1 and 100, got {w}"));
    }
}

pub(super) fn term(e: &mut Errors, path: &str, t: &NodeSelectorTerm) {
    for (i, r) in t.match_expressions.iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        e.check(format!("{p}.key"), check_label_key(&r.key));
        if let Some(m) = requirement_error(r) {
            e.add(format!("{p}.operator"), m);
        }
    }
    for (i, r) in t.match_fields.iter().enumerate() {
        let p = format!("{path}.matchFields[{i}]");
        if r.key != "metadata.name" {
            e.add(
                format!("{p}.key"),
                format!("{:?} is not supported: only metadata.name", r.key),
            );
        }
        if !matches!(r.operator.as_str(), "In" | "NotIn") || r.values.len() != 1 {
            e.add(
                format!("{p}.operator"),
                "must be In or NotIn with exactly one value",
            );
        }
    }
}

fn pod_terms(e: &mut Errors, path: &str, pa: &PodAffinity) {
    let mut terms = Vec::new();
    for (i, t) in pa
        .required_during_scheduling_ignored_during_execution
        .iter()
        .enumerate()
    {
        terms.push((
            format!("{path}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
            t,
        ));
    }
    for (i, w) in pa
        .preferred_during_scheduling_ignored_during_execution
        .iter()
        .enumerate()
    {
        let p = format!("{path}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        weight(e, &format!("{p}.weight"), w.weight);
        terms.push((format!("{p}.podAffinityTerm"), &w.pod_affinity_term));
    }
    for (p, t) in terms {
        if t.topology_key.is_empty() {
            e.add(format!("{p}.topologyKey"), "must not be empty");
        } else {
            e.check(format!("{p}.topologyKey"), check_label_key(&t.topology_key));
        }
        if let Some(sel) = &t.label_selector {
            if let Err(err) = Selector::from_label_selector(sel) {
                e.add(format!("{p}.labelSelector"), err.to_string());
            }
        }
    }
}
