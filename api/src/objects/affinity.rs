//! `spec.affinity`: where a pod may go by its node's labels (node affinity) and by the pods
//! already running near it (pod affinity and anti-affinity), as rules it requires and as
//! preferences with weights. The scheduler reads these; the matching itself lives here, beside
//! the types, so validation and scheduling agree on what a term means.

use crate::selector::LabelSelector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_affinity: Option<PodAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_anti_affinity: Option<PodAffinity>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAffinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_during_scheduling_ignored_during_execution: Vec<PreferredSchedulingTerm>,
}

/// Terms joined by OR: a node matches when one of them does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    #[serde(default)]
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

/// Requirements joined by AND, over the node's labels (`matchExpressions`) and its name
/// (`matchFields` on `metadata.name`, the one field Kubernetes allows there).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<NodeSelectorRequirement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_fields: Vec<NodeSelectorRequirement>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorRequirement {
    pub key: String,
    /// In, NotIn, Exists, DoesNotExist, Gt, Lt.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreferredSchedulingTerm {
    /// 1 to 100.
    pub weight: i32,
    pub preference: NodeSelectorTerm,
}

/// `podAffinity` and `podAntiAffinity` have the same shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodAffinity {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_during_scheduling_ignored_during_execution: Vec<PodAffinityTerm>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_during_scheduling_ignored_during_execution: Vec<WeightedPodAffinityTerm>,
}

/// Pods matching `labelSelector` in `namespaces` (the pod's own when empty), counted per
/// topology domain: the nodes sharing a value of the label `topologyKey`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodAffinityTerm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    pub topology_key: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedPodAffinityTerm {
    /// 1 to 100.
    pub weight: i32,
    pub pod_affinity_term: PodAffinityTerm,
}

/// `spec.topologySpreadConstraints[]`: how unevenly the pods `labelSelector` selects (in the
/// pod's namespace) may be spread over the domains of `topologyKey`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopologySpreadConstraint {
    /// The most the count in one domain may exceed the smallest count (at least 1).
    pub max_skew: i32,
    pub topology_key: String,
    /// `DoNotSchedule` (a filter) or `ScheduleAnyway` (a preference).
    pub when_unsatisfiable: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// With fewer eligible domains than this, the smallest count is taken as 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_domains: Option<i32>,
}

/// Why a requirement is not well-formed, or `None`.
pub fn requirement_error(r: &NodeSelectorRequirement) -> Option<String> {
    let n = r.values.len();
    match r.operator.as_str() {
        "In" | "NotIn" if n == 0 => Some(format!("operator {} needs values", r.operator)),
        "Exists" | "DoesNotExist" if n > 0 => {
            Some(format!("operator {} takes no values", r.operator))
        }
        "Gt" | "Lt" if n != 1 || r.values[0].parse::<i64>().is_err() => Some(format!(
            "operator {} takes exactly one integer value",
            r.operator
        )),
        "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => None,
        other => Some(format!(
            "operator {other:?} must be one of In, NotIn, Exists, DoesNotExist, Gt, Lt"
        )),
    }
}

impl NodeSelectorRequirement {
    /// Whether `value` (the label's, or the node's name for a field) satisfies this.
    pub fn matches(&self, value: Option<&str>) -> bool {
        let number = |s: &str| s.parse::<i64>().ok();
        let bound = self.values.first().and_then(|v| number(v));
        match self.operator.as_str() {
            "In" => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            "NotIn" => !value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" => matches!((value.and_then(number), bound), (Some(v), Some(b)) if v > b),
            "Lt" => matches!((value.and_then(number), bound), (Some(v), Some(b)) if v < b),
            _ => false,
        }
    }
}

impl NodeSelectorTerm {
    /// All of the term's requirements hold for a node with these labels and this name. A term
    /// with no requirements matches no node, as in Kubernetes.
    pub fn matches(&self, labels: &BTreeMap<String, String>, name: &str) -> bool {
        if self.match_expressions.is_empty() && self.match_fields.is_empty() {
            return false;
        }
        self.match_expressions
            .iter()
            .all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
            && self
                .match_fields
                .iter()
                .all(|r| r.key == "metadata.name" && r.matches(Some(name)))
    }
}

impl NodeSelector {
    /// One of the terms matches.
    pub fn matches(&self, labels: &BTreeMap<String, String>, name: &str) -> bool {
        self.node_selector_terms
            .iter()
            .any(|t| t.matches(labels, name))
    }
}

impl PodAffinityTerm {
    /// Whether a pod in `namespace` with `labels` is one this term counts, for a pod in
    /// `own_namespace`. A missing selector matches no pod.
    pub fn selects(
        &self,
        own_namespace: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let in_scope = if self.namespaces.is_empty() {
            namespace == own_namespace
        } else {
            self.namespaces.iter().any(|n| n == namespace)
        };
        in_scope
            && self
                .label_selector
                .as_ref()
                .is_some_and(|s| s.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn node_requirements_follow_kubernetes_operators() {
        let cases = [
            (req("zone", "In", &["a", "b"]), Some("a"), true),
            (req("zone", "In", &["a", "b"]), None, false),
            (req("zone", "NotIn", &["a"]), Some("b"), true),
            (req("zone", "NotIn", &["a"]), None, true),
            (req("zone", "Exists", &[]), Some(""), true),
            (req("zone", "DoesNotExist", &[]), Some("a"), false),
            (req("cores", "Gt", &["4"]), Some("8"), true),
            (req("cores", "Gt", &["4"]), Some("4"), false),
            (req("cores", "Lt", &["4"]), Some("2"), true),
            (req("cores", "Lt", &["4"]), Some("x"), false),
            (req("cores", "Gt", &["4"]), None, false),
        ];
        for (r, value, want) in cases {
            assert_eq!(r.matches(value), want, "{r:?} on {value:?}");
        }
        assert!(requirement_error(&req("k", "In", &[])).is_some());
        assert!(requirement_error(&req("k", "Exists", &["a"])).is_some());
        assert!(requirement_error(&req("k", "Gt", &["a"])).is_some());
        assert!(requirement_error(&req("k", "Near", &["a"])).is_some());
        assert!(requirement_error(&req("k", "Lt", &["3"])).is_none());
    }

    #[test]
    fn terms_are_and_selectors_are_or_and_an_empty_term_matches_nothing() {
        let labels: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())]
            .into_iter()
            .collect();
        let term = |exprs: Vec<NodeSelectorRequirement>, fields| NodeSelectorTerm {
            match_expressions: exprs,
            match_fields: fields,
        };
        let zone_a = term(vec![req("zone", "In", &["a"])], vec![]);
        let named = term(vec![], vec![req("metadata.name", "In", &["n1"])]);
        let both = term(
            vec![req("zone", "In", &["a"])],
            vec![req("metadata.name", "In", &["n2"])],
        );
        assert!(zone_a.matches(&labels, "n1"));
        assert!(named.matches(&labels, "n1") && !named.matches(&labels, "n2"));
        assert!(!both.matches(&labels, "n1"), "AND within a term");
        assert!(!NodeSelectorTerm::default().matches(&labels, "n1"));
        let sel = NodeSelector {
            node_selector_terms: vec![both, named],
        };
        assert!(sel.matches(&labels, "n1"), "OR across terms");
        assert!(!sel.matches(&BTreeMap::new(), "n3"));
    }
}
