//! NodeRestriction: what a node may say about itself (Kubernetes' admission plugin of that
//! name is the model). A node sets its own status and the labels of an allow-list; labels
//! under `kubernetes.io`, `k8s.io` and `shoal.dev` it may not choose (so it cannot attract
//! another node's pods by claiming its hostname or role), and labels an admin set persist
//! across its heartbeats. `node-restriction.shoal.dev/` is for admins alone: pin sensitive
//! workloads with it.

use std::collections::{BTreeMap, BTreeSet};

/// The annotation that lists the label keys an admin set (`shoal label node`); a node's
/// heartbeat never overrides them.
pub const ADMIN_LABELS: &str = "shoal.dev/admin-labels";
/// The only annotations of its own a node may write.
pub const NODE_ANNOTATIONS: &[&str] = &[
    PEER_PORT_ANNOTATION,
    crate::objects::LOCAL_PATH_ROOT_ANNOTATION,
    crate::objects::UPGRADE_STATE,
];

/// The Node annotation that says on which port a node serves its peers' service proxies.
pub const PEER_PORT_ANNOTATION: &str = "shoal.dev/peer-port";

/// Labels in the restricted domains that a node may still set, as Kubernetes allows them.
const ALLOWED_KEYS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
];
const ALLOWED_PREFIXES: &[&str] = &[
    "kubelet.kubernetes.io/",
    "node.kubernetes.io/",
    "node.shoal.dev/",
];
const RESTRICTED_DOMAINS: &[&str] = &["kubernetes.io", "k8s.io", "shoal.dev"];

/// Whether a node may set label `key` on itself (the value of `kubernetes.io/hostname` is
/// checked apart).
pub fn node_may_set(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return true;
    };
    if ALLOWED_KEYS.contains(&key) || ALLOWED_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return true;
    }
    !RESTRICTED_DOMAINS
        .iter()
        .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")))
}

/// Checks the labels a node declares for itself; the error names the label and what to do.
pub fn check_node_labels(node: &str, declared: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in declared {
        if !node_may_set(k) {
            return Err(format!(
                "node {node:?} may not set label {k:?}: labels under kubernetes.io, k8s.io and shoal.dev (but node.shoal.dev/) are for admins; use `shoal label node {node} {k}={v}`"
            ));
        }
        if k == "kubernetes.io/hostname" && v != node {
            return Err(format!(
                "node {node:?} may not set kubernetes.io/hostname to {v:?}: it is always the node's own name"
            ));
        }
    }
    Ok(())
}

/// The keys an admin set, from the Node's annotations.
pub fn admin_keys(annotations: &BTreeMap<String, String>) -> BTreeSet<String> {
    annotations
        .get(ADMIN_LABELS)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// An admin's write of a Node (kubectl label, edit, patch): the label keys it sets or
/// changes become the admins' (they outlive the node's heartbeats), and those it removes stop
/// being theirs. Returns the annotations to store.
pub fn record_admin_labels(
    stored_labels: &BTreeMap<String, String>,
    written_labels: &BTreeMap<String, String>,
    written_annotations: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut keys = admin_keys(written_annotations);
    for (k, v) in written_labels {
        if stored_labels.get(k) != Some(v) {
            keys.insert(k.clone());
        }
    }
    keys.retain(|k| written_labels.contains_key(k));
    let mut out = written_annotations.clone();
    if keys.is_empty() {
        out.remove(ADMIN_LABELS);
    } else {
        let list: Vec<String> = keys.into_iter().collect();
        out.insert(ADMIN_LABELS.into(), list.join(","));
    }
    out
}

/// The labels a Node gets from a heartbeat: what the node declares, with the labels an admin
/// set (in `stored`) on top, whatever the node says about them.
pub fn merge_labels(
    declared: &BTreeMap<String, String>,
    stored_labels: &BTreeMap<String, String>,
    stored_annotations: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let admin = admin_keys(stored_annotations);
    let mut out: BTreeMap<String, String> = declared
        .iter()
        .filter(|(k, _)| !admin.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for k in &admin {
        if let Some(v) = stored_labels.get(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The annotations a Node gets from a heartbeat: the stored ones, with the few a node may
/// write taken from the node.
pub fn merge_annotations(
    declared: &BTreeMap<String, String>,
    stored: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = stored.clone();
    for k in NODE_ANNOTATIONS {
        match declared.get(*k) {
            Some(v) => out.insert(k.to_string(), v.clone()),
            None => out.remove(*k),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_node_may_set_only_the_allowed_labels() {
        let cases = [
            ("kubernetes.io/arch", true),
            ("kubernetes.io/hostname", true),
            ("topology.kubernetes.io/zone", true),
            ("node.kubernetes.io/instance-type", true),
            ("node.shoal.dev/camera", true),
            ("role", true),
            ("example.com/site", true),
            ("node-role.kubernetes.io/control-plane", false),
            ("kubernetes.io/role", false),
            ("node-restriction.kubernetes.io/secure", false),
            ("node-restriction.shoal.dev/secure", false),
            ("shoal.dev/cluster-service", false),
            ("k8s.io/anything", false),
            ("x.k8s.io/anything", false),
        ];
        for (key, want) in cases {
            assert_eq!(node_may_set(key), want, "{key}");
        }
    }

    #[test]
    fn a_node_cannot_claim_another_hostname() {
        assert!(check_node_labels("n1", &map(&[("kubernetes.io/hostname", "n1")])).is_ok());
        let err = check_node_labels("n1", &map(&[("kubernetes.io/hostname", "n2")])).unwrap_err();
        assert!(err.contains("always the node's own name"), "{err}");
        let err =
            check_node_labels("n1", &map(&[("node-restriction.shoal.dev/db", "yes")])).unwrap_err();
        assert!(err.contains("shoal label node n1"), "{err}");
    }

    #[test]
    fn admin_labels_outlive_heartbeats() {
        let declared = map(&[("kubernetes.io/arch", "arm64"), ("zone", "node-says")]);
        let stored = map(&[
            ("kubernetes.io/arch", "arm64"),
            ("zone", "admin-says"),
            ("node-restriction.shoal.dev/db", "yes"),
            ("stale", "gone"),
        ]);
        let annotations = map(&[(ADMIN_LABELS, "zone,node-restriction.shoal.dev/db,removed")]);
        let merged = merge_labels(&declared, &stored, &annotations);
        assert_eq!(
            merged,
            map(&[
                ("kubernetes.io/arch", "arm64"),
                ("zone", "admin-says"),
                ("node-restriction.shoal.dev/db", "yes"),
            ])
        );
    }

    #[test]
    fn a_node_writes_only_its_own_annotations() {
        let declared = map(&[("shoal.dev/peer-port", "7444"), (ADMIN_LABELS, "role")]);
        let stored = map(&[(ADMIN_LABELS, "zone"), ("shoal.dev/peer-port", "1")]);
        let merged = merge_annotations(&declared, &stored);
        assert_eq!(
            merged,
            map(&[(ADMIN_LABELS, "zone"), ("shoal.dev/peer-port", "7444")])
        );
    }

    #[test]
    fn what_an_admin_writes_on_a_node_is_the_admins() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let stored = map(&[("kubernetes.io/os", "linux"), ("zone", "a")]);
        let written = map(&[("kubernetes.io/os", "linux"), ("site", "roof")]);
        let annotations = map(&[(ADMIN_LABELS, "zone"), ("other", "x")]);
        let out = record_admin_labels(&stored, &written, &annotations);
        assert_eq!(
            out[ADMIN_LABELS], "site",
            "zone was removed, site added; os untouched"
        );
        assert_eq!(out["other"], "x");
        let none = record_admin_labels(&stored, &stored, &map(&[]));
        assert!(!none.contains_key(ADMIN_LABELS));
    }
}
