//! Extended resources (`example.com/dongle: 1`): what a node advertises in its allocatable
//! beyond cpu, memory and pods (`shoal agent --capacity`), requested in whole units and
//! never overcommitted. A pod asking for one goes only to a node with enough of it free.

use shoal_api::Pod;
use std::collections::BTreeMap;

/// A pod's extended-resource requests (a limit alone counts as the request), as Kubernetes
/// counts them ([`shoal_api::PodSpec::effective_requests`]).
pub(super) fn requests(pod: &Pod) -> BTreeMap<String, i128> {
    pod.spec.effective_requests(|c| {
        c.resources
            .requests
            .keys()
            .chain(c.resources.limits.keys())
            .filter(|r| shoal_api::validate::is_extended_resource(r))
            .filter_map(|r| Some((r.clone(), c.resources.request(r)?.value())))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::super::Snapshot;
    use shoal_api::*;

    fn node(name: &str, dongles: Option<&str>) -> Node {
        let mut n = super::super::tests::node(name, "4", "4Gi", &["wasm"]);
        if let (Some(st), Some(d)) = (n.status.as_mut(), dongles) {
            let q = d.parse().expect("qty");
            st.allocatable.insert("example.com/dongle".into(), q);
        }
        n
    }

    fn pod(name: &str, limit: &str) -> Pod {
        let mut p = super::super::tests::pod(name, "10m", "1Mi");
        let q = limit.parse().expect("qty");
        p.spec.containers[0]
            .resources
            .limits
            .insert("example.com/dongle".into(), q);
        p
    }

    #[test]
    fn extended_resources_go_where_they_are_free_and_are_never_overcommitted() {
        let nodes = [node("plain", None), node("usb", Some("2"))];
        let mut s = Snapshot::new(&nodes, &[]);
        let mut placed = Vec::new();
        for i in 0..3 {
            let p = pod(&format!("p{i}"), "1");
            let r = s.schedule(&p);
            if let Ok(n) = &r {
                s.assume(&p, n);
            }
            placed.push(r);
        }
        assert_eq!(placed[0].as_deref(), Ok("usb"));
        assert_eq!(placed[1].as_deref(), Ok("usb"));
        assert_eq!(
            placed[2],
            Err("0/2 nodes available: 2 insufficient example.com/dongle".into())
        );
    }
}
