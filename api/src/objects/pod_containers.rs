//! How a pod's containers run together: which are sidecars, which run for the pod's life, and
//! what they ask of a node between them.

use super::{Container, PodSpec};

/// Does this image name a registry (`host.tld/...`, `host:port/...`, `localhost/...`)?
/// Names without one are artifacts kept by the controller (`shoal push`).
pub fn names_a_registry(image: &str) -> bool {
    match image.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

impl Container {
    /// A restartable init container: a sidecar, as Kubernetes calls it.
    pub fn is_sidecar(&self) -> bool {
        self.restart_policy.as_deref() == Some("Always")
    }
}

impl PodSpec {
    /// The containers that run for the pod's life: its sidecars, then its containers.
    pub fn long_running(&self) -> impl Iterator<Item = &Container> {
        self.init_containers
            .iter()
            .filter(|c| c.is_sidecar())
            .chain(&self.containers)
    }

    /// What the pod asks of a node, resource by resource, as Kubernetes counts it: its
    /// containers and sidecars summed, or, if more, the peak of its init sequence (each init
    /// container beside the sidecars started before it). `of` gives a container's requests.
    pub fn effective_requests<K: Ord + Clone>(
        &self,
        of: impl Fn(&Container) -> Vec<(K, i128)>,
    ) -> std::collections::BTreeMap<K, i128> {
        use std::collections::BTreeMap;
        let add = |sum: &mut BTreeMap<K, i128>, c: &Container| {
            for (k, n) in of(c) {
                *sum.entry(k).or_default() += n;
            }
        };
        let (mut sidecars, mut peak) = (BTreeMap::new(), BTreeMap::new());
        for c in &self.init_containers {
            let mut during = sidecars.clone();
            add(&mut during, c);
            if c.is_sidecar() {
                sidecars = during.clone();
            }
            for (k, n) in during {
                let slot = peak.entry(k).or_default();
                *slot = n.max(*slot);
            }
        }
        let mut running = sidecars;
        for c in &self.containers {
            add(&mut running, c);
        }
        for (k, n) in peak {
            let slot = running.entry(k).or_default();
            *slot = n.max(*slot);
        }
        running
    }
}

#[cfg(test)]
mod tests {
    use super::names_a_registry;

    #[test]
    fn which_images_name_a_registry() {
        for (image, registry) in [
            ("hello:1", false),
            ("team/hello:1", false),
            ("ghcr.io/team/hello:1", true),
            ("127.0.0.1:5000/hello:1", true),
            ("localhost/hello", true),
            ("hello@sha256:abc", false),
        ] {
            assert_eq!(names_a_registry(image), registry, "{image}");
        }
    }
}
