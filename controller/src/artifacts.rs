//! The controller's artifact store: blobs content-addressed by sha256 under
//! `DATA_DIR/artifacts/blobs`, and an index from `name:tag` to digest, so an offline cluster
//! needs no registry (`shoal push`).

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct Artifacts {
    dir: PathBuf,
    index: Mutex<BTreeMap<String, String>>,
    /// The platforms of each container image, by digest (`platforms.json`).
    platforms: Mutex<BTreeMap<String, Vec<String>>>,
}

fn read_map<V: serde::de::DeserializeOwned>(path: &Path) -> Result<BTreeMap<String, V>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Writes `map` as JSON, atomically (a crash leaves the old file or the new one).
fn write_map<V: serde::Serialize>(path: &Path, map: &BTreeMap<String, V>) -> Result<()> {
    let text = serde_json::to_vec_pretty(map).map_err(|e| Error::Internal(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(path, e))
}

/// A resolved artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
}

/// `name:tag`, with `latest` when no tag is given; `sha256:...` and `name@sha256:...` pass through.
pub fn normalize_reference(reference: &str) -> String {
    if reference.starts_with("sha256:") || reference.contains('@') {
        return reference.to_string();
    }
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

/// An upload in progress: bytes go to a temporary file while their digest is computed.
pub struct Upload {
    file: std::fs::File,
    tmp: PathBuf,
    hasher: Sha256,
    written: u64,
}

impl Upload {
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.file
            .write_all(chunk)
            .map_err(|e| Error::io(&self.tmp, e))?;
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Removed when finished or abandoned; a finished upload was renamed away already.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl Artifacts {
    pub fn open(data_dir: &Path) -> Result<Artifacts> {
        let dir = data_dir.join("artifacts");
        for sub in ["blobs/sha256", "tmp"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        let index = read_map(&dir.join("index.json"))?;
        let platforms = read_map(&dir.join("platforms.json"))?;
        Ok(Artifacts {
            dir,
            index: Mutex::new(index),
            platforms: Mutex::new(platforms),
        })
    }

    /// `DATA_DIR/artifacts`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn begin(&self) -> Result<Upload> {
        let tmp = self.dir.join("tmp").join(uuid::Uuid::new_v4().to_string());
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(Upload {
            file,
            tmp,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Checks size and digest, then files the blob and tags it. A mismatch keeps nothing.
    pub fn finish(
        &self,
        mut upload: Upload,
        reference: &str,
        size: u64,
        digest: &str,
        platforms: &[String],
    ) -> Result<Blob> {
        if upload.written != size {
            return Err(Error::Invalid(format!(
                "upload of {reference} ended after {} of {size} bytes",
                upload.written
            )));
        }
        let actual = format!(
            "sha256:{}",
            hex::encode(std::mem::take(&mut upload.hasher).finalize())
        );
        if actual != digest {
            return Err(Error::Invalid(format!(
                "upload of {reference}: digest is {actual}, the client said {digest}"
            )));
        }
        upload
            .file
            .sync_all()
            .map_err(|e| Error::io(&upload.tmp, e))?;
        let path = self.blob_path(&actual);
        std::fs::rename(&upload.tmp, &path).map_err(|e| Error::io(&path, e))?;
        if !platforms.is_empty() {
            let mut known = self
                .platforms
                .lock()
                .map_err(|_| Error::Internal("artifact platforms lock poisoned".into()))?;
            known.insert(actual.clone(), platforms.to_vec());
            write_map(&self.dir.join("platforms.json"), &known)?;
        }
        // A blob pushed under its own digest (a layer of an image) needs no name.
        if reference != actual {
            let mut index = self
                .index
                .lock()
                .map_err(|_| Error::Internal("artifact index lock poisoned".into()))?;
            index.insert(normalize_reference(reference), actual.clone());
            write_map(&self.dir.join("index.json"), &index)?;
        }
        Ok(Blob {
            digest: actual,
            size,
            path,
        })
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// The platforms of a pushed container image; `None` when not an image pushed here (a
    /// wasm artifact, a registry image, or no such artifact).
    pub fn platforms(&self, reference: &str) -> Option<Vec<String>> {
        let blob = self.resolve(reference).ok()?;
        self.platforms.lock().ok()?.get(&blob.digest).cloned()
    }

    /// Finds an artifact by `name:tag`, `sha256:...` or `name@sha256:...`.
    pub fn resolve(&self, reference: &str) -> Result<Blob> {
        let digest = match reference
            .rsplit_once('@')
            .map(|(_, d)| d)
            .or_else(|| reference.strip_prefix("sha256:").map(|_| reference))
        {
            Some(d) => d.to_string(),
            None => {
                let index = self
                    .index
                    .lock()
                    .map_err(|_| Error::Internal("artifact index lock poisoned".into()))?;
                index
                    .get(&normalize_reference(reference))
                    .cloned()
                    .ok_or_else(|| {
                        Error::NotFound(format!(
                            "artifact {reference:?} (push it with `shoal push FILE {reference}`)"
                        ))
                    })?
            }
        };
        if !digest.starts_with("sha256:")
            || digest.len() != 71
            || !digest[7..].chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(Error::Invalid(format!("{digest:?} is not a sha256 digest")));
        }
        let path = self.blob_path(&digest);
        let size = std::fs::metadata(&path)
            .map_err(|_| Error::NotFound(format!("artifact {reference:?}")))?
            .len();
        Ok(Blob { digest, size, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_default_to_latest() {
        assert_eq!(normalize_reference("hello"), "hello:latest");
        assert_eq!(normalize_reference("hello:1.0"), "hello:1.0");
        assert_eq!(
            normalize_reference("localhost:5000/hello"),
            "localhost:5000/hello:latest"
        );
        assert_eq!(normalize_reference("sha256:abc"), "sha256:abc");
    }

    #[test]
    fn uploads_are_verified_and_tagged() {
        let dir = tempfile::tempdir().unwrap();
        let a = Artifacts::open(dir.path()).unwrap();
        let data = b"\0asm\x01\0\0\0";
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        let mut up = a.begin().unwrap();
        up.write(data).unwrap();
        let blob = a
            .finish(up, "hello:1", data.len() as u64, &digest, &[])
            .unwrap();
        assert_eq!(a.resolve("hello:1").unwrap(), blob);
        assert_eq!(a.resolve(&digest).unwrap().size, 8);
        assert!(matches!(a.resolve("hello:2"), Err(Error::NotFound(_))));
        let mut bad = a.begin().unwrap();
        bad.write(b"other").unwrap();
        let err = a.finish(bad, "evil:1", 5, &digest, &[]).unwrap_err();
        assert!(err.to_string().contains("digest is sha256:"), "{err}");
        assert!(
            matches!(a.resolve("evil:1"), Err(Error::NotFound(_))),
            "a refused upload is not tagged"
        );
        // An image's platforms are kept by digest, for every tag of it.
        let image = b"an image archive";
        let image_digest = format!("sha256:{}", hex::encode(Sha256::digest(image)));
        let mut up = a.begin().unwrap();
        up.write(image).unwrap();
        let platforms = vec!["linux/amd64".to_string()];
        a.finish(up, "app:1", image.len() as u64, &image_digest, &platforms)
            .unwrap();
        assert_eq!(a.platforms("app:1"), Some(platforms.clone()));
        assert_eq!(a.platforms("hello:1"), None, "a wasm artifact has none");
        // The index and the platforms survive a restart.
        let reopened = Artifacts::open(dir.path()).unwrap();
        assert_eq!(reopened.resolve("hello:1").unwrap(), blob);
        assert_eq!(reopened.platforms(&image_digest), Some(platforms));
    }
}
