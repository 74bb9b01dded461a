//! The scheduler's decision: which node a pending pod goes to, or why none fits. A pure function
//! of the pod, the nodes and the pods already bound, so it is tested with tables; the loop that
//! feeds it and writes bindings is in `scheduler_loop.rs`.
//!
//! Filters: node Ready and schedulable, runtime available, the node's platform among those of
//! the pod's container images, nodeSelector, taints and tolerations, cpu/memory/pod-count
//! requests within allocatable, host ports free, required node affinity and pod
//! (anti-)affinity (`affinity.rs`), `DoNotSchedule` topology spread constraints (`spread.rs`).
//! Scoring: the preferred affinity terms' weights first, then `ScheduleAnyway` spread, then
//! fewest pods of the same owner, then least allocated.

mod affinity;
mod extended;
mod spread;
pub mod volumes;

use affinity::{AffinityMisfit, Placed, View};
use shoal_api::{Node, Pod, Quantity, Taint, Toleration};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The runtime a pod needs: `wasm`, or `runc` when unset.
pub fn runtime_of(pod: &Pod) -> &str {
    runtime_of_spec(&pod.spec)
}

pub fn runtime_of_spec(spec: &shoal_api::PodSpec) -> &str {
    spec.runtime_class_name.as_deref().unwrap_or("runc")
}

/// Requests of a pod (cpu millicores, memory bytes), as Kubernetes counts them: its
/// containers' and sidecars' summed, or the peak of its init sequence if that is more (init
/// containers run one at a time, beside the sidecars started before them).
pub fn requests(pod: &Pod) -> (i128, i128) {
    let sum = pod.spec.effective_requests(|c| {
        [
            ("cpu", c.resources.request("cpu").map(Quantity::milli_value)),
            ("memory", c.resources.request("memory").map(Quantity::value)),
        ]
        .into_iter()
        .filter_map(|(k, n)| Some((k, n?)))
        .collect()
    });
    let get = |k| sum.get(k).copied().unwrap_or(0);
    (get("cpu"), get("memory"))
}

/// The node ports a pod takes: its hostPorts and, for a pod on the node's own network (wasm
/// pods, hostNetwork pods), every containerPort, as Kubernetes defaults hostPort then.
fn host_ports(pod: &Pod) -> impl Iterator<Item = (i32, String)> + '_ {
    let node_network = pod.uses_node_network();
    pod.spec.long_running().flat_map(move |c| {
        c.ports.iter().filter_map(move |p| {
            p.host_port
                .or(node_network.then_some(p.container_port))
                .map(|hp| (hp, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
        })
    })
}

pub fn node_ready(node: &Node) -> bool {
    node.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.is_true())
    })
}

/// A node whose agent said it is restarting (a stop that leaves its pods running): Ready, as
/// its pods run on, but no place for new ones until it is back.
fn restarting(node: &Node) -> bool {
    node.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason.as_deref() == Some(shoal_api::AGENT_RESTARTING))
    })
}

pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let key_ok = match &t.key {
            None => t.operator.as_deref() == Some("Exists"),
            Some(k) => k == &taint.key,
        };
        let value_ok = t.operator.as_deref() == Some("Exists")
            || t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("");
        let effect_ok = t.effect.as_deref().is_none_or(|e| e == taint.effect);
        key_ok && value_ok && effect_ok
    })
}

fn allocatable(node: &Node, resource: &str) -> Option<i128> {
    let q = node.status.as_ref()?.allocatable.get(resource)?;
    Some(if resource == "cpu" {
        q.milli_value()
    } else {
        q.value()
    })
}

/// Why a node was filtered out, worded as the Pending condition's message counts it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Misfit {
    NotReady,
    Restarting,
    Unschedulable,
    Runtime(String),
    Platform {
        image: String,
        has: String,
    },
    Selector,
    Taint(String),
    InsufficientCpu,
    InsufficientMemory,
    TooManyPods,
    /// Not enough of an extended resource free (or none at all).
    Insufficient(String),
    Ports,
    Affinity(AffinityMisfit),
    Volume(volumes::VolumeMisfit),
}

impl Misfit {
    fn describe(&self) -> String {
        match self {
            Misfit::NotReady => "node(s) were not ready".into(),
            Misfit::Restarting => "node(s) were restarting their agent".into(),
            Misfit::Unschedulable => "node(s) were unschedulable".into(),
            Misfit::Runtime(r) => format!("node(s) didn't have runtime {r:?}"),
            Misfit::Platform { image, has } => {
                format!("node(s) had a platform image {image:?} lacks (it has {has})")
            }
            Misfit::Selector => "node(s) didn't match node selector".into(),
            Misfit::Taint(t) => format!("node(s) had untolerated taint {{{t}}}"),
            Misfit::InsufficientCpu => "insufficient cpu".into(),
            Misfit::InsufficientMemory => "insufficient memory".into(),
            Misfit::TooManyPods => "too many pods".into(),
            Misfit::Insufficient(r) => format!("insufficient {r}"),
            Misfit::Ports => "node(s) didn't have free ports for the requested pod ports".into(),
            Misfit::Affinity(a) => a.describe().into(),
            Misfit::Volume(v) => v.describe().into(),
        }
    }
}

/// Pods that hold resources on a node: bound to it and not finished.
fn holds_resources(p: &Pod) -> bool {
    !p.is_terminal()
}

fn owner_uid(pod: &Pod) -> Option<&str> {
    pod.metadata.controller_owner().map(|o| o.uid.as_str())
}

/// One node as a scheduling pass sees it: what it offers, and the sums of what its pods
/// already hold. Kept up to date as the pass binds pods, so a decision costs O(nodes), not
/// O(pods).
struct NodeInfo<'a> {
    node: &'a Node,
    ready: bool,
    cpu: Option<i128>,
    memory: Option<i128>,
    max_pods: Option<i128>,
    used_cpu: i128,
    used_memory: i128,
    pods: usize,
    ports: HashSet<(i32, String)>,
    /// Extended resources the node's pods hold.
    used_extended: BTreeMap<String, i128>,
    /// Pods per controlling owner uid, for spreading replicas.
    by_owner: HashMap<String, usize>,
}

impl<'a> NodeInfo<'a> {
    fn new(node: &'a Node) -> Self {
        NodeInfo {
            node,
            ready: node_ready(node),
            cpu: allocatable(node, "cpu"),
            memory: allocatable(node, "memory"),
            max_pods: allocatable(node, "pods"),
            used_cpu: 0,
            used_memory: 0,
            pods: 0,
            ports: HashSet::new(),
            used_extended: BTreeMap::new(),
            by_owner: HashMap::new(),
        }
    }

    fn add(&mut self, pod: &Pod) {
        let (cpu, mem) = requests(pod);
        self.used_cpu += cpu;
        self.used_memory += mem;
        self.pods += 1;
        self.ports.extend(host_ports(pod));
        for (r, n) in extended::requests(pod) {
            *self.used_extended.entry(r).or_default() += n;
        }
        if let Some(uid) = owner_uid(pod) {
            *self.by_owner.entry(uid.to_string()).or_default() += 1;
        }
    }

    fn fit(
        &self,
        pod: &Pod,
        (cpu, mem): (i128, i128),
        images: &HashMap<String, Vec<String>>,
    ) -> Result<(), Misfit> {
        let node = self.node;
        if !self.ready {
            return Err(Misfit::NotReady);
        }
        if restarting(node) {
            return Err(Misfit::Restarting);
        }
        if node.spec.unschedulable {
            return Err(Misfit::Unschedulable);
        }
        let runtime = runtime_of(pod);
        let runtimes = node
            .status
            .as_ref()
            .map(|s| s.runtime_handlers.as_slice())
            .unwrap_or(&[]);
        if !runtimes.iter().any(|h| h.name == runtime) {
            return Err(Misfit::Runtime(runtime.to_string()));
        }
        if runtime == "runc" {
            let label = |k: &str| node.metadata.labels.get(k).map(String::as_str);
            let mine = format!(
                "{}/{}",
                label("kubernetes.io/os").unwrap_or("linux"),
                label("kubernetes.io/arch").unwrap_or("amd64")
            );
            for c in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
                let Some(has) = images.get(&c.image) else {
                    continue;
                };
                // `linux/arm/v7` serves a `linux/arm` node: the variant is the agent's check.
                if !has
                    .iter()
                    .any(|p| p == &mine || p.starts_with(&format!("{mine}/")))
                {
                    return Err(Misfit::Platform {
                        image: c.image.clone(),
                        has: has.join(", "),
                    });
                }
            }
        }
        if pod
            .spec
            .node_selector
            .iter()
            .any(|(k, v)| node.metadata.labels.get(k) != Some(v))
        {
            return Err(Misfit::Selector);
        }
        for taint in &node.spec.taints {
            if matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
                && !tolerates(&pod.spec.tolerations, taint)
            {
                let value = taint
                    .value
                    .as_deref()
                    .map(|v| format!(": {v}"))
                    .unwrap_or_default();
                return Err(Misfit::Taint(format!("{}{value}", taint.key)));
            }
        }
        if self.cpu.is_some_and(|a| self.used_cpu + cpu > a) {
            return Err(Misfit::InsufficientCpu);
        }
        if self.memory.is_some_and(|a| self.used_memory + mem > a) {
            return Err(Misfit::InsufficientMemory);
        }
        if self.max_pods.is_some_and(|a| self.pods as i128 + 1 > a) {
            return Err(Misfit::TooManyPods);
        }
        for (r, n) in extended::requests(pod) {
            let used = self.used_extended.get(&r).copied().unwrap_or(0);
            if allocatable(node, &r).is_none_or(|a| used + n > a) {
                return Err(Misfit::Insufficient(r));
            }
        }
        if host_ports(pod).any(|hp| self.ports.contains(&hp)) {
            return Err(Misfit::Ports);
        }
        Ok(())
    }

    /// Higher is better: fewer pods of the same owner, then more room left.
    fn score(&self, owner: Option<&str>, (cpu, mem): (i128, i128)) -> (i64, i64) {
        let free = |used: i128, allocatable: Option<i128>| match allocatable {
            Some(a) if a > 0 => ((a - used).max(0) * 1000 / a) as i64,
            _ => 1000,
        };
        // Bare pods have no owner to spread: count all pods instead, so they spread too.
        let spread = match owner {
            Some(uid) => self.by_owner.get(uid).copied().unwrap_or(0),
            None => self.pods,
        } as i64;
        (
            -spread,
            free(self.used_cpu + cpu, self.cpu) + free(self.used_memory + mem, self.memory),
        )
    }
}

/// A node's score, compared in order: preferred affinity weights, `ScheduleAnyway` spread,
/// fewest pods of the same owner, room left.
type Score = (i64, i64, i64, i64);

/// The cluster as one scheduling pass sees it. Built once from the nodes and the bound pods;
/// [`Snapshot::assume`] records each binding the pass makes, so the next decision sees it
/// without rereading the store (the kube-scheduler's "assumed pod").
pub struct Snapshot<'a> {
    nodes: Vec<NodeInfo<'a>>,
    index: HashMap<&'a str, usize>,
    /// The platforms of container images pushed to the controller, by image reference.
    images: HashMap<String, Vec<String>>,
    /// The bound pods as affinity sees them, and whether any has required anti-affinity.
    placed: Vec<Placed>,
    any_anti: bool,
    /// The PersistentVolumeClaims, when the pass knows them.
    claims: Option<volumes::Claims>,
}

impl<'a> Snapshot<'a> {
    pub fn new(nodes: &'a [Node], pods: &[Pod]) -> Self {
        let mut snapshot = Snapshot {
            nodes: nodes.iter().map(NodeInfo::new).collect(),
            index: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.metadata.name.as_str(), i))
                .collect(),
            images: HashMap::new(),
            placed: Vec::new(),
            any_anti: false,
            claims: None,
        };
        for p in pods.iter().filter(|p| holds_resources(p)) {
            if let Some(n) = p.spec.node_name.as_deref() {
                snapshot.assume(p, n);
            }
        }
        snapshot
    }

    /// The platforms each known container image has: pods of those images go only to nodes
    /// of one of them.
    pub fn with_images(mut self, images: HashMap<String, Vec<String>>) -> Self {
        self.images = images;
        self
    }

    /// The claims pods mount: a pod goes only where its volumes are, or can be made.
    pub fn with_claims(mut self, claims: volumes::Claims) -> Self {
        self.claims = Some(claims);
        self
    }

    /// Counts `pod` as running on `node` from now on. Returns the claims of its that are to
    /// be provisioned on `node` (local-path claims it is the first pod of).
    pub fn assume(&mut self, pod: &Pod, node: &str) -> Vec<String> {
        if let Some(&i) = self.index.get(node) {
            self.nodes[i].add(pod);
            let placed = Placed::new(pod, i);
            self.any_anti |= !placed.anti.is_empty();
            self.placed.push(placed);
        }
        match &mut self.claims {
            Some(c) => c.assume(pod, node),
            None => Vec::new(),
        }
    }

    /// Picks a node for `pod`, or explains why none fits:
    /// `0/3 nodes available: 2 insufficient memory, 1 node(s) didn't match node selector`.
    pub fn schedule(&self, pod: &Pod) -> Result<String, String> {
        let wants = requests(pod);
        let owner = owner_uid(pod);
        let mut misfits: BTreeMap<Misfit, usize> = BTreeMap::new();
        let mut best: Option<(Score, &str)> = None;
        let nodes: Vec<&Node> = self.nodes.iter().map(|n| n.node).collect();
        let view = View {
            nodes: &nodes,
            placed: &self.placed,
        };
        let affinity = pod.spec.affinity.is_some() || self.any_anti;
        let spread = spread::Spread::new(&view, pod);
        if let Some(why) = self.claims.as_ref().and_then(|c| c.refusal(pod)) {
            return Err(format!("0/{} nodes available: {why}", self.nodes.len()));
        }
        for (i, info) in self.nodes.iter().enumerate() {
            let name = info.node.metadata.name.as_str();
            let fit = info
                .fit(pod, wants, &self.images)
                .and_then(|()| match affinity {
                    true => view.fits(pod, i).map_err(Misfit::Affinity),
                    false => Ok(()),
                })
                .and_then(|()| spread.fits(&view, i).map_err(Misfit::Affinity))
                .and_then(|()| match &self.claims {
                    Some(c) => c.fit(pod, info.node).map_err(Misfit::Volume),
                    None => Ok(()),
                });
            match fit {
                Err(m) => *misfits.entry(m).or_default() += 1,
                Ok(()) => {
                    let (owners, free) = info.score(owner, wants);
                    let preferred = if affinity { view.score(pod, i) } else { 0 };
                    let s = (preferred, spread.score(&view, i), owners, free);
                    // Ties go to the first name, so the choice is deterministic.
                    if best.is_none_or(|(b, bn)| s > b || (s == b && name < bn)) {
                        best = Some((s, name));
                    }
                }
            }
        }
        if let Some((_, name)) = best {
            return Ok(name.to_string());
        }
        if self.nodes.is_empty() {
            return Err("0/0 nodes available: no nodes have joined the cluster".into());
        }
        let mut parts: Vec<(usize, String)> = misfits
            .into_iter()
            .map(|(m, n)| (n, m.describe()))
            .collect();
        parts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let reasons: Vec<String> = parts.into_iter().map(|(n, d)| format!("{n} {d}")).collect();
        Err(format!(
            "0/{} nodes available: {}",
            self.nodes.len(),
            reasons.join(", ")
        ))
    }
}

/// One decision on its own: [`Snapshot::schedule`] over `nodes` and the pods bound to them
/// (other than `pod` itself).
pub fn schedule(pod: &Pod, nodes: &[Node], pods: &[Pod]) -> Result<String, String> {
    let others: Vec<Pod> = pods
        .iter()
        .filter(|p| p.metadata.uid != pod.metadata.uid)
        .cloned()
        .collect();
    Snapshot::new(nodes, &others).schedule(pod)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::*;

    pub(super) fn node(name: &str, cpu: &str, mem: &str, runtimes: &[&str]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: name.into(),
                labels: [("kubernetes.io/hostname".to_string(), name.to_string())].into(),
                ..Default::default()
            },
            status: Some(NodeStatus {
                allocatable: [
                    ("cpu".to_string(), cpu.parse().unwrap()),
                    ("memory".to_string(), mem.parse().unwrap()),
                    ("pods".to_string(), "10".parse().unwrap()),
                ]
                .into(),
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                runtime_handlers: runtimes
                    .iter()
                    .map(|r| RuntimeHandler {
                        name: r.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(super) fn pod(name: &str, cpu: &str, mem: &str) -> Pod {
        let mut c = Container {
            name: "c".into(),
            image: "x".into(),
            ..Default::default()
        };
        c.resources
            .requests
            .insert("cpu".into(), cpu.parse().unwrap());
        c.resources
            .requests
            .insert("memory".into(), mem.parse().unwrap());
        Pod {
            metadata: ObjectMeta {
                name: name.into(),
                uid: format!("uid-{name}"),
                ..Default::default()
            },
            spec: PodSpec {
                containers: vec![c],
                runtime_class_name: Some("wasm".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn bound(mut p: Pod, node: &str) -> Pod {
        p.spec.node_name = Some(node.into());
        p
    }

    fn owned(mut p: Pod, owner: &str) -> Pod {
        p.metadata.owner_references = vec![OwnerReference {
            kind: "ReplicaSet".into(),
            name: owner.into(),
            uid: owner.into(),
            controller: Some(true),
            ..Default::default()
        }];
        p
    }

    #[test]
    fn container_images_go_only_to_nodes_of_their_platforms() {
        let arch = |name: &str, arch: &str| {
            let mut n = node(name, "2", "1Gi", &["wasm", "runc"]);
            n.metadata
                .labels
                .insert("kubernetes.io/arch".into(), arch.into());
            n
        };
        let nodes = vec![
            arch("pi", "arm64"),
            arch("pi32", "arm"),
            arch("nuc", "amd64"),
        ];
        let mut app = pod("p", "100m", "64Mi");
        app.spec.runtime_class_name = None;
        app.spec.containers[0].image = "app:1".into();
        let images = |has: &[&str]| -> HashMap<String, Vec<String>> {
            [(
                "app:1".to_string(),
                has.iter().map(|s| s.to_string()).collect(),
            )]
            .into()
        };
        let place = |has: &[&str]| {
            Snapshot::new(&nodes, &[])
                .with_images(images(has))
                .schedule(&app)
        };
        assert_eq!(place(&["linux/arm/v7"]), Ok("pi32".into()));
        assert_eq!(place(&["linux/arm64", "linux/riscv64"]), Ok("pi".into()));
        assert_eq!(
            place(&["linux/amd64"]),
            Ok("nuc".into()),
            "an amd64-only image stays off the Pis"
        );
        assert_eq!(
            place(&["linux/s390x"]),
            Err(
                "0/3 nodes available: 3 node(s) had a platform image \"app:1\" lacks (it has linux/s390x)"
                    .into()
            )
        );
        // Images the controller knows nothing of (a registry's) are the agent's to check;
        // wasm pods run anywhere.
        assert!(Snapshot::new(&nodes, &[]).schedule(&app).is_ok());
        app.spec.runtime_class_name = Some("wasm".into());
        assert!(Snapshot::new(&nodes, &[])
            .with_images(images(&["linux/s390x"]))
            .schedule(&app)
            .is_ok());
    }

    #[test]
    fn table_of_placements() {
        let a = node("a", "2", "1Gi", &["wasm", "runc"]);
        let b = node("b", "2", "1Gi", &["wasm"]);
        let mut cordoned = node("c", "2", "1Gi", &["wasm"]);
        cordoned.spec.unschedulable = true;
        let mut selected = pod("p", "100m", "64Mi");
        selected
            .spec
            .node_selector
            .insert("kubernetes.io/hostname".into(), "b".into());
        let mut runc = pod("p", "100m", "64Mi");
        runc.spec.runtime_class_name = None;
        let mut restarting = node("r", "2", "1Gi", &["wasm"]);
        if let Some(st) = restarting.status.as_mut() {
            st.conditions[0].reason = Some(shoal_api::AGENT_RESTARTING.into());
        }
        type Case = (
            &'static str,
            Pod,
            Vec<Node>,
            Vec<Pod>,
            Result<&'static str, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "least allocated wins",
                pod("p", "100m", "64Mi"),
                vec![a.clone(), b.clone()],
                vec![bound(pod("x", "1", "512Mi"), "a")],
                Ok("b"),
            ),
            (
                "ties go to the first name",
                pod("p", "100m", "64Mi"),
                vec![b.clone(), a.clone()],
                vec![],
                Ok("a"),
            ),
            (
                "node selector",
                selected,
                vec![a.clone(), b.clone()],
                vec![],
                Ok("b"),
            ),
            ("runtime", runc, vec![b.clone(), a.clone()], vec![], Ok("a")),
            (
                "cordoned nodes are skipped",
                pod("p", "100m", "64Mi"),
                vec![cordoned.clone(), b.clone()],
                vec![],
                Ok("b"),
            ),
            (
                "a node restarting its agent takes no new pods",
                pod("p", "100m", "64Mi"),
                vec![restarting.clone(), b.clone()],
                vec![bound(pod("x", "1", "512Mi"), "b")],
                Ok("b"),
            ),
            (
                "pods wait for a restarting node, saying so",
                pod("p", "100m", "64Mi"),
                vec![restarting.clone()],
                vec![],
                Err("0/1 nodes available: 1 node(s) were restarting their agent"),
            ),
            (
                "finished pods free their room",
                pod("p", "1", "1Gi"),
                vec![a.clone()],
                vec![{
                    let mut done = bound(pod("x", "2", "1Gi"), "a");
                    done.status = Some(PodStatus {
                        phase: Some("Succeeded".into()),
                        ..Default::default()
                    });
                    done
                }],
                Ok("a"),
            ),
            (
                "too big for any node",
                pod("p", "100m", "2Gi"),
                vec![a.clone(), b.clone(), cordoned.clone()],
                vec![],
                Err("0/3 nodes available: 2 insufficient memory, 1 node(s) were unschedulable"),
            ),
            (
                "no nodes",
                pod("p", "1", "1"),
                vec![],
                vec![],
                Err("0/0 nodes available: no nodes have joined the cluster"),
            ),
        ];
        for (what, p, nodes, pods, want) in cases {
            let got = schedule(&p, &nodes, &pods);
            assert_eq!(got.as_deref().map_err(String::as_str), want, "{what}");
        }
    }

    #[test]
    fn replicas_of_one_owner_spread() {
        let nodes = vec![
            node("a", "8", "8Gi", &["wasm"]),
            node("b", "8", "8Gi", &["wasm"]),
            node("c", "8", "8Gi", &["wasm"]),
        ];
        let mut placed: Vec<Pod> = vec![];
        for i in 0..6 {
            let p = owned(pod(&format!("web-{i}"), "10m", "1Mi"), "rs-web");
            let n = schedule(&p, &nodes, &placed).unwrap();
            placed.push(bound(p, &n));
        }
        let count = |n: &str| {
            placed
                .iter()
                .filter(|p| p.spec.node_name.as_deref() == Some(n))
                .count()
        };
        assert_eq!((count("a"), count("b"), count("c")), (2, 2, 2));
    }

    #[test]
    fn taints_need_tolerations_and_ports_must_be_free() {
        let mut tainted = node("t", "2", "1Gi", &["wasm"]);
        tainted.spec.taints.push(Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        });
        let p = pod("p", "10m", "1Mi");
        assert_eq!(
            schedule(&p, &[tainted.clone()], &[]),
            Err("0/1 nodes available: 1 node(s) had untolerated taint {dedicated: gpu}".into())
        );
        let mut tolerant = p.clone();
        tolerant.spec.tolerations.push(Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("gpu".into()),
            effect: Some("NoSchedule".into()),
            toleration_seconds: None,
        });
        assert_eq!(schedule(&tolerant, &[tainted], &[]), Ok("t".into()));

        let with_port = |name: &str| {
            let mut p = pod(name, "10m", "1Mi");
            p.spec.containers[0].ports.push(ContainerPort {
                container_port: 80,
                host_port: Some(8080),
                ..Default::default()
            });
            p
        };
        let a = node("a", "2", "1Gi", &["wasm"]);
        let err = schedule(
            &with_port("q"),
            std::slice::from_ref(&a),
            &[bound(with_port("p"), "a")],
        )
        .unwrap_err();
        assert!(err.contains("free ports"), "{err}");
    }

    #[test]
    fn a_pods_requests_are_its_containers_sum_or_its_largest_init_container() {
        let mut p = pod("p", "100m", "64Mi");
        p.spec
            .containers
            .push(pod("q", "100m", "64Mi").spec.containers[0].clone());
        assert_eq!(requests(&p), (200, 128 * 1024 * 1024));
        // An init container of more CPU but less memory: the larger of each.
        p.spec.init_containers = pod("i", "500m", "32Mi").spec.containers;
        assert_eq!(requests(&p), (500, 128 * 1024 * 1024));
        // A sidecar before it runs beside it, and beside the containers after it.
        let mut sidecar = pod("s", "50m", "16Mi").spec.containers[0].clone();
        sidecar.restart_policy = Some("Always".into());
        p.spec.init_containers.insert(0, sidecar);
        assert_eq!(requests(&p), (550, 144 * 1024 * 1024));
        // After it: it is only beside the containers.
        p.spec.init_containers.rotate_left(1);
        assert_eq!(requests(&p), (500, 144 * 1024 * 1024));
    }
}
