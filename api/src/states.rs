//! The words a status is made of, as types: a pod's phase, a condition's status, the runtime
//! class a pod runs under. The objects keep them as strings (that is their wire shape, and a
//! peer may send a word this version does not know); code reads and writes them through these.

use crate::objects::{Condition, Pod};

/// A pod's phase (`status.phase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
            PodPhase::Unknown => "Unknown",
        }
    }

    /// The phase a status word names; `None` for a word Kubernetes does not define.
    pub fn parse(s: &str) -> Option<PodPhase> {
        [
            PodPhase::Pending,
            PodPhase::Running,
            PodPhase::Succeeded,
            PodPhase::Failed,
            PodPhase::Unknown,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// Succeeded or Failed: the pod's containers are done for good.
    pub fn is_terminal(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }
}

impl std::fmt::Display for PodPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition's status (`True`, `False`, `Unknown`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> ConditionStatus {
        if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

impl Condition {
    /// A condition of `type_` with `status`, the rest unset.
    pub fn new(type_: &str, status: impl Into<ConditionStatus>) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into().as_str().into(),
            ..Default::default()
        }
    }

    /// Whether its status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True.as_str()
    }
}

/// Whether `conditions` hold one of `type_` whose status is `True`.
pub fn condition_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.is_true())
}

/// The runtime a pod's containers run under (`spec.runtimeClassName`): `wasm`, or OCI
/// containers through runc, the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeClass {
    Wasm,
    Runc,
}

impl RuntimeClass {
    /// The runtime classes a node can offer, by name.
    pub const ALL: [RuntimeClass; 2] = [RuntimeClass::Wasm, RuntimeClass::Runc];

    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeClass::Wasm => "wasm",
            RuntimeClass::Runc => "runc",
        }
    }

    /// The class `runtimeClassName` names: absent means runc, as Kubernetes' default handler.
    pub fn of(name: Option<&str>) -> RuntimeClass {
        match name {
            Some("wasm") => RuntimeClass::Wasm,
            _ => RuntimeClass::Runc,
        }
    }
}

/// Where a pod came from (`file`, for a static pod a node runs from its manifests directory),
/// as the kubelet annotates it.
pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
/// The digest of a static pod's manifest, as the kubelet annotates it.
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
/// On a mirror pod (a static pod's face in the API, made by its node), the digest of the
/// static pod it mirrors.
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

impl Pod {
    /// Whether it is a static pod: from a file on its node, not from the controller.
    pub fn is_static(&self) -> bool {
        self.metadata
            .annotations
            .get(CONFIG_SOURCE)
            .map(String::as_str)
            == Some("file")
    }

    /// Whether it is a mirror pod: a static pod's face in the API, made by its node, which
    /// runs the static pod (never this object).
    pub fn is_mirror(&self) -> bool {
        self.metadata.annotations.contains_key(CONFIG_MIRROR)
    }

    /// What other API object it would need, if any (ConfigMaps, Secrets, claims, pull secrets): a
    /// static pod and its mirror may use none, as nothing may have to come from a controller
    /// for the node to run it.
    pub fn uses_api_objects(&self) -> Option<&'static str> {
        let spec = &self.spec;
        let volumes = spec.volumes.iter().find_map(|v| {
            if v.config_map.is_some() {
                Some("a ConfigMap volume")
            } else if v.secret.is_some() {
                Some("a Secret volume")
            } else if v.projected.is_some() {
                Some("a projected volume")
            } else if v.persistent_volume_claim.is_some() {
                Some("a PersistentVolumeClaim volume")
            } else {
                None
            }
        });
        let env = spec
            .init_containers
            .iter()
            .chain(&spec.containers)
            .find_map(|c| {
                let from = c.env.iter().any(|e| {
                    e.value_from.as_ref().is_some_and(|f| {
                        f.config_map_key_ref.is_some() || f.secret_key_ref.is_some()
                    })
                });
                (from || !c.env_from.is_empty()).then_some("ConfigMaps or Secrets in its env")
            });
        let pulls = (!spec.image_pull_secrets.is_empty()).then_some("imagePullSecrets");
        volumes.or(env).or(pulls)
    }

    /// Its phase as reported, if any and known.
    pub fn phase(&self) -> Option<PodPhase> {
        self.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .and_then(PodPhase::parse)
    }

    /// Whether it has finished for good (Succeeded or Failed).
    pub fn is_terminal(&self) -> bool {
        self.phase().is_some_and(PodPhase::is_terminal)
    }

    /// The runtime its containers run under.
    pub fn runtime_class(&self) -> RuntimeClass {
        RuntimeClass::of(self.spec.runtime_class_name.as_deref())
    }

    /// The container `-c` names (logs, exec), or without it the pod's one container; its init
    /// containers only by name, as kubectl. The error says which there are.
    pub fn choose_container(&self, container: Option<&str>) -> Result<String, String> {
        let name_of = |c: &crate::Container| c.name.clone();
        let names: Vec<String> = self.spec.containers.iter().map(name_of).collect();
        let init: Vec<String> = self.spec.init_containers.iter().map(name_of).collect();
        let name = &self.metadata.name;
        match container {
            Some(c) if names.iter().chain(&init).any(|n| n == c) => Ok(c.to_string()),
            Some(c) => Err(format!(
                "container {c:?} is not valid for pod {name:?} (its containers: {}{})",
                names.join(", "),
                if init.is_empty() {
                    String::new()
                } else {
                    format!("; init containers: {}", init.join(", "))
                }
            )),
            None if names.len() == 1 => Ok(names[0].clone()),
            None => Err(format!(
                "pod {name:?} has several containers: choose one of {} with -c",
                names.join(", ")
            )),
        }
    }

    /// Whether it uses its node's network: hostNetwork, or wasm (whose sockets are the node's).
    pub fn uses_node_network(&self) -> bool {
        self.spec.host_network || self.runtime_class() == RuntimeClass::Wasm
    }

    /// Why it is not Ready, from its status, as one line (`None`: it is Ready, or finished):
    /// what `rollout status` and `drain` say of a pod they wait on.
    pub fn why_not_ready(&self) -> Option<String> {
        let with = |reason: Option<&str>, message: Option<&str>| match (reason, message) {
            (Some(r), Some(m)) => format!("{r}: {m}"),
            (Some(s), None) | (None, Some(s)) => s.to_string(),
            (None, None) => String::new(),
        };
        if let Some(t) = &self.metadata.deletion_timestamp {
            let node = self.spec.node_name.as_deref().unwrap_or("no node");
            return Some(format!(
                "terminating since {t}: waiting for node/{node} to stop it"
            ));
        }
        if self.is_terminal() {
            return None;
        }
        let st = self.status.clone().unwrap_or_default();
        let condition = |ty: &str| st.conditions.iter().find(|c| c.type_ == ty);
        if condition("Ready").is_some_and(|c| c.status == "True") {
            return None;
        }
        if let Some(c) = condition("PodScheduled").filter(|c| c.status == "False") {
            let why = with(c.reason.as_deref(), c.message.as_deref());
            return Some(format!("Pending, not scheduled: {why}"));
        }
        let Some(node) = self.spec.node_name.as_deref() else {
            return Some("Pending: not scheduled yet".into());
        };
        let containers = st
            .init_container_statuses
            .iter()
            .chain(&st.container_statuses);
        for c in containers.clone() {
            let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
            if let Some(w) = waiting {
                let why = with(w.reason.as_deref(), w.message.as_deref());
                return Some(format!(
                    "container {} waiting on node/{node}: {why}",
                    c.name
                ));
            }
        }
        if let Some(c) = containers
            .into_iter()
            .find(|c| !c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some()))
        {
            return Some(format!(
                "container {} running on node/{node} but not ready (its readiness or startup probe has not passed)",
                c.name
            ));
        }
        let phase = st.phase.as_deref().unwrap_or("Pending");
        Some(match condition("Ready") {
            Some(c) if c.reason.is_some() || c.message.is_some() => {
                format!(
                    "{phase} on node/{node}, not ready: {}",
                    with(c.reason.as_deref(), c.message.as_deref())
                )
            }
            _ => format!("{phase} on node/{node}: no status from the node yet"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a waiting command says of a pod that holds it up, for each way a pod is held.
    #[test]
    fn why_a_pod_is_not_ready_table() {
        let parse = |yaml: &str| -> Pod {
            match crate::parse_manifests("test", yaml)
                .ok()
                .and_then(|mut p| p.pop())
            {
                Some(p) => p.object.try_into().ok().unwrap_or_default(),
                None => Pod::default(),
            }
        };
        let cases = [
            ("metadata: {name: p}\nspec: {containers: []}\nstatus: {phase: Pending, conditions: [{type: PodScheduled, status: 'False', reason: Unschedulable, message: '0/2 nodes available: 2 insufficient memory'}]}",
             Some("Pending, not scheduled: Unschedulable: 0/2 nodes available: 2 insufficient memory")),
            ("metadata: {name: p}\nspec: {containers: []}", Some("Pending: not scheduled yet")),
            ("metadata: {name: p}\nspec: {nodeName: n1, containers: []}\nstatus: {phase: Pending, containerStatuses: [{name: app, image: x, ready: false, restartCount: 0, state: {waiting: {reason: ImagePullBackOff, message: 'Back-off pulling image \"x\"'}}}]}",
             Some("container app waiting on node/n1: ImagePullBackOff: Back-off pulling image \"x\"")),
            ("metadata: {name: p}\nspec: {nodeName: n1, containers: []}\nstatus: {phase: Running, containerStatuses: [{name: app, image: x, ready: false, restartCount: 0, state: {running: {startedAt: '2026-01-01T00:00:00Z'}}}]}",
             Some("container app running on node/n1 but not ready (its readiness or startup probe has not passed)")),
            ("metadata: {name: p, deletionTimestamp: '2026-01-01T00:00:00Z'}\nspec: {nodeName: n1, containers: []}",
             Some("terminating since 2026-01-01T00:00:00Z: waiting for node/n1 to stop it")),
            ("metadata: {name: p}\nspec: {nodeName: n1, containers: []}\nstatus: {phase: Running, conditions: [{type: Ready, status: 'True'}]}", None),
            ("metadata: {name: p}\nspec: {nodeName: n1, containers: []}\nstatus: {phase: Succeeded}", None),
        ];
        for (yaml, want) in cases {
            let pod = parse(&format!("apiVersion: v1\nkind: Pod\n{yaml}"));
            assert_eq!(pod.why_not_ready().as_deref(), want, "{yaml}");
        }
    }

    #[test]
    fn phases_read_back_from_their_words() {
        for p in [
            PodPhase::Pending,
            PodPhase::Running,
            PodPhase::Succeeded,
            PodPhase::Failed,
            PodPhase::Unknown,
        ] {
            assert_eq!(PodPhase::parse(p.as_str()), Some(p));
        }
        assert_eq!(PodPhase::parse("running"), None, "words are case-sensitive");
        let mut pod = Pod::default();
        assert!(!pod.is_terminal());
        pod.status = Some(crate::PodStatus {
            phase: Some("Failed".into()),
            ..Default::default()
        });
        assert!(pod.is_terminal());
    }

    #[test]
    fn conditions_and_runtime_classes() {
        let ready = Condition::new("Ready", true);
        assert!(ready.is_true());
        assert!(condition_true(&[ready], "Ready"));
        assert!(!condition_true(&[Condition::new("Ready", false)], "Ready"));
        assert!(!condition_true(
            &[Condition::new("Ready", ConditionStatus::Unknown)],
            "Ready"
        ));
        assert_eq!(RuntimeClass::of(None), RuntimeClass::Runc);
        assert_eq!(RuntimeClass::of(Some("wasm")), RuntimeClass::Wasm);
        let mut pod = Pod::default();
        assert!(!pod.uses_node_network());
        pod.spec.runtime_class_name = Some("wasm".into());
        assert!(pod.uses_node_network());
    }
}
