//! Where a pod's PersistentVolumeClaims let it go (Kubernetes' VolumeBinding plugin): a claim
//! bound to a volume on one node keeps the pod to that node; a `local-path` claim still
//! waiting for its first pod goes with it to any node that can hold local volumes (and is
//! bound there, [`Claims::assume`]); a claim that does not exist, or waits for a binding no
//! one will make, keeps the pod Pending with Kubernetes' message.

use shoal_api::{
    Node, NodeSelector, PersistentVolume, PersistentVolumeClaim, Pod, StorageClass,
    LOCAL_PATH_PROVISIONER, LOCAL_PATH_ROOT_ANNOTATION,
};
use std::collections::HashMap;

/// What a claim allows, as a scheduling pass sees it.
#[derive(Clone, Debug, PartialEq)]
enum Place {
    /// Bound to a volume every node reaches.
    Anywhere,
    /// Bound to a volume on the nodes its node affinity selects.
    Nodes(NodeSelector),
    /// Made (or to be made) on this node: chosen for its first pod.
    Node(String),
    /// A local-path claim waiting for its first pod: made on the node that pod goes to.
    Provisioned,
    /// It waits for something else (a volume of its class, a provisioner): why.
    Waiting(String),
}

/// The claims of a scheduling pass, by namespace and name.
#[derive(Default)]
pub struct Claims {
    places: HashMap<(String, String), Place>,
}

/// Why a node cannot take a pod for its volumes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VolumeMisfit {
    /// Its claim's volume is on another node.
    NodeAffinity,
    /// The node cannot hold local volumes (its agent reported no directory for them).
    NoLocalStorage,
}

impl VolumeMisfit {
    pub fn describe(&self) -> &'static str {
        match self {
            VolumeMisfit::NodeAffinity => "node(s) had volume node affinity conflict",
            VolumeMisfit::NoLocalStorage => {
                "node(s) didn't find available persistent volumes to bind"
            }
        }
    }
}

impl Claims {
    pub fn new(
        claims: &[PersistentVolumeClaim],
        volumes: &[PersistentVolume],
        classes: &[StorageClass],
    ) -> Claims {
        let mut places = HashMap::new();
        for c in claims {
            let key = (
                c.metadata.namespace_or_default().to_string(),
                c.metadata.name.clone(),
            );
            if c.metadata.deletion_timestamp.is_some() {
                let why = format!(
                    "persistentvolumeclaim {:?} is being deleted",
                    c.metadata.name
                );
                places.insert(key, Place::Waiting(why));
                continue;
            }
            let volume = c
                .spec
                .volume_name
                .as_ref()
                .and_then(|n| volumes.iter().find(|v| &v.metadata.name == n))
                .filter(|v| v.bound_to(c));
            let class = crate::reconcile::volumes::class_of(c, classes);
            let place = match (volume, c.selected_node()) {
                (Some(v), _) => match v
                    .spec
                    .node_affinity
                    .as_ref()
                    .and_then(|a| a.required.as_ref())
                {
                    Some(selector) => Place::Nodes(selector.clone()),
                    None => Place::Anywhere,
                },
                (None, Some(n)) => Place::Node(n.to_string()),
                (None, None) => match class {
                    Some(k) if k.provisioner == LOCAL_PATH_PROVISIONER => Place::Provisioned,
                    // A volume of its class may still come (made by hand): it waits, as a
                    // claim with no provisioner waits in Kubernetes.
                    _ => Place::Waiting("pod has unbound immediate PersistentVolumeClaims".into()),
                },
            };
            places.insert(key, place);
        }
        Claims { places }
    }

    fn of<'p>(&'p self, pod: &'p Pod) -> impl Iterator<Item = (&'p str, Option<&'p Place>)> + 'p {
        let ns = pod.metadata.namespace_or_default().to_string();
        pod.spec.volumes.iter().filter_map(move |v| {
            let name = v.persistent_volume_claim.as_ref()?.claim_name.as_str();
            Some((name, self.places.get(&(ns.clone(), name.to_string()))))
        })
    }

    /// Why no node can take the pod for its claims, whatever the node.
    pub fn refusal(&self, pod: &Pod) -> Option<String> {
        self.of(pod).find_map(|(name, place)| match place {
            None => Some(format!("persistentvolumeclaim {name:?} not found")),
            Some(Place::Waiting(why)) => Some(why.clone()),
            _ => None,
        })
    }

    /// Whether `node` can take the pod for its claims.
    pub fn fit(&self, pod: &Pod, node: &Node) -> Result<(), VolumeMisfit> {
        for (_, place) in self.of(pod) {
            match place {
                Some(Place::Node(n)) if n != &node.metadata.name => {
                    return Err(VolumeMisfit::NodeAffinity)
                }
                Some(Place::Nodes(s)) if !s.matches(&node.metadata.labels, &node.metadata.name) => {
                    return Err(VolumeMisfit::NodeAffinity)
                }
                Some(Place::Provisioned)
                    if !node
                        .metadata
                        .annotations
                        .contains_key(LOCAL_PATH_ROOT_ANNOTATION) =>
                {
                    return Err(VolumeMisfit::NoLocalStorage)
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The pod goes to `node`: the claims it provisions there keep their next pods there too.
    /// Returns the names of those claims (for the binding to provision).
    pub fn assume(&mut self, pod: &Pod, node: &str) -> Vec<String> {
        let ns = pod.metadata.namespace_or_default().to_string();
        let mut provisioned = Vec::new();
        for v in &pod.spec.volumes {
            let Some(c) = &v.persistent_volume_claim else {
                continue;
            };
            if let Some(place) = self.places.get_mut(&(ns.clone(), c.claim_name.clone())) {
                if *place == Place::Provisioned {
                    *place = Place::Node(node.to_string());
                    provisioned.push(c.claim_name.clone());
                }
            }
        }
        provisioned
    }
}

#[cfg(test)]
mod tests {
    use super::super::Snapshot;
    use shoal_api::*;

    fn claim_pod(name: &str, claim: &str) -> Pod {
        let mut p = super::super::tests::pod(name, "10m", "1Mi");
        p.metadata.namespace = Some("default".into());
        p.spec.volumes = vec![Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: false,
            }),
            ..Default::default()
        }];
        p
    }

    fn claim(name: &str, class: &str) -> PersistentVolumeClaim {
        let mut c = PersistentVolumeClaim::default();
        c.metadata.name = name.into();
        c.metadata.namespace = Some("default".into());
        c.metadata.uid = format!("uid-{name}");
        c.spec.storage_class_name = Some(class.into());
        c.spec.access_modes = vec!["ReadWriteOnce".into()];
        c.spec
            .resources
            .requests
            .insert("storage".into(), "1Gi".parse().expect("qty"));
        c
    }

    fn node(name: &str, local: bool) -> Node {
        let mut n = super::super::tests::node(name, "4", "4Gi", &["wasm"]);
        if local {
            n.metadata
                .annotations
                .insert(LOCAL_PATH_ROOT_ANNOTATION.into(), format!("/srv/{name}"));
        }
        n
    }

    #[test]
    fn claims_keep_pods_with_their_volumes() {
        let nodes = [node("a", true), node("b", true), node("old", false)];
        let class = crate::reconcile::volumes::local_path_class();
        let (volume, bound) = crate::reconcile::volumes::provision(
            &claim("kept", LOCAL_PATH_CLASS),
            &class,
            &nodes[1],
        )
        .expect("pv");
        let claims = [
            bound,
            claim("new", LOCAL_PATH_CLASS),
            claim("manual", "manual"),
        ];
        let mut s = Snapshot::new(&nodes, &[]).with_claims(super::Claims::new(
            &claims,
            &[volume],
            &[class],
        ));
        // Bound on b: only b, whatever the load.
        assert_eq!(s.schedule(&claim_pod("p1", "kept")).as_deref(), Ok("b"));
        // New: any node that holds local volumes; the next pod of it follows the first.
        let first = claim_pod("p2", "new");
        let placed = s.schedule(&first).expect("placed");
        assert_eq!(s.assume(&first, &placed), ["new"]);
        for _ in 0..3 {
            assert_eq!(s.schedule(&claim_pod("p3", "new")), Ok(placed.clone()));
        }
        assert_eq!(
            s.schedule(&claim_pod("p4", "missing")),
            Err("0/3 nodes available: persistentvolumeclaim \"missing\" not found".into())
        );
        assert_eq!(
            s.schedule(&claim_pod("p5", "manual")),
            Err("0/3 nodes available: pod has unbound immediate PersistentVolumeClaims".into())
        );
        let only_old = [node("old", false)];
        let s = Snapshot::new(&only_old, &[]).with_claims(super::Claims::new(
            &[claim("new", LOCAL_PATH_CLASS)],
            &[],
            &[crate::reconcile::volumes::local_path_class()],
        ));
        assert_eq!(
            s.schedule(&claim_pod("p6", "new")),
            Err(
                "0/1 nodes available: 1 node(s) didn't find available persistent volumes to bind"
                    .into()
            )
        );
    }
}
