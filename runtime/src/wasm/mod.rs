//! The wasm executor: one wasmtime `Engine` per process, each artifact compiled once and cached
//! on disk by digest, a fresh `Store` per container on its own thread. Epoch interruption stops
//! guests promptly and throttles them to their CPU limit; `StoreLimits` caps linear memory.

mod cache;
mod run;

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::{ContainerSpec, Workload};
use cache::Cache;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{Config, Engine};

/// How often the engine's epoch advances: the granularity of stopping and CPU throttling.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

pub struct WasmRuntime {
    engine: Engine,
    cache: Arc<Cache>,
    ticking: Arc<AtomicBool>,
}

impl WasmRuntime {
    /// An engine whose compiled artifacts are cached under `cache_dir`.
    pub fn new(cache_dir: &Path) -> Result<WasmRuntime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| Error::Engine(e.to_string()))?;
        let cache = Arc::new(Cache::new(cache_dir, &engine)?);
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
            ticking,
        })
    }

    /// `cranelift` (native code) or `pulley` (wasmtime's interpreter, on 32-bit ARM).
    pub fn compiler(&self) -> &'static str {
        if self.engine.is_pulley() {
            "pulley"
        } else {
            "cranelift"
        }
    }

    /// How many artifacts this process compiled itself (not loaded from the cache).
    pub fn local_compilations(&self) -> u64 {
        self.cache.compilations()
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

#[cfg(test)]
mod tests;
