//! Pod address ranges: each node gets its own /24 from the cluster's pod range when it first
//! registers (kube-controller-manager's node IPAM, K3s's defaults: 10.42.0.0/16, /24 a node),
//! so the node gives its pods addresses without asking anyone, also while offline.

/// The cluster's pod range: 10.42.0.0/16.
pub const CLUSTER_CIDR: [u8; 2] = [10, 42];

/// The first /24 of the cluster range that no node holds, or `None` when all 256 are taken.
pub fn next_pod_cidr<'a>(used: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let taken: std::collections::BTreeSet<u8> = used
        .into_iter()
        .filter_map(|cidr| {
            let (net, len) = cidr.split_once('/')?;
            let ip: std::net::Ipv4Addr = net.parse().ok()?;
            let o = ip.octets();
            (len == "24" && o[..2] == CLUSTER_CIDR).then_some(o[2])
        })
        .collect();
    (0..=255u8)
        .find(|n| !taken.contains(n))
        .map(|n| format!("{}.{}.{n}.0/24", CLUSTER_CIDR[0], CLUSTER_CIDR[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_get_the_first_free_range() {
        assert_eq!(next_pod_cidr([]), Some("10.42.0.0/24".into()));
        assert_eq!(
            next_pod_cidr(["10.42.0.0/24", "10.42.2.0/24", "192.168.0.0/24"]),
            Some("10.42.1.0/24".into())
        );
        let all: Vec<String> = (0..=255).map(|n| format!("10.42.{n}.0/24")).collect();
        assert_eq!(next_pod_cidr(all.iter().map(String::as_str)), None);
    }
}
