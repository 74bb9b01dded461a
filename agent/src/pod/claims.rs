//! PersistentVolumeClaim volumes: the claim's volume resolved to its directory on this node
//! (made at first use for a volume Shoal provisioned), and the directories of released
//! volumes whose reclaim policy is Delete removed, then their volumes deleted. The claim and
//! volume are kept in the node's local state as fetched, so a pod restarts with its data
//! also while the controller is out of reach.

use super::sources::get_object;
use super::{client, Inner};
use shoal_api::{Kind, Object, PersistentVolume, PersistentVolumeClaim, Pod};
use shoal_transport::proto::{Request, Response};
use std::path::{Path, PathBuf};

/// The directory of the claim `name`'s volume, for a pod in `ns`; or why the pod waits.
pub(super) async fn claim_dir(inner: &Inner, ns: &str, name: &str) -> Result<PathBuf, String> {
    let claim: PersistentVolumeClaim =
        match get_object(inner, Kind::PersistentVolumeClaim, ns, name).await {
            Ok(Object::PersistentVolumeClaim(c)) => c,
            Ok(_) => return Err(format!("{name:?} is not a PersistentVolumeClaim")),
            Err(e) => return Err(format!("persistentvolumeclaim {name:?}: {e}")),
        };
    let volume_name = match (&claim.spec.volume_name, claim.phase()) {
        (Some(v), "Bound") => v.clone(),
        (_, phase) => {
            return Err(format!(
                "persistentvolumeclaim {name:?} is {phase}, not bound to a volume yet"
            ))
        }
    };
    let volume: PersistentVolume =
        match get_object(inner, Kind::PersistentVolume, "", &volume_name).await {
            Ok(Object::PersistentVolume(v)) => v,
            Ok(_) => return Err(format!("{volume_name:?} is not a PersistentVolume")),
            Err(e) => return Err(format!("persistentvolume {volume_name:?}: {e}")),
        };
    if let Some(other) = volume.node().filter(|n| *n != inner.node) {
        return Err(format!(
            "persistentvolume {volume_name:?} is on node {other}, not this one"
        ));
    }
    let path = volume
        .path()
        .map(PathBuf::from)
        .ok_or_else(|| format!("persistentvolume {volume_name:?} has no directory"))?;
    let root = crate::config::storage_root(&inner.data_dir);
    if provisioned(&volume) {
        // Only under this node's own directory for them, whatever the volume says.
        if path.parent() != Some(root.as_path()) {
            return Err(format!(
                "persistentvolume {volume_name:?}: {} is not under this node's {}",
                path.display(),
                root.display()
            ));
        }
        make_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    } else if volume.spec.local.is_some() && !path.is_dir() {
        return Err(format!(
            "persistentvolume {volume_name:?}: local directory {} does not exist",
            path.display()
        ));
    } else if let Some(h) = &volume.spec.host_path {
        crate::host_path::prepare(&path, h.type_.as_deref())
            .map_err(|m| format!("persistentvolume {volume_name:?}: {m}"))?;
    }
    Ok(path)
}

fn provisioned(v: &PersistentVolume) -> bool {
    v.metadata
        .annotations
        .get(shoal_api::PROVISIONED_BY_ANNOTATION)
        .is_some_and(|p| p == shoal_api::LOCAL_PATH_PROVISIONER)
}

/// A provisioned volume's directory, writable by whoever the pod's containers run as (as
/// K3s' provisioner makes it).
fn make_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !path.is_dir() {
        std::fs::create_dir_all(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    }
    Ok(())
}

/// The volume a provisioned directory belongs to (`pvc-UID_NAMESPACE_CLAIM` is `pvc-UID`'s).
fn volume_of(dir_name: &str) -> Option<&str> {
    let (volume, _) = dir_name.split_once('_')?;
    volume.starts_with("pvc-").then_some(volume)
}

/// Removes the directories of this node's volumes that are Released with reclaim policy
/// Delete (their claims gone), then the volumes. A directory whose volume a pod here still
/// mounts, or that the controller does not say is to go, stays.
pub(super) async fn reclaim(inner: &Inner, pods: &[Pod]) {
    let root = crate::config::storage_root(&inner.data_dir);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    let Some(client) = client(inner) else {
        return;
    };
    let in_use: Vec<String> = pods
        .iter()
        .flat_map(|p| {
            let ns = p.metadata.namespace_or_default().to_string();
            p.spec
                .volumes
                .iter()
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .map(move |c| {
                    crate::local::key(Kind::PersistentVolumeClaim, Some(&ns), &c.claim_name)
                })
                .collect::<Vec<_>>()
        })
        .filter_map(|k| match inner.local.get(&k) {
            Ok(Some(Object::PersistentVolumeClaim(c))) => c.spec.volume_name,
            _ => None,
        })
        .collect();
    for entry in entries.flatten() {
        let dir_name = entry.file_name().to_string_lossy().to_string();
        let Some(volume) = volume_of(&dir_name) else {
            continue;
        };
        if in_use.iter().any(|v| v == volume) {
            continue;
        }
        let answer = client
            .call(&Request::Get {
                kind: Kind::PersistentVolume.name().into(),
                namespace: None,
                name: volume.into(),
            })
            .await;
        let Ok(Response::Object(bytes)) = answer else {
            continue;
        };
        let Ok(Object::PersistentVolume(v)) = Object::from_json(&bytes) else {
            continue;
        };
        let to_go = provisioned(&v)
            && v.node() == Some(inner.node.as_str())
            && v.phase() == "Released"
            && v.reclaim_policy() == "Delete";
        if !to_go {
            continue;
        }
        let path = entry.path();
        if let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!(volume, error = %e, "cannot delete a released volume's data");
            continue;
        }
        tracing::info!(volume, dir = %path.display(), "deleted a released volume's data (reclaim policy Delete)");
        let deleted = client
            .call(&Request::Delete {
                kind: Kind::PersistentVolume.name().into(),
                namespace: None,
                name: volume.into(),
                propagation: Default::default(),
                grace_period: None,
            })
            .await;
        match deleted {
            Ok(Response::Error(e)) => {
                tracing::warn!(volume, error = %e.message, "cannot delete a released volume")
            }
            Err(e) => {
                tracing::warn!(volume, error = %shoal_transport::report(&e), "cannot delete a released volume")
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_directory_names_its_volume() {
        assert_eq!(super::volume_of("pvc-0b7c_default_data"), Some("pvc-0b7c"));
        assert_eq!(super::volume_of("lost+found"), None);
        assert_eq!(super::volume_of("mine_x"), None);
    }
}
