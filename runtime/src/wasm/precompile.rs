//! Compiling wasm for other nodes: the controller turns an artifact into the precompiled code a
//! node's engine loads, so a Raspberry Pi starts a pod without compiling. One engine per target,
//! made once; the code is what `Module::serialize` would give on that node.

use super::cache::is_component;
use super::target::config;
use crate::error::{Error, Result};
use shoal_api::WasmTarget;
use std::collections::HashMap;
use std::sync::Mutex;
use wasmtime::Engine;

#[derive(Default)]
pub struct Precompiler {
    engines: Mutex<HashMap<WasmTarget, Engine>>,
}

impl Precompiler {
    pub fn new() -> Precompiler {
        Precompiler::default()
    }

    fn engine(&self, target: &WasmTarget) -> Result<Engine> {
        let mut engines = self
            .engines
            .lock()
            .map_err(|_| Error::Internal("precompiler lock poisoned".into()))?;
        if let Some(e) = engines.get(target) {
            return Ok(e.clone());
        }
        let engine = Engine::new(&config(Some(target))?)
            .map_err(|e| Error::Engine(format!("an engine for {}: {e:#}", target.triple)))?;
        engines.insert(target.clone(), engine.clone());
        Ok(engine)
    }

    /// The precompiled form of `bytes` (a module, a component, or WAT text) for `target`.
    /// Slow (it is a full Cranelift compile): call it off the async runtime.
    pub fn compile(&self, target: &WasmTarget, bytes: &[u8]) -> Result<Vec<u8>> {
        let engine = self.engine(target)?;
        let component = is_component(bytes);
        if component {
            engine.precompile_component(bytes)
        } else {
            engine.precompile_module(bytes)
        }
        .map_err(|e| Error::Engine(format!("compiling for {}: {e:#}", target.triple)))
    }
}
