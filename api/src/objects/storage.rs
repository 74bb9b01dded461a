//! PersistentVolumeClaim, PersistentVolume and StorageClass: storage that outlives its pods.
//! Shoal provisions it on the node's own disk (`local-path`, as K3s' provisioner does): a
//! directory bound to that node, the pods that use it bound there too.

use super::NodeSelector;
use crate::meta::ObjectMeta;
use crate::quantity::Quantity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The StorageClass Shoal makes and claims get by default.
pub const LOCAL_PATH_CLASS: &str = "local-path";
/// Its provisioner: a directory on the node that first runs a pod of the claim.
pub const LOCAL_PATH_PROVISIONER: &str = "shoal.dev/local-path";
/// The annotation that makes a StorageClass the default for claims that name none.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// The annotation the scheduler puts on a claim waiting for its first pod: the node it chose.
pub const SELECTED_NODE_ANNOTATION: &str = "volume.kubernetes.io/selected-node";
/// The annotation that names the provisioner of a volume Shoal made.
pub const PROVISIONED_BY_ANNOTATION: &str = "pv.kubernetes.io/provisioned-by";
/// The node label a local volume's node affinity names.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Holds a claim a pod still uses from going (Kubernetes' StorageObjectInUseProtection).
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// Holds a volume still bound to a claim from going.
pub const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";
/// The node annotation under which an agent reports where its local-path volumes live.
pub const LOCAL_PATH_ROOT_ANNOTATION: &str = "shoal.dev/local-path-root";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaim {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PersistentVolumeClaimSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PersistentVolumeClaimStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaimSpec {
    /// ReadWriteOnce, ReadOnlyMany, ReadWriteMany, ReadWriteOncePod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    #[serde(default)]
    pub resources: VolumeResourceRequirements,
    /// The class it is provisioned by; the default class's when absent, none when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// The volume it is bound to (set by the binder, or by hand to ask for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_name: Option<String>,
    /// Filesystem only (Block is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeResourceRequirements {
    /// `storage`: what the claim needs (a local-path volume gets it as its capacity, not
    /// as a quota: K3s' provisioner does not enforce it either). `limits`, the most it may
    /// grow to, is not modelled (Shoal's volumes do not expand), so it is warned about.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaimStatus {
    /// Pending, Bound, Lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, Quantity>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolume {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PersistentVolumeSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PersistentVolumeStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// Delete or Retain (what happens to the data once its claim is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_reclaim_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// The claim it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_ref: Option<super::ObjectReference>,
    /// A directory on the node (`hostPath`), or a local disk (`local`): the same to Shoal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<super::HostPathVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalVolumeSource>,
    /// The nodes that can reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<VolumeNodeAffinity>,
    /// Filesystem only (Block is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalVolumeSource {
    pub path: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeNodeAffinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<NodeSelector>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeStatus {
    /// Available, Bound, Released, Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageClass {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub provisioner: String,
    /// Delete (the default) or Retain, given to the volumes it provisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim_policy: Option<String>,
    /// WaitForFirstConsumer (a local volume is made where its first pod is scheduled) or
    /// Immediate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_binding_mode: Option<String>,
}

impl PersistentVolumeClaim {
    /// The storage it asks for, if it says.
    pub fn requested(&self) -> Option<&Quantity> {
        self.spec.resources.requests.get("storage")
    }

    pub fn phase(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending")
    }

    pub fn selected_node(&self) -> Option<&str> {
        self.metadata
            .annotations
            .get(SELECTED_NODE_ANNOTATION)
            .map(String::as_str)
    }
}

impl PersistentVolume {
    pub fn phase(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Available")
    }

    /// The directory on its node that holds the data.
    pub fn path(&self) -> Option<&str> {
        match (&self.spec.local, &self.spec.host_path) {
            (Some(l), _) => Some(&l.path),
            (None, Some(h)) => Some(&h.path),
            (None, None) => None,
        }
    }

    /// The one node its affinity names by hostname, when it is bound to one node (a local
    /// volume); `None` when any node reaches it.
    pub fn node(&self) -> Option<&str> {
        let terms = &self
            .spec
            .node_affinity
            .as_ref()?
            .required
            .as_ref()?
            .node_selector_terms;
        match terms.as_slice() {
            [term] => term
                .match_expressions
                .iter()
                .find(|e| e.key == HOSTNAME_LABEL && e.operator == "In" && e.values.len() == 1)
                .map(|e| e.values[0].as_str()),
            _ => None,
        }
    }

    pub fn reclaim_policy(&self) -> &str {
        self.spec
            .persistent_volume_reclaim_policy
            .as_deref()
            .unwrap_or("Retain")
    }

    /// Whether it is bound to the claim `namespace/name` (`uid` if the reference has one).
    pub fn bound_to(&self, claim: &PersistentVolumeClaim) -> bool {
        self.spec.claim_ref.as_ref().is_some_and(|r| {
            r.name.as_deref() == Some(claim.metadata.name.as_str())
                && r.namespace.as_deref() == Some(claim.metadata.namespace_or_default())
                && r.uid
                    .as_deref()
                    .is_none_or(|u| u.is_empty() || u == claim.metadata.uid)
        })
    }
}

impl StorageClass {
    pub fn is_default(&self) -> bool {
        self.metadata
            .annotations
            .get(DEFAULT_CLASS_ANNOTATION)
            .is_some_and(|v| v == "true")
    }

    pub fn waits_for_first_consumer(&self) -> bool {
        self.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
    }
}
