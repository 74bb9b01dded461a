//! The wasm executor: one wasmtime `Engine` per process, each artifact compiled once (here, or
//! by the controller for this node's target) and cached on disk by digest, a fresh `Store` per
//! container on its own thread. Epoch interruption stops guests promptly and throttles them to
//! their CPU limit; `StoreLimits` caps linear memory.

mod cache;
mod http;
mod lookup;
mod output;
#[cfg(feature = "cranelift")]
mod precompile;
mod run;
mod target;

pub use cache::{prune, touch, DEFAULT_DISK_LIMIT};
#[cfg(feature = "cranelift")]
pub use precompile::Precompiler;
pub use target::{host_target, WASMTIME_VERSION};

/// Whether this build compiles wasm (the `cranelift` feature).
pub const COMPILES: bool = cfg!(feature = "cranelift");

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::{ContainerSpec, Workload};
use cache::Cache;
use shoal_api::WasmTarget;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::Engine;

/// How often the engine's epoch advances: the granularity of stopping and CPU throttling.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

pub struct WasmRuntime {
    engine: Engine,
    cache: Arc<Cache>,
    target: WasmTarget,
    ticking: Arc<AtomicBool>,
}

impl WasmRuntime {
    /// An engine whose compiled artifacts are cached under `cache_dir`, at most
    /// [`DEFAULT_DISK_LIMIT`] bytes of them.
    pub fn new(cache_dir: &Path) -> Result<WasmRuntime> {
        WasmRuntime::with_cache_limit(cache_dir, DEFAULT_DISK_LIMIT)
    }

    /// An engine whose compiled artifacts are cached under `cache_dir`, the least recently
    /// used removed past `disk_limit` bytes.
    pub fn with_cache_limit(cache_dir: &Path, disk_limit: u64) -> Result<WasmRuntime> {
        let engine =
            Engine::new(&target::config(None)?).map_err(|e| Error::Engine(e.to_string()))?;
        let cache = Arc::new(Cache::new(cache_dir, &engine, disk_limit)?);
        let target = host_target(&engine);
        let ticking = Arc::new(AtomicBool::new(true));
        let (e, t) = (engine.clone(), ticking.clone());
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while t.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    e.increment_epoch();
                }
            })
            .map_err(|e| Error::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(WasmRuntime {
            engine,
            cache,
            target,
            ticking,
        })
    }

    /// `cranelift` (native code) or `pulley` (wasmtime's interpreter, on 32-bit ARM), and
    /// whether this build compiles at all: without the `cranelift` feature it runs only the
    /// code its controller precompiled for it.
    pub fn compiler(&self) -> &'static str {
        match (self.engine.is_pulley(), COMPILES) {
            (true, true) => "pulley",
            (false, true) => "cranelift",
            (true, false) => "pulley, precompiled code only",
            (false, false) => "native, precompiled code only",
        }
    }

    /// How many artifacts this process compiled itself (not loaded from the cache).
    pub fn local_compilations(&self) -> u64 {
        self.cache.compilations()
    }

    /// How many artifacts arrived precompiled (from the controller) and were taken.
    pub fn precompiled_installs(&self) -> u64 {
        self.cache.installed()
    }

    /// What this engine loads precompiled code for; the node reports it to the controller.
    pub fn target(&self) -> &WasmTarget {
        &self.target
    }

    /// Whether the artifact with this sha256 (hex) is compiled already (in memory or on disk).
    pub fn is_compiled(&self, digest_hex: &str) -> bool {
        self.cache.has(digest_hex)
    }

    /// Takes code precompiled for this node's target for the artifact at `artifact`, if this
    /// engine accepts it; an error (nothing kept) means it is to be compiled here.
    pub fn install_precompiled(&self, artifact: &Path, code: &Path) -> Result<()> {
        self.cache.install(&self.engine, artifact, code)
    }
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

impl Workload for WasmRuntime {
    fn name(&self) -> &'static str {
        "wasm"
    }

    fn prepare(&self, artifact: &Path) -> Result<()> {
        self.cache.load(&self.engine, artifact).map(|_| ())
    }

    fn start(&self, spec: ContainerSpec) -> Result<Handle> {
        let compiled = self.cache.load(&self.engine, &spec.artifact)?;
        run::start(&self.engine, compiled, spec)
    }
}

// They compile wasm: a build without a compiler has only the tests that load code.
#[cfg(all(test, feature = "cranelift"))]
mod tests;
