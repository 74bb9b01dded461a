//! What the proxy decides without I/O: the listeners a node should have for the Services
//! and Endpoints it knows ([`plan`]), and the variables pods get for their namespace's
//! Services ([`service_env`]).

use shoal_api::{Endpoints, Service};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Where a Service port is served on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listen {
    pub addr: SocketAddr,
    pub udp: bool,
}

/// One ready endpoint of a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub ip: String,
    pub port: u16,
    /// The node the pod runs on; `None` when the Endpoints do not say.
    pub node: Option<String>,
}

/// What one listener serves: `namespace/name:port` and its ready endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub service: String,
    pub backends: Vec<Backend>,
    /// With `sessionAffinity: ClientIP`, how long a client keeps its endpoint.
    pub affinity: Option<std::time::Duration>,
}

/// A Service's or Endpoints' namespace and name.
pub type Key = (String, String);

pub fn key(m: &shoal_api::ObjectMeta) -> Key {
    (m.namespace_or_default().to_string(), m.name.clone())
}

/// Every listener this node should have: each Service port on its cluster IP and, for
/// NodePort and LoadBalancer Services, on the node port of every address, for as long as the
/// port has ready endpoints (none: no listener, so a connection is refused, not hung).
pub fn plan(
    services: &BTreeMap<Key, Service>,
    endpoints: &BTreeMap<Key, Endpoints>,
) -> BTreeMap<Listen, Route> {
    let mut out = BTreeMap::new();
    for (k, svc) in services {
        let cluster_ip: Option<Ipv4Addr> = svc
            .spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok());
        let single = svc.spec.ports.len() == 1;
        for p in &svc.spec.ports {
            let udp = p.protocol.as_deref() == Some("UDP");
            let backends: Vec<Backend> = endpoints
                .get(k)
                .into_iter()
                .flat_map(|e| &e.subsets)
                .flat_map(|s| {
                    let port = s
                        .ports
                        .iter()
                        .find(|ep| ep.name == p.name || (single && s.ports.len() == 1));
                    port.into_iter().flat_map(move |ep| {
                        s.addresses.iter().filter_map(move |a| {
                            Some(Backend {
                                ip: a.ip.clone(),
                                port: u16::try_from(ep.port).ok()?,
                                node: a.node_name.clone(),
                            })
                        })
                    })
                })
                .collect();
            if backends.is_empty() {
                continue;
            }
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let route = Route {
                service: format!("{}/{}:{}", k.0, k.1, p.port),
                backends,
                affinity: svc.spec.client_ip_affinity(),
            };
            if let Some(ip) = cluster_ip {
                let addr = SocketAddr::new(IpAddr::V4(ip), port);
                out.insert(Listen { addr, udp }, route.clone());
            }
            if let Some(np) = p.node_port.and_then(|n| u16::try_from(n).ok()) {
                let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), np);
                out.insert(Listen { addr, udp }, route);
            }
        }
    }
    out
}

/// The variables a pod gets for each Service of its namespace that exists when it starts, as
/// the kubelet sets them: `{NAME}_SERVICE_HOST`, `{NAME}_SERVICE_PORT` (and one per named
/// port), and the Docker-link style `{NAME}_PORT`, `{NAME}_PORT_{P}_{PROTO}[_PROTO|_PORT|_ADDR]`.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for svc in services {
        let Some(ip) = svc
            .spec
            .cluster_ip
            .as_deref()
            .filter(|ip| ip.parse::<Ipv4Addr>().is_ok())
        else {
            continue;
        };
        let Some(first) = svc.spec.ports.first() else {
            continue;
        };
        let name = svc.metadata.name.to_uppercase().replace('-', "_");
        env.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        env.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &svc.spec.ports {
            if let Some(pn) = &p.name {
                let pn = pn.to_uppercase().replace('-', "_");
                env.push((format!("{name}_SERVICE_PORT_{pn}"), p.port.to_string()));
            }
        }
        let proto = |p: &shoal_api::ServicePort| {
            p.protocol
                .clone()
                .unwrap_or_else(|| "TCP".into())
                .to_lowercase()
        };
        env.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto(first), first.port),
        ));
        for p in &svc.spec.ports {
            let pr = proto(p);
            let base = format!("{name}_PORT_{}_{}", p.port, pr.to_uppercase());
            env.push((base.clone(), format!("{pr}://{ip}:{}", p.port)));
            env.push((format!("{base}_PROTO"), pr));
            env.push((format!("{base}_PORT"), p.port.to_string()));
            env.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{
        EndpointAddress, EndpointPort, EndpointSubset, ObjectMeta, ServicePort, ServiceSpec,
    };

    fn svc(ty: &str, ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: "web".into(),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: ServiceSpec {
                type_: Some(ty.into()),
                cluster_ip: Some("10.43.0.7".into()),
                ports,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn port(name: Option<&str>, port: i32, node_port: Option<i32>) -> ServicePort {
        ServicePort {
            name: name.map(str::to_string),
            port,
            node_port,
            ..Default::default()
        }
    }

    fn endpoints(ports: Vec<(Option<&str>, i32)>, addrs: &[(&str, &str)]) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                name: "web".into(),
                namespace: Some("default".into()),
                ..Default::default()
            },
            subsets: vec![EndpointSubset {
                addresses: addrs
                    .iter()
                    .map(|(ip, node)| EndpointAddress {
                        ip: ip.to_string(),
                        node_name: Some(node.to_string()),
                        ..Default::default()
                    })
                    .collect(),
                ports: ports
                    .into_iter()
                    .map(|(n, p)| EndpointPort {
                        name: n.map(str::to_string),
                        port: p,
                        protocol: Some("TCP".into()),
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn maps(
        s: Service,
        e: Option<Endpoints>,
    ) -> (BTreeMap<Key, Service>, BTreeMap<Key, Endpoints>) {
        let k = ("default".to_string(), "web".to_string());
        (
            [(k.clone(), s)].into(),
            e.into_iter().map(|e| (k.clone(), e)).collect(),
        )
    }

    #[test]
    fn cluster_ips_and_node_ports_listen_only_with_ready_endpoints() {
        let ep = endpoints(
            vec![(None, 8080)],
            &[("10.42.1.2", "n1"), ("10.42.2.2", "n2")],
        );
        let (s, e) = maps(svc("NodePort", vec![port(None, 80, Some(30080))]), Some(ep));
        let p = plan(&s, &e);
        let addrs: Vec<String> = p.keys().map(|l| l.addr.to_string()).collect();
        assert_eq!(addrs, ["0.0.0.0:30080", "10.43.0.7:80"]);
        let route = p.values().next().expect("route");
        assert_eq!(route.service, "default/web:80");
        assert_eq!(route.backends.len(), 2);
        assert_eq!(route.backends[1].node.as_deref(), Some("n2"));
        assert_eq!(route.backends[0].port, 8080);
        // No endpoints, or none ready: nothing listens.
        let (s, e) = maps(svc("NodePort", vec![port(None, 80, Some(30080))]), None);
        assert!(plan(&s, &e).is_empty());
        let (s, e) = maps(
            svc("ClusterIP", vec![port(None, 80, None)]),
            Some(endpoints(vec![(None, 8080)], &[])),
        );
        assert!(plan(&s, &e).is_empty());
    }

    #[test]
    fn named_ports_go_to_their_own_endpoint_ports() {
        let ep = endpoints(
            vec![(Some("http"), 8080), (Some("metrics"), 9090)],
            &[("10.42.1.2", "n1")],
        );
        let (s, e) = maps(
            svc(
                "ClusterIP",
                vec![
                    port(Some("http"), 80, None),
                    port(Some("metrics"), 9100, None),
                ],
            ),
            Some(ep),
        );
        let p = plan(&s, &e);
        let got: Vec<(String, u16)> = p
            .iter()
            .map(|(l, r)| (l.addr.to_string(), r.backends[0].port))
            .collect();
        assert_eq!(
            got,
            [
                ("10.43.0.7:80".to_string(), 8080),
                ("10.43.0.7:9100".to_string(), 9090)
            ]
        );
    }

    #[test]
    fn pods_get_the_kubelet_service_variables() {
        let mut s = svc("ClusterIP", vec![port(Some("http"), 80, None)]);
        s.metadata.name = "redis-primary".into();
        let env: BTreeMap<String, String> = service_env(&[s]).into_iter().collect();
        assert_eq!(env["REDIS_PRIMARY_SERVICE_HOST"], "10.43.0.7");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT"], "80");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["REDIS_PRIMARY_PORT"], "tcp://10.43.0.7:80");
        assert_eq!(env["REDIS_PRIMARY_PORT_80_TCP"], "tcp://10.43.0.7:80");
        assert_eq!(env["REDIS_PRIMARY_PORT_80_TCP_PROTO"], "tcp");
        assert_eq!(env["REDIS_PRIMARY_PORT_80_TCP_PORT"], "80");
        assert_eq!(env["REDIS_PRIMARY_PORT_80_TCP_ADDR"], "10.43.0.7");
        let mut headless = svc("ClusterIP", vec![port(None, 80, None)]);
        headless.spec.cluster_ip = Some("None".into());
        assert!(service_env(&[headless]).is_empty());
    }
}
