//! Shoal's workload runtimes. A [`Workload`] starts a container from a [`ContainerSpec`] and
//! returns a [`Handle`] to stop it and learn how it ended. The wasm executor runs WebAssembly
//! with wasmtime (WASI preview 1 modules and preview 2 components); the agent picks the
//! executor from the pod's `runtimeClassName`.

pub mod error;
pub mod handle;
pub mod logs;
pub mod wasm;

pub use error::{Error, Result};
pub use handle::{Exit, ExitReason, Handle};

use std::path::PathBuf;

/// A directory made visible to the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub guest_path: String,
    pub read_only: bool,
}

/// Everything an executor needs to run one container; resolved by the agent from the pod.
#[derive(Clone, Debug)]
pub struct ContainerSpec {
    /// `namespace/pod/container`, for logs and errors.
    pub id: String,
    /// The artifact on local disk (a .wasm module or component, or WAT text).
    pub artifact: PathBuf,
    /// argv: the container's `command` then `args`; argv[0] defaults to the container name.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    /// Cap on linear memory, bytes (`resources.limits.memory`).
    pub memory_limit: Option<u64>,
    /// CPU the container may use, in millicores (`resources.limits.cpu`).
    pub cpu_limit_millis: Option<u64>,
    /// stdout and stderr are appended here.
    pub log_path: PathBuf,
}

/// A way of running containers.
pub trait Workload: Send + Sync {
    /// `wasm` or `runc`, as `runtimeClassName` names it.
    fn name(&self) -> &'static str;

    /// Checks and prepares an artifact (for wasm: compiles it, or loads it from the cache).
    /// May take a while; call it off the async runtime.
    fn prepare(&self, artifact: &std::path::Path) -> Result<()>;

    /// Starts a container; it runs until it exits or [`Handle::stop`] is called.
    fn start(&self, spec: ContainerSpec) -> Result<Handle>;
}
