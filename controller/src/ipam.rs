//! Pod address ranges: each node gets its own /24 from the cluster's pod range when it first
//! registers (kube-controller-manager's node IPAM, K3s's defaults: 10.42.0.0/16, /24 a node),
//! so the node gives its pods addresses without asking anyone, also while offline.

use std::net::Ipv4Addr;

/// The cluster's pod range: a /16, cut into one /24 per node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterCidr([u8; 2]);

impl Default for ClusterCidr {
    /// 10.42.0.0/16, as K3s.
    fn default() -> Self {
        ClusterCidr([10, 42])
    }
}

impl std::str::FromStr for ClusterCidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (net, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.0.0/16)"))?;
        let ip: Ipv4Addr = net.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let o = ip.octets();
        if len != "16" || o[2] != 0 || o[3] != 0 {
            return Err(format!(
                "{s:?}: the cluster's pod range must be a /16 (a.b.0.0/16); nodes get a /24 of it"
            ));
        }
        Ok(ClusterCidr([o[0], o[1]]))
    }
}

impl std::fmt::Display for ClusterCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.0.0/16", self.0[0], self.0[1])
    }
}

impl ClusterCidr {
    /// The first /24 of the range that no node holds, or `None` when all 256 are taken.
    pub fn next_pod_cidr<'a>(&self, used: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let taken: std::collections::BTreeSet<u8> = used
            .into_iter()
            .filter_map(|cidr| {
                let (net, len) = cidr.split_once('/')?;
                let ip: Ipv4Addr = net.parse().ok()?;
                let o = ip.octets();
                (len == "24" && o[..2] == self.0).then_some(o[2])
            })
            .collect();
        (0..=255u8)
            .find(|n| !taken.contains(n))
            .map(|n| format!("{}.{}.{n}.0/24", self.0[0], self.0[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_the_first_free_range() {
        let c = ClusterCidr::default();
        assert_eq!(c.next_pod_cidr([]), Some("10.42.0.0/24".into()));
        assert_eq!(
            c.next_pod_cidr(["10.42.0.0/24", "10.42.2.0/24", "192.168.0.0/24"]),
            Some("10.42.1.0/24".into())
        );
        let all: Vec<String> = (0..=255).map(|n| format!("10.42.{n}.0/24")).collect();
        assert_eq!(c.next_pod_cidr(all.iter().map(String::as_str)), None);
        let other: ClusterCidr = "10.60.0.0/16".parse().expect("cidr");
        assert_eq!(
            other.next_pod_cidr(["10.42.0.0/24"]),
            Some("10.60.0.0/24".into())
        );
        assert!("10.60.1.0/16".parse::<ClusterCidr>().is_err());
        assert!("10.60.0.0/8".parse::<ClusterCidr>().is_err());
    }
}
