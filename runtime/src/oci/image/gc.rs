//! What the store holds by name, and image garbage collection as the kubelet's: when the
//! disk is fuller than the high threshold, images no pod uses are removed, least recently
//! used first, until it is down to the low one.

use super::*;

/// What the node holds of one image, for `shoal images` and garbage collection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// The reference pods name it by (`busybox:1`, `registry:5000/app:2`).
    pub reference: String,
    /// Its manifest's digest.
    pub digest: String,
    pub platform: String,
    /// Manifest, config and layer blobs, compressed, in bytes.
    pub size: u64,
    /// When a container last started from it, seconds since the epoch.
    pub last_used: u64,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How many bytes image garbage collection must free on a disk of `total` bytes with
/// `available` free, counted as the kubelet counts it: nothing (`None`) below `high` percent
/// used, else down to `low` percent.
pub fn gc_need(total: u64, available: u64, high: u8, low: u8) -> Option<u64> {
    let used = total.saturating_sub(available);
    if total == 0 || used.saturating_mul(100) < total.saturating_mul(u64::from(high)) {
        return None;
    }
    Some(used.saturating_sub(total / 100 * u64::from(low)))
}

/// Which images garbage collection removes to free `need` bytes: those not in use, least
/// recently used first, until enough is freed (or none is left to remove).
pub fn plan_gc(
    images: &[ImageRecord],
    in_use: &std::collections::HashSet<String>,
    need: u64,
) -> Vec<ImageRecord> {
    let mut unused: Vec<&ImageRecord> = images
        .iter()
        .filter(|i| !in_use.contains(&i.digest))
        .collect();
    unused.sort_by_key(|i| (i.last_used, i.reference.clone()));
    let mut freed = 0u64;
    let mut out = Vec::new();
    for i in unused {
        if freed >= need {
            break;
        }
        freed += i.size;
        out.push(i.clone());
    }
    out
}

impl ImageStore {
    fn names(&self) -> PathBuf {
        self.dir.join("refs/names")
    }

    /// Records that `reference` is the image `digest` and was used just now.
    pub fn record(&self, reference: &str, digest: &str) -> Result<()> {
        let image = self.image(digest)?;
        let mut size = self.blob_path(digest).and_then(|p| {
            fs::metadata(&p)
                .map(|m| m.len())
                .map_err(|e| Error::io(&p, e))
        })?;
        for d in std::iter::once(&image.config_digest).chain(image.layers.iter()) {
            size += self
                .blob_path(d)
                .ok()
                .and_then(|p| fs::metadata(p).ok())
                .map(|m| m.len())
                .unwrap_or(0);
        }
        let record = ImageRecord {
            reference: reference.to_string(),
            digest: digest.to_string(),
            platform: image.config.platform().to_string(),
            size,
            last_used: now_secs(),
        };
        let dir = self.names();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let file = dir.join(hex::encode(Sha256::digest(reference.as_bytes())));
        let tmp = self.scratch("name");
        let bytes = serde_json::to_vec(&record).map_err(|e| Error::Internal(e.to_string()))?;
        fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &file).map_err(|e| Error::io(&file, e))
    }

    /// The image last recorded under `reference`, if the store still holds it: what a node
    /// out of reach of the controller and the registries runs.
    pub fn recorded(&self, reference: &str) -> Option<String> {
        let file = self
            .names()
            .join(hex::encode(Sha256::digest(reference.as_bytes())));
        let record = read_json::<ImageRecord>(&file).ok()?;
        self.image(&record.digest).ok().map(|_| record.digest)
    }

    /// Every image the node holds under a name.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(self.names()) else {
            return Ok(out);
        };
        for e in entries.flatten() {
            if let Ok(r) = read_json::<ImageRecord>(&e.path()) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Removes the images named (their names, and every blob and unpacked layer no remaining
    /// image uses). Returns the bytes of blobs removed.
    pub fn remove(&self, images: &[ImageRecord]) -> Result<u64> {
        for i in images {
            let file = self
                .names()
                .join(hex::encode(Sha256::digest(i.reference.as_bytes())));
            let _ = fs::remove_file(file);
        }
        // What the remaining images still use.
        let mut keep: std::collections::HashSet<String> = std::collections::HashSet::new();
        for r in self.list()? {
            if let Ok(image) = self.image(&r.digest) {
                keep.insert(r.digest.clone());
                keep.insert(image.config_digest.clone());
                keep.extend(image.layers);
            }
        }
        let mut freed = 0;
        for i in images {
            let Ok(image) = self.image(&i.digest) else {
                continue;
            };
            let mut gone: Vec<String> = vec![i.digest.clone(), image.config_digest.clone()];
            gone.extend(image.layers);
            for d in gone.iter().filter(|d| !keep.contains(*d)) {
                if let Ok(p) = self.blob_path(d) {
                    freed += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                    let _ = fs::remove_file(&p);
                }
                if let Some(hex) = sha256_hex(d) {
                    let _ = fs::remove_dir_all(self.dir.join("layers").join(hex));
                }
            }
        }
        // Pins that point at a removed manifest are stale now.
        if let Ok(entries) = fs::read_dir(self.dir.join("refs")) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_file() && fs::read_to_string(&p).is_ok_and(|d| !self.has_blob(d.trim())) {
                    let _ = fs::remove_file(&p);
                }
            }
        }
        Ok(freed)
    }
}
