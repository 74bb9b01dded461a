//! The volume binder (Kubernetes' PersistentVolume controller, with K3s' local-path
//! provisioner): claims get the default StorageClass when they name none, bind to a matching
//! volume that is Available, or, for the `local-path` class, get a directory on the node their
//! first pod is scheduled to (made by the scheduler as it binds the pod, or here for a pod
//! that named its node itself). A volume whose claim is gone is Released; a provisioned one
//! whose reclaim policy is Delete is then removed by its node's agent, which deletes the
//! directory first. Each decision is a pure function of the objects ([`plan`]).

use crate::error::Result;
use crate::store::{ObjectKey, Op, Store};
use shoal_api::{
    Kind, LocalVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Object,
    ObjectMeta, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimStatus, PersistentVolumeSpec, PersistentVolumeStatus, Pod, StorageClass,
    VolumeNodeAffinity, HOSTNAME_LABEL, LOCAL_PATH_CLASS, LOCAL_PATH_PROVISIONER,
    LOCAL_PATH_ROOT_ANNOTATION, PROVISIONED_BY_ANNOTATION,
};

/// The StorageClass every cluster starts with, as K3s ships it: the default, volumes made on
/// the node of the claim's first pod, deleted with their claim.
pub fn local_path_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: LOCAL_PATH_CLASS.into(),
            annotations: [(
                shoal_api::DEFAULT_CLASS_ANNOTATION.to_string(),
                "true".to_string(),
            )]
            .into(),
            ..Default::default()
        },
        provisioner: LOCAL_PATH_PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    }
}

/// The volume provisioned for `claim` on `node`, and the claim bound to it: a directory
/// under the root the node's agent reported, bound to that node. An error says why not.
pub fn provision(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &Node,
) -> std::result::Result<(PersistentVolume, PersistentVolumeClaim), String> {
    let root = node
        .metadata
        .annotations
        .get(LOCAL_PATH_ROOT_ANNOTATION)
        .filter(|r| r.starts_with('/'))
        .ok_or_else(|| {
            format!(
                "node {} reported no directory for local volumes",
                node.metadata.name
            )
        })?;
    let name = format!("pvc-{}", claim.metadata.uid);
    let ns = claim.metadata.namespace_or_default();
    let volume = PersistentVolume {
        metadata: ObjectMeta {
            name: name.clone(),
            annotations: [(
                PROVISIONED_BY_ANNOTATION.to_string(),
                LOCAL_PATH_PROVISIONER.to_string(),
            )]
            .into(),
            ..Default::default()
        },
        spec: PersistentVolumeSpec {
            capacity: claim
                .requested()
                .map(|q| ("storage".to_string(), q.clone()))
                .into_iter()
                .collect(),
            access_modes: claim.spec.access_modes.clone(),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: Some(class.metadata.name.clone()),
            local: Some(LocalVolumeSource {
                path: format!(
                    "{}/{name}_{ns}_{}",
                    root.trim_end_matches('/'),
                    claim.metadata.name
                ),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: vec![node.metadata.name.clone()],
                        }],
                        match_fields: vec![],
                    }],
                }),
            }),
            volume_mode: Some("Filesystem".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut volume = volume;
    volume.metadata.finalizers = vec![shoal_api::PV_PROTECTION_FINALIZER.into()];
    Ok(bind(&volume, claim))
}

/// `volume` and `claim` bound to each other, both Bound.
pub fn bind(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> (PersistentVolume, PersistentVolumeClaim) {
    let mut v = volume.clone();
    v.spec.claim_ref = Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: Some(claim.metadata.namespace_or_default().to_string()),
        name: Some(claim.metadata.name.clone()),
        uid: Some(claim.metadata.uid.clone()),
    });
    v.status = Some(PersistentVolumeStatus {
        phase: Some("Bound".into()),
        ..Default::default()
    });
    let mut c = claim.clone();
    c.spec.volume_name = Some(v.metadata.name.clone());
    c.status = Some(PersistentVolumeClaimStatus {
        phase: Some("Bound".into()),
        access_modes: v.spec.access_modes.clone(),
        capacity: v.spec.capacity.clone(),
    });
    (v, c)
}

/// The class a claim is provisioned by, if it names one that exists.
pub fn class_of<'a>(
    claim: &PersistentVolumeClaim,
    classes: &'a [StorageClass],
) -> Option<&'a StorageClass> {
    let name = claim.spec.storage_class_name.as_deref()?;
    classes.iter().find(|c| c.metadata.name == name)
}

/// Whether an Available volume can serve `claim`: its class, enough capacity, every access
/// mode asked for; and not kept for another claim.
fn matches(v: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let class = |s: &Option<String>| s.clone().unwrap_or_default();
    let enough = match (v.spec.capacity.get("storage"), claim.requested()) {
        (Some(have), Some(want)) => have.milli_value() >= want.milli_value(),
        _ => false,
    };
    v.spec.claim_ref.is_none()
        && v.metadata.deletion_timestamp.is_none()
        && class(&v.spec.storage_class_name) == class(&claim.spec.storage_class_name)
        && enough
        && claim
            .spec
            .access_modes
            .iter()
            .all(|m| v.spec.access_modes.contains(m))
}

/// One change the binder makes.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// A claim that named no class gets the default one.
    DefaultClass(PersistentVolumeClaim),
    /// A claim and a volume bound together (the volume new when provisioned).
    Bind {
        volume: Box<PersistentVolume>,
        claim: Box<PersistentVolumeClaim>,
        provisioned: bool,
    },
    /// A volume's new status (Available, Released, Failed) or a claim's (Lost).
    VolumeStatus(Box<PersistentVolume>),
    ClaimStatus(PersistentVolumeClaim),
    /// A claim no pod uses any more, or a volume no claim holds, being deleted: its
    /// protection finalizer taken away, so it goes.
    Unprotect(Box<Object>),
}

/// What the binder changes, from the claims, volumes, classes, pods and nodes.
pub fn plan(
    claims: &[PersistentVolumeClaim],
    volumes: &[PersistentVolume],
    classes: &[StorageClass],
    pods: &[Pod],
    nodes: &[Node],
) -> Vec<Action> {
    let mut actions = Vec::new();
    let default = classes.iter().find(|c| c.is_default());
    let mut taken: Vec<&str> = Vec::new();
    for claim in claims {
        if claim.metadata.deletion_timestamp.is_some() {
            let in_use = pods
                .iter()
                .any(|p| !p.is_terminal() && uses_claim(p, claim));
            if !in_use {
                if let Some(c) = unprotected(claim, shoal_api::PVC_PROTECTION_FINALIZER) {
                    actions.push(Action::Unprotect(Box::new(Object::PersistentVolumeClaim(
                        c,
                    ))));
                }
            }
            continue;
        }
        if claim.spec.storage_class_name.is_none() {
            if let Some(d) = default {
                let mut c = claim.clone();
                c.spec.storage_class_name = Some(d.metadata.name.clone());
                actions.push(Action::DefaultClass(c));
            }
            continue;
        }
        let bound = volumes.iter().find(|v| v.bound_to(claim));
        match (&claim.spec.volume_name, bound) {
            // Bound both ways: a claim whose volume is gone is Lost.
            (Some(name), _) if claim.phase() == "Bound" => {
                if !volumes.iter().any(|v| &v.metadata.name == name) {
                    let mut c = claim.clone();
                    if let Some(s) = c.status.as_mut() {
                        s.phase = Some("Lost".into());
                    }
                    actions.push(Action::ClaimStatus(c));
                }
            }
            (_, Some(v)) => {
                let (v, c) = bind(v, claim);
                actions.push(Action::Bind {
                    volume: Box::new(v),
                    claim: Box::new(c),
                    provisioned: false,
                });
            }
            (Some(name), None) => {
                // A claim that asks for a volume by name gets it if it is free.
                if let Some(v) = volumes
                    .iter()
                    .find(|v| &v.metadata.name == name && v.spec.claim_ref.is_none())
                {
                    let (v, c) = bind(v, claim);
                    actions.push(Action::Bind {
                        volume: Box::new(v),
                        claim: Box::new(c),
                        provisioned: false,
                    });
                }
            }
            (None, None) => {
                let fit = volumes
                    .iter()
                    .filter(|v| matches(v, claim) && !taken.contains(&v.metadata.name.as_str()))
                    .min_by_key(|v| {
                        v.spec
                            .capacity
                            .get("storage")
                            .map(|q| q.milli_value())
                            .unwrap_or(0)
                    });
                if let Some(v) = fit {
                    taken.push(&v.metadata.name);
                    let (v, c) = bind(v, claim);
                    actions.push(Action::Bind {
                        volume: Box::new(v),
                        claim: Box::new(c),
                        provisioned: false,
                    });
                } else if let Some(planned) = provision_for_bound_pod(claim, classes, pods, nodes) {
                    actions.push(planned);
                }
            }
        }
    }
    for v in volumes {
        if v.metadata.deletion_timestamp.is_some() && v.phase() != "Bound" {
            if let Some(next) = unprotected(v, shoal_api::PV_PROTECTION_FINALIZER) {
                actions.push(Action::Unprotect(Box::new(Object::PersistentVolume(next))));
            }
        } else if let Some(next) = volume_status(v, claims) {
            actions.push(Action::VolumeStatus(Box::new(next)));
        }
    }
    actions
}

/// `o` without `finalizer`, if it has it.
fn unprotected<T: Clone + HasMeta>(o: &T, finalizer: &str) -> Option<T> {
    let mut next = o.clone();
    let m = next.meta_mut();
    let before = m.finalizers.len();
    m.finalizers.retain(|f| f != finalizer);
    (m.finalizers.len() != before).then_some(next)
}

/// The objects whose finalizers the binder manages.
trait HasMeta {
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}

impl HasMeta for PersistentVolumeClaim {
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl HasMeta for PersistentVolume {
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A local-path claim whose first pod was bound to its node without the scheduler (its
/// `nodeName` set in the manifest): provisioned there.
fn provision_for_bound_pod(
    claim: &PersistentVolumeClaim,
    classes: &[StorageClass],
    pods: &[Pod],
    nodes: &[Node],
) -> Option<Action> {
    let class = class_of(claim, classes).filter(|c| c.provisioner == LOCAL_PATH_PROVISIONER)?;
    let node_name = claim.selected_node().map(str::to_string).or_else(|| {
        pods.iter()
            .filter(|p| !p.is_terminal() && uses_claim(p, claim))
            .find_map(|p| p.spec.node_name.clone())
    })?;
    let node = nodes.iter().find(|n| n.metadata.name == node_name)?;
    let (volume, claim) = provision(claim, class, node).ok()?;
    Some(Action::Bind {
        volume: Box::new(volume),
        claim: Box::new(claim),
        provisioned: true,
    })
}

/// Whether `pod` mounts `claim` (in its namespace).
pub fn uses_claim(pod: &Pod, claim: &PersistentVolumeClaim) -> bool {
    pod.metadata.namespace_or_default() == claim.metadata.namespace_or_default()
        && pod.spec.volumes.iter().any(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == claim.metadata.name)
        })
}

/// A volume's status as its claim (or its absence) makes it: Available with no claim, Bound
/// to one that exists, Released once that claim is gone (Failed, for a volume Shoal did not
/// make, whose data it cannot delete).
fn volume_status(
    v: &PersistentVolume,
    claims: &[PersistentVolumeClaim],
) -> Option<PersistentVolume> {
    let (phase, message): (&str, Option<String>) = match &v.spec.claim_ref {
        None => ("Available", None),
        Some(_) if claims.iter().any(|c| v.bound_to(c)) => ("Bound", None),
        Some(_) if v.reclaim_policy() == "Delete" && !provisioned_here(v) => (
            "Failed",
            Some("no deleter for a volume Shoal did not provision: delete its data and the volume by hand".into()),
        ),
        Some(_) => ("Released", None),
    };
    let status = v.status.clone().unwrap_or_default();
    if status.phase.as_deref() == Some(phase) && status.message == message {
        return None;
    }
    let mut next = v.clone();
    next.status = Some(PersistentVolumeStatus {
        phase: Some(phase.into()),
        message,
        reason: None,
    });
    Some(next)
}

/// Whether Shoal's local-path provisioner made the volume (its node deletes its data).
pub fn provisioned_here(v: &PersistentVolume) -> bool {
    v.metadata
        .annotations
        .get(PROVISIONED_BY_ANNOTATION)
        .is_some_and(|p| p == LOCAL_PATH_PROVISIONER)
}

/// One binder pass: reads the objects and writes its plan.
pub async fn reconcile(store: &Store, pods: &[Pod]) -> Result<()> {
    let claims: Vec<PersistentVolumeClaim> =
        store.list_typed(Kind::PersistentVolumeClaim, None).await?;
    let volumes: Vec<PersistentVolume> = store.list_typed(Kind::PersistentVolume, None).await?;
    if claims.is_empty() && volumes.is_empty() {
        return Ok(());
    }
    let classes: Vec<StorageClass> = store.list_typed(Kind::StorageClass, None).await?;
    let nodes: Vec<Node> = store.list_typed(Kind::Node, None).await?;
    for action in plan(&claims, &volumes, &classes, pods, &nodes) {
        let ops = match action {
            Action::DefaultClass(c) => {
                let rev = c.metadata.revision();
                vec![Op::Update {
                    object: Object::PersistentVolumeClaim(c),
                    expected: Some(rev),
                }]
            }
            Action::Bind {
                volume,
                claim,
                provisioned,
            } => bind_ops(*volume, *claim, provisioned),
            Action::VolumeStatus(v) => {
                let rev = v.metadata.revision();
                vec![Op::UpdateStatus {
                    object: Object::PersistentVolume(*v),
                    expected: Some(rev),
                }]
            }
            Action::ClaimStatus(c) => {
                let rev = c.metadata.revision();
                vec![Op::UpdateStatus {
                    object: Object::PersistentVolumeClaim(c),
                    expected: Some(rev),
                }]
            }
            Action::Unprotect(o) => {
                let rev = o.metadata().revision();
                vec![Op::Update {
                    object: *o,
                    expected: Some(rev),
                }]
            }
        };
        super::tolerate(store.write(ops).await)?;
    }
    Ok(())
}

/// The writes that bind a volume and a claim together, in one transaction: the volume made
/// (when provisioned) or updated, and the claim.
pub fn bind_ops(
    volume: PersistentVolume,
    claim: PersistentVolumeClaim,
    provisioned: bool,
) -> Vec<Op> {
    let claim_rev = claim.metadata.revision();
    let volume_op = if provisioned {
        Op::Create(Object::PersistentVolume(volume))
    } else {
        let rev = volume.metadata.revision();
        Op::Update {
            object: Object::PersistentVolume(volume),
            expected: Some(rev),
        }
    };
    vec![
        volume_op,
        Op::Update {
            object: Object::PersistentVolumeClaim(claim),
            expected: Some(claim_rev),
        },
    ]
}

/// The key of a claim `name` in `namespace`.
pub fn claim_key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey::new(Kind::PersistentVolumeClaim, Some(namespace), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, class: Option<&str>, size: &str) -> PersistentVolumeClaim {
        let mut c = PersistentVolumeClaim::default();
        c.metadata.name = name.into();
        c.metadata.namespace = Some("default".into());
        c.metadata.uid = format!("uid-{name}");
        c.spec.access_modes = vec!["ReadWriteOnce".into()];
        c.spec.storage_class_name = class.map(str::to_string);
        c.spec
            .resources
            .requests
            .insert("storage".into(), size.parse().expect("qty"));
        c
    }

    fn volume(name: &str, class: &str, size: &str, policy: &str) -> PersistentVolume {
        let mut v = PersistentVolume::default();
        v.metadata.name = name.into();
        v.spec.storage_class_name = Some(class.into());
        v.spec.access_modes = vec!["ReadWriteOnce".into(), "ReadOnlyMany".into()];
        v.spec
            .capacity
            .insert("storage".into(), size.parse().expect("qty"));
        v.spec.persistent_volume_reclaim_policy = Some(policy.into());
        v.spec.host_path = Some(shoal_api::HostPathVolumeSource {
            path: format!("/srv/{name}"),
            type_: None,
        });
        v
    }

    fn node(name: &str, root: Option<&str>) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        if let Some(r) = root {
            n.metadata
                .annotations
                .insert(LOCAL_PATH_ROOT_ANNOTATION.into(), r.into());
        }
        n
    }

    #[test]
    fn provisioning_makes_a_directory_on_the_node_bound_to_it() {
        let c = claim("data", Some(LOCAL_PATH_CLASS), "1Gi");
        let (v, bound) = provision(
            &c,
            &local_path_class(),
            &node("pi-1", Some("/var/lib/shoal/agent/storage")),
        )
        .expect("provisioned");
        assert_eq!(v.metadata.name, "pvc-uid-data");
        assert_eq!(
            v.path(),
            Some("/var/lib/shoal/agent/storage/pvc-uid-data_default_data")
        );
        assert_eq!(v.node(), Some("pi-1"));
        assert_eq!(v.reclaim_policy(), "Delete");
        assert!(provisioned_here(&v) && v.bound_to(&bound));
        assert_eq!(bound.spec.volume_name.as_deref(), Some("pvc-uid-data"));
        assert_eq!(bound.phase(), "Bound");
        assert_eq!(
            bound
                .status
                .as_ref()
                .map(|s| s.capacity["storage"].to_string()),
            Some("1Gi".into())
        );
        let e = provision(&c, &local_path_class(), &node("old", None)).expect_err("no root");
        assert!(e.contains("node old reported no directory"), "{e}");
    }

    #[test]
    fn binder_table() {
        let classes = [local_path_class()];
        let small = volume("small", "manual", "1Gi", "Retain");
        let big = volume("big", "manual", "10Gi", "Retain");
        // No class named: the default's.
        let plan1 = plan(&[claim("a", None, "1Gi")], &[], &classes, &[], &[]);
        assert!(
            matches!(&plan1[..], [Action::DefaultClass(c)] if c.spec.storage_class_name.as_deref() == Some(LOCAL_PATH_CLASS))
        );
        // A static volume of the class: the smallest that is enough.
        let plan2 = plan(
            &[claim("b", Some("manual"), "2Gi")],
            &[small.clone(), big.clone()],
            &classes,
            &[],
            &[],
        );
        let bound: Vec<&str> = plan2
            .iter()
            .filter_map(|a| match a {
                Action::Bind { volume, .. } => Some(volume.metadata.name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(bound, ["big"]);
        // Two claims never take the same volume in one pass.
        let plan3 = plan(
            &[
                claim("c", Some("manual"), "1Gi"),
                claim("d", Some("manual"), "1Gi"),
            ],
            std::slice::from_ref(&small),
            &classes,
            &[],
            &[],
        );
        assert_eq!(
            plan3
                .iter()
                .filter(|a| matches!(a, Action::Bind { .. }))
                .count(),
            1
        );
        // A local-path claim waits for its first pod; one bound by nodeName gets it there.
        let e = claim("e", Some(LOCAL_PATH_CLASS), "1Gi");
        assert!(plan(std::slice::from_ref(&e), &[], &classes, &[], &[]).is_empty());
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("default".into());
        pod.spec.node_name = Some("pi-1".into());
        pod.spec.volumes = vec![shoal_api::Volume {
            name: "v".into(),
            persistent_volume_claim: Some(shoal_api::PersistentVolumeClaimVolumeSource {
                claim_name: "e".into(),
                read_only: false,
            }),
            ..Default::default()
        }];
        let plan4 = plan(
            std::slice::from_ref(&e),
            &[],
            &classes,
            &[pod],
            &[node("pi-1", Some("/data"))],
        );
        assert!(
            matches!(&plan4[..], [Action::Bind { provisioned: true, volume, .. }] if volume.node() == Some("pi-1"))
        );
        // A volume whose claim is gone: Released; Failed if Shoal cannot delete its data.
        let (retained, _) = bind(&small, &claim("gone", Some("manual"), "1Gi"));
        let (deleted, _) = bind(
            &volume("del", "manual", "1Gi", "Delete"),
            &claim("gone", Some("manual"), "1Gi"),
        );
        let (mine, _) = provision(&e, &classes[0], &node("pi-1", Some("/data"))).expect("pv");
        let phases: Vec<(String, String)> =
            plan(&[], &[retained, deleted, mine], &classes, &[], &[])
                .into_iter()
                .filter_map(|a| match a {
                    Action::VolumeStatus(v) => {
                        Some((v.metadata.name.clone(), v.phase().to_string()))
                    }
                    _ => None,
                })
                .collect();
        assert_eq!(
            phases,
            [
                ("small".to_string(), "Released".to_string()),
                ("del".to_string(), "Failed".to_string()),
                ("pvc-uid-e".to_string(), "Released".to_string()),
            ]
        );
    }
}
