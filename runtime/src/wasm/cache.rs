//! Compiled artifacts, by the sha256 of their bytes: in memory for this process, and on disk
//! as precompiled `.cwasm` files so a restarted agent does not compile again.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

#[derive(Clone)]
pub enum Compiled {
    /// A WASI preview 1 core module.
    Module(Module),
    /// A WASI preview 2 component (`wasi:cli/command`).
    Component(Component),
}

pub struct Cache {
    dir: PathBuf,
    /// Ties cached files to this wasmtime version, its features and its `Config`.
    engine_tag: String,
    memory: Mutex<HashMap<String, Compiled>>,
    compilations: AtomicU64,
}

/// What the bytes hold, from the binary header (or the first form of WAT text).
fn is_component(bytes: &[u8]) -> bool {
    if bytes.starts_with(b"\0asm") {
        // Core modules are version 1; components carry layer 1 in the upper half.
        return bytes.get(6..8) == Some(&[1, 0]);
    }
    String::from_utf8_lossy(&bytes[..bytes.len().min(4096)])
        .trim_start()
        .starts_with("(component")
}

impl Cache {
    pub fn new(dir: &Path, engine: &Engine) -> Result<Cache> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Cache {
            dir: dir.to_path_buf(),
            engine_tag: format!("{:016x}", h.finish()),
            memory: Mutex::new(HashMap::new()),
            compilations: AtomicU64::new(0),
        })
    }

    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    pub fn load(&self, engine: &Engine, path: &Path) -> Result<Compiled> {
        let artifact_err = |message: String| Error::Artifact {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| artifact_err(e.to_string()))?;
        let digest = hex::encode(Sha256::digest(&bytes));
        if let Some(c) = self
            .memory
            .lock()
            .ok()
            .and_then(|m| m.get(&digest).cloned())
        {
            return Ok(c);
        }
        let component = is_component(&bytes);
        let cwasm = self.dir.join(format!("{digest}-{}.cwasm", self.engine_tag));
        let compiled = match load_precompiled(engine, &cwasm, component) {
            Some(c) => c,
            None => {
                let c = if component {
                    Component::new(engine, &bytes).map(Compiled::Component)
                } else {
                    Module::new(engine, &bytes).map(Compiled::Module)
                }
                .map_err(|e| {
                    artifact_err(format!(
                        "not a valid WebAssembly {}: {e:#}",
                        if component { "component" } else { "module" }
                    ))
                })?;
                self.compilations.fetch_add(1, Ordering::Relaxed);
                let serialized = match &c {
                    Compiled::Module(m) => m.serialize(),
                    Compiled::Component(c) => c.serialize(),
                };
                match serialized {
                    Ok(data) => {
                        let tmp = cwasm.with_extension("tmp");
                        if let Err(e) =
                            std::fs::write(&tmp, data).and_then(|_| std::fs::rename(&tmp, &cwasm))
                        {
                            tracing::warn!(path = %cwasm.display(), error = %e, "cannot cache a compiled artifact");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot serialize a compiled artifact"),
                }
                c
            }
        };
        if let Ok(mut m) = self.memory.lock() {
            m.insert(digest, compiled.clone());
        }
        Ok(compiled)
    }
}

/// Loads a `.cwasm` this cache wrote earlier; `None` (compile again) if absent or unusable.
#[allow(unsafe_code)]
fn load_precompiled(engine: &Engine, path: &Path, component: bool) -> Option<Compiled> {
    if !path.exists() {
        return None;
    }
    // SAFETY: `deserialize_file` trusts its input to be wasmtime's own output. Only this cache
    // writes into its directory (owned by the agent, not reachable by guests or the network),
    // under a name made of the artifact's digest and the engine's compatibility hash, and
    // wasmtime itself checks the version and configuration recorded in the file.
    let loaded = unsafe {
        if component {
            Component::deserialize_file(engine, path).map(Compiled::Component)
        } else {
            Module::deserialize_file(engine, path).map(Compiled::Module)
        }
    };
    match loaded {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable compile cache entry");
            None
        }
    }
}
