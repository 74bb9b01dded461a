//! Compiled artifacts, by the sha256 of their bytes: in memory for this process, and on disk
//! as precompiled `.cwasm` files so a restarted agent does not compile again. Code comes from
//! compiling here or from the controller, which precompiles for this node's target. Both
//! stores are bounded: the least recently used entries go first.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

#[derive(Clone)]
pub enum Compiled {
    /// A WASI preview 1 core module.
    Module(Module),
    /// A WASI preview 2 component (`wasi:cli/command`).
    Component(Component),
}

/// How much precompiled code is kept on disk by default.
pub const DEFAULT_DISK_LIMIT: u64 = 512 << 20;
/// How many compiled artifacts stay loaded in memory (running containers hold their own).
const MEMORY_ENTRIES: usize = 64;

pub struct Cache {
    dir: PathBuf,
    /// Ties cached files to this wasmtime version, its features and its `Config`.
    engine_tag: String,
    /// Compiled artifacts by digest, with when each was last used (a counter).
    memory: Mutex<HashMap<String, (Compiled, u64)>>,
    uses: AtomicU64,
    disk_limit: u64,
    compilations: AtomicU64,
    installed: AtomicU64,
}

/// What the bytes hold, from the binary header (or the first form of WAT text).
pub(crate) fn is_component(bytes: &[u8]) -> bool {
    if bytes.starts_with(b"\0asm") {
        // Core modules are version 1; components carry layer 1 in the upper half.
        return bytes.get(6..8) == Some(&[1, 0]);
    }
    String::from_utf8_lossy(&bytes[..bytes.len().min(4096)])
        .trim_start()
        .starts_with("(component")
}

impl Cache {
    pub fn new(dir: &Path, engine: &Engine, disk_limit: u64) -> Result<Cache> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine_tag(engine, &mut h);
        Ok(Cache {
            dir: dir.to_path_buf(),
            engine_tag: format!("{:016x}", h.finish()),
            memory: Mutex::new(HashMap::new()),
            uses: AtomicU64::new(0),
            disk_limit,
            compilations: AtomicU64::new(0),
            installed: AtomicU64::new(0),
        })
    }

    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    pub fn installed(&self) -> u64 {
        self.installed.load(Ordering::Relaxed)
    }

    fn cwasm_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_tag))
    }

    fn remember(&self, digest: String, compiled: Compiled) {
        let tick = self.uses.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.memory.lock() {
            m.insert(digest, (compiled, tick));
            while m.len() > MEMORY_ENTRIES {
                let Some(oldest) = m
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                m.remove(&oldest);
            }
        }
    }

    fn in_memory(&self, digest: &str) -> Option<Compiled> {
        let tick = self.uses.fetch_add(1, Ordering::Relaxed);
        let mut m = self.memory.lock().ok()?;
        let entry = m.get_mut(digest)?;
        entry.1 = tick;
        Some(entry.0.clone())
    }

    /// Whether the artifact with this digest (hex sha256) is compiled already, in memory or
    /// on disk: then nothing needs compiling or fetching for it.
    pub fn has(&self, digest: &str) -> bool {
        self.memory.lock().is_ok_and(|m| m.contains_key(digest)) || self.cwasm_path(digest).exists()
    }

    pub fn load(&self, engine: &Engine, path: &Path) -> Result<Compiled> {
        let artifact_err = |message: String| Error::Artifact {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| artifact_err(e.to_string()))?;
        let digest = hex::encode(Sha256::digest(&bytes));
        if let Some(c) = self.in_memory(&digest) {
            return Ok(c);
        }
        let component = is_component(&bytes);
        let cwasm = self.cwasm_path(&digest);
        let compiled = match load_precompiled(engine, &cwasm, component) {
            Some(c) => {
                touch(&cwasm);
                c
            }
            None => {
                let (c, serialized) = compile(engine, &bytes, component).map_err(artifact_err)?;
                self.compilations.fetch_add(1, Ordering::Relaxed);
                tracing::info!(artifact = %path.display(), "compiled locally");
                match serialized {
                    Ok(data) => self.keep(&cwasm, |tmp| std::fs::write(tmp, &data)),
                    Err(e) => tracing::warn!(error = %e, "cannot serialize a compiled artifact"),
                }
                c
            }
        };
        self.remember(digest, compiled.clone());
        Ok(compiled)
    }

    /// Takes precompiled code for the artifact at `artifact` (from the controller, already
    /// checked against the digest it announced), if this engine accepts it: then the artifact
    /// never needs compiling here. Refused code (another wasmtime, other settings, a CPU
    /// feature this node lacks) leaves nothing behind; the artifact is then compiled locally.
    pub fn install(&self, engine: &Engine, artifact: &Path, code: &Path) -> Result<()> {
        let err = |message: String| Error::Artifact {
            path: artifact.display().to_string(),
            message,
        };
        let bytes = std::fs::read(artifact).map_err(|e| err(e.to_string()))?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let component = is_component(&bytes);
        match Engine::detect_precompiled_file(code) {
            Ok(Some(kind)) if (kind == wasmtime::Precompiled::Component) == component => {}
            Ok(_) => {
                return Err(err(format!(
                    "{} is not precompiled code for a {}",
                    code.display(),
                    if component { "component" } else { "module" }
                )))
            }
            Err(e) => return Err(err(format!("{}: {e:#}", code.display()))),
        }
        let compiled = deserialize(engine, code, component)
            .map_err(|e| err(format!("precompiled code refused: {e:#}")))?;
        let cwasm = self.cwasm_path(&digest);
        self.keep(&cwasm, |tmp| std::fs::copy(code, tmp).map(|_| ()));
        self.installed.fetch_add(1, Ordering::Relaxed);
        self.remember(digest, compiled);
        Ok(())
    }

    /// Writes a `.cwasm` atomically through `write` (a crash leaves none or all of it), then
    /// keeps the directory within its limit. A failure only costs a compile later.
    fn keep(&self, cwasm: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) {
        let tmp = cwasm.with_extension("tmp");
        if let Err(e) = write(&tmp).and_then(|_| std::fs::rename(&tmp, cwasm)) {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %cwasm.display(), error = &e as &dyn std::error::Error, "cannot cache a compiled artifact");
            return;
        }
        prune(&self.dir, self.disk_limit, cwasm);
    }
}

/// Marks a file used now, for least-recently-used pruning (atime is often off on a Pi's SD card).
pub fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Removes the least recently used `.cwasm` files of `dir` until their total is within `limit`,
/// never `keep` (the one just written).
pub fn prune(dir: &Path, limit: u64, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= limit {
            break;
        }
        if path == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            tracing::info!(path = %path.display(), "compile cache full: removed");
            total -= len;
        }
    }
}

/// Loads a `.cwasm` this cache wrote earlier; `None` (compile again) if absent or unusable.
fn load_precompiled(engine: &Engine, path: &Path, component: bool) -> Option<Compiled> {
    if !path.exists() {
        return None;
    }
    match deserialize(engine, path, component) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable compile cache entry");
            None
        }
    }
}

/// Compiles an artifact here (Cranelift), with its code to keep on disk; `Err` says why it is
/// not code.
#[cfg(feature = "cranelift")]
fn compile(
    engine: &Engine,
    bytes: &[u8],
    component: bool,
) -> Result<(Compiled, wasmtime::Result<Vec<u8>>), String> {
    let compiled = if component {
        Component::new(engine, bytes).map(Compiled::Component)
    } else {
        Module::new(engine, bytes).map(Compiled::Module)
    }
    .map_err(|e| {
        format!(
            "not a valid WebAssembly {}: {e:#}",
            if component { "component" } else { "module" }
        )
    })?;
    let code = match &compiled {
        Compiled::Module(m) => m.serialize(),
        Compiled::Component(c) => c.serialize(),
    };
    Ok((compiled, code))
}

/// A build without a compiler runs only the code its controller precompiled for it.
#[cfg(not(feature = "cranelift"))]
fn compile(_: &Engine, _: &[u8], _: bool) -> Result<(Compiled, wasmtime::Result<Vec<u8>>), String> {
    Err("this agent is built without a compiler (no `cranelift` feature), and no code precompiled for this node by the controller is here".into())
}

/// What the engine's compiled code depends on (its settings, wasmtime's version), as a key
/// that keeps code of other settings apart on disk.
#[cfg(feature = "cranelift")]
fn engine_tag(engine: &Engine, h: &mut impl Hasher) {
    engine.precompile_compatibility_hash().hash(h);
}

/// Without a compiler, what the code loaded here was compiled for (wasmtime checks the rest
/// itself when it loads the code).
#[cfg(not(feature = "cranelift"))]
fn engine_tag(engine: &Engine, h: &mut impl Hasher) {
    super::target::host_target(engine).hash(h);
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path, component: bool) -> wasmtime::Result<Compiled> {
    // SAFETY: `deserialize_file` trusts its input to be wasmtime's own output. What reaches
    // here is either a file this cache wrote into its own directory (owned by the agent, not
    // reachable by guests or the network), under a name made of the artifact's digest and the
    // engine's compatibility hash; or code the controller compiled for this node, received
    // over the mutually authenticated QUIC connection and checked against the digest the
    // controller announced. The controller is already trusted with what this node runs. In
    // both cases wasmtime itself checks the version, settings and CPU features recorded in
    // the file against this engine and refuses a mismatch.
    unsafe {
        if component {
            Component::deserialize_file(engine, path).map(Compiled::Component)
        } else {
            Module::deserialize_file(engine, path).map(Compiled::Module)
        }
    }
}
