//! What this node is: the Node object it registers, from the machine's own facts.

use crate::config::AgentConfig;
use shoal_api::{
    Condition, Node, NodeAddress, NodeStatus, NodeSystemInfo, ObjectMeta, Quantity, RuntimeHandler,
    WasmTarget,
};
use shoal_runtime::wasm::WASMTIME_VERSION;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Kubernetes' name for this build's architecture.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// The node's CPU (millicores) and memory (bytes): what a container without a limit may use,
/// and so what `resourceFieldRef` reads for an unset limit.
pub fn allocatable() -> (i128, i128) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as i128;
    (cpus * 1000, memory_bytes())
}

fn memory_bytes() -> i128 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<i128>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// The address this node reaches `peer` from: what the kernel's route picks for a connected
/// UDP socket (no packet is sent).
pub fn source_ip(peer: std::net::SocketAddr) -> Option<IpAddr> {
    let any: std::net::SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(peer).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The Node this agent registers and refreshes with every heartbeat.
/// `runc` is the runc version when this node runs OCI containers; `wasm` is what its engine
/// loads precompiled code for.
pub fn describe(
    config: &AgentConfig,
    address: Option<IpAddr>,
    compiler: &str,
    wasm: &WasmTarget,
    runc: Option<&str>,
    peer_port: Option<u16>,
) -> Node {
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/arch", arch()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/hostname", config.name.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(config.labels.clone());
    let (cpu_millis, memory) = allocatable();
    let mut resources: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), Quantity::from_milli(cpu_millis)),
        ("memory".to_string(), Quantity::from_bytes(memory)),
        (
            "pods".to_string(),
            Quantity::from_milli(i128::from(config.max_pods) * 1000),
        ),
    ]
    .into();
    resources.extend(config.capacity.clone());
    resources.extend(crate::devices::capacity(&config.devices));
    let mut addresses = vec![NodeAddress {
        type_: "Hostname".into(),
        address: config.name.clone(),
    }];
    if let Some(ip) = address {
        addresses.insert(
            0,
            NodeAddress {
                type_: "InternalIP".into(),
                address: ip.to_string(),
            },
        );
    }
    let now = now();
    Node {
        metadata: ObjectMeta {
            name: config.name.clone(),
            labels,
            annotations: peer_port
                .map(|p| {
                    (
                        shoal_api::node_restriction::PEER_PORT_ANNOTATION.to_string(),
                        p.to_string(),
                    )
                })
                .into_iter()
                .chain([(
                    shoal_api::LOCAL_PATH_ROOT_ANNOTATION.to_string(),
                    crate::config::storage_root(&config.data_dir)
                        .display()
                        .to_string(),
                )])
                .collect(),
            ..Default::default()
        },
        status: Some(NodeStatus {
            capacity: resources.clone(),
            allocatable: resources,
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: shoal_api::ConditionStatus::True.as_str().into(),
                reason: Some("AgentReady".into()),
                message: Some("shoal agent is posting ready status".into()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(now),
                last_update_time: None,
            }],
            addresses,
            node_info: Some(NodeSystemInfo {
                architecture: arch().into(),
                operating_system: "linux".into(),
                kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
                    .into(),
                os_image: os_image(),
                kubelet_version: format!("shoal-v{}", config.version),
                container_runtime_version: match runc {
                    Some(v) => format!("wasmtime://{WASMTIME_VERSION} ({compiler}), runc://{v}"),
                    None => format!("wasmtime://{WASMTIME_VERSION} ({compiler})"),
                },
            }),
            runtime_handlers: std::iter::once(RuntimeHandler {
                name: shoal_api::RuntimeClass::Wasm.as_str().into(),
                wasm_target: Some(wasm.clone()),
            })
            .chain(runc.map(|_| RuntimeHandler {
                name: "runc".into(),
                wasm_target: None,
            }))
            .collect(),
        }),
        ..Default::default()
    }
}
