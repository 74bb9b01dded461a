//! Affinity in the scheduler, as the kube-scheduler's NodeAffinity and InterPodAffinity
//! plugins decide it: required node affinity and required pod (anti-)affinity filter nodes,
//! preferred terms add or take away their weights. A topology domain is the set of nodes that
//! share a value of the term's `topologyKey` label (`kubernetes.io/hostname`: one node each).

use shoal_api::{Node, Pod, PodAffinityTerm};
use std::collections::BTreeMap;

/// What affinity needs to know of a pod already placed.
pub(super) struct Placed {
    pub node: usize,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Its required anti-affinity terms: a new pod they select is kept out of its domain.
    pub anti: Vec<PodAffinityTerm>,
}

impl Placed {
    pub fn new(pod: &Pod, node: usize) -> Self {
        let anti = pod
            .spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .map(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default();
        Placed {
            node,
            namespace: pod.metadata.namespace_or_default().to_string(),
            labels: pod.metadata.labels.clone(),
            anti,
        }
    }
}

/// Why a node fails the pod's affinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum AffinityMisfit {
    Node,
    Pod,
    AntiPod,
    ExistingAntiPod,
    Spread,
    SpreadLabel,
}

impl AffinityMisfit {
    pub fn describe(self) -> &'static str {
        match self {
            AffinityMisfit::Node => "node(s) didn't match Pod's node affinity",
            AffinityMisfit::Pod => "node(s) didn't match pod affinity rules",
            AffinityMisfit::AntiPod => "node(s) didn't match pod anti-affinity rules",
            AffinityMisfit::ExistingAntiPod => {
                "node(s) didn't satisfy existing pods anti-affinity rules"
            }
            AffinityMisfit::Spread => "node(s) didn't match pod topology spread constraints",
            AffinityMisfit::SpreadLabel => {
                "node(s) didn't match pod topology spread constraints (missing required label)"
            }
        }
    }
}

/// The nodes and the placed pods, as one decision sees them.
pub(super) struct View<'s> {
    pub nodes: &'s [&'s Node],
    pub placed: &'s [Placed],
}

impl View<'_> {
    /// The value of `key` on node `i`.
    pub(super) fn domain(&self, i: usize, key: &str) -> Option<&str> {
        self.nodes[i].metadata.labels.get(key).map(String::as_str)
    }

    /// Whether a pod `term` counts (for a pod in `namespace`) runs in node `i`'s domain.
    fn near(&self, term: &PodAffinityTerm, namespace: &str, i: usize) -> bool {
        let Some(value) = self.domain(i, &term.topology_key) else {
            return false;
        };
        self.placed.iter().any(|p| {
            self.domain(p.node, &term.topology_key) == Some(value)
                && term.selects(namespace, &p.namespace, &p.labels)
        })
    }

    /// The required rules, for node `i`.
    pub fn fits(&self, pod: &Pod, i: usize) -> Result<(), AffinityMisfit> {
        let node = self.nodes[i];
        let affinity = pod.spec.affinity.as_ref();
        let namespace = pod.metadata.namespace_or_default();
        let required_nodes = affinity
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        if required_nodes.is_some_and(|r| !r.matches(&node.metadata.labels, &node.metadata.name)) {
            return Err(AffinityMisfit::Node);
        }
        let required = |a: Option<&shoal_api::PodAffinity>| {
            a.map(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_slice()
            })
            .unwrap_or(&[])
            .to_vec()
        };
        for term in required(affinity.and_then(|a| a.pod_affinity.as_ref())) {
            if self.near(&term, namespace, i) {
                continue;
            }
            // The first of a group that wants to be together may go anywhere its own term
            // allows: no pod anywhere matches yet, and it matches itself.
            let first = self.domain(i, &term.topology_key).is_some()
                && !self
                    .placed
                    .iter()
                    .any(|p| term.selects(namespace, &p.namespace, &p.labels))
                && term.selects(namespace, namespace, &pod.metadata.labels);
            if !first {
                return Err(AffinityMisfit::Pod);
            }
        }
        for term in required(affinity.and_then(|a| a.pod_anti_affinity.as_ref())) {
            if self.near(&term, namespace, i) {
                return Err(AffinityMisfit::AntiPod);
            }
        }
        // Anti-affinity is symmetric: a placed pod's required term keeps this pod out of
        // its domain when the term selects this pod.
        for p in self.placed {
            for term in &p.anti {
                let same = self
                    .domain(i, &term.topology_key)
                    .is_some_and(|v| self.domain(p.node, &term.topology_key) == Some(v));
                if same && term.selects(&p.namespace, namespace, &pod.metadata.labels) {
                    return Err(AffinityMisfit::ExistingAntiPod);
                }
            }
        }
        Ok(())
    }

    /// The preferred rules' weights for node `i`: node preferences and pod affinity add,
    /// pod anti-affinity takes away.
    pub fn score(&self, pod: &Pod, i: usize) -> i64 {
        let Some(affinity) = pod.spec.affinity.as_ref() else {
            return 0;
        };
        let node = self.nodes[i];
        let namespace = pod.metadata.namespace_or_default();
        let mut score = 0i64;
        if let Some(n) = &affinity.node_affinity {
            for w in &n.preferred_during_scheduling_ignored_during_execution {
                if w.preference
                    .matches(&node.metadata.labels, &node.metadata.name)
                {
                    score += i64::from(w.weight);
                }
            }
        }
        let preferred = |a: Option<&shoal_api::PodAffinity>| {
            a.map(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default()
        };
        for w in preferred(affinity.pod_affinity.as_ref()) {
            if self.near(&w.pod_affinity_term, namespace, i) {
                score += i64::from(w.weight);
            }
        }
        for w in preferred(affinity.pod_anti_affinity.as_ref()) {
            if self.near(&w.pod_affinity_term, namespace, i) {
                score -= i64::from(w.weight);
            }
        }
        score
    }
}

#[cfg(test)]
mod tests {
    use super::super::Snapshot;
    use shoal_api::*;

    fn node(name: &str, zone: &str) -> Node {
        let ready = Condition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        };
        Node {
            metadata: ObjectMeta {
                name: name.into(),
                labels: [
                    ("kubernetes.io/hostname".to_string(), name.to_string()),
                    ("zone".to_string(), zone.to_string()),
                    ("cores".to_string(), name.len().to_string()),
                ]
                .into(),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: vec![ready],
                runtime_handlers: vec![RuntimeHandler {
                    name: "wasm".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A wasm pod with `app` as its label and `affinity` (JSON) as its affinity.
    fn pod(name: &str, app: &str, affinity: serde_json::Value) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: name.into(),
                uid: format!("uid-{name}"),
                labels: [("app".to_string(), app.to_string())].into(),
                ..Default::default()
            },
            spec: PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: "x".into(),
                    ..Default::default()
                }],
                runtime_class_name: Some("wasm".into()),
                affinity: serde_json::from_value(affinity).expect("affinity"),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn anti(app: &str, key: &str) -> serde_json::Value {
        serde_json::json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}})
    }

    /// Schedules `pods` one after another, each seeing those placed before it.
    fn place(nodes: &[Node], bound: &[(Pod, &str)], pods: &[Pod]) -> Vec<Result<String, String>> {
        let mut snapshot = Snapshot::new(nodes, &[]);
        for (p, n) in bound {
            snapshot.assume(p, n);
        }
        pods.iter()
            .map(|p| {
                let r = snapshot.schedule(p);
                if let Ok(n) = &r {
                    snapshot.assume(p, n);
                }
                r
            })
            .collect()
    }

    #[test]
    fn required_anti_affinity_puts_one_replica_per_node_and_names_the_rule_for_the_rest() {
        let nodes = [node("n1", "a"), node("n2", "a"), node("n3", "b")];
        let web: Vec<Pod> = (0..4)
            .map(|i| {
                pod(
                    &format!("web-{i}"),
                    "web",
                    anti("web", "kubernetes.io/hostname"),
                )
            })
            .collect();
        let got = place(&nodes, &[], &web);
        let mut placed: Vec<&str> = got[..3].iter().map(|r| r.as_deref().unwrap()).collect();
        placed.sort();
        assert_eq!(placed, ["n1", "n2", "n3"]);
        assert_eq!(
            got[3],
            Err("0/3 nodes available: 3 node(s) didn't match pod anti-affinity rules".into())
        );
        // Per zone: two zones, two replicas.
        let zonal: Vec<Pod> = (0..3)
            .map(|i| pod(&format!("z-{i}"), "z", anti("z", "zone")))
            .collect();
        let got = place(&nodes, &[], &zonal);
        assert!(
            got[0].is_ok() && got[1].is_ok() && got[2].is_err(),
            "{got:?}"
        );
    }

    #[test]
    fn node_affinity_filters_with_every_operator_and_preferences_weigh() {
        let nodes = [node("n1", "a"), node("node2", "b"), node("node-3", "c")];
        let required = |expr: serde_json::Value| {
            pod(
                "p",
                "x",
                serde_json::json!({"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [expr]}]}}}),
            )
        };
        let cases = [
            (
                serde_json::json!({"key": "zone", "operator": "In", "values": ["b"]}),
                Ok("node2"),
            ),
            (
                serde_json::json!({"key": "zone", "operator": "NotIn", "values": ["a", "b"]}),
                Ok("node-3"),
            ),
            (
                serde_json::json!({"key": "cores", "operator": "Gt", "values": ["5"]}),
                Ok("node-3"),
            ),
            (
                serde_json::json!({"key": "cores", "operator": "Lt", "values": ["3"]}),
                Ok("n1"),
            ),
            (
                serde_json::json!({"key": "gpu", "operator": "Exists"}),
                Err(()),
            ),
            (
                serde_json::json!({"key": "gpu", "operator": "DoesNotExist"}),
                Ok("n1"),
            ),
        ];
        for (expr, want) in cases {
            let got = place(&nodes, &[], &[required(expr.clone())]).remove(0);
            match want {
                Ok(n) => assert_eq!(got.as_deref(), Ok(n), "{expr}"),
                Err(()) => assert_eq!(
                    got,
                    Err("0/3 nodes available: 3 node(s) didn't match Pod's node affinity".into()),
                    "{expr}"
                ),
            }
        }
        // A preference outweighs spreading: both go to zone c.
        let prefers_c = || {
            pod(
                "p",
                "x",
                serde_json::json!({"nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "preference":
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["c"]}]}}]}}),
            )
        };
        let got = place(&nodes, &[], &[prefers_c(), prefers_c()]);
        assert_eq!(got, [Ok("node-3".to_string()), Ok("node-3".to_string())]);
    }

    #[test]
    fn pod_affinity_follows_its_peers_and_anti_affinity_is_symmetric() {
        let nodes = [node("n1", "a"), node("n2", "b"), node("n3", "b")];
        let db = pod("db", "db", serde_json::Value::Null);
        let with_db = |name: &str, app: &str| {
            pod(
                name,
                app,
                serde_json::json!({"podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}),
            )
        };
        // With the db on n2 (zone b), the app goes to zone b: n2 or n3, spread to n3.
        let got = place(&nodes, &[(db.clone(), "n2")], &[with_db("app", "app")]);
        assert_eq!(got[0].as_deref(), Ok("n3"));
        // No db anywhere: refused, unless the pod is itself a db (the first of its group).
        let got = place(&nodes, &[], &[with_db("app", "app")]);
        assert_eq!(
            got[0],
            Err("0/3 nodes available: 3 node(s) didn't match pod affinity rules".into())
        );
        assert!(place(&nodes, &[], &[with_db("db-0", "db")])[0].is_ok());
        // A placed pod that keeps web away from its node keeps this web pod off n1.
        let guard = pod("guard", "guard", anti("web", "kubernetes.io/hostname"));
        let web = pod("web", "web", serde_json::Value::Null);
        let got = place(&nodes, &[(guard, "n1")], &[web.clone(), web.clone(), web]);
        assert!(got.iter().all(|r| r.as_deref() != Ok("n1")), "{got:?}");
        // Preferred anti-affinity weighs against a node with a matching pod.
        let shy = pod(
            "shy",
            "x",
            serde_json::json!({"podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm":
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]}}),
        );
        assert_eq!(place(&nodes, &[(db, "n2")], &[shy])[0].as_deref(), Ok("n1"));
    }

    fn spreading(app: &str, when: &str) -> serde_json::Value {
        serde_json::json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": {"app": app}}}])
    }

    fn spread_pod(name: &str, app: &str, when: &str) -> Pod {
        let mut p = pod(name, app, serde_json::Value::Null);
        p.spec.topology_spread_constraints =
            serde_json::from_value(spreading(app, when)).expect("constraints");
        p
    }

    #[test]
    fn topology_spread_keeps_the_skew_counts_only_eligible_domains_and_names_the_rule() {
        let nodes = [node("n1", "a"), node("n2", "a"), node("n3", "b")];
        let zone = |n: &str| if n == "n3" { "b" } else { "a" };
        let four: Vec<Pod> = (0..4)
            .map(|i| spread_pod(&format!("s-{i}"), "s", "DoNotSchedule"))
            .collect();
        let got = place(&nodes, &[], &four);
        let in_b = got
            .iter()
            .filter(|r| r.as_deref().is_ok_and(|n| zone(n) == "b"))
            .count();
        assert_eq!(in_b, 2, "two per zone: {got:?}");

        // Zone b's only node is down: its domain still counts, with 0, so a third pod in
        // zone a would make the skew 3.
        let mut down = nodes.clone();
        if let Some(st) = down[2].status.as_mut() {
            st.conditions[0].status = "False".into();
        }
        let bound = [
            (spread_pod("b-0", "s", "DoNotSchedule"), "n1"),
            (spread_pod("b-1", "s", "DoNotSchedule"), "n2"),
        ];
        let got = place(&down, &bound, &[spread_pod("s", "s", "DoNotSchedule")]);
        assert_eq!(
            got[0],
            Err("0/3 nodes available: 2 node(s) didn't match pod topology spread constraints, 1 node(s) were not ready".into())
        );
        // Restricted to zone a by its nodeSelector, zone b is not one of its domains.
        let mut only_a = spread_pod("s", "s", "DoNotSchedule");
        only_a.spec.node_selector = [("zone".to_string(), "a".to_string())].into();
        assert!(place(&down, &bound, &[only_a])[0].is_ok());
        // A node without the key cannot take a DoNotSchedule pod.
        let mut bare = node("n4", "c");
        bare.metadata.labels.remove("zone");
        let got = place(&[bare], &[], &[spread_pod("s", "s", "DoNotSchedule")]);
        assert_eq!(
            got[0],
            Err("0/1 nodes available: 1 node(s) didn't match pod topology spread constraints (missing required label)".into())
        );
        // ScheduleAnyway: zone b, the emptier, over n1, which ties with n3 on all else.
        let bound = [(spread_pod("b-0", "s", "ScheduleAnyway"), "n2")];
        let got = place(&nodes, &bound, &[spread_pod("s", "s", "ScheduleAnyway")]);
        assert_eq!(got[0].as_deref(), Ok("n3"));
    }
}
