//! AgentUpgrade (`shoal.dev/v1alpha1`, cluster-scoped): upgrades the agents of the nodes a
//! selector picks to a pushed shoal binary, at most `maxUnavailable` at a time. Each agent
//! fetches the binary over its own link, swaps it in, restarts into it and must report Ready on
//! the new version within `readyTimeoutSeconds`, or it goes back to the binary it had by itself;
//! the rollout then pauses with the reason.
//!
//! The controller and the agents speak through two Node annotations: the order the controller
//! gives ([`UPGRADE_ORDER`], [`UpgradeOrder`]) and what the agent made of it
//! ([`UPGRADE_STATE`], [`UpgradeReport`]), the only one of the two a node may write.

use crate::meta::ObjectMeta;
use crate::selector::LabelSelector;
use serde::{Deserialize, Serialize};

/// The Node annotation with the controller's order: a JSON [`UpgradeOrder`].
pub const UPGRADE_ORDER: &str = "shoal.dev/agent-upgrade";
/// The Node annotation with the agent's account of its last upgrade: a JSON [`UpgradeReport`].
pub const UPGRADE_STATE: &str = "shoal.dev/agent-upgrade-state";
/// How long a restarted agent has to report Ready when the upgrade does not say.
pub const READY_TIMEOUT_SECONDS: u64 = 120;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentUpgrade {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AgentUpgradeSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentUpgradeStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentUpgradeSpec {
    /// The version the nodes must report once upgraded (`shoal --version`'s first word).
    #[serde(default)]
    pub version: String,
    /// Pushed shoal binaries (`shoal push ./shoal NAME:TAG`), one per platform: each node
    /// takes the one built for its architecture.
    #[serde(default)]
    pub binaries: Vec<String>,
    /// Which nodes; empty is every node.
    #[serde(default)]
    pub node_selector: LabelSelector,
    /// How many nodes may be upgrading at once (1 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,
    /// How long a restarted agent has to report Ready on the new version before it goes
    /// back to its previous binary (120 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout_seconds: Option<u64>,
}

impl AgentUpgradeSpec {
    pub fn max_unavailable(&self) -> usize {
        self.max_unavailable.unwrap_or(1).max(1) as usize
    }

    pub fn ready_timeout_seconds(&self) -> u64 {
        self.ready_timeout_seconds.unwrap_or(READY_TIMEOUT_SECONDS)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentUpgradeStatus {
    /// `Progressing`, `Paused` or `Complete`.
    #[serde(default)]
    pub phase: String,
    /// Why the rollout is paused (or what it waits for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The binaries as pinned when the rollout started: `platform=sha256:...`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<String>,
    /// Each selected node, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeUpgradeStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeUpgradeStatus {
    pub name: String,
    /// The version the node's agent reports.
    #[serde(default)]
    pub version: String,
    /// `Pending`, `Upgrading`, `Upgraded`, `RolledBack` or `Failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The controller's order to one node's agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeOrder {
    /// The AgentUpgrade's uid: made again, it is another upgrade.
    pub upgrade: String,
    /// The AgentUpgrade's name.
    pub name: String,
    pub version: String,
    /// The binary for the node's platform, by digest (the agent checks what it fetched).
    pub digest: String,
    pub ready_timeout_seconds: u64,
}

/// What an agent made of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeReport {
    /// The uid of the AgentUpgrade whose order this answers.
    pub upgrade: String,
    pub version: String,
    /// The binary's digest: another binary for the same version is another try.
    #[serde(default)]
    pub digest: String,
    /// `Upgrading`, `Upgraded`, `RolledBack` or `Failed` (it never swapped the binary).
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The version in a Node's `nodeInfo.kubeletVersion` (`shoal-v0.1.0` is `0.1.0`).
pub fn reported_version(node: &crate::Node) -> Option<&str> {
    let v = &node.status.as_ref()?.node_info.as_ref()?.kubelet_version;
    Some(v.strip_prefix("shoal-v").unwrap_or(v))
}

/// The platform of an executable, from its ELF header (`linux/amd64`, `linux/arm64`,
/// `linux/arm`), for `shoal push` to record; `None` for anything else.
pub fn elf_platform(head: &[u8]) -> Option<&'static str> {
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return None;
    }
    // e_machine, in the file's byte order (EI_DATA: 1 little, 2 big endian).
    let machine = match head[5] {
        1 => u16::from_le_bytes([head[18], head[19]]),
        2 => u16::from_be_bytes([head[18], head[19]]),
        _ => return None,
    };
    match machine {
        0x3e => Some("linux/amd64"),
        0xb7 => Some("linux/arm64"),
        0x28 => Some("linux/arm"),
        0xf3 => Some("linux/riscv64"),
        _ => None,
    }
}

/// Whether a binary recorded for `platform` (`linux/arm/v7`) runs on a node of `arch`
/// (its `kubernetes.io/arch` label: `arm`).
pub fn platform_runs_on(platform: &str, arch: &str) -> bool {
    let mut parts = platform.split('/');
    parts.next() == Some("linux") && parts.next() == Some(arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_headers_name_their_platform() {
        let mut x86 = vec![0u8; 64];
        x86[..4].copy_from_slice(b"\x7fELF");
        x86[5] = 1;
        x86[18] = 0x3e;
        assert_eq!(elf_platform(&x86), Some("linux/amd64"));
        x86[18] = 0xb7;
        assert_eq!(elf_platform(&x86), Some("linux/arm64"));
        assert_eq!(elf_platform(b"#!/bin/sh\nexit 1\n"), None);
        assert_eq!(elf_platform(b"\x7fELF"), None);
        assert!(platform_runs_on("linux/arm/v7", "arm"));
        assert!(platform_runs_on("linux/amd64", "amd64"));
        assert!(!platform_runs_on("linux/arm64", "arm"));
    }
}
