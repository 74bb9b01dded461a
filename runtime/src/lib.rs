//! Shoal's workload runtimes. A [`Workload`] starts a container from a [`ContainerSpec`] and
//! returns a [`Handle`] to stop it and learn how it ended. The wasm executor runs WebAssembly
//! with wasmtime (WASI preview 1 modules and preview 2 components); the agent picks the
//! executor from the pod's `runtimeClassName`.

pub mod error;
pub mod handle;
pub mod logs;
pub mod oci;
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
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    /// `namespace/pod/container`, for logs and errors.
    pub id: String,
    /// Stable and unique on the node (`<pod uid>-<container>`): what the OCI executor names
    /// the container, so a restarted agent finds it again.
    pub key: String,
    /// The artifact on local disk: for wasm a .wasm module or component (or WAT text); for OCI
    /// the image manifest's blob in the node's image store.
    pub artifact: PathBuf,
    /// argv for wasm: the container's `command` then `args`; argv[0] defaults to the
    /// container name.
    pub argv: Vec<String>,
    /// The container's `command` and `args` as written; OCI merges them with the image's
    /// Entrypoint and Cmd the way Kubernetes does.
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    /// Cap on linear memory, bytes (`resources.limits.memory`).
    pub memory_limit: Option<u64>,
    /// CPU the container may use, in millicores (`resources.limits.cpu`).
    pub cpu_limit_millis: Option<u64>,
    /// CPU it asked for, in millicores (`resources.requests.cpu`): its share under contention.
    pub cpu_request_millis: Option<u64>,
    /// Most processes (OCI only).
    pub pids_limit: Option<i64>,
    /// `securityContext`, as OCI containers honour it.
    pub security: Security,
    /// Which network the container joins (OCI only; wasm has no network namespace).
    pub network: Network,
    /// The container's hostname (the pod's name).
    pub hostname: String,
    /// The ports it declares (`containerPort`s): the only ones a wasm container may listen
    /// on with WASI sockets.
    pub ports: Vec<Port>,
    /// Answers a wasm container's name lookups before the node's resolver does.
    pub resolver: Option<Resolver>,
    /// Which connections a wasm container may open (its pod's NetworkPolicy egress); none
    /// is every one.
    pub egress: Option<Egress>,
    /// stdout and stderr are appended here.
    pub log_path: PathBuf,
    /// Open descriptors that mounts name by `/proc/<pid>/fd/<n>` (checked subPaths): held as
    /// long as the spec, so a restart mounts the same objects.
    pub held: Vec<std::sync::Arc<std::os::fd::OwnedFd>>,
    /// Host devices the node gave the container (OCI only: a wasm container gets them as
    /// files in a mounted directory): made in its `/dev` and allowed by its device cgroup.
    pub devices: Vec<Device>,
}

/// A host device node given to a container, as the device plugin API describes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Where it is in the container (under `/dev`).
    pub container_path: String,
    /// A block device (`b`), else a character device (`c`).
    pub block: bool,
    pub major: u64,
    pub minor: u64,
    /// The node's permission bits, owner and group, as on the host.
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The function behind a [`Resolver`].
pub type ResolveFn = dyn Fn(&str) -> Option<Vec<std::net::IpAddr>> + Send + Sync;

/// Resolves the cluster's names for a wasm container: `Some(addresses)` for a name the
/// cluster knows (empty: it knows there is no such name), `None` for any other.
#[derive(Clone)]
pub struct Resolver(pub std::sync::Arc<ResolveFn>);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

/// The function behind an [`Egress`]: whether a connection (or datagram) to an address may
/// go, and whether it is UDP.
pub type EgressFn = dyn Fn(std::net::SocketAddr, bool) -> bool + Send + Sync;

/// Holds a wasm container's outbound sockets to its pod's NetworkPolicy.
#[derive(Clone)]
pub struct Egress(pub std::sync::Arc<EgressFn>);

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Egress")
    }
}

/// A declared container port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub port: u16,
    pub udp: bool,
}

/// A container's `securityContext`, resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub run_as_non_root: bool,
    pub read_only_root_filesystem: bool,
    pub privileged: bool,
    /// `allowPrivilegeEscalation`; unset means no (`no_new_privileges`), as in Docker.
    pub allow_privilege_escalation: bool,
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    /// Groups the process is also in (the pod's supplementalGroups and fsGroup).
    pub supplemental_groups: Vec<u32>,
    /// Namespaced kernel parameters (the pod's sysctls).
    pub sysctls: Vec<(String, String)>,
    /// `seccompProfile: Unconfined`: no seccomp filter.
    pub seccomp_unconfined: bool,
    /// `seccompProfile: Localhost`: the node's profile file (the OCI runtime spec's seccomp
    /// object, as runc takes it), in place of the default; read at each start.
    pub seccomp_localhost: Option<PathBuf>,
}

/// The network a container lives in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// The node's own network (`hostNetwork: true`).
    Host,
    /// The pod's network namespace, shared by its containers (a path under /var/run/netns).
    Pod(PathBuf),
    /// A namespace of its own with only loopback.
    #[default]
    Isolated,
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
