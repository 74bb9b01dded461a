//! What an update may not change, as the Kubernetes API refuses it: a Pod's spec but for the
//! mutable fields Shoal acts on, and the selectors of the workloads (apps/v1 made them immutable; a
//! changed selector would orphan every pod the object owned), and a Job's template and
//! completions. Decided from the stored and the new object; the message names the field.

use crate::{Object, Pod};

/// Kubernetes also lets a running pod's image, activeDeadlineSeconds and grace period change;
/// Shoal's agents do not act on those yet, so they are refused rather than ignored.
const POD_MUTABLE: &str = "spec.tolerations (only additions to existing tolerations); \
                           a new image or deadline needs a new pod (delete it and apply again, \
                           or let a Deployment roll it)";

/// Fills in what the cluster decided for a Pod and a manifest leaves out (its node), so a
/// re-applied manifest does not read as a change.
pub fn keep_cluster_fields(stored: &Object, next: &mut Object) {
    match (stored, next) {
        (Object::Pod(s), Object::Pod(n)) if n.spec.node_name.is_none() => {
            n.spec.node_name = s.spec.node_name.clone();
        }
        // Its volume (the binder's) and class (the default's, when it named none).
        (Object::PersistentVolumeClaim(s), Object::PersistentVolumeClaim(n)) => {
            if n.spec.volume_name.is_none() {
                n.spec.volume_name = s.spec.volume_name.clone();
            }
            if n.spec.storage_class_name.is_none() {
                n.spec.storage_class_name = s.spec.storage_class_name.clone();
            }
        }
        // Its claim (the binder's).
        (Object::PersistentVolume(s), Object::PersistentVolume(n))
            if n.spec.claim_ref.is_none() =>
        {
            n.spec.claim_ref = s.spec.claim_ref.clone();
        }
        _ => {}
    }
}

/// The field an update may not change and why, if it changes one.
pub fn violation(stored: &Object, next: &Object) -> Option<(String, String)> {
    let immutable = |field: &str| Some((field.to_string(), "field is immutable".to_string()));
    match (stored, next) {
        (Object::Pod(s), Object::Pod(n)) => pod_violation(s, n),
        (Object::Deployment(s), Object::Deployment(n)) if s.spec.selector != n.spec.selector => {
            immutable("spec.selector")
        }
        (Object::ReplicaSet(s), Object::ReplicaSet(n)) if s.spec.selector != n.spec.selector => {
            immutable("spec.selector")
        }
        (Object::DaemonSet(s), Object::DaemonSet(n)) if s.spec.selector != n.spec.selector => {
            immutable("spec.selector")
        }
        (Object::Job(s), Object::Job(n))
            if n.spec.selector.is_some() && s.spec.selector != n.spec.selector =>
        {
            immutable("spec.selector")
        }
        // A Job's pods are its template's, once and for all (batch/v1; Shoal has no
        // `suspend`, the one state in which Kubernetes lets parts of it change).
        (Object::Job(s), Object::Job(n)) if s.spec.template != n.spec.template => {
            immutable("spec.template")
        }
        // Non-indexed Jobs (Shoal's only kind) may change parallelism, not completions.
        (Object::Job(s), Object::Job(n)) if s.spec.completions != n.spec.completions => {
            immutable("spec.completions")
        }
        // A claim is what it was made as; only the binder fills in its volume.
        // (Kubernetes lets a bound claim's request grow where its class allows expansion;
        // Shoal's local volumes do not expand.)
        (Object::PersistentVolumeClaim(s), Object::PersistentVolumeClaim(n))
            if s.spec != n.spec =>
        {
            Some((
                "spec".to_string(),
                "spec is immutable after creation (Shoal's local volumes do not expand: make a new claim)"
                    .to_string(),
            ))
        }
        // A volume's source and capacity are what it was made with.
        (Object::PersistentVolume(s), Object::PersistentVolume(n))
            if s.spec.host_path != n.spec.host_path || s.spec.local != n.spec.local =>
        {
            immutable("spec.persistentvolumesource")
        }
        _ => None,
    }
}

fn pod_violation(stored: &Pod, next: &Pod) -> Option<(String, String)> {
    let (a, mut b) = (&stored.spec, next.spec.clone());
    if a.tolerations.iter().all(|t| b.tolerations.contains(t)) {
        b.tolerations = a.tolerations.clone();
    }
    if *a == b {
        return None;
    }
    Some((
        "spec".to_string(),
        format!("Forbidden: pod updates may not change fields other than {POD_MUTABLE}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(yaml: &str) -> Object {
        serde_yaml_ng::from_str(yaml).expect("object")
    }

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: IMAGE}]\n  tolerations: [{key: a, operator: Exists}]\nNODE";

    fn pod(image: &str, node: &str, extra_toleration: bool) -> Object {
        let mut y = POD.replace("IMAGE", image).replace(
            "NODE",
            &if node.is_empty() {
                String::new()
            } else {
                format!("  nodeName: {node}\n")
            },
        );
        if extra_toleration {
            y = y.replace(
                "[{key: a, operator: Exists}]",
                "[{key: a, operator: Exists}, {key: b, operator: Exists}]",
            );
        }
        let mut o = obj(&y);
        o.normalize();
        o
    }

    #[test]
    fn a_pod_changes_only_its_mutable_fields() {
        let stored = pod("web:1", "n1", false);
        let cases = [
            (
                "the same manifest, no node named",
                pod("web:1", "", false),
                true,
            ),
            (
                "another image (not acted on yet)",
                pod("web:2", "", false),
                false,
            ),
            ("a toleration added", pod("web:1", "", true), true),
            ("another node", pod("web:1", "n2", false), false),
        ];
        for (what, mut next, ok) in cases {
            keep_cluster_fields(&stored, &mut next);
            let got = violation(&stored, &next);
            assert_eq!(got.is_none(), ok, "{what}: {got:?}");
        }
        let removed = pod("web:1", "n1", true);
        assert!(
            violation(&removed, &stored).is_some(),
            "a toleration removed"
        );
    }

    #[test]
    fn workload_selectors_are_immutable() {
        let deploy = |app: &str| {
            obj(&"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: APP}}\n  template: {metadata: {labels: {app: APP}}, spec: {containers: [{name: c, image: x}]}}\n".replace("APP", app))
        };
        assert_eq!(violation(&deploy("a"), &deploy("a")), None);
        let (field, why) = violation(&deploy("a"), &deploy("b")).unwrap();
        assert_eq!(
            (field.as_str(), why.as_str()),
            ("spec.selector", "field is immutable")
        );
        let job = |image: &str, completions: u32, parallelism: u32| {
            obj(&format!("apiVersion: batch/v1\nkind: Job\nmetadata: {{name: j}}\nspec:\n  completions: {completions}\n  parallelism: {parallelism}\n  template: {{spec: {{restartPolicy: Never, containers: [{{name: c, image: {image}}}]}}}}\n"))
        };
        let field = |a, b| violation(&a, &b).map(|(f, _)| f);
        assert_eq!(field(job("x:1", 2, 1), job("x:1", 2, 2)), None);
        assert_eq!(
            field(job("x:1", 2, 1), job("x:2", 2, 1)).as_deref(),
            Some("spec.template")
        );
        assert_eq!(
            field(job("x:1", 2, 1), job("x:1", 3, 1)).as_deref(),
            Some("spec.completions")
        );
    }
}
