//! Fetching artifacts from the controller: into a partial file that a dropped link resumes from,
//! verified by digest before it is used, then kept by digest for the next pod.

use crate::error::{Error, Result};
use crate::registry::{PullPolicy, Source};
use crate::sync::lock;
use sha2::{Digest, Sha256};
use shoal_transport::proto::{Request, Response};
use shoal_transport::Client;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct ArtifactCache {
    dir: PathBuf,
    registries: crate::registry::Registries,
    /// One fetch per reference at a time: concurrent pods of one image share the download.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Files whose digest this process has checked.
    verified: Mutex<HashSet<PathBuf>>,
    /// Images (`NAMESPACE/IMAGE`) fetched ahead for runs while cut off.
    ahead: Mutex<HashSet<String>>,
}

fn digest_of(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// [`digest_of`], off the async threads: an artifact may be hundreds of megabytes.
async fn hash(path: &Path) -> Result<String> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || digest_of(&owned))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
}

impl ArtifactCache {
    pub fn new(data_dir: &Path, registries: crate::registry::Registries) -> Result<ArtifactCache> {
        let dir = data_dir.join("artifacts");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(ArtifactCache {
            dir,
            registries,
            locks: Mutex::default(),
            verified: Mutex::default(),
            ahead: Mutex::default(),
        })
    }

    /// The lock that keeps fetches of one reference (or digest) one at a time.
    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.locks)
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    fn by_reference(&self, reference: &str) -> PathBuf {
        self.dir.join(format!(
            "ref-{}",
            hex::encode(Sha256::digest(reference.as_bytes()))
        ))
    }

    /// The local path of `reference`, fetching what is missing. Without the controller (no
    /// link, or the transfer failed), the copy this node fetched last, if it has one.
    pub async fn get(&self, client: Option<&Client>, reference: &str) -> Result<PathBuf> {
        let held = self.lock_for(reference);
        let _held = held.lock().await;
        let fetched = match client {
            Some(client) => self.fetch(client, reference).await,
            None => Err(Error::Artifact {
                reference: reference.to_string(),
                message: "not connected to the controller".into(),
            }),
        };
        let why = match fetched {
            Ok(path) => {
                self.pin(reference, &path)?;
                return Ok(path);
            }
            Err(e) => e,
        };
        match self.pinned(reference).await? {
            Some(path) => {
                tracing::info!(reference, error = %why, "using the copy this node has");
                Ok(path)
            }
            None => Err(why),
        }
    }

    /// Takes the file `from` as `reference` (an image the node is given rather than fetches,
    /// [`crate::preload`]): kept by its digest like a fetched one, and the copy `reference`
    /// means until the controller or a registry says otherwise.
    pub async fn import(&self, from: &Path, reference: &str) -> Result<PathBuf> {
        let held = self.lock_for(reference);
        let _held = held.lock().await;
        let digest = hash(from).await?;
        let done = self.dir.join(digest.trim_start_matches("sha256:"));
        if !self.trusted(&done, &digest).await? {
            let tmp = self.by_reference(reference).with_extension("import");
            std::fs::copy(from, &tmp).map_err(|e| Error::io(from, e))?;
            std::fs::rename(&tmp, &done).map_err(|e| Error::io(&done, e))?;
            lock(&self.verified).insert(done.clone());
        }
        self.pin(reference, &done)?;
        Ok(done)
    }

    /// Remembers that `reference` was the file `path` (named by its digest).
    fn pin(&self, reference: &str, path: &Path) -> Result<()> {
        let pin = self.by_reference(reference).with_extension("digest");
        let digest = format!(
            "sha256:{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        );
        if std::fs::read_to_string(&pin).is_ok_and(|d| d == digest) {
            return Ok(());
        }
        let tmp = pin.with_extension("digest.tmp");
        std::fs::write(&tmp, &digest).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &pin).map_err(|e| Error::io(&pin, e))
    }

    /// The copy this node has of `reference`, when `policy` says to run it without asking
    /// the controller or the registry (IfNotPresent, Never); with Never and no copy, the
    /// error that says so.
    async fn present(&self, reference: &str, policy: PullPolicy) -> Result<Option<PathBuf>> {
        let pinned = self.pinned(reference).await?;
        match (policy.source(pinned.is_some()), pinned) {
            (Source::Node, done) => Ok(done),
            (Source::Refuse, _) => Err(crate::registry::never_pulled(reference)),
            (Source::Fetch, _) => Ok(None),
        }
    }

    /// As [`ArtifactCache::get`], by the container's imagePullPolicy: the node's copy as it is
    /// under IfNotPresent and Never, as the kubelet runs an image already present without
    /// asking its registry. True when that copy was used.
    pub async fn get_for_container(
        &self,
        client: Option<&Client>,
        reference: &str,
        policy: PullPolicy,
    ) -> Result<(PathBuf, bool)> {
        {
            let held = self.lock_for(reference);
            let _held = held.lock().await;
            if let Some(done) = self.present(reference, policy).await? {
                return Ok((done, true));
            }
        }
        Ok((self.get(client, reference).await?, false))
    }

    /// The file `reference` was when this node last had it, if it is still whole.
    async fn pinned(&self, reference: &str) -> Result<Option<PathBuf>> {
        let pin = self.by_reference(reference).with_extension("digest");
        let Ok(digest) = std::fs::read_to_string(&pin) else {
            return Ok(None);
        };
        let done = self.dir.join(digest.trim().trim_start_matches("sha256:"));
        Ok(self.trusted(&done, digest.trim()).await?.then_some(done))
    }

    /// The blob `digest` into the image store `store`, fetched from the controller unless the
    /// store has it; one fetch per digest at a time. True when it was fetched.
    pub async fn get_into(
        &self,
        client: &Client,
        digest: &str,
        store: &std::sync::Arc<shoal_runtime::oci::image::ImageStore>,
    ) -> Result<bool> {
        let held = self.lock_for(digest);
        let _held = held.lock().await;
        if store.has_blob(digest) {
            return Ok(false);
        }
        let file = self.fetch(client, digest).await?;
        let (store, digest) = (store.clone(), digest.to_string());
        tokio::task::spawn_blocking(move || store.put_file(&digest, &file))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        Ok(true)
    }

    /// The local path of a registry image: pulled unless `policy` lets an earlier pull of the
    /// same reference be used (IfNotPresent; Never, which fails without one). True when no
    /// pull was made.
    pub async fn pull(
        &self,
        image: &str,
        auth: &crate::distribution::Auth,
        policy: PullPolicy,
    ) -> Result<(PathBuf, bool)> {
        let held = self.lock_for(image);
        let _held = held.lock().await;
        if let Some(done) = self.present(image, policy).await? {
            return Ok((done, true));
        }
        let path = match crate::registry::pull(image, auth, &self.dir, &self.registries).await {
            Ok(path) => path,
            // A refusal of the pod's credentials is final: the copy another pod's pulled
            // must not serve this one.
            Err(e @ Error::Refused { .. }) => return Err(e),
            // The registry out of reach: the copy pulled last keeps the pod running.
            Err(e) => match self.pinned(image).await? {
                Some(done) => {
                    tracing::info!(image, error = %shoal_transport::report(&e), "cannot pull; using the copy this node has");
                    return Ok((done, true));
                }
                None => return Err(e),
            },
        };
        self.pin(image, &path)?;
        lock(&self.verified).insert(path.clone());
        Ok((path, false))
    }

    /// Whether `key` (`NAMESPACE/IMAGE`) was fetched ahead by this process.
    pub fn is_ahead(&self, key: &str) -> bool {
        lock(&self.ahead).contains(key)
    }

    /// Remembers that `key` (`NAMESPACE/IMAGE`) was fetched ahead.
    pub fn fetched_ahead(&self, key: String) {
        lock(&self.ahead).insert(key);
    }

    /// The images fetched ahead by this process (`NAMESPACE/IMAGE`).
    pub fn ahead(&self) -> Vec<String> {
        lock(&self.ahead).iter().cloned().collect()
    }

    /// Which registries are spoken to in plain HTTP.
    pub fn registries(&self) -> &crate::registry::Registries {
        &self.registries
    }

    /// A cached file, if it is whole: checked against its digest once per process.
    async fn trusted(&self, done: &Path, digest: &str) -> Result<bool> {
        if !done.exists() {
            return Ok(false);
        }
        if lock(&self.verified).contains(done) {
            return Ok(true);
        }
        if hash(done).await? == digest {
            lock(&self.verified).insert(done.to_path_buf());
            return Ok(true);
        }
        tracing::warn!(path = %done.display(), "cached artifact is corrupt; fetching it again");
        std::fs::remove_file(done).map_err(|e| Error::io(done, e))?;
        Ok(false)
    }

    async fn fetch(&self, client: &Client, reference: &str) -> Result<PathBuf> {
        self.transfer(reference, &self.dir, async |offset| {
            let request = Request::Fetch {
                reference: reference.to_string(),
                offset,
            };
            Ok(client.stream(&request).await?)
        })
        .await
    }

    /// The code the controller precompiled for `target` from the wasm artifact `digest`,
    /// fetched (resumably, checked against the digest it announces) unless held already.
    pub async fn get_precompiled(
        &self,
        client: &Client,
        digest: &str,
        target: &shoal_api::WasmTarget,
    ) -> Result<PathBuf> {
        let key = format!("precompiled/{digest}/{}", target.key());
        let held = self.lock_for(&key);
        let _held = held.lock().await;
        let dir = self.dir.join("precompiled");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let code = self
            .transfer(&key, &dir, async |offset| {
                let request = Request::FetchPrecompiled {
                    reference: digest.to_string(),
                    target: target.clone(),
                    offset,
                };
                Ok(client.stream(&request).await?)
            })
            .await?;
        Ok(code)
    }

    /// The code for `target` compiled by the controller from the module at `module`, which
    /// this node pulled from a registry and cannot compile itself (the agent-only build):
    /// the module is uploaded and the code comes back on the same stream, checked against
    /// the digest the controller announces. Not resumable: a broken transfer starts over.
    pub async fn compile_at_controller(
        &self,
        client: &Client,
        module: &Path,
        target: &shoal_api::WasmTarget,
    ) -> Result<PathBuf> {
        let digest = hash(module).await?;
        let size = std::fs::metadata(module)
            .map_err(|e| Error::io(module, e))?
            .len();
        let key = format!("compiled/{digest}/{}", target.key());
        let held = self.lock_for(&key);
        let _held = held.lock().await;
        let dir = self.dir.join("precompiled");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // The controller answers from the first byte: nothing earlier is resumed from.
        let _ = std::fs::remove_file(self.by_reference(&key).with_extension("partial"));
        let request = Request::Compile {
            digest,
            size,
            target: target.clone(),
        };
        self.transfer(&key, &dir, async |_| {
            Ok(client.upload(&request, module).await?)
        })
        .await
    }

    /// One resumable transfer from the controller: `open(offset)` asks for the bytes from
    /// `offset` on; the result is kept in `dir` by the digest the controller announced.
    async fn transfer(
        &self,
        reference: &str,
        dir: &Path,
        open: impl AsyncFnOnce(u64) -> Result<shoal_transport::ResponseStream>,
    ) -> Result<PathBuf> {
        let err = |message: String| Error::Artifact {
            reference: reference.to_string(),
            message,
        };
        let partial = self.by_reference(reference).with_extension("partial");
        let offset = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        let mut stream = open(offset).await?;
        let (digest, size) = match stream.next().await? {
            Some(Response::Artifact { digest, size }) => (digest, size),
            Some(Response::Error(e)) => return Err(err(e.message)),
            Some(other) => return Err(err(other.unexpected())),
            None => {
                return Err(err(
                    "the controller ended the transfer before it began".into()
                ))
            }
        };
        let done = dir.join(digest.trim_start_matches("sha256:"));
        if self.trusted(&done, &digest).await? {
            return Ok(done);
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .map_err(|e| Error::io(&partial, e))?;
        if offset > 0 {
            tracing::info!(reference, offset, size, "resuming an interrupted fetch");
        }
        let mut got = offset;
        while let Some(r) = stream.next().await? {
            match r {
                Response::Chunk(bytes) => {
                    file.write_all(&bytes).map_err(|e| Error::io(&partial, e))?;
                    got += bytes.len() as u64;
                }
                Response::Error(e) => return Err(err(e.message)),
                other => return Err(err(other.unexpected())),
            }
        }
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::io(&partial, e))?;
        if got > size {
            // More than announced: what we hold cannot be resumed from; start over next time.
            let _ = std::fs::remove_file(&partial);
            return Err(err(format!(
                "the controller sent {got} bytes for an artifact of {size}"
            )));
        }
        if got != size {
            return Err(err(format!(
                "transfer ended after {got} of {size} bytes (it resumes from there)"
            )));
        }
        let actual = hash(&partial).await?;
        if actual != digest {
            let _ = std::fs::remove_file(&partial);
            return Err(err(format!(
                "digest mismatch: expected {digest}, got {actual}"
            )));
        }
        std::fs::rename(&partial, &done).map_err(|e| Error::io(&done, e))?;
        lock(&self.verified).insert(done.clone());
        // What this transfer carried, beside what an earlier one left: a resumed fetch says so.
        tracing::info!(
            reference,
            %digest,
            size,
            resumed_from = offset,
            received = got - offset,
            "artifact fetched"
        );
        Ok(done)
    }
}
