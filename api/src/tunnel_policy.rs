//! Where a service tunnel may go: a node's proxy reaches another node's pods through the
//! controller, and only pods. A pod with an address of its own (an OCI pod in its network
//! namespace) may be reached on any port; an address the pod shares with its node (a wasm
//! pod, a hostNetwork pod) only on a port the pod declares or that a Service's endpoints name,
//! so a node can never be made to open a connection to another node's own services.

use crate::{Endpoints, Pod};

fn protocol_matches(declared: Option<&str>, udp: bool) -> bool {
    let declared = declared.unwrap_or("TCP");
    if udp {
        declared.eq_ignore_ascii_case("UDP")
    } else {
        declared.eq_ignore_ascii_case("TCP")
    }
}

/// Whether `pod`'s address is its node's (no network namespace of its own).
pub fn shares_node_address(pod: &Pod) -> bool {
    pod.uses_node_network()
}

/// Whether a tunnel that reached `pod`'s address may connect to `port`: any port of an
/// address of its own, only a declared one of an address it shares with its node.
pub fn pod_accepts(pod: &Pod, port: u16, udp: bool) -> bool {
    !shares_node_address(pod) || declares(pod, port, udp)
}

fn declares(pod: &Pod, port: u16, udp: bool) -> bool {
    pod.spec.containers.iter().any(|c| {
        c.ports.iter().any(|cp| {
            cp.container_port == i32::from(port) && protocol_matches(cp.protocol.as_deref(), udp)
        })
    })
}

/// Why a tunnel to `ip:port` on `node` is refused, if it is; `pods` are the pods bound to
/// `node`, `endpoints` every Endpoints object.
pub fn tunnel_refusal(
    node: &str,
    ip: &str,
    port: u16,
    udp: bool,
    pods: &[Pod],
    endpoints: &[Endpoints],
) -> Option<String> {
    let port_i = i32::from(port);
    let at_ip: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(node))
        .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(ip))
        .collect();
    if at_ip.is_empty() {
        return Some(format!("no pod on node {node:?} has the address {ip}"));
    }
    if at_ip.iter().any(|p| !shares_node_address(p)) {
        return None;
    }
    let declared = at_ip.iter().any(|p| declares(p, port, udp));
    let endpoint = endpoints.iter().flat_map(|e| &e.subsets).any(|s| {
        s.addresses
            .iter()
            .chain(&s.not_ready_addresses)
            .any(|a| a.ip == ip && a.node_name.as_deref() == Some(node))
            && s.ports
                .iter()
                .any(|p| p.port == port_i && protocol_matches(p.protocol.as_deref(), udp))
    });
    if declared || endpoint {
        None
    } else {
        Some(format!(
            "{ip}:{port} on node {node:?} is the node's own address, and no pod there declares that port: only declared container ports and Service endpoints are reachable"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: &str, ip: &str, wasm: bool, ports: &[(i32, &str)]) -> Pod {
        let ports: Vec<serde_json::Value> = ports
            .iter()
            .map(|(p, proto)| serde_json::json!({"containerPort": p, "protocol": proto}))
            .collect();
        let mut spec = serde_json::json!({"nodeName": node,
            "containers": [{"name": "c", "image": "x", "ports": ports}]});
        if wasm {
            spec["runtimeClassName"] = "wasm".into();
        }
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec,
            "status": {"podIP": ip}}))
        .unwrap()
    }

    fn endpoints(ip: &str, node: &str, port: i32) -> Endpoints {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "svc"},
            "subsets": [{"addresses": [{"ip": ip, "nodeName": node}],
                         "ports": [{"port": port, "protocol": "TCP"}]}]}))
        .unwrap()
    }

    #[test]
    fn tunnels_reach_pods_never_the_node_itself() {
        let pods = vec![
            pod("n2", "10.42.1.5", false, &[]),
            pod("n2", "192.168.1.2", true, &[(8080, "TCP"), (5353, "UDP")]),
        ];
        let eps = vec![endpoints("192.168.1.2", "n2", 9090)];
        let cases = [
            ("an OCI pod, any port", "10.42.1.5", 5432, false, true),
            (
                "a wasm pod's declared port",
                "192.168.1.2",
                8080,
                false,
                true,
            ),
            (
                "a wasm pod's declared UDP port",
                "192.168.1.2",
                5353,
                true,
                true,
            ),
            (
                "the declared port, other protocol",
                "192.168.1.2",
                8080,
                true,
                false,
            ),
            (
                "a Service endpoint's port",
                "192.168.1.2",
                9090,
                false,
                true,
            ),
            ("the node's admin console", "192.168.1.2", 22, false, false),
            ("an address no pod has", "192.168.1.9", 8080, false, false),
        ];
        for (what, ip, port, udp, ok) in cases {
            let got = tunnel_refusal("n2", ip, port, udp, &pods, &eps);
            assert_eq!(got.is_none(), ok, "{what}: {got:?}");
        }
        // The same pods, asked of another node: nothing there.
        assert!(tunnel_refusal("n3", "10.42.1.5", 80, false, &pods, &eps).is_some());
    }
}
