//! A container image as `shoal push` sends it: every blob it holds for any of its platforms,
//! each checked against its digest, and the document at its top (an image index, or a single
//! manifest), so the controller receives, and agents fetch, only the blobs they lack.

use super::image::{self, ImageStore, Platform};
use super::layer::{self, Whiteouts};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An image ready to upload.
#[derive(Debug)]
pub struct Collected {
    /// The top document: an image index (an OCI layout's index.json) or a manifest.
    pub top: Vec<u8>,
    /// Every blob below it, by digest, in a file already checked against that digest.
    pub blobs: BTreeMap<String, PathBuf>,
    pub platforms: Vec<Platform>,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn bad(path: &Path, message: String) -> Error {
    Error::Image {
        image: path.display().to_string(),
        message,
    }
}

/// Gathers the image at `path` (an OCI layout directory, an OCI archive, or `docker save`
/// output), using `scratch` (an empty directory the caller removes) to unpack archives.
/// `None` when `path` is not a container image.
pub fn collect(path: &Path, scratch: &Path) -> Result<Option<Collected>> {
    let platforms = image::image_platforms(path)?;
    if platforms.is_empty() {
        return Ok(None);
    }
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        let d = scratch.join("unpacked");
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        layer::unpack(
            &path.display().to_string(),
            layer::open(path)?,
            &d,
            Whiteouts::Apply,
        )?;
        d
    };
    if dir.join("index.json").exists() {
        let top = std::fs::read(dir.join("index.json")).map_err(|e| Error::io(&dir, e))?;
        let mut blobs = BTreeMap::new();
        let mut queue: Vec<serde_json::Value> =
            vec![serde_json::from_slice(&top).map_err(|e| bad(path, format!("index.json: {e}")))?];
        while let Some(doc) = queue.pop() {
            let mut below: Vec<String> = Vec::new();
            for d in doc["manifests"].as_array().into_iter().flatten() {
                below.extend(d["digest"].as_str().map(str::to_owned));
            }
            for d in std::iter::once(&doc["config"])
                .chain(doc["layers"].as_array().into_iter().flatten())
            {
                below.extend(d["digest"].as_str().map(str::to_owned));
            }
            for digest in below {
                if blobs.contains_key(&digest) {
                    continue;
                }
                let hex = digest
                    .strip_prefix("sha256:")
                    .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or_else(|| bad(path, format!("{digest:?} is not a sha256 digest")))?;
                let file = dir.join("blobs/sha256").join(hex);
                let bytes =
                    std::fs::read(&file).map_err(|e| bad(path, format!("blob {digest}: {e}")))?;
                if sha256(&bytes) != digest {
                    return Err(bad(
                        path,
                        format!("blob {digest} does not match its digest"),
                    ));
                }
                if matches!(bytes.first(), Some(b'{')) {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                        if v.get("manifests").is_some() || v.get("layers").is_some() {
                            queue.push(v);
                        }
                    }
                }
                blobs.insert(digest, file);
            }
        }
        Ok(Some(Collected {
            top,
            blobs,
            platforms,
        }))
    } else {
        // docker save: its single image, converted to an OCI manifest in a scratch store.
        let store = ImageStore::new(&scratch.join("store"))?;
        let manifest = store.import_dir(&dir, &platforms[0])?;
        let image = store.image(&manifest)?;
        let mut blobs = BTreeMap::new();
        for d in std::iter::once(&image.config_digest).chain(image.layers.iter()) {
            blobs.insert(d.clone(), store.blob_path(d)?);
        }
        let top = std::fs::read(store.blob_path(&manifest)?).map_err(|e| Error::io(&dir, e))?;
        Ok(Some(Collected {
            top,
            blobs,
            platforms,
        }))
    }
}

/// Of an image's top document (an index or a manifest), what to follow for `platform`:
/// `Manifest(digest)` when it is an index (or nested index: `Index(digest)`), `Here` when
/// it is the manifest itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Here,
    Manifest(String),
    Index(String),
}

/// Picks the entry of an index (or recognises a manifest) for `platform`. Entries without a
/// platform are taken when they are the only one (a single-image layout): the image's own
/// configuration is checked once it is fetched.
pub fn next_for(image: &str, doc: &[u8], platform: &Platform) -> Result<Next> {
    let v: serde_json::Value = serde_json::from_slice(doc).map_err(|e| Error::Image {
        image: image.to_string(),
        message: format!("not an image index or manifest: {e}"),
    })?;
    let Some(entries) = v["manifests"].as_array() else {
        return Ok(Next::Here);
    };
    let pick = |d: &serde_json::Value| {
        let digest = d["digest"].as_str().unwrap_or_default().to_string();
        if image::is_index(d["mediaType"].as_str().unwrap_or_default()) {
            Next::Index(digest)
        } else {
            Next::Manifest(digest)
        }
    };
    let platformed = entries.iter().any(|d| d.get("platform").is_some());
    if !platformed && entries.len() == 1 {
        return Ok(pick(&entries[0]));
    }
    image::choose_from_index(image, doc, platform).map(|d| {
        let digest = image::digest_of(&d);
        if image::is_index(d.media_type().as_ref()) {
            Next::Index(digest)
        } else {
            Next::Manifest(digest)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::build::{tar_dir, write_layout, ImageSpec};

    #[test]
    fn layouts_archives_and_docker_save_are_collected_with_every_blob() {
        let d = tempfile::tempdir().expect("tmp");
        let layer = |text: &str| {
            let l = tempfile::tempdir().expect("tmp");
            std::fs::write(l.path().join("f"), text).expect("write");
            tar_dir(l.path()).expect("tar")
        };
        let host = Platform::host();
        let arm = Platform {
            os: "linux".into(),
            architecture: "arm".into(),
            variant: Some("v7".into()),
        };
        let spec = |p: &Platform| ImageSpec {
            platform: p.clone(),
            ..Default::default()
        };
        write_layout(
            &d.path().join("l"),
            "multi:1",
            &[
                (spec(&host), vec![layer("base"), layer("host")]),
                (spec(&arm), vec![layer("base"), layer("arm")]),
            ],
        )
        .expect("layout");
        let c = collect(&d.path().join("l"), d.path())
            .expect("collect")
            .expect("image");
        // Two manifests, two configs, three distinct layers.
        assert_eq!(c.blobs.len(), 7);
        assert_eq!(c.platforms, vec![host.clone(), arm.clone()]);
        let archive = d.path().join("l.tar");
        std::fs::write(&archive, tar_dir(&d.path().join("l")).expect("tar")).expect("archive");
        let scratch = d.path().join("scratch");
        std::fs::create_dir_all(&scratch).expect("scratch");
        let from_archive = collect(&archive, &scratch)
            .expect("collect")
            .expect("image");
        assert_eq!(from_archive.top, c.top);
        assert_eq!(
            from_archive.blobs.keys().collect::<Vec<_>>(),
            c.blobs.keys().collect::<Vec<_>>()
        );
        // The index leads each platform to its manifest.
        let Next::Manifest(m) = next_for("multi:1", &c.top, &arm).expect("arm") else {
            panic!("an index leads to a manifest");
        };
        let manifest = std::fs::read(&c.blobs[&m]).expect("manifest");
        assert_eq!(
            next_for("multi:1", &manifest, &arm).expect("here"),
            Next::Here
        );
        let riscv = Platform {
            os: "linux".into(),
            architecture: "riscv64".into(),
            variant: None,
        };
        assert!(next_for("multi:1", &c.top, &riscv).is_err());

        let wasm = d.path().join("m.wasm");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").expect("wasm");
        assert!(collect(&wasm, d.path()).expect("not an image").is_none());
    }
}
