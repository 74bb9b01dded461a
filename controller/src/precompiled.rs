//! Wasm precompiled for the cluster's nodes: the controller compiles each pushed wasm artifact
//! for every target its nodes report (Cranelift for a triple and its CPU features, Pulley for
//! 32-bit ARM) and serves the code by (artifact, target), so a Raspberry Pi starts a pod
//! without compiling. Kept under `DATA_DIR/artifacts/precompiled`, bounded, least recently
//! used first out. A target seen for the first time is compiled for when a node asks.

use crate::artifacts::{Artifacts, Blob};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use shoal_api::WasmTarget;
use shoal_runtime::wasm::Precompiler;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// How much precompiled code the controller keeps, by default.
pub const DEFAULT_LIMIT: u64 = 1 << 30;

pub struct Precompiled {
    dir: PathBuf,
    artifacts: Arc<Artifacts>,
    compiler: Arc<Precompiler>,
    limit: u64,
    /// One compile per (artifact, target) at a time: concurrent askers share it.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// One compile at a time at all: Cranelift already uses every core for one.
    compiling: Arc<Semaphore>,
    /// Compiles started on a push, in the background.
    tasks: TaskTracker,
    /// The nodes uploading a module to compile now.
    uploading: Mutex<HashSet<String>>,
}

/// The most a node may upload to have compiled: larger modules than any edge device runs.
pub const MAX_UPLOAD: u64 = 64 << 20;

/// A node's turn to upload a module (see [`Precompiled::upload_turn`]): the file it is
/// written to, removed with the turn.
pub struct UploadTurn<'a> {
    pub path: PathBuf,
    dir: PathBuf,
    node: String,
    owner: &'a Precompiled,
}

impl UploadTurn<'_> {
    /// Creates the (empty) upload file.
    pub fn create(&self) -> Result<std::fs::File> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        std::fs::File::create(&self.path).map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for UploadTurn<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Ok(mut uploading) = self.owner.uploading.lock() {
            uploading.remove(&self.node);
        }
    }
}

/// Is this a wasm module or component (binary, or WAT text), as opposed to an image blob?
/// The distinct wasm targets the nodes report, sorted: what a pushed artifact is compiled for.
pub fn wasm_targets(nodes: &[shoal_api::Node]) -> Vec<WasmTarget> {
    let mut targets: Vec<WasmTarget> = nodes
        .iter()
        .filter_map(|n| n.status.as_ref())
        .flat_map(|s| &s.runtime_handlers)
        .filter_map(|h| h.wasm_target.clone())
        .collect();
    targets.sort();
    targets.dedup();
    targets
}

pub(crate) fn is_wasm(path: &Path) -> bool {
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    let head = &head[..n];
    head.starts_with(b"\0asm") || {
        let text = String::from_utf8_lossy(head);
        let t = text.trim_start();
        t.starts_with("(module") || t.starts_with("(component")
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

impl Precompiled {
    pub fn new(artifacts: Arc<Artifacts>, limit: u64) -> Precompiled {
        Precompiled {
            dir: artifacts.dir().join("precompiled"),
            artifacts,
            compiler: Arc::new(Precompiler::new()),
            limit,
            locks: Mutex::default(),
            compiling: Arc::new(Semaphore::new(1)),
            tasks: TaskTracker::new(),
            uploading: Mutex::default(),
        }
    }

    fn code_path(&self, artifact: &Blob, target: &WasmTarget) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.cwasm",
            artifact.digest.trim_start_matches("sha256:"),
            target.key()
        ))
    }

    /// The code for the wasm artifact `reference` (a digest, or `name:tag`) precompiled for
    /// `target`, compiled now if it is not kept yet.
    pub async fn get(&self, reference: &str, target: &WasmTarget) -> Result<Blob> {
        let artifact = self.artifacts.resolve(reference)?;
        if !is_wasm(&artifact.path) {
            return Err(Error::Invalid(format!(
                "{reference} is not a wasm artifact: nothing to precompile"
            )));
        }
        let path = self.code_path(&artifact, target);
        let lock = self
            .locks
            .lock()
            .map_err(|_| Error::Internal("precompile lock poisoned".into()))?
            .entry(path.display().to_string())
            .or_default()
            .clone();
        let _held = lock.lock().await;
        if !path.exists() {
            self.compile(&artifact, target, &path).await?;
        } else {
            // Least recently used goes first when the store is full.
            shoal_runtime::wasm::touch(&path);
        }
        let blob_path = path.clone();
        let digest = tokio::task::spawn_blocking(move || sha256_file(&blob_path))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let size = std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .len();
        Ok(Blob { digest, size, path })
    }

    /// Compiles the module or component at `source` for `target`, one compile at a time.
    async fn compile_file(&self, source: &Path, target: &WasmTarget) -> Result<Vec<u8>> {
        let _turn = self
            .compiling
            .acquire()
            .await
            .map_err(|_| Error::Internal("precompiler closed".into()))?;
        let (compiler, source, target) =
            (self.compiler.clone(), source.to_path_buf(), target.clone());
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&source).map_err(|e| Error::io(&source, e))?;
            compiler
                .compile(&target, &bytes)
                .map_err(|e| Error::Invalid(format!("{}: {e}", source.display())))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
    }

    async fn compile(&self, artifact: &Blob, target: &WasmTarget, path: &Path) -> Result<()> {
        let started = std::time::Instant::now();
        let code = self.compile_file(&artifact.path, target).await?;
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &code)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::io(path, e)
            })?;
        tracing::info!(
            artifact = %artifact.digest,
            target = %target.triple,
            bytes = code.len(),
            ms = started.elapsed().as_millis() as u64,
            "precompiled wasm for a node target"
        );
        shoal_runtime::wasm::prune(&self.dir, self.limit, path);
        Ok(())
    }

    /// Where `node` uploads a module it pulled, for [`Precompiled::compile_upload`]: one
    /// upload per node at a time (the guard frees its turn), never two nodes' in one file.
    pub fn upload_turn(&self, node: &str) -> Result<UploadTurn<'_>> {
        let mut uploading = self
            .uploading
            .lock()
            .map_err(|_| Error::Internal("upload lock poisoned".into()))?;
        if !uploading.insert(node.to_string()) {
            return Err(Error::TooManyRequests(format!(
                "node {node:?} has a module compiling already: one at a time"
            )));
        }
        let dir = self.dir.join("uploads");
        Ok(UploadTurn {
            path: dir.join(format!("{node}.wasm")),
            node: node.to_string(),
            dir,
            owner: self,
        })
    }

    /// Compiles a module a node uploaded (one it pulled from a registry with a pod's
    /// credentials) for the node's `target`, in the same queue as pushed artifacts. The code
    /// is answered, not kept: it is that node's alone.
    pub async fn compile_upload(
        &self,
        turn: &UploadTurn<'_>,
        target: &WasmTarget,
    ) -> Result<Vec<u8>> {
        if !is_wasm(&turn.path) {
            return Err(Error::Invalid(format!(
                "node {:?} uploaded something that is not a wasm module or component",
                turn.node
            )));
        }
        let started = std::time::Instant::now();
        let code = self.compile_file(&turn.path, target).await?;
        tracing::info!(
            node = %turn.node,
            target = %target.triple,
            bytes = code.len(),
            ms = started.elapsed().as_millis() as u64,
            "compiled a module a node pulled, for its target"
        );
        Ok(code)
    }

    /// Starts compiling a newly pushed artifact for each of `targets` in the background (a
    /// target that fails is logged; its nodes compile for themselves).
    pub fn precompile(self: &Arc<Self>, reference: &str, targets: Vec<WasmTarget>) {
        for target in targets {
            let (me, reference) = (self.clone(), reference.to_string());
            self.tasks.spawn(async move {
                if let Err(e) = me.get(&reference, &target).await {
                    tracing::warn!(%reference, target = %target.triple, error = %shoal_transport::report(&e), "cannot precompile");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_runtime::wasm::WASMTIME_VERSION;

    const HELLO: &[u8] = br#"(module (memory (export "memory") 1) (func (export "_start")))"#;

    fn push(a: &Artifacts, reference: &str, data: &[u8]) -> Blob {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        let mut up = a.begin().unwrap();
        up.write(data).unwrap();
        a.finish(up, reference, data.len() as u64, &digest, &[])
            .unwrap()
    }

    fn target(triple: &str, features: &[&str]) -> WasmTarget {
        WasmTarget {
            wasmtime: WASMTIME_VERSION.into(),
            triple: triple.into(),
            features: features.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn each_reported_target_is_compiled_for_once() {
        let node = |handlers: Vec<shoal_api::RuntimeHandler>| shoal_api::Node {
            status: Some(shoal_api::NodeStatus {
                runtime_handlers: handlers,
                ..Default::default()
            }),
            ..Default::default()
        };
        let wasm = |t: &WasmTarget| shoal_api::RuntimeHandler {
            name: "wasm".into(),
            wasm_target: Some(t.clone()),
        };
        let runc = shoal_api::RuntimeHandler {
            name: "runc".into(),
            wasm_target: None,
        };
        let (pi, pi2) = (
            target("aarch64-unknown-linux-musl", &["has_lse"]),
            target("pulley32", &[]),
        );
        let cases: Vec<(&str, Vec<shoal_api::Node>, Vec<WasmTarget>)> = vec![
            ("no nodes", vec![], vec![]),
            (
                "a node with no status",
                vec![shoal_api::Node::default()],
                vec![],
            ),
            ("runc only", vec![node(vec![runc.clone()])], vec![]),
            (
                "two Pis of a kind and one of another",
                vec![
                    node(vec![wasm(&pi), runc.clone()]),
                    node(vec![wasm(&pi2)]),
                    node(vec![wasm(&pi)]),
                ],
                vec![pi.clone(), pi2.clone()],
            ),
        ];
        for (what, nodes, want) in cases {
            assert_eq!(wasm_targets(&nodes), want, "{what}");
        }
    }

    #[tokio::test]
    async fn code_is_compiled_once_per_target_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Arc::new(Artifacts::open(dir.path()).unwrap());
        push(&artifacts, "hello:1", HELLO);
        let p = Precompiled::new(artifacts, DEFAULT_LIMIT);
        let arm = target("aarch64-unknown-linux-musl", &["has_lse"]);
        let pi2 = target("pulley32", &[]);
        let a = p.get("hello:1", &arm).await.unwrap();
        let b = p.get("hello:1", &pi2).await.unwrap();
        assert_ne!(a.digest, b.digest, "one build per target");
        let modified = std::fs::metadata(&a.path).unwrap().modified().unwrap();
        let again = p.get("hello:1", &arm).await.unwrap();
        assert_eq!(again, a, "served from what was kept");
        assert!(std::fs::metadata(&a.path).unwrap().modified().unwrap() >= modified);
        let bytes = std::fs::read(&a.path).unwrap();
        assert_eq!(sha256_file(&a.path).unwrap(), a.digest);
        assert!(bytes.starts_with(b"\x7fELF"), "wasmtime's precompiled form");
    }

    #[tokio::test]
    async fn what_is_not_wasm_or_not_a_target_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Arc::new(Artifacts::open(dir.path()).unwrap());
        push(&artifacts, "image:1", b"{\"schemaVersion\": 2}");
        push(&artifacts, "broken:1", b"\0asm\x01\0\0\0garbage");
        let p = Precompiled::new(artifacts, DEFAULT_LIMIT);
        let t = target("aarch64-unknown-linux-musl", &[]);
        let err = p.get("image:1", &t).await.unwrap_err().to_string();
        assert!(err.contains("not a wasm artifact"), "{err}");
        let err = p.get("absent:1", &t).await.unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
        let err = p.get("broken:1", &t).await.unwrap_err().to_string();
        assert!(err.contains("compiling for aarch64"), "{err}");
        let old = WasmTarget {
            wasmtime: "40.0.0".into(),
            ..t
        };
        let err = p.get("broken:1", &old).await.unwrap_err().to_string();
        assert!(err.contains("wasmtime 40.0.0"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&p.dir)
            .map(|d| d.collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "a failed compile leaves nothing: {left:?}");
    }

    #[tokio::test]
    async fn the_store_keeps_within_its_limit_dropping_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Arc::new(Artifacts::open(dir.path()).unwrap());
        push(&artifacts, "hello:1", HELLO);
        let t = target("x86_64-unknown-linux-gnu", &[]);
        let probe = Precompiled::new(artifacts.clone(), DEFAULT_LIMIT);
        let one = probe.get("hello:1", &t).await.unwrap().size;
        std::fs::remove_file(probe.code_path(&artifacts.resolve("hello:1").unwrap(), &t)).unwrap();
        // Room for two builds.
        let p = Precompiled::new(artifacts, one * 2 + one / 2);
        let targets = [
            t.clone(),
            target("x86_64-unknown-linux-gnu", &["has_sse3"]),
            target("x86_64-unknown-linux-gnu", &["has_sse3", "has_ssse3"]),
        ];
        let mut paths = Vec::new();
        for t in &targets {
            paths.push(p.get("hello:1", t).await.unwrap().path);
            // File times are coarse on some filesystems: keep the order clear.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!paths[0].exists(), "the oldest went");
        assert!(paths[1].exists() && paths[2].exists());
    }
}
