//! The object kinds, one module per family, with Kubernetes field names.

mod affinity;
mod agent_upgrade;
mod config;
mod cronjob;
mod event;
mod namespace;
mod network_policy;
mod node;
mod pod;
mod pod_containers;
mod service;
mod storage;
mod workloads;

pub use affinity::*;
pub use agent_upgrade::*;
pub use config::*;
pub use cronjob::*;
pub use event::*;
pub use namespace::*;
pub use network_policy::*;
pub use node::*;
pub use pod::*;
pub use pod_containers::names_a_registry;
pub use service::*;
pub use storage::*;
pub use workloads::*;

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
