//! A pod's images: wasm modules from the controller or a registry (with the controller's
//! precompiled code), OCI images into the node's store, pull credentials from
//! imagePullSecrets, and image garbage collection as the kubelet's.

use super::sources::get_object;
use super::{Inner, Supervisor};
use crate::error::{Error, Result};
use crate::sync::lock;
use base64::Engine as _;
use shoal_api::{Kind, Pod, Secret};
use shoal_runtime::oci::image::Platform;
use shoal_runtime::oci::RuncRuntime;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

impl Supervisor {
    /// The container images this node holds, as JSON for `shoal images`: each with whether a
    /// pod here uses it.
    pub async fn images(&self) -> Result<Vec<u8>> {
        let Some(runc) = self.0.runc.clone() else {
            return Ok(b"[]".to_vec());
        };
        let in_use = self.images_in_use();
        let listed = tokio::task::spawn_blocking(move || runc.images().list())
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let out: Vec<serde_json::Value> = listed
            .into_iter()
            .map(|i| {
                let used = in_use.contains(&i.digest);
                let mut v = serde_json::to_value(&i).unwrap_or_default();
                v["inUse"] = used.into();
                v
            })
            .collect();
        serde_json::to_vec(&out).map_err(|e| Error::Internal(e.to_string()))
    }

    /// The images pods here run, those the pods in the node's local state will run, and those
    /// fetched ahead for runs while cut off: an image a node needs to start its pods offline
    /// is never collected.
    fn images_in_use(&self) -> HashSet<String> {
        let mut in_use: HashSet<String> = lock(&self.0.pods)
            .values()
            .flat_map(|r| lock(&r.state).images.clone())
            .collect();
        if let Some(runc) = &self.0.runc {
            let kept: Vec<Pod> = self.0.local.list_typed(Kind::Pod);
            let ahead = self.0.artifacts.ahead();
            in_use.extend(ahead.iter().filter_map(|key| {
                let image = key.split_once('/').map_or(key.as_str(), |(_, i)| i);
                runc.images().recorded(image)
            }));
            for p in kept.iter().filter(|p| !p.is_terminal()) {
                in_use.extend(
                    p.spec
                        .containers
                        .iter()
                        .filter_map(|c| runc.images().recorded(&c.image)),
                );
            }
        }
        in_use
    }

    /// Image garbage collection, as the kubelet's: when the disk holding the image store is
    /// fuller than the high threshold, images no pod here uses are removed, least recently
    /// used first, until it is down to the low threshold.
    pub async fn collect_images(&self) {
        let Some(runc) = self.0.runc.clone() else {
            return;
        };
        let (high, low) = self.0.image_gc;
        let in_use = self.images_in_use();
        let done = tokio::task::spawn_blocking(move || {
            let store = runc.images();
            let fs = rustix::fs::statvfs(store.dir()).map_err(|e| Error::io(store.dir(), e))?;
            let total = fs.f_blocks.saturating_mul(fs.f_frsize);
            let available = fs.f_bavail.saturating_mul(fs.f_frsize);
            let Some(need) = shoal_runtime::oci::image::gc_need(total, available, high, low) else {
                return Ok((vec![], 0));
            };
            let plan = shoal_runtime::oci::image::plan_gc(&store.list()?, &in_use, need);
            let freed = store.remove(&plan)?;
            Ok::<_, Error>((plan, freed))
        })
        .await;
        match done {
            Ok(Ok((removed, freed))) if !removed.is_empty() => {
                let names: Vec<&str> = removed.iter().map(|i| i.reference.as_str()).collect();
                tracing::info!(removed = ?names, freed, "image garbage collection");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %shoal_transport::report(&e), "image garbage collection failed")
            }
            _ => {}
        }
    }
}

impl Supervisor {
    /// Loads the images in `dir` ([`crate::preload`]) into the node's caches; what cannot
    /// be loaded is named in the log with why, and the rest load.
    pub async fn preload_images(&self, dir: &std::path::Path) {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read the images directory");
                return;
            }
        };
        files.sort();
        for file in files {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let Some((reference, kind)) = crate::preload::reference_of(name) else {
                tracing::info!(file = %file.display(), "not an image file (name it IMAGE.wasm or IMAGE.tar); skipped");
                continue;
            };
            let loaded = match kind {
                crate::preload::Preloaded::Wasm => {
                    self.0.artifacts.import(&file, &reference).await.map(|p| {
                        let hex = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                        format!("sha256:{hex}")
                    })
                }
                crate::preload::Preloaded::Oci => self.preload_oci(&file, &reference).await,
            };
            match loaded {
                Ok(digest) => {
                    tracing::info!(image = %reference, file = %file.display(), %digest, "loaded an image from the images directory")
                }
                Err(e) => {
                    tracing::warn!(image = %reference, file = %file.display(), error = %shoal_transport::report(&e), "cannot load an image from the images directory")
                }
            }
        }
    }

    /// Fetches the images `pod` would run, now, so that it can start later with neither the
    /// controller nor its registry in reach (a run of a CronJob pinned here). Each image once
    /// per process; a failure is logged and the run tries again when it starts.
    pub async fn prefetch(&self, pod: &Pod) {
        let inner = &self.0;
        let runc = match (pod.runtime_class(), &inner.runc) {
            (shoal_api::RuntimeClass::Runc, None) => return,
            (shoal_api::RuntimeClass::Runc, Some(r)) => Some(r.clone()),
            (shoal_api::RuntimeClass::Wasm, _) => None,
        };
        let Some(client) = super::client(inner) else {
            return;
        };
        let ns = pod.metadata.namespace_or_default().to_string();
        for c in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
            let key = format!("{ns}/{}", c.image);
            if inner.artifacts.is_ahead(&key) {
                continue;
            }
            match container_image(inner, pod, &ns, c, Some(&client), runc.as_ref()).await {
                Ok(_) => {
                    tracing::info!(image = %c.image, "fetched ahead, for runs while cut off");
                    inner.artifacts.fetched_ahead(key);
                }
                Err((reason, message)) => {
                    tracing::warn!(image = %c.image, %reason, %message, "cannot fetch an image ahead; the run will try again")
                }
            }
        }
    }

    /// An OCI image archive into the node's store, recorded as `reference`; the manifest's
    /// digest.
    async fn preload_oci(&self, file: &std::path::Path, reference: &str) -> Result<String> {
        let Some(runc) = self.0.runc.clone() else {
            return Err(Error::Config(
                "an OCI image, and this node runs wasm pods only (no runc)".into(),
            ));
        };
        let (file, reference) = (file.to_path_buf(), reference.to_string());
        tokio::task::spawn_blocking(move || {
            Ok(runc
                .images()
                .import_as(&file, &reference, &Platform::host())?)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
    }
}

/// A container's image, as [`container_image`] found it.
pub(super) struct Image {
    /// For wasm the module, for OCI the image manifest in the node's store.
    pub path: PathBuf,
    /// An OCI image's manifest digest.
    pub digest: Option<String>,
    /// Whether the node's copy ran without asking the controller or the registry (the
    /// kubelet's "already present on machine").
    pub present: bool,
}

/// The container's image on local disk: for wasm the module, for OCI the image manifest in
/// the node's store (and its digest, kept from garbage collection). From the controller or a
/// registry, by the container's imagePullPolicy.
pub(super) async fn container_image(
    inner: &Inner,
    pod: &Pod,
    ns: &str,
    c: &shoal_api::Container,
    client: Option<&shoal_transport::Client>,
    runc: Option<&Arc<RuncRuntime>>,
) -> std::result::Result<Image, (String, String)> {
    use crate::registry::{PullPolicy, Source};
    let policy = PullPolicy::of(c.image_pull_policy.as_deref(), &c.image);
    let registry = crate::registry::names_a_registry(&c.image);
    let auth = if registry {
        pull_auth(inner, pod, ns, &c.image).await
    } else {
        crate::distribution::Auth::Anonymous
    };
    let failed = |e: Error| {
        let reason = if policy == PullPolicy::Never {
            "ErrImageNeverPull"
        } else {
            "ErrImagePull"
        };
        (reason.to_string(), shoal_transport::report(&e).to_string())
    };
    let Some(runc) = runc else {
        let got = if registry {
            inner.artifacts.pull(&c.image, &auth, policy).await
        } else {
            inner
                .artifacts
                .get_for_container(client, &c.image, policy)
                .await
        };
        let (path, present) = got.map_err(failed)?;
        if let Some(client) = client {
            precompiled(inner, client, &path, registry).await;
        }
        return Ok(Image {
            path,
            digest: None,
            present,
        });
    };
    let images = runc.images().clone();
    let platform = Platform::host();
    // As the kubelet: an image the node has under the name runs without asking the controller
    // or the registry, unless the policy is Always.
    let recorded = images.recorded(&c.image);
    let source = policy.source(recorded.is_some());
    let present = source == Source::Node;
    let fetched = match (source, recorded, registry, client) {
        (Source::Node, Some(digest), _, _) => Ok(digest),
        (Source::Refuse, ..) | (Source::Node, None, ..) => {
            Err(crate::registry::never_pulled(&c.image))
        }
        (Source::Fetch, _, true, _) => {
            let registries = inner.artifacts.registries();
            crate::registry::pull_image(&c.image, &auth, &images, &platform, policy, registries)
                .await
        }
        (Source::Fetch, _, false, Some(client)) => {
            crate::images::fetch(&inner.artifacts, client, &images, &c.image, &platform).await
        }
        (Source::Fetch, _, false, None) => Err(Error::Artifact {
            reference: c.image.clone(),
            message: "not connected to the controller".into(),
        }),
    };
    // Out of reach of the controller or the registry, the image this node ran last under the
    // name keeps the pod running (the kubelet would fail it with ErrImagePull).
    // A registry's refusal of the pod's credentials is final, as for wasm artifacts.
    let digest = match fetched {
        Ok(d) => d,
        Err(e @ Error::Refused { .. }) => return Err(failed(e)),
        Err(e) => match images.recorded(&c.image) {
            Some(d) => {
                tracing::info!(image = %c.image, error = %shoal_transport::report(&e), "using the image this node has");
                d
            }
            None => return Err(failed(e)),
        },
    };
    if let Err(e) = images.record(&c.image, &digest) {
        tracing::warn!(image = %c.image, error = %shoal_transport::report(&e), "cannot record the image");
    }
    let path = images
        .blob_path(&digest)
        .map_err(|e| failed(Error::from(e)))?;
    Ok(Image {
        path,
        digest: Some(digest),
        present,
    })
}

/// Takes code the controller compiled for this node's target for the wasm artifact at
/// `artifact` (kept by its digest), unless it is compiled here already: for an artifact the
/// controller holds, the code it precompiled; for one this node pulled from a registry
/// (`pulled`), only where this build cannot compile, the code of the module it uploads.
/// Whatever goes wrong only means compiling it here (or, without a compiler, the pod's
/// CreateContainerError saying so), so it is logged, not returned.
async fn precompiled(
    inner: &Inner,
    client: &shoal_transport::Client,
    artifact: &std::path::Path,
    pulled: bool,
) {
    let Some(digest) = artifact.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    if inner.wasm.is_compiled(digest) || (pulled && shoal_runtime::wasm::COMPILES) {
        return;
    }
    let target = inner.wasm.target();
    let reference = format!("sha256:{digest}");
    let code = if pulled {
        inner
            .artifacts
            .compile_at_controller(client, artifact, target)
            .await
    } else {
        inner
            .artifacts
            .get_precompiled(client, &reference, target)
            .await
    };
    let code = match code {
        Ok(code) => code,
        Err(e) => {
            tracing::info!(artifact = %reference, error = %shoal_transport::report(&e), "no code compiled by the controller; compiling here");
            return;
        }
    };
    let (wasm, source, fetched) = (inner.wasm.clone(), artifact.to_path_buf(), code.clone());
    let installed =
        tokio::task::spawn_blocking(move || wasm.install_precompiled(&source, &fetched))
            .await
            .map_err(|e| shoal_runtime::Error::Internal(e.to_string()))
            .and_then(|r| r);
    match installed {
        Ok(()) => tracing::info!(
            artifact = %reference,
            target = %target.triple,
            pulled,
            "loaded code precompiled by the controller; nothing compiled here"
        ),
        Err(e) => {
            tracing::warn!(artifact = %reference, error = %shoal_transport::report(&e), "compiling here instead")
        }
    }
    // The cache keeps its own copy; this one was only the transfer's.
    let _ = std::fs::remove_file(&code);
}

/// Registry credentials for `image` from the pod's imagePullSecrets.
async fn pull_auth(inner: &Inner, pod: &Pod, ns: &str, image: &str) -> crate::distribution::Auth {
    let registry = image.split_once('/').map(|(r, _)| r).unwrap_or_default();
    let mut docs = Vec::new();
    for r in &pod.spec.image_pull_secrets {
        match get_object(inner, Kind::Secret, ns, &r.name)
            .await
            .and_then(|o| {
                o.into_typed::<Secret>()
                    .map_err(|e| Error::Internal(e.to_string()))
            }) {
            Ok(secret) => {
                if let Some(b) = secret.data.get(".dockerconfigjson") {
                    docs.push(
                        base64::engine::general_purpose::STANDARD
                            .decode(b)
                            .unwrap_or_default(),
                    );
                }
            }
            Err(e) => {
                tracing::warn!(secret = %r.name, error = %shoal_transport::report(&e), "imagePullSecret unavailable")
            }
        }
    }
    crate::registry::auth_for(registry, &docs)
}
