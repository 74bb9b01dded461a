//! The Endpoints controller: for each Service with a selector, the pods it selects that have
//! an address, ready ones in `addresses` and the rest in `notReadyAddresses`, with each
//! Service port's target resolved for that pod (a number, or the name of a container port).
//! Pods whose resolved ports differ land in different subsets, as in Kubernetes.
//! Also the LoadBalancer status: the addresses of the Ready nodes, where every node serves the
//! Service's ports.

use shoal_api::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, IntOrString, LoadBalancerIngress,
    LoadBalancerStatus, Node, ObjectMeta, ObjectReference, Pod, Service, ServicePort,
    ServiceStatus,
};
use std::collections::BTreeMap;

/// Whether a pod counts as ready for traffic: its Ready condition, and not on its way out.
fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.is_true())
        })
}

fn finished(pod: &Pod) -> bool {
    pod.is_terminal()
}

/// The container port a Service port goes to on `pod`, if the pod has it.
fn target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// The Endpoints `svc` should have, given the pods in its namespace.
pub fn desired(svc: &Service, pods: &[Pod]) -> Endpoints {
    let ns = svc.metadata.namespace_or_default();
    // Subsets by their port list, in a stable order.
    let mut subsets: BTreeMap<Vec<(Option<String>, i32, String)>, EndpointSubset> = BTreeMap::new();
    let selector = &svc.spec.selector;
    let mut selected: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            !selector.is_empty()
                && p.metadata.namespace_or_default() == ns
                && selector
                    .iter()
                    .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
                && !finished(p)
        })
        .collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in selected {
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let ports: Vec<(Option<String>, i32, String)> = svc
            .spec
            .ports
            .iter()
            .filter_map(|p| {
                let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                target_port(p, pod).map(|t| (p.name.clone(), t, proto))
            })
            .collect();
        // A headless Service with no ports still lists its pods (for its DNS names), as
        // Kubernetes' endpoints controller does.
        let portless_headless =
            svc.spec.ports.is_empty() && svc.spec.cluster_ip.as_deref() == Some("None");
        if ports.is_empty() && !portless_headless {
            continue;
        }
        let subset = subsets
            .entry(ports.clone())
            .or_insert_with(|| EndpointSubset {
                ports: ports
                    .iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name: name.clone(),
                        port: *port,
                        protocol: Some(protocol.clone()),
                    })
                    .collect(),
                ..Default::default()
            });
        // Kubernetes' endpoints controller names a pod by its hostname in the Service its
        // subdomain names (so `HOSTNAME.SERVICE.NS.svc` resolves to it).
        let hostname = pod
            .spec
            .hostname
            .clone()
            .filter(|_| pod.spec.subdomain.as_deref() == Some(svc.metadata.name.as_str()));
        let address = EndpointAddress {
            ip,
            hostname,
            node_name: pod.spec.node_name.clone(),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(ns.to_string()),
                name: Some(pod.metadata.name.clone()),
                uid: Some(pod.metadata.uid.clone()),
                ..Default::default()
            }),
        };
        if ready(pod) {
            subset.addresses.push(address);
        } else {
            subset.not_ready_addresses.push(address);
        }
    }
    Endpoints {
        api_version: "v1".into(),
        kind: "Endpoints".into(),
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: Some(ns.to_string()),
            labels: svc.metadata.labels.clone(),
            ..Default::default()
        },
        subsets: subsets.into_values().collect(),
    }
}

/// Whether the stored Endpoints already say what `want` says.
pub fn same(stored: &Endpoints, want: &Endpoints) -> bool {
    stored.subsets == want.subsets && stored.metadata.labels == want.metadata.labels
}

/// A LoadBalancer Service's status: every Ready node's address serves it.
pub fn load_balancer(svc: &Service, nodes: &[Node]) -> Option<ServiceStatus> {
    if svc.spec.type_.as_deref() != Some("LoadBalancer") {
        return None;
    }
    let mut ingress: Vec<LoadBalancerIngress> = nodes
        .iter()
        .filter(|n| {
            n.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.is_true())
            })
        })
        .filter_map(|n| {
            n.status
                .as_ref()?
                .addresses
                .iter()
                .find(|a| a.type_ == "InternalIP")
                .map(|a| LoadBalancerIngress {
                    ip: Some(a.address.clone()),
                    hostname: None,
                })
        })
        .collect();
    ingress.sort_by(|a, b| a.ip.cmp(&b.ip));
    ingress.dedup();
    Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus { ingress }),
    })
}

/// The status a Service must be given, if its stored one is not it: a LoadBalancer's lists
/// the Ready nodes; any other type has none, so a Service changed from LoadBalancer to
/// ClusterIP loses its EXTERNAL-IP. `None`: nothing to write.
pub fn status_change(svc: &Service, nodes: &[Node]) -> Option<Option<ServiceStatus>> {
    let want = load_balancer(svc, nodes);
    let has_lb = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .is_some();
    match &want {
        Some(_) if svc.status != want => Some(want),
        None if has_lb => Some(None),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{Condition, Container, ContainerPort, PodSpec, PodStatus, ServiceSpec};

    fn pod(name: &str, ip: Option<&str>, is_ready: bool, app: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some("default".into()),
                uid: format!("uid-{name}"),
                labels: [("app".to_string(), app.to_string())].into(),
                ..Default::default()
            },
            spec: PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container {
                    name: "main".into(),
                    ports: vec![ContainerPort {
                        container_port: 8080,
                        name: Some("http".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: ip.map(str::to_string),
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: if is_ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn service(target: Option<IntOrString>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: "web".into(),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: ServiceSpec {
                selector: [("app".to_string(), "web".to_string())].into(),
                ports: vec![ServicePort {
                    port: 80,
                    target_port: target,
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn ready_pods_are_addresses_the_rest_not_ready_and_named_ports_resolve() {
        let pods = vec![
            pod("b", Some("10.42.1.3"), true, "web"),
            pod("a", Some("10.42.0.2"), true, "web"),
            pod("c", Some("10.42.0.4"), false, "web"),
            pod("pending", None, false, "web"),
            pod("other", Some("10.42.0.9"), true, "db"),
        ];
        let ep = desired(&service(Some(IntOrString::String("http".into()))), &pods);
        assert_eq!(ep.subsets.len(), 1);
        let s = &ep.subsets[0];
        let ips: Vec<&str> = s.addresses.iter().map(|a| a.ip.as_str()).collect();
        assert_eq!(ips, ["10.42.0.2", "10.42.1.3"]);
        assert_eq!(s.not_ready_addresses[0].ip, "10.42.0.4");
        assert_eq!(s.ports[0].port, 8080);
        assert_eq!(s.ports[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(s.addresses[0].node_name.as_deref(), Some("node-1"));
        // No target port: the Service's own port.
        let ep = desired(&service(None), &pods);
        assert_eq!(ep.subsets[0].ports[0].port, 80);
        // A name no container has: the pod cannot serve the port.
        let ep = desired(&service(Some(IntOrString::String("grpc".into()))), &pods);
        assert!(ep.subsets.is_empty());
        // A pod being deleted is no longer ready; a finished one is gone.
        let mut leaving = pods.clone();
        leaving[0].metadata.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
        if let Some(s) = leaving[1].status.as_mut() {
            s.phase = Some("Succeeded".into());
        }
        let ep = desired(&service(None), &leaving);
        assert!(ep.subsets[0].addresses.is_empty());
        let not_ready: Vec<&str> = ep.subsets[0]
            .not_ready_addresses
            .iter()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(not_ready, ["10.42.1.3", "10.42.0.4"]);
        // No selector: Endpoints are the user's to write.
        let mut manual = service(None);
        manual.spec.selector.clear();
        assert!(desired(&manual, &pods).subsets.is_empty());
        // Headless with no ports: the pods still, in a subset with no ports (for DNS); with
        // no ports and a cluster IP, nothing.
        let mut headless = service(None);
        headless.spec.ports.clear();
        assert!(desired(&headless, &pods).subsets.is_empty());
        headless.spec.cluster_ip = Some("None".into());
        let ep = desired(&headless, &pods);
        assert_eq!(ep.subsets.len(), 1);
        assert!(ep.subsets[0].ports.is_empty());
        assert_eq!(ep.subsets[0].addresses.len(), 2);
        // A pod's hostname names it in the Service its subdomain names, and only there.
        let mut named = pods.clone();
        named[1].spec.hostname = Some("web-0".into());
        named[1].spec.subdomain = Some("web".into());
        named[0].spec.hostname = Some("b-0".into());
        named[0].spec.subdomain = Some("elsewhere".into());
        let ep = desired(&headless, &named);
        let hosts: Vec<Option<&str>> = (ep.subsets[0].addresses.iter())
            .map(|a| a.hostname.as_deref())
            .collect();
        assert_eq!(hosts, [Some("web-0"), None]);
    }

    #[test]
    fn load_balancers_list_ready_nodes() {
        use shoal_api::{NodeAddress, NodeStatus};
        let node = |name: &str, ip: &str, ok: bool| Node {
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }],
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: if ok { "True" } else { "Unknown" }.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let nodes = [
            node("b", "10.0.0.2", true),
            node("a", "10.0.0.1", true),
            node("c", "10.0.0.3", false),
        ];
        let mut svc = service(None);
        assert_eq!(load_balancer(&svc, &nodes), None);
        svc.spec.type_ = Some("LoadBalancer".into());
        let st = load_balancer(&svc, &nodes).expect("status");
        let ips: Vec<_> = st
            .load_balancer
            .expect("lb")
            .ingress
            .into_iter()
            .map(|i| i.ip)
            .collect();
        assert_eq!(ips, [Some("10.0.0.1".into()), Some("10.0.0.2".into())]);

        // The status follows the type: written once for a LoadBalancer, cleared when the
        // Service becomes a ClusterIP, and left alone when there is nothing to say.
        let fresh = status_change(&svc, &nodes).expect("a new LoadBalancer gets a status");
        svc.status = fresh;
        assert_eq!(status_change(&svc, &nodes), None);
        svc.spec.type_ = Some("ClusterIP".into());
        assert_eq!(status_change(&svc, &nodes), Some(None));
        svc.status = None;
        assert_eq!(status_change(&svc, &nodes), None);
    }
}
