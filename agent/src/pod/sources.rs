//! The ConfigMaps and Secrets a pod reads, for its env and its volumes: from the controller,
//! kept on the node as they come, and the copy kept when the controller cannot be asked. What
//! the controller says is gone is gone.

use super::{client, Inner};
use crate::error::{Error, Result};
use base64::Engine as _;
use shoal_api::{Kind, Object};
use shoal_transport::proto::{ErrorCode, Request, Response};
use std::collections::BTreeMap;

/// A ConfigMap's data and binaryData, or a Secret's data decoded: `None` when the controller
/// (or the node's local state) has no such object.
pub(super) async fn fetch_data(
    inner: &Inner,
    kind: Kind,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
    let decode = |m: BTreeMap<String, String>| {
        m.into_iter().filter_map(|(k, v)| {
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .ok()
                .map(|b| (k, b))
        })
    };
    match get_object(inner, kind, ns, name).await {
        Ok(Object::ConfigMap(cm)) => {
            let mut d: BTreeMap<String, Vec<u8>> = cm
                .data
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            d.extend(decode(cm.binary_data));
            Ok(Some(d))
        }
        Ok(Object::Secret(s)) => Ok(Some(decode(s.data).collect())),
        Ok(other) => Err(Error::Internal(format!(
            "asked for a {kind}, got a {}",
            other.kind()
        ))),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The files of a ConfigMap or Secret volume ([`crate::volume`]); none for other sources.
pub(super) async fn volume_files(
    inner: &Inner,
    ns: &str,
    v: &shoal_api::Volume,
) -> std::result::Result<Vec<crate::volume::File>, (String, String)> {
    let config = |m: String| ("CreateContainerConfigError".to_string(), m);
    let (what, kind, name, items, default_mode, optional) = match (&v.config_map, &v.secret) {
        (Some(c), _) => (
            "configmap",
            Kind::ConfigMap,
            &c.name,
            &c.items,
            c.default_mode,
            c.optional,
        ),
        (None, Some(s)) => (
            "secret",
            Kind::Secret,
            &s.secret_name,
            &s.items,
            s.default_mode,
            s.optional,
        ),
        (None, None) => return Ok(Vec::new()),
    };
    let data = fetch_data(inner, kind, ns, name)
        .await
        .map_err(|e| config(format!("{what} {name:?}: {e}")))?;
    crate::volume::files(what, name, data.as_ref(), items, default_mode, optional)
        .map_err(|m| config(format!("volume {}: {m}", v.name)))
}

/// A projected volume's files: each source's, in order, with the volume's mode where an
/// item sets none. A path two sources both write is refused (Kubernetes' validation refuses
/// it where it can see it; a ConfigMap's keys it cannot).
pub(super) async fn projected_files(
    inner: &Inner,
    pod: &shoal_api::Pod,
    p: &shoal_api::ProjectedVolumeSource,
    at: &crate::env::Placement,
) -> std::result::Result<Vec<crate::volume::File>, (String, String)> {
    let config = |m: String| ("CreateContainerConfigError".to_string(), m);
    let ns = pod.metadata.namespace_or_default();
    let mut out: Vec<crate::volume::File> = Vec::new();
    for (i, source) in p.sources.iter().enumerate() {
        let objects = [
            ("configmap", Kind::ConfigMap, &source.config_map),
            ("secret", Kind::Secret, &source.secret),
        ];
        let mut files = Vec::new();
        for (what, kind, o) in objects {
            let Some(o) = o else { continue };
            let data = fetch_data(inner, kind, ns, &o.name)
                .await
                .map_err(|e| config(format!("{what} {:?}: {e}", o.name)))?;
            let got = crate::volume::files(
                what,
                &o.name,
                data.as_ref(),
                &o.items,
                p.default_mode,
                o.optional,
            )
            .map_err(|m| config(format!("sources[{i}]: {m}")))?;
            files.extend(got);
        }
        if let Some(d) = &source.downward_api {
            let got = crate::volume::downward_files(&p.downward(d), pod, at)
                .map_err(|m| config(format!("sources[{i}]: {m}")))?;
            files.extend(got);
        }
        for f in files {
            if out.iter().any(|o| o.path == f.path) {
                return Err(config(format!(
                    "sources[{i}]: {:?} is written by an earlier source too",
                    f.path
                )));
            }
            out.push(f);
        }
    }
    Ok(out)
}

/// The group that owns the pod's volumes (`securityContext.fsGroup`).
pub(super) fn fs_group(pod: &shoal_api::Pod) -> Option<u32> {
    pod.spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok())
}

/// Rewrites the pod's downward API files (downwardAPI volumes, and the downward items of
/// projected ones without a Secret, whose files live off the disk) under `volumes`, each
/// written beside itself and renamed over the old, so a reader sees the old file or the
/// new, never half of one.
pub(super) fn refresh_downward(
    volumes: &std::path::Path,
    pod: &shoal_api::Pod,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let at = crate::env::Placement {
        allocatable: crate::node::allocatable(),
        ..Default::default()
    };
    let fs_group = fs_group(pod);
    for v in &pod.spec.volumes {
        let sources: Vec<shoal_api::DownwardApiVolumeSource> = match (&v.downward_api, &v.projected)
        {
            (Some(d), _) => vec![d.clone()],
            (None, Some(p)) if !p.has_secret() => p
                .sources
                .iter()
                .filter_map(|s| s.downward_api.as_ref().map(|d| p.downward(d)))
                .collect(),
            _ => continue,
        };
        let dir = volumes.join(&v.name);
        for d in sources {
            let files =
                crate::volume::downward_files(&d, pod, &at).map_err(std::io::Error::other)?;
            for f in files {
                let path = dir.join(&f.path);
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                let next = path.with_file_name(format!(".{name}.next"));
                std::fs::write(&next, &f.bytes)?;
                // As prepared: fsGroup's, and readable by it.
                let mode = match fs_group {
                    Some(gid) => {
                        std::os::unix::fs::lchown(&next, None, Some(gid))?;
                        f.mode | 0o440
                    }
                    None => f.mode,
                };
                std::fs::set_permissions(&next, std::fs::Permissions::from_mode(mode))?;
                std::fs::rename(&next, &path)?;
            }
        }
    }
    Ok(())
}

/// Writes a volume's files under `dir`, with their modes.
pub(super) fn write_volume_files(
    dir: &std::path::Path,
    files: &[crate::volume::File],
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.bytes)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
    }
    Ok(())
}

/// The ConfigMaps and Secrets a container's env refers to, fetched (`None`: there is no such
/// object; whether that is an error depends on `optional`, see [`crate::env`]).
pub(super) async fn env_sources(
    inner: &Inner,
    ns: &str,
    c: &shoal_api::Container,
) -> std::result::Result<crate::env::Sources, (String, String)> {
    let (config_maps, secrets) = crate::env::references(c);
    let mut sources = crate::env::Sources::default();
    let text = |d: BTreeMap<String, Vec<u8>>| {
        d.into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect()
    };
    for (kind, names) in [(Kind::ConfigMap, config_maps), (Kind::Secret, secrets)] {
        for name in names {
            let data = fetch_data(inner, kind, ns, &name).await.map_err(|e| {
                (
                    "CreateContainerConfigError".to_string(),
                    format!("{} {name:?}: {e}", kind.name().to_ascii_lowercase()),
                )
            })?;
            let into = match kind {
                Kind::ConfigMap => &mut sources.config_maps,
                _ => &mut sources.secrets,
            };
            into.insert(name, data.map(text));
        }
    }
    Ok(sources)
}

pub(super) async fn get_object(
    inner: &Inner,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Object> {
    let namespace = kind.namespaced().then_some(namespace);
    let asked = match client(inner) {
        Some(client) => client
            .call(&Request::Get {
                kind: kind.name().into(),
                namespace: namespace.map(str::to_string),
                name: name.into(),
            })
            .await
            .map_err(Error::from),
        None => Err(Error::Server("not connected to the controller".into())),
    };
    let key = crate::local::key(kind, namespace, name);
    match asked {
        Ok(Response::Object(b)) => {
            let obj = Object::from_json(&b).map_err(|e| Error::Internal(e.to_string()))?;
            inner.local.keep(&obj);
            Ok(obj)
        }
        Ok(Response::Error(e)) => {
            if e.code == ErrorCode::NotFound {
                inner.local.forget(&key);
                return Err(Error::NotFound(e.message));
            }
            Err(Error::Server(e.message))
        }
        Ok(other) => Err(Error::Internal(other.unexpected())),
        Err(why) => match inner.local.get(&key) {
            Ok(Some(obj)) => Ok(obj),
            _ => Err(why),
        },
    }
}
