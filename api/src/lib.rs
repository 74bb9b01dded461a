//! Shoal's object model: Kubernetes-shaped types (`apiVersion`, `kind`, `metadata`, `spec`,
//! `status`), label selectors, resource quantities, manifest parsing and validation.
//!
//! This crate does no I/O. Everything that talks to a network, a file or a runtime builds on it.

pub mod error;
pub mod fieldset;
pub mod immutable;
pub mod intstr;
pub mod kind;
pub mod manifest;
pub mod meta;
pub mod node_restriction;
pub mod object;
pub mod objects;
pub mod patch;
pub mod pod_routes;
pub mod policy;
pub mod quantity;
pub mod selector;
pub mod states;
pub mod table;
pub mod tunnel_policy;
pub mod validate;

pub use error::{Error, FieldError, Result};
pub use intstr::IntOrString;
pub use kind::Kind;
pub use manifest::{parse_manifests, Parsed};
pub use meta::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, PropagationPolicy, FOREGROUND_DELETION,
};
pub use object::Object;
pub use objects::*;
pub use quantity::Quantity;
pub use selector::{LabelSelector, Selector};
pub use states::{
    condition_true, ConditionStatus, PodPhase, RuntimeClass, CONFIG_HASH, CONFIG_MIRROR,
    CONFIG_SOURCE,
};
