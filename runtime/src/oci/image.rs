//! The node's image store: OCI blobs kept by digest (each checked as it is stored), layers
//! unpacked once per digest and shared by every image and container that uses them, and images
//! imported from an OCI image layout, an OCI archive or a `docker save` tarball, choosing the
//! manifest for the node's platform from an image index.
//!
//! ```text
//! images/blobs/sha256/<hex>   manifests, configs, indexes and layer blobs
//! images/layers/<hex>/        a layer unpacked (overlay whiteouts), named by its blob digest
//! images/tmp/                 scratch space; never read as content
//! ```

use super::layer::{self, Whiteouts};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

mod gc;

pub use gc::{gc_need, plan_gc, ImageRecord};

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// An OS and CPU an image can be built for, as OCI names them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on: `linux/amd64`, `linux/arm64`, `linux/arm/v7`.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7".to_string())),
            "x86" => ("386", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant,
        }
    }

    /// Can an image built for `image` run here? A missing variant matches any.
    pub fn runs(&self, image: &Platform) -> bool {
        self.os == image.os
            && self.architecture == image.architecture
            && match (&self.variant, &image.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The image documents are oci-spec's types (youki's): a descriptor, index, manifest or
/// configuration that lacks a field the OCI image spec requires is refused when it is read.
pub use oci_spec::image::{
    Config as RunConfig, Descriptor, ImageConfiguration as ImageConfig, ImageIndex as Index,
    ImageManifest as Manifest,
};

impl From<&oci_spec::image::Platform> for Platform {
    fn from(p: &oci_spec::image::Platform) -> Platform {
        Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone(),
        }
    }
}

/// The platform an image configuration was built for.
pub trait ConfigPlatform {
    fn platform(&self) -> Platform;
}

impl ConfigPlatform for ImageConfig {
    fn platform(&self) -> Platform {
        Platform {
            os: self.os().to_string(),
            architecture: self.architecture().to_string(),
            variant: self.variant().clone(),
        }
    }
}

/// A descriptor's digest, `sha256:<hex>`.
pub fn digest_of(d: &Descriptor) -> String {
    d.digest().to_string()
}

/// An image in the store, ready to run.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest_digest: String,
    pub config_digest: String,
    pub config: ImageConfig,
    /// Layer blob digests, bottom first.
    pub layers: Vec<String>,
}

pub struct ImageStore {
    dir: PathBuf,
    /// One unpack per layer at a time.
    unpacking: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(hex)
}

/// Copies `from` to the file `to`, returning the sha256 digest of what was copied.
fn copy_to_file(from: impl Read, to: &Path) -> Result<(String, u64)> {
    let mut out = fs::File::create(to).map_err(|e| Error::io(to, e))?;
    let done = copy_hashing(from, &mut out).map_err(|e| Error::io(to, e))?;
    out.sync_all().map_err(|e| Error::io(to, e))?;
    Ok(done)
}

/// Copies `from` to `out`, returning the sha256 digest of what was copied.
fn copy_hashing(
    mut from: impl Read,
    mut out: impl std::io::Write,
) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let got = from.read(&mut buf)?;
        if got == 0 {
            break;
        }
        hasher.update(&buf[..got]);
        out.write_all(&buf[..got])?;
        n += got as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), n))
}

impl ImageStore {
    pub fn new(dir: &Path) -> Result<ImageStore> {
        for sub in ["blobs/sha256", "layers", "tmp"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        // Scratch left by an interrupted import or unpack is never content.
        let tmp = dir.join("tmp");
        if let Ok(entries) = fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
        Ok(ImageStore {
            dir: dir.to_path_buf(),
            unpacking: Mutex::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a blob lives; refuses anything that is not a well-formed sha256 digest.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = sha256_hex(digest).ok_or_else(|| Error::Image {
            image: digest.to_string(),
            message: "not a sha256 digest".into(),
        })?;
        Ok(self.dir.join("blobs/sha256").join(hex))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.exists())
    }

    /// A scratch path inside the store (same filesystem, so renames are atomic).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir
            .join("tmp")
            .join(format!("{name}-{}-{:x}", std::process::id(), rand_suffix()))
    }

    /// Stores what `from` yields as the blob `digest`, refusing it if the bytes do not hash to
    /// it. Nothing is stored on a mismatch.
    pub fn put_blob(&self, digest: &str, from: impl Read) -> Result<PathBuf> {
        let dest = self.blob_path(digest)?;
        let tmp = self.scratch("blob");
        let (actual, _) = copy_to_file(from, &tmp).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        if actual != digest {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Image {
                image: digest.to_string(),
                message: format!("digest mismatch: the content hashes to {actual}"),
            });
        }
        fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        Ok(dest)
    }

    /// Moves the file at `path` (inside [`ImageStore::scratch`]) into the store as the blob
    /// `digest`, refusing it, and removing it, if its bytes do not hash to that digest.
    pub fn put_file(&self, digest: &str, path: &Path) -> Result<PathBuf> {
        let dest = self.blob_path(digest)?;
        let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let (actual, _) = copy_hashing(f, std::io::sink()).map_err(|e| Error::io(path, e))?;
        if actual != digest {
            let _ = fs::remove_file(path);
            return Err(Error::Image {
                image: digest.to_string(),
                message: format!("digest mismatch: the content hashes to {actual}"),
            });
        }
        fs::rename(path, &dest).map_err(|e| Error::io(&dest, e))?;
        Ok(dest)
    }

    /// Stores bytes whose digest is computed here (manifests this store writes itself).
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        if !self.has_blob(&digest) {
            self.put_blob(&digest, bytes)?;
        }
        Ok(digest)
    }

    fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        fs::read(&p).map_err(|e| Error::io(&p, e))
    }

    /// Imports an image archive (an OCI layout as a tar, or `docker save` output) and returns
    /// the digest of the manifest for `platform`.
    pub fn import_archive(&self, archive: &Path, platform: &Platform) -> Result<String> {
        let name = archive.display().to_string();
        let scratch = self.scratch("import");
        fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
        let result = layer::open(archive)
            .and_then(|r| layer::unpack(&name, r, &scratch, Whiteouts::Apply))
            .map_err(|e| Error::Image {
                image: name.clone(),
                message: format!("not an image archive: {e}"),
            })
            .and_then(|_| self.import_dir(&scratch, platform));
        let _ = fs::remove_dir_all(&scratch);
        result
    }

    /// [`ImageStore::import_archive`], the image then known here as `reference` (what an image
    /// pulled under that name would be): for images a node is given rather than pulls.
    pub fn import_as(
        &self,
        archive: &Path,
        reference: &str,
        platform: &Platform,
    ) -> Result<String> {
        let digest = self.import_archive(archive, platform)?;
        self.record(reference, &digest)?;
        Ok(digest)
    }

    /// [`ImageStore::import_archive`] once per archive and platform: the chosen manifest is
    /// remembered by the archive's file name, which is its digest in the agent's artifact
    /// cache, so the next pod of the same image starts without reading the archive again.
    pub fn import_artifact(&self, archive: &Path, platform: &Platform) -> Result<String> {
        let name = archive
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let pin = self
            .dir
            .join("refs")
            .join(format!("{name}-{}", platform.to_string().replace('/', "_")));
        if let Ok(d) = fs::read_to_string(&pin) {
            if self.image(d.trim()).is_ok() {
                return Ok(d.trim().to_string());
            }
        }
        let digest = self.import_archive(archive, platform)?;
        let refs = self.dir.join("refs");
        fs::create_dir_all(&refs).map_err(|e| Error::io(&refs, e))?;
        let tmp = self.scratch("ref");
        fs::write(&tmp, &digest).map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &pin).map_err(|e| Error::io(&pin, e))?;
        Ok(digest)
    }

    /// Imports an OCI image layout or an unpacked `docker save` directory.
    pub fn import_dir(&self, dir: &Path, platform: &Platform) -> Result<String> {
        let image = dir.display().to_string();
        let err = |message: String| Error::Image {
            image: image.clone(),
            message,
        };
        if dir.join("index.json").exists() {
            let index: Index = read_json(&dir.join("index.json")).map_err(err)?;
            let chosen = self.choose_in_layout(dir, index.manifests(), platform, 0)?;
            self.import_manifest_from(dir, &chosen)?;
            Ok(chosen)
        } else if dir.join("manifest.json").exists() {
            self.import_docker(dir, platform)
        } else {
            Err(err(
                "neither an OCI image layout (index.json) nor docker save output (manifest.json)"
                    .into(),
            ))
        }
    }

    /// Follows indexes in a layout to the manifest for `platform`; returns its digest.
    fn choose_in_layout(
        &self,
        dir: &Path,
        candidates: &[Descriptor],
        platform: &Platform,
        depth: u32,
    ) -> Result<String> {
        let image = dir.display().to_string();
        if depth > 4 {
            return Err(Error::Image {
                image,
                message: "image indexes nest too deep".into(),
            });
        }
        let mut seen = Vec::new();
        for d in candidates {
            let digest = digest_of(d);
            if is_index(d.media_type().as_ref()) {
                let nested: Index =
                    read_json(&layout_blob(dir, &digest)?).map_err(|m| Error::Image {
                        image: image.clone(),
                        message: m,
                    })?;
                match self.choose_in_layout(dir, nested.manifests(), platform, depth + 1) {
                    Ok(found) => return Ok(found),
                    Err(e) => seen.push(e.to_string()),
                }
                continue;
            }
            let p = match d.platform() {
                Some(p) => Platform::from(p),
                None => {
                    let m: Manifest =
                        read_json(&layout_blob(dir, &digest)?).map_err(|m| Error::Image {
                            image: image.clone(),
                            message: m,
                        })?;
                    let c: ImageConfig = read_json(&layout_blob(dir, &digest_of(m.config()))?)
                        .map_err(|m| Error::Image {
                            image: image.clone(),
                            message: m,
                        })?;
                    c.platform()
                }
            };
            if platform.runs(&p) {
                return Ok(digest);
            }
            seen.push(p.to_string());
        }
        Err(Error::Image {
            image,
            message: format!(
                "no {platform} image (it has: {})",
                if seen.is_empty() {
                    "nothing".to_string()
                } else {
                    seen.join(", ")
                }
            ),
        })
    }

    /// Copies a manifest, its config and its layers from a layout into the store, each
    /// checked against its digest.
    fn import_manifest_from(&self, dir: &Path, digest: &str) -> Result<()> {
        let manifest_path = layout_blob(dir, digest)?;
        let manifest: Manifest = read_json(&manifest_path).map_err(|m| Error::Image {
            image: digest.to_string(),
            message: m,
        })?;
        for d in std::iter::once(manifest.config()).chain(manifest.layers().iter()) {
            let digest = digest_of(d);
            if !self.has_blob(&digest) {
                let src = layout_blob(dir, &digest)?;
                let f = fs::File::open(&src).map_err(|e| Error::io(&src, e))?;
                self.put_blob(&digest, f)?;
            }
        }
        if !self.has_blob(digest) {
            let f = fs::File::open(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
            self.put_blob(digest, f)?;
        }
        Ok(())
    }

    /// `docker save` output: manifest.json names the config and layer files; the manifest is
    /// written here in OCI form.
    fn import_docker(&self, dir: &Path, platform: &Platform) -> Result<String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            layers: Vec<String>,
        }
        let image = dir.display().to_string();
        let err = |message: String| Error::Image {
            image: image.clone(),
            message,
        };
        let entries: Vec<Entry> = read_json(&dir.join("manifest.json")).map_err(err)?;
        let entry = entries
            .first()
            .ok_or_else(|| err("manifest.json lists no image".into()))?;
        let put = |rel: &str, media_type: &str| -> Result<Descriptor> {
            let src = dir.join(
                layer_rel(rel)
                    .ok_or_else(|| err(format!("{rel:?} is not a path in the archive")))?,
            );
            let tmp = self.scratch("docker");
            let f = fs::File::open(&src).map_err(|e| Error::io(&src, e))?;
            let (digest, size) = copy_to_file(f, &tmp)?;
            let dest = self.blob_path(&digest)?;
            fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
            descriptor(media_type, &digest, size)
        };
        let config = put(&entry.config, MEDIA_CONFIG)?;
        let parsed: ImageConfig = serde_json::from_slice(&self.read_blob(&digest_of(&config))?)
            .map_err(|e| err(format!("image config: {e}")))?;
        if !platform.runs(&parsed.platform()) {
            return Err(err(format!(
                "no {platform} image (it has: {})",
                parsed.platform()
            )));
        }
        let layers = entry
            .layers
            .iter()
            .map(|l| put(l, MEDIA_LAYER))
            .collect::<Result<Vec<_>>>()?;
        let bytes =
            serde_json::to_vec(&manifest(config, layers)?).map_err(|e| err(e.to_string()))?;
        self.put_bytes(&bytes)
    }

    /// The image whose manifest is `digest`.
    pub fn image(&self, digest: &str) -> Result<Image> {
        let err = |message: String| Error::Image {
            image: digest.to_string(),
            message,
        };
        let manifest: Manifest = serde_json::from_slice(&self.read_blob(digest)?)
            .map_err(|e| err(format!("manifest: {e}")))?;
        let config_digest = digest_of(manifest.config());
        let config: ImageConfig = serde_json::from_slice(&self.read_blob(&config_digest)?)
            .map_err(|e| err(format!("config: {e}")))?;
        let layers: Vec<String> = manifest.layers().iter().map(digest_of).collect();
        if let Some(l) = layers.iter().find(|l| !self.has_blob(l)) {
            return Err(err(format!("layer {l} is missing from the store")));
        }
        Ok(Image {
            manifest_digest: digest.to_string(),
            config_digest,
            config,
            layers,
        })
    }

    /// The layer unpacked (overlay form), unpacking it the first time it is asked for.
    pub fn layer_dir(&self, digest: &str) -> Result<PathBuf> {
        let hex = sha256_hex(digest)
            .ok_or_else(|| Error::Image {
                image: digest.to_string(),
                message: "not a sha256 digest".into(),
            })?
            .to_string();
        let dest = self.dir.join("layers").join(&hex);
        let lock = self
            .unpacking
            .lock()
            .map_err(|_| Error::Internal("layer lock poisoned".into()))?
            .entry(hex)
            .or_default()
            .clone();
        let _held = lock
            .lock()
            .map_err(|_| Error::Internal("layer lock poisoned".into()))?;
        if dest.exists() {
            return Ok(dest);
        }
        let scratch = self.scratch("layer");
        fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
        let blob = self.blob_path(digest)?;
        let result =
            layer::open(&blob).and_then(|r| layer::unpack(digest, r, &scratch, Whiteouts::Overlay));
        match result {
            Ok(done) => {
                tracing::debug!(
                    layer = digest,
                    entries = done.entries,
                    bytes = done.bytes,
                    "layer unpacked"
                );
                fs::rename(&scratch, &dest).map_err(|e| Error::io(&dest, e))?;
                Ok(dest)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&scratch);
                Err(e)
            }
        }
    }

    /// Applies every layer of `image`, bottom first, into `dest`: the root filesystem when
    /// overlayfs is not available.
    pub fn copy_rootfs(&self, image: &Image, dest: &Path) -> Result<()> {
        for digest in &image.layers {
            let blob = self.blob_path(digest)?;
            layer::unpack(digest, layer::open(&blob)?, dest, Whiteouts::Apply)?;
        }
        Ok(())
    }
}

/// A descriptor of `size` bytes at `digest` (`sha256:<hex>`, as this store computed it).
pub fn descriptor(media_type: &str, digest: &str, size: u64) -> Result<Descriptor> {
    let bad = |e: oci_spec::OciSpecError| Error::Internal(format!("descriptor of {digest}: {e}"));
    let digest: oci_spec::image::Digest =
        digest.parse().map_err(|e: oci_spec::OciSpecError| bad(e))?;
    oci_spec::image::DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(size)
        .build()
        .map_err(bad)
}

/// An OCI image manifest of `config` and `layers` (bottom first).
pub fn manifest(config: Descriptor, layers: Vec<Descriptor>) -> Result<Manifest> {
    oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MEDIA_MANIFEST)
        .config(config)
        .layers(layers)
        .build()
        .map_err(|e| Error::Internal(format!("image manifest: {e}")))
}

/// Is this media type an image index (OCI) or manifest list (Docker)?
pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_INDEX || media_type == DOCKER_LIST
}

/// From an image index's JSON, the manifest for `platform` (registries list each manifest's
/// platform in the index).
pub fn choose_from_index(image: &str, index: &[u8], platform: &Platform) -> Result<Descriptor> {
    let err = |message: String| Error::Image {
        image: image.to_string(),
        message,
    };
    let index: Index =
        serde_json::from_slice(index).map_err(|e| err(format!("image index: {e}")))?;
    let mut seen = Vec::new();
    for d in index.manifests() {
        match d.platform().as_ref().map(Platform::from) {
            Some(p) if platform.runs(&p) => return Ok(d.clone()),
            Some(p) => seen.push(p.to_string()),
            None => seen.push("unknown".into()),
        }
    }
    Err(err(format!(
        "no {platform} image (it has: {})",
        seen.join(", ")
    )))
}

/// The platforms an image layout directory or image archive (OCI or `docker save`) holds;
/// empty for anything that is not an image (a wasm module). Reads only the small JSON
/// documents, never the layers.
pub fn image_platforms(path: &Path) -> Result<Vec<Platform>> {
    const SMALL: u64 = 4 << 20;
    let mut files: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    let get = |files: &HashMap<PathBuf, Vec<u8>>, rel: &str| -> Option<Vec<u8>> {
        if path.is_dir() {
            fs::read(path.join(rel)).ok()
        } else {
            files.get(Path::new(rel)).cloned()
        }
    };
    if !path.is_dir() {
        let Ok(reader) = layer::open(path) else {
            return Ok(vec![]);
        };
        let mut archive = tar::Archive::new(reader);
        let Ok(entries) = archive.entries() else {
            return Ok(vec![]);
        };
        for entry in entries {
            let Ok(mut entry) = entry else {
                return Ok(vec![]);
            };
            if entry.size() > SMALL {
                continue;
            }
            let Ok(name) = entry.path().map(|p| {
                p.components()
                    .filter(|c| matches!(c, std::path::Component::Normal(_)))
                    .collect::<PathBuf>()
            }) else {
                continue;
            };
            let mut bytes = Vec::new();
            if entry.read_to_end(&mut bytes).is_ok() && matches!(bytes.first(), Some(b'{' | b'[')) {
                files.insert(name, bytes);
            }
        }
    }
    let json = |rel: &str| -> Option<serde_json::Value> {
        serde_json::from_slice(&get(&files, rel)?).ok()
    };
    let blob = |digest: &str| -> Option<serde_json::Value> {
        json(&format!("blobs/sha256/{}", sha256_hex(digest)?))
    };
    let config_platform = |config: &serde_json::Value| -> Option<Platform> {
        serde_json::from_value::<ImageConfig>(config.clone())
            .ok()
            .map(|c| c.platform())
    };
    let mut out = Vec::new();
    if let Some(index) = json("index.json") {
        let mut queue: Vec<serde_json::Value> = vec![index];
        while let Some(index) = queue.pop() {
            let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
            for d in manifests {
                let media_type = d["mediaType"].as_str().unwrap_or_default();
                let digest = d["digest"].as_str().unwrap_or_default();
                if is_index(media_type) {
                    queue.extend(blob(digest));
                } else if let Some(p) = d
                    .get("platform")
                    .and_then(|p| serde_json::from_value::<Platform>(p.clone()).ok())
                {
                    out.push(p);
                } else if let Some(p) = blob(digest)
                    .and_then(|m| blob(m["config"]["digest"].as_str()?))
                    .and_then(|c| config_platform(&c))
                {
                    out.push(p);
                }
            }
        }
    } else if let Some(docker) = json("manifest.json") {
        for entry in docker.as_array().cloned().unwrap_or_default() {
            if let Some(p) = entry["Config"]
                .as_str()
                .and_then(&json)
                .and_then(|c| config_platform(&c))
            {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// The path of a blob inside an image layout.
fn layout_blob(dir: &Path, digest: &str) -> Result<PathBuf> {
    let hex = sha256_hex(digest).ok_or_else(|| Error::Image {
        image: dir.display().to_string(),
        message: format!("{digest:?} is not a sha256 digest"),
    })?;
    Ok(dir.join("blobs/sha256").join(hex))
}

/// A path inside an archive named in its manifest.json, refused if it climbs out.
fn layer_rel(rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    p.components()
        .all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
        .then(|| p.to_path_buf())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> std::result::Result<T, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests;
