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

impl Pod {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
