//! Node: a machine running `shoal agent`.

use super::is_false;
use super::pod::Condition;
use crate::meta::ObjectMeta;
use crate::quantity::Quantity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "is_false")]
    pub unschedulable: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    #[serde(default, rename = "podCIDR", skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_added: Option<String>,
}

/// The reason of a node's Ready condition in the last status its agent posted before it
/// stopped, leaving its pods running: the controller waits longer for its next heartbeat.
pub const AGENT_RESTARTING: &str = "AgentRestarting";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_info: Option<NodeSystemInfo>,
    /// The pod runtimes the node offers (`wasm`, `runc`), as Kubernetes' runtimeHandlers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_handlers: Vec<RuntimeHandler>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSystemInfo {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub operating_system: String,
    #[serde(default)]
    pub kernel_version: String,
    #[serde(default)]
    pub os_image: String,
    /// The `shoal` version of the agent (Kubernetes calls the field kubeletVersion).
    #[serde(default)]
    pub kubelet_version: String,
    #[serde(default)]
    pub container_runtime_version: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeHandler {
    pub name: String,
    /// Shoal's own field: for `wasm`, what the node's engine loads precompiled code for, so
    /// the controller can compile an artifact once for every node of that kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_target: Option<WasmTarget>,
}

/// What a precompiled wasm artifact must have been compiled for to load into a node's engine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmTarget {
    /// wasmtime's version: precompiled code only loads into the same version.
    pub wasmtime: String,
    /// The triple Cranelift compiles for (`aarch64-unknown-linux-musl`), or `pulley32` /
    /// `pulley64` where wasmtime interprets Pulley bytecode.
    pub triple: String,
    /// The CPU features the code may use, as Cranelift names them (`has_lse`, `has_avx2`),
    /// sorted. Empty means the architecture's baseline. Always written: this type also
    /// travels in postcard frames, which cannot skip a field.
    #[serde(default)]
    pub features: Vec<String>,
}

impl WasmTarget {
    /// A short, stable name for this target in file names and logs: the triple, then a hash
    /// of the version and the features.
    pub fn key(&self) -> String {
        // FNV-1a: stable across builds and architectures (unlike std's hasher), and enough to
        // tell targets apart; nothing is trusted on the strength of it.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in std::iter::once(&self.wasmtime).chain(&self.features) {
            for b in part.bytes().chain(std::iter::once(0)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        let triple: String = self
            .triple
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{triple}-{h:016x}")
    }
}
