//! Shoal's controller: the redb store (the single source of truth), the API service that
//! knows identities and permissions, and the QUIC server that exposes it.

pub mod artifacts;
pub mod batch;
pub mod error;
pub mod events;
pub mod http;
pub mod ipam;
pub mod node_lifecycle;
pub mod precompiled;
pub mod rate;
pub mod reconcile;
pub mod scheduler;
pub mod scheduler_loop;
pub mod server;
pub mod service;
pub mod service_ips;
pub mod store;
pub mod trust;
pub mod upgrades;
pub mod wake;

pub use error::{Error, Result};
pub use server::{Controller, ControllerConfig};
pub use service::Service;
pub use store::{Change, ChangeType, Store, StoreConfig};
