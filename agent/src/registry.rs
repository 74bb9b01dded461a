//! Pulling wasm artifacts and container images from OCI registries (distribution API v2, the
//! client in `distribution/`): anonymous, or with the basic credentials of the pod's
//! `imagePullSecrets` (sent to the registry's token service when it challenges for a bearer
//! token). Each blob is checked against its digest; plain HTTP is used only for registries on
//! loopback or listed as insecure.

use crate::distribution::{Auth, Client, Reference};
use crate::error::{Error, Result};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use shoal_runtime::oci::image::{self, ConfigPlatform as _, ImageStore, Platform};
use std::path::{Path, PathBuf};

/// The layer media types a wasm artifact may use.
pub const WASM_MEDIA_TYPES: [&str; 3] = [
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];

pub use shoal_api::names_a_registry;

fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(registry);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The registry a `.dockerconfigjson` key names: `https://index.docker.io/v1/` is `docker.io`.
fn config_key_host(key: &str) -> &str {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    }
}

/// Credentials for `registry` from `.dockerconfigjson` documents (decoded Secret data).
pub fn auth_for(registry: &str, dockerconfigs: &[Vec<u8>]) -> Auth {
    for doc in dockerconfigs {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(doc) else {
            continue;
        };
        let Some(entry) = v["auths"].as_object().and_then(|auths| {
            auths
                .iter()
                .find(|(k, _)| config_key_host(k) == config_key_host(registry))
        }) else {
            continue;
        };
        let e = entry.1;
        if let (Some(u), Some(p)) = (e["username"].as_str(), e["password"].as_str()) {
            return Auth::Basic(u.into(), p.into());
        }
        if let Some(auth) = e["auth"].as_str() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth)
                .unwrap_or_default();
            if let Some((u, p)) = String::from_utf8_lossy(&decoded).split_once(':') {
                return Auth::Basic(u.into(), p.into());
            }
        }
    }
    Auth::Anonymous
}

/// Which registries are spoken to in plain HTTP: those on loopback, and those the agent's
/// configuration lists as insecure (`--insecure-registry`), as Docker does. All others only
/// over HTTPS.
#[derive(Clone, Debug, Default)]
pub struct Registries {
    pub insecure: Vec<String>,
}

impl Registries {
    fn plain_http(&self, registry: &str) -> bool {
        is_loopback(registry) || self.insecure.iter().any(|r| r == registry)
    }
}

/// A registry client for `image`: HTTPS, except plain HTTP where `registries` allows it.
fn client_for(image: &str, auth: &Auth, registries: &Registries) -> Result<(Client, Reference)> {
    let reference: Reference = image.parse().map_err(|e| Error::Artifact {
        reference: image.to_string(),
        message: format!("not an image reference: {e}"),
    })?;
    let plain = registries.plain_http(reference.registry());
    let client = Client::new(image, reference.clone(), auth.clone(), plain);
    Ok((client, reference))
}

/// Pulls the wasm artifact `image` into `dir`, named by its layer's digest; returns the path.
pub async fn pull(
    image: &str,
    auth: &Auth,
    dir: &Path,
    registries: &Registries,
) -> Result<PathBuf> {
    let err = |message: String| Error::Artifact {
        reference: image.to_string(),
        message,
    };
    let (mut client, reference) = client_for(image, auth, registries)?;
    let (bytes, _) = client
        .manifest(&reference, &[image::MEDIA_MANIFEST, DOCKER_MANIFEST])
        .await?;
    let manifest: image::Manifest =
        serde_json::from_slice(&bytes).map_err(|e| err(format!("artifact manifest: {e}")))?;
    let layer = manifest
        .layers()
        .iter()
        .find(|l| WASM_MEDIA_TYPES.contains(&l.media_type().to_string().as_str()))
        .ok_or_else(|| err("the artifact has no wasm layer".into()))?;
    let digest = image::digest_of(layer);
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| err(format!("layer digest {digest} is not sha256")))?;
    let path = dir.join(hex);
    let tmp = path.with_extension("partial");
    let size = layer.size();
    if let Err(e) = client.blob(&digest, size, &tmp).await {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    tracing::info!(image, %digest, size, "artifact pulled from a registry");
    Ok(path)
}

/// Docker's schema 2 image manifest, which registries still serve for many images.
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The manifest media types an OCI image pull accepts.
const IMAGE_MANIFEST_TYPES: [&str; 4] = [
    image::MEDIA_INDEX,
    "application/vnd.docker.distribution.manifest.list.v2+json",
    image::MEDIA_MANIFEST,
    DOCKER_MANIFEST,
];

/// A container's `imagePullPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The policy as written, or Kubernetes' default: Always for an image tagged `latest` or
    /// not tagged at all (and not pinned by digest), IfNotPresent otherwise.
    pub fn of(written: Option<&str>, image: &str) -> PullPolicy {
        match written {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some(_) => PullPolicy::IfNotPresent,
            None => {
                let last = image.rsplit('/').next().unwrap_or(image);
                if image.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
                    PullPolicy::IfNotPresent
                } else {
                    PullPolicy::Always
                }
            }
        }
    }
}

/// Where a container's image comes from, by its policy and whether the node has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The node's copy, without asking the controller or the registry.
    Node,
    /// Asked for (the node's copy stays the fallback while they are out of reach).
    Fetch,
    /// Not on the node, and the policy is Never: ErrImageNeverPull.
    Refuse,
}

impl PullPolicy {
    /// As the kubelet decides: Always asks; IfNotPresent and Never run what the node has;
    /// without it, IfNotPresent asks and Never refuses.
    pub fn source(self, on_node: bool) -> Source {
        match (self, on_node) {
            (PullPolicy::Always, _) | (PullPolicy::IfNotPresent, false) => Source::Fetch,
            (_, true) => Source::Node,
            (PullPolicy::Never, false) => Source::Refuse,
        }
    }
}

/// The error for an image not on the node under imagePullPolicy Never.
pub fn never_pulled(image: &str) -> Error {
    Error::Artifact {
        reference: image.to_string(),
        message: "not on this node, and imagePullPolicy is Never".into(),
    }
}

/// Pulls the container image `image` for `platform` into the node's image store; returns its
/// manifest digest. Every manifest and blob is checked against its digest before it is kept;
/// blobs the store already holds (layers shared with other images) are not fetched again.
/// Unless the policy is Always, an earlier pull of the same reference is used without asking
/// the registry; with Never, only that.
pub async fn pull_image(
    image: &str,
    auth: &Auth,
    store: &ImageStore,
    platform: &Platform,
    policy: PullPolicy,
    registries: &Registries,
) -> Result<String> {
    let err = |message: String| Error::Artifact {
        reference: image.to_string(),
        message,
    };
    let pin = store.dir().join("refs").join(format!(
        "registry-{}-{}",
        hex::encode(Sha256::digest(image.as_bytes())),
        platform.to_string().replace('/', "_")
    ));
    if policy != PullPolicy::Always {
        if let Ok(d) = std::fs::read_to_string(&pin) {
            if store.image(d.trim()).is_ok() {
                return Ok(d.trim().to_string());
            }
        }
    }
    if policy == PullPolicy::Never {
        return Err(err(
            "the image is not on this node and imagePullPolicy is Never".into(),
        ));
    }
    let (mut client, reference) = client_for(image, auth, registries)?;
    let (mut bytes, _) = client.manifest(&reference, &IMAGE_MANIFEST_TYPES).await?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
        .map_err(|e| {
            err(format!(
                "the registry sent a manifest that is not JSON: {e}"
            ))
        })?
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_string();
    if image::is_index(&media_type) {
        let chosen = image::choose_from_index(image, &bytes, platform)?;
        let by_digest = reference.at(&image::digest_of(&chosen));
        bytes = client.manifest(&by_digest, &IMAGE_MANIFEST_TYPES).await?.0;
    }
    let manifest: image::Manifest =
        serde_json::from_slice(&bytes).map_err(|e| err(format!("image manifest: {e}")))?;
    for d in std::iter::once(manifest.config()).chain(manifest.layers().iter()) {
        let digest = image::digest_of(d);
        if store.has_blob(&digest) {
            continue;
        }
        let tmp = store.scratch("pull");
        let size = d.size();
        if let Err(e) = client.blob(&digest, size, &tmp).await {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        store.put_file(&digest, &tmp)?;
    }
    let digest = store.put_bytes(&bytes)?;
    let pulled = store.image(&digest)?;
    if !platform.runs(&pulled.config.platform()) {
        return Err(err(format!(
            "no {platform} image (it has: {})",
            pulled.config.platform()
        )));
    }
    if let Some(dir) = pin.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(&pin, &digest).map_err(|e| Error::io(&pin, e))?;
    tracing::info!(image, %digest, layers = pulled.layers.len(), "image pulled from a registry");
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_registries_are_loopback() {
        assert!(
            is_loopback("127.0.0.1:5000")
                && is_loopback("localhost:5000")
                && is_loopback("[::1]:5000")
        );
        assert!(!is_loopback("ghcr.io") && !is_loopback("10.0.0.1:5000"));
        let listed = Registries {
            insecure: vec!["10.0.0.1:5000".into()],
        };
        assert!(listed.plain_http("10.0.0.1:5000") && listed.plain_http("127.0.0.1:5000"));
        assert!(!listed.plain_http("10.0.0.1:5001") && !listed.plain_http("ghcr.io"));
    }

    #[test]
    fn pull_policy_defaults_as_kubernetes() {
        use PullPolicy::*;
        for (written, image, want) in [
            (None, "busybox", Always),
            (None, "busybox:latest", Always),
            (None, "reg:5000/busybox", Always),
            (None, "reg:5000/busybox:1.36", IfNotPresent),
            (None, "busybox@sha256:abc", IfNotPresent),
            (Some("Never"), "busybox", Never),
            (Some("IfNotPresent"), "busybox:latest", IfNotPresent),
            (Some("Always"), "busybox:1", Always),
        ] {
            assert_eq!(PullPolicy::of(written, image), want, "{written:?} {image}");
        }
    }

    #[test]
    fn the_policy_and_the_node_copy_decide_where_an_image_comes_from() {
        use PullPolicy::*;
        for (policy, on_node, want) in [
            (Always, true, Source::Fetch),
            (Always, false, Source::Fetch),
            (IfNotPresent, true, Source::Node),
            (IfNotPresent, false, Source::Fetch),
            (Never, true, Source::Node),
            (Never, false, Source::Refuse),
        ] {
            assert_eq!(policy.source(on_node), want, "{policy:?} {on_node}");
        }
    }

    #[test]
    fn credentials_come_from_dockerconfigjson() {
        let doc = br#"{"auths": {"https://reg.example:5000": {"auth": "dXNlcjpwYXNz"}, "other.io": {"username": "a", "password": "b"}}}"#.to_vec();
        assert!(
            matches!(auth_for("reg.example:5000", std::slice::from_ref(&doc)), Auth::Basic(u, p) if u == "user" && p == "pass")
        );
        assert!(
            matches!(auth_for("other.io", std::slice::from_ref(&doc)), Auth::Basic(u, p) if u == "a" && p == "b")
        );
        assert!(matches!(
            auth_for("nowhere.io", std::slice::from_ref(&doc)),
            Auth::Anonymous
        ));
        let hub =
            br#"{"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"}}}"#.to_vec();
        assert!(matches!(auth_for("docker.io", &[hub]), Auth::Basic(..)));
    }
}
