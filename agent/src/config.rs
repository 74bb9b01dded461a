//! How an agent is set up, and the handle to its controller that every part of it shares.

use shoal_transport::Client;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// `HOST:PORT` of the controller.
    pub server: String,
    /// Needed only until the node has its certificate.
    pub token: Option<String>,
    /// The file the token came from, removed once the node has joined.
    pub token_file: Option<PathBuf>,
    pub name: String,
    /// The version this agent reports (`shoal --version`'s first word).
    pub version: String,
    /// How this agent was started, to start it so again after an over-the-air upgrade;
    /// `None` where it cannot upgrade itself (inside `shoal up`).
    pub relaunch: Option<Vec<String>>,
    pub data_dir: PathBuf,
    pub labels: BTreeMap<String, String>,
    /// Most pods this node takes (kubelet's --max-pods).
    pub max_pods: u32,
    /// Extended resources the node advertises (`example.com/dongle: 2`).
    pub capacity: std::collections::BTreeMap<String, shoal_api::Quantity>,
    /// Host devices the node gives pods that ask for them (`--device`), counted in its
    /// capacity as extended resources.
    pub devices: Vec<crate::devices::DeviceConfig>,
    /// How often the node posts its status (kubelet's --node-status-update-frequency).
    pub heartbeat: Duration,
    /// The Linux bridge the node's OCI pods are attached to.
    pub pod_bridge: String,
    /// Registries (`HOST:PORT`) pulled from over plain HTTP; loopback ones always are.
    pub insecure_registries: Vec<String>,
    /// Disk use (percent) at which unused images are removed (the kubelet's
    /// --image-gc-high-threshold), and down to which (--image-gc-low-threshold).
    pub image_gc_high_threshold: u8,
    pub image_gc_low_threshold: u8,
    /// Where the node serves its peers' service proxies directly (QUIC, mutual TLS with the
    /// nodes' certificates); `None`: peers relay through the controller.
    pub peer_listen: Option<std::net::SocketAddr>,
    /// The most a container's log file holds on disk (the kubelet's containerLogMaxSize):
    /// past it, the oldest half goes.
    pub container_log_max_size: u64,
    /// What a stop (SIGTERM, Ctrl-C) does to the pods: stops them within their grace periods
    /// (`true`), or leaves them running for the next agent to take back (`false`).
    pub drain_on_stop: bool,
    /// On a stop, after the pods are stopped (it implies `drain_on_stop`), remove what the
    /// node made in the host's network (as `shoal reset` does).
    pub cleanup: bool,
    /// A directory of pod manifests this node runs itself (static pods), with or without a
    /// controller.
    pub manifests: Option<PathBuf>,
    /// A directory of images the node holds from the start, loaded when it starts
    /// ([`crate::preload`]).
    pub images: Option<PathBuf>,
}

/// Where a node keeps the volumes Shoal provisions on it (reported to the controller, which
/// names their directories under it).
pub fn storage_root(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("storage")
}

/// A container's log on disk at most, by default (the kubelet's 10Mi).
pub const CONTAINER_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;

/// The pod bridge's name by default.
pub const POD_BRIDGE: &str = "shoal0";

/// The current connection to the controller, if any; replaced on every reconnect.
pub type Link = watch::Receiver<Option<Arc<Client>>>;

/// How often the node tells the controller it is alive, by default.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
