//! PersistentVolumeClaims, PersistentVolumes and StorageClasses: what Shoal can provision and
//! mount (filesystem volumes in a directory of the node), and nothing it cannot.

use super::{check_dns1123_subdomain, Errors};
use crate::objects::*;

const ACCESS_MODES: [&str; 4] = [
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

fn access_modes(e: &mut Errors, path: &str, modes: &[String]) {
    if modes.is_empty() {
        e.add(path, "at least one access mode is required");
    }
    for (i, m) in modes.iter().enumerate() {
        e.one_of(&format!("{path}[{i}]"), Some(m), &ACCESS_MODES);
    }
}

fn volume_mode(e: &mut Errors, path: &str, mode: Option<&str>) {
    if mode.is_some_and(|m| m != "Filesystem") {
        e.add(
            path,
            "only Filesystem volumes are supported by Shoal (a raw Block device is not)",
        );
    }
}

fn storage(e: &mut Errors, path: &str, q: Option<&crate::Quantity>) {
    match q {
        None => e.add(path, "required"),
        Some(q) if q.milli_value() <= 0 => e.add(path, "must be greater than zero"),
        Some(_) => {}
    }
}

fn reclaim_policy(e: &mut Errors, path: &str, policy: Option<&str>) {
    e.one_of(path, policy, &["Delete", "Retain"]);
}

fn class_name(e: &mut Errors, path: &str, name: Option<&str>) {
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        e.check(path, check_dns1123_subdomain(n));
    }
}

pub(super) fn claim(e: &mut Errors, c: &PersistentVolumeClaim) {
    access_modes(e, "spec.accessModes", &c.spec.access_modes);
    storage(e, "spec.resources.requests[storage]", c.requested());
    volume_mode(e, "spec.volumeMode", c.spec.volume_mode.as_deref());
    class_name(
        e,
        "spec.storageClassName",
        c.spec.storage_class_name.as_deref(),
    );
}

pub(super) fn volume(e: &mut Errors, v: &PersistentVolume) {
    access_modes(e, "spec.accessModes", &v.spec.access_modes);
    storage(e, "spec.capacity[storage]", v.spec.capacity.get("storage"));
    volume_mode(e, "spec.volumeMode", v.spec.volume_mode.as_deref());
    reclaim_policy(
        e,
        "spec.persistentVolumeReclaimPolicy",
        v.spec.persistent_volume_reclaim_policy.as_deref(),
    );
    class_name(
        e,
        "spec.storageClassName",
        v.spec.storage_class_name.as_deref(),
    );
    match (&v.spec.host_path, &v.spec.local) {
        (None, None) => e.add(
            "spec",
            "a volume source is required: hostPath or local (a directory on the node)",
        ),
        (Some(_), Some(_)) => e.add("spec", "may not specify more than 1 volume type"),
        _ => {}
    }
    if let Some(l) = v.spec.local.as_ref().filter(|l| !l.path.starts_with('/')) {
        e.add(
            "spec.local.path",
            format!("must be an absolute path, got {:?}", l.path),
        );
    }
    if let Some(h) = &v.spec.host_path {
        host_path(e, "spec.hostPath", h);
    }
    if let Some(required) = v
        .spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
    {
        let path = "spec.nodeAffinity.required.nodeSelectorTerms";
        if required.node_selector_terms.is_empty() {
            e.add(path, "must have at least one term");
        }
        for (i, t) in required.node_selector_terms.iter().enumerate() {
            super::affinity::term(e, &format!("{path}[{i}]"), t);
        }
    }
}

pub(super) fn class(e: &mut Errors, c: &StorageClass) {
    if c.provisioner.is_empty() {
        e.add("provisioner", "required");
    }
    reclaim_policy(e, "reclaimPolicy", c.reclaim_policy.as_deref());
    e.one_of(
        "volumeBindingMode",
        c.volume_binding_mode.as_deref(),
        &["Immediate", "WaitForFirstConsumer"],
    );
    if c.provisioner == LOCAL_PATH_PROVISIONER && !c.waits_for_first_consumer() {
        e.add(
            "volumeBindingMode",
            "a local-path volume is made on the node of its claim's first pod: WaitForFirstConsumer is required",
        );
    }
}

/// The types Kubernetes defines for a hostPath (empty: no check).
const HOST_PATH_TYPES: [&str; 8] = [
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

/// A hostPath, in a pod's volume or a PersistentVolume.
pub(super) fn host_path(e: &mut Errors, path: &str, h: &HostPathVolumeSource) {
    if !h.path.starts_with('/') {
        e.add(
            format!("{path}.path"),
            format!("must be an absolute path, got {:?}", h.path),
        );
    }
    e.one_of(
        &format!("{path}.type"),
        h.type_.as_deref(),
        &HOST_PATH_TYPES,
    );
}
