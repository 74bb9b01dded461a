//! What the cluster decides for a Service when it is written: its virtual address from the
//! service range (K3s's default 10.43.0.0/16) and, for NodePort and LoadBalancer Services, a
//! node port from 30000-32767 for each port that names none. Both stay what they were for as
//! long as the Service exists: a re-apply without them keeps them, a change is refused.

use shoal_api::Service;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// The node ports Services may have (kube-apiserver's --service-node-port-range default).
pub const NODE_PORTS: RangeInclusive<i32> = 30000..=32767;

/// The range virtual Service addresses come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceCidr {
    base: u32,
    prefix: u8,
}

impl Default for ServiceCidr {
    /// 10.43.0.0/16, as K3s.
    fn default() -> Self {
        ServiceCidr {
            base: u32::from(Ipv4Addr::new(10, 43, 0, 0)),
            prefix: 16,
        }
    }
}

impl std::str::FromStr for ServiceCidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (net, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/len)"))?;
        let ip: Ipv4Addr = net.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = len.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !(12..=28).contains(&prefix) {
            return Err(format!(
                "{s:?}: the service range needs a prefix from /12 to /28"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(ip) & !mask != 0 {
            return Err(format!(
                "{s:?}: host bits are set; did you mean {}/{prefix}?",
                Ipv4Addr::from(u32::from(ip) & mask)
            ));
        }
        Ok(ServiceCidr {
            base: u32::from(ip),
            prefix,
        })
    }
}

impl std::fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl ServiceCidr {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == self.base
    }

    /// The addresses Services may get: not the network address, not the first (kept for the
    /// API, as Kubernetes keeps it), not the broadcast address.
    fn assignable(&self) -> impl Iterator<Item = Ipv4Addr> {
        let size = 1u32 << (32 - self.prefix);
        (self.base + 2..self.base + size - 1).map(Ipv4Addr::from)
    }

    /// The cluster DNS Service's address: the tenth, as K3s's 10.43.0.10; never handed out
    /// to another Service.
    pub fn dns_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 10)
    }
}

fn uses_node_ports(svc: &Service) -> bool {
    matches!(
        svc.spec.type_.as_deref(),
        Some("NodePort") | Some("LoadBalancer")
    )
}

/// Fills in `svc`'s cluster IP and node ports: kept from `stored` (the Service as it is now, if
/// it exists), else taken from the free ones; `others` are the cluster's other Services. An
/// error says which field cannot be had and why.
pub fn assign(
    svc: &mut Service,
    stored: Option<&Service>,
    others: &[Service],
    range: &ServiceCidr,
) -> Result<(), String> {
    let same = |o: &&Service| {
        o.metadata.name == svc.metadata.name
            && o.metadata.namespace_or_default() == svc.metadata.namespace_or_default()
    };
    let others: Vec<&Service> = others.iter().filter(|o| !same(o)).collect();
    // The cluster IP.
    let asked = svc.spec.cluster_ip.clone().filter(|ip| !ip.is_empty());
    let kept = stored.and_then(|s| s.spec.cluster_ip.clone());
    let ip = match (asked, kept) {
        (Some(a), Some(k)) if a != k => {
            return Err(format!(
            "spec.clusterIP: may not change ({k} -> {a}); delete the Service and create it again"
        ))
        }
        (_, Some(k)) => k,
        (Some(a), None) if a == "None" => a,
        (Some(a), None) => {
            let ip: Ipv4Addr = a
                .parse()
                .map_err(|_| format!("spec.clusterIP: {a:?} is not an IPv4 address"))?;
            if !range.contains(ip) || !range.assignable().any(|x| x == ip) {
                return Err(format!(
                    "spec.clusterIP: {a} is not in the service range {range}"
                ));
            }
            if let Some(o) = others
                .iter()
                .find(|o| o.spec.cluster_ip.as_deref() == Some(&a))
            {
                return Err(format!(
                    "spec.clusterIP: {a} is taken by service {}/{}",
                    o.metadata.namespace_or_default(),
                    o.metadata.name
                ));
            }
            a
        }
        (None, None) => {
            let taken: BTreeSet<&str> = others
                .iter()
                .filter_map(|o| o.spec.cluster_ip.as_deref())
                .collect();
            range
                .assignable()
                .filter(|ip| *ip != range.dns_address())
                .map(|ip| ip.to_string())
                .find(|ip| !taken.contains(ip.as_str()))
                .ok_or_else(|| format!("spec.clusterIP: the service range {range} is full"))?
        }
    };
    svc.spec.cluster_ips = vec![ip.clone()];
    svc.spec.cluster_ip = Some(ip);
    // Node ports.
    if !uses_node_ports(svc) {
        return Ok(());
    }
    let mut taken: BTreeSet<i32> = others
        .iter()
        .flat_map(|o| o.spec.ports.iter().filter_map(|p| p.node_port))
        .collect();
    let before: Vec<_> = stored
        .filter(|s| uses_node_ports(s))
        .map(|s| s.spec.ports.clone())
        .unwrap_or_default();
    // The ports asked for first, so none is handed out before its owner comes to it.
    for (i, p) in svc.spec.ports.iter().enumerate() {
        if let Some(np) = p.node_port {
            if !taken.insert(np) {
                return Err(format!(
                    "spec.ports[{i}].nodePort: {np} is already allocated"
                ));
            }
        }
    }
    for (i, p) in svc.spec.ports.iter_mut().enumerate() {
        if p.node_port.is_some() {
            continue;
        }
        let was = before
            .iter()
            .find(|b| b.name == p.name && b.protocol == p.protocol && b.port == p.port)
            .or_else(|| before.iter().find(|b| b.name.is_some() && b.name == p.name))
            .and_then(|b| b.node_port)
            .filter(|np| !taken.contains(np));
        let np = match was {
            Some(np) => np,
            None => NODE_PORTS
                .clone()
                .find(|n| !taken.contains(n))
                .ok_or_else(|| format!("spec.ports[{i}].nodePort: all node ports are taken"))?,
        };
        taken.insert(np);
        p.node_port = Some(np);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::{ObjectMeta, ServicePort, ServiceSpec};

    fn svc(name: &str, ty: &str, ip: Option<&str>, ports: &[(i32, Option<i32>)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
            spec: ServiceSpec {
                type_: Some(ty.into()),
                cluster_ip: ip.map(str::to_string),
                ports: ports
                    .iter()
                    .enumerate()
                    .map(|(i, (port, np))| ServicePort {
                        name: Some(format!("p{i}")),
                        port: *port,
                        node_port: *np,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn addresses_are_the_first_free_and_stay_put() {
        let r = ServiceCidr::default();
        let mut a = svc("a", "ClusterIP", None, &[(80, None)]);
        assign(&mut a, None, &[], &r).expect("a");
        assert_eq!(a.spec.cluster_ip.as_deref(), Some("10.43.0.2"));
        assert_eq!(a.spec.cluster_ips, ["10.43.0.2"]);
        let mut b = svc("b", "ClusterIP", None, &[(80, None)]);
        assign(&mut b, None, std::slice::from_ref(&a), &r).expect("b");
        assert_eq!(b.spec.cluster_ip.as_deref(), Some("10.43.0.3"));
        // A re-apply without the address keeps it; one that changes it is refused.
        let mut again = svc("a", "ClusterIP", None, &[(81, None)]);
        assign(&mut again, Some(&a), &[a.clone(), b.clone()], &r).expect("again");
        assert_eq!(again.spec.cluster_ip, a.spec.cluster_ip);
        let mut moved = svc("a", "ClusterIP", Some("10.43.0.9"), &[(80, None)]);
        let e = assign(&mut moved, Some(&a), &[a.clone(), b.clone()], &r).unwrap_err();
        assert!(e.contains("may not change"), "{e}");
        // Asked-for addresses: in range and free.
        let mut c = svc("c", "ClusterIP", Some("10.43.0.3"), &[(80, None)]);
        let e = assign(&mut c, None, &[a.clone(), b.clone()], &r).unwrap_err();
        assert!(e.contains("taken by service default/b"), "{e}");
        let mut d = svc("d", "ClusterIP", Some("10.99.0.3"), &[(80, None)]);
        let e = assign(&mut d, None, &[], &r).unwrap_err();
        assert!(e.contains("not in the service range 10.43.0.0/16"), "{e}");
        let mut h = svc("h", "ClusterIP", Some("None"), &[(80, None)]);
        assign(&mut h, None, &[], &r).expect("headless");
        assert_eq!(h.spec.cluster_ip.as_deref(), Some("None"));
        // A full range says so.
        let tiny: ServiceCidr = "10.50.0.0/28".parse().expect("cidr");
        let all: Vec<Service> = (2..15)
            .map(|n| {
                svc(
                    &format!("s{n}"),
                    "ClusterIP",
                    Some(&format!("10.50.0.{n}")),
                    &[],
                )
            })
            .collect();
        let mut e = svc("e", "ClusterIP", None, &[]);
        assert!(assign(&mut e, None, &all, &tiny)
            .unwrap_err()
            .contains("full"));
        assert!("10.50.0.1/28".parse::<ServiceCidr>().is_err());
    }

    #[test]
    fn node_ports_are_allocated_kept_and_never_shared() {
        let r = ServiceCidr::default();
        let mut a = svc("a", "NodePort", None, &[(80, None), (443, Some(30000))]);
        assign(&mut a, None, &[], &r).expect("a");
        let ports: Vec<_> = a.spec.ports.iter().map(|p| p.node_port).collect();
        assert_eq!(ports, [Some(30001), Some(30000)]);
        let mut again = svc("a", "NodePort", None, &[(80, None), (443, None)]);
        assign(&mut again, Some(&a), std::slice::from_ref(&a), &r).expect("again");
        assert_eq!(again.spec.ports, a.spec.ports);
        let mut b = svc("b", "LoadBalancer", None, &[(80, Some(30001))]);
        let e = assign(&mut b, None, std::slice::from_ref(&a), &r).unwrap_err();
        assert!(
            e.contains("spec.ports[0].nodePort: 30001 is already allocated"),
            "{e}"
        );
        let mut b = svc("b", "LoadBalancer", None, &[(80, None)]);
        assign(&mut b, None, std::slice::from_ref(&a), &r).expect("b");
        assert_eq!(b.spec.ports[0].node_port, Some(30002));
        let mut c = svc("c", "ClusterIP", None, &[(80, None)]);
        assign(&mut c, None, &[a, b], &r).expect("c");
        assert_eq!(c.spec.ports[0].node_port, None);
    }
}
