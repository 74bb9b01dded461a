//! `metadata`: what every object carries (name, namespace, uid, labels, revisions, owners).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub generate_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub annotations: Labels,
    /// The store revision of the last write of this object, as a decimal string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Bumped by the store each time `spec` (not status or metadata) changes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    /// A pod deleted with a grace period of its own (`--grace-period`, `--now`, `--force`):
    /// what its node stops it within, instead of `terminationGracePeriodSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// Who set which fields (server-side apply), as Kubernetes keeps it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields: Vec<ManagedFieldsEntry>,
}

/// The fields one manager set through one kind of write: `Apply` (server-side apply) or
/// `Update` (any other write that named its `fieldManager`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedFieldsEntry {
    pub manager: String,
    pub operation: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fields_type: String,
    /// A [`crate::fieldset`] tree.
    #[serde(
        default,
        rename = "fieldsV1",
        skip_serializing_if = "serde_json::Value::is_null"
    )]
    pub fields_v1: serde_json::Value,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

impl ObjectMeta {
    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }

    pub fn revision(&self) -> u64 {
        self.resource_version.parse().unwrap_or(0)
    }

    pub fn controller_owner(&self) -> Option<&OwnerReference> {
        self.owner_references
            .iter()
            .find(|o| o.controller == Some(true))
    }
}

/// What deleting an owner does to its dependents (the objects whose `ownerReferences` name it),
/// as Kubernetes' `propagationPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PropagationPolicy {
    /// The owner goes now; the garbage collector deletes its dependents after.
    #[default]
    Background,
    /// The owner stays, marked with a deletionTimestamp and the `foregroundDeletion`
    /// finalizer, until the garbage collector has deleted every dependent; then it goes.
    Foreground,
    /// The owner goes; its dependents stay, with their reference to it removed.
    Orphan,
}

/// The finalizer that holds an owner while its dependents are deleted (foreground cascade).
pub const FOREGROUND_DELETION: &str = "foregroundDeletion";

impl std::str::FromStr for PropagationPolicy {
    type Err = String;

    /// `background`, `foreground` or `orphan`; also kubectl's older `true` (background) and
    /// `false` (orphan).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "background" | "true" => Ok(PropagationPolicy::Background),
            "foreground" => Ok(PropagationPolicy::Foreground),
            "orphan" | "false" => Ok(PropagationPolicy::Orphan),
            _ => Err(format!(
                "unknown cascade {s:?}: expected background, foreground or orphan"
            )),
        }
    }
}
