//! What wasm code is compiled for: the one engine configuration Shoal uses (shared by the
//! agent that runs code and the controller that precompiles it, so their artifacts fit), and
//! the [`WasmTarget`] an agent reports so the controller can compile for it.

use crate::error::{Error, Result};
use shoal_api::WasmTarget;
use wasmtime::{Config, Engine};

/// The wasmtime this build links. Precompiled code loads only into the same version.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// The CPU features Cranelift can use, by its flag name, with how the host detects them.
/// These are the flags `cranelift-native` sets for a native engine; a controller may enable
/// only these on a node's behalf.
#[cfg(target_arch = "x86_64")]
fn detected_features() -> Vec<&'static str> {
    use std::is_x86_feature_detected as has;
    let table = [
        ("has_cmpxchg16b", has!("cmpxchg16b")),
        ("has_sse3", has!("sse3")),
        ("has_ssse3", has!("ssse3")),
        ("has_sse41", has!("sse4.1")),
        ("has_sse42", has!("sse4.2")),
        ("has_popcnt", has!("popcnt")),
        ("has_avx", has!("avx")),
        ("has_avx2", has!("avx2")),
        ("has_fma", has!("fma")),
        ("has_bmi1", has!("bmi1")),
        ("has_bmi2", has!("bmi2")),
        ("has_lzcnt", has!("lzcnt")),
        ("has_avx512bitalg", has!("avx512bitalg")),
        ("has_avx512dq", has!("avx512dq")),
        ("has_avx512f", has!("avx512f")),
        ("has_avx512vl", has!("avx512vl")),
        ("has_avx512vbmi", has!("avx512vbmi")),
    ];
    table
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(f, _)| f)
        .collect()
}

#[cfg(target_arch = "aarch64")]
fn detected_features() -> Vec<&'static str> {
    use std::arch::is_aarch64_feature_detected as has;
    let table = [
        ("has_lse", has!("lse")),
        ("has_pauth", has!("paca")),
        ("has_fp16", has!("fp16")),
        ("has_dotprod", has!("dotprod")),
        ("has_i8mm", has!("i8mm")),
    ];
    table
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(f, _)| f)
        .collect()
}

/// Elsewhere (32-bit ARM runs Pulley, which has no CPU features) the baseline.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detected_features() -> Vec<&'static str> {
    Vec::new()
}

/// Every feature flag a target may name: those of x86-64 and aarch64.
#[cfg(feature = "cranelift")]
const KNOWN_FEATURES: &[&str] = &[
    "has_cmpxchg16b",
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
    "has_avx",
    "has_avx2",
    "has_fma",
    "has_bmi1",
    "has_bmi2",
    "has_lzcnt",
    "has_avx512bitalg",
    "has_avx512dq",
    "has_avx512f",
    "has_avx512vl",
    "has_avx512vbmi",
    "has_lse",
    "has_pauth",
    "has_fp16",
    "has_dotprod",
    "has_i8mm",
];

/// The engine configuration for running code here (`target: None`: the host, with the CPU
/// features wasmtime detects) or for precompiling it for another node.
pub fn config(target: Option<&WasmTarget>) -> Result<Config> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    #[cfg(not(feature = "cranelift"))]
    if let Some(t) = target {
        return Err(Error::Engine(format!(
            "cannot compile for {}: this build has no compiler (no `cranelift` feature)",
            t.triple
        )));
    }
    #[cfg(feature = "cranelift")]
    if let Some(t) = target {
        if t.wasmtime != WASMTIME_VERSION {
            return Err(Error::Engine(format!(
                "target {} runs wasmtime {}, this build has {WASMTIME_VERSION}",
                t.triple, t.wasmtime
            )));
        }
        config
            .target(&t.triple)
            .map_err(|e| Error::Engine(format!("target {:?}: {e}", t.triple)))?;
        for f in &t.features {
            if !KNOWN_FEATURES.contains(&f.as_str()) {
                return Err(Error::Engine(format!(
                    "target {}: unknown CPU feature {f:?}",
                    t.triple
                )));
            }
            // SAFETY: enabling a CPU feature is unsafe for code run where the feature is
            // absent. This engine only compiles; the node that runs the code reported the
            // feature, and its wasmtime checks each enabled feature against its own CPU
            // again when it loads the code.
            #[allow(unsafe_code)]
            unsafe {
                config.cranelift_flag_enable(f);
            }
        }
    }
    Ok(config)
}

/// What `engine` (made from [`config`] with no target) loads precompiled code for.
pub fn host_target(engine: &Engine) -> WasmTarget {
    let triple = if engine.is_pulley() {
        if cfg!(target_pointer_width = "32") {
            "pulley32".to_string()
        } else {
            "pulley64".to_string()
        }
    } else {
        let env = if cfg!(target_env = "musl") {
            "musl"
        } else if cfg!(target_abi = "eabihf") {
            "gnueabihf"
        } else {
            "gnu"
        };
        format!("{}-unknown-linux-{env}", std::env::consts::ARCH)
    };
    let mut features: Vec<String> = if engine.is_pulley() {
        Vec::new()
    } else {
        detected_features().into_iter().map(String::from).collect()
    };
    features.sort();
    WasmTarget {
        wasmtime: WASMTIME_VERSION.to_string(),
        triple,
        features,
    }
}

// They compile wasm: a build without a compiler has only the tests that load code.
#[cfg(all(test, feature = "cranelift"))]
mod tests {
    use super::*;

    #[test]
    fn the_host_target_names_this_machine_and_only_known_features() {
        let engine = Engine::new(&config(None).unwrap()).unwrap();
        let t = host_target(&engine);
        assert_eq!(t.wasmtime, WASMTIME_VERSION);
        assert!(t.triple.starts_with(std::env::consts::ARCH), "{t:?}");
        assert!(t
            .features
            .iter()
            .all(|f| KNOWN_FEATURES.contains(&f.as_str())));
        // An engine for that target can be built (what the controller does for this node).
        Engine::new(&config(Some(&t)).unwrap()).unwrap();
    }

    #[test]
    fn targets_with_another_wasmtime_or_unknown_features_are_refused() {
        let mut t = WasmTarget {
            wasmtime: "47.0.0".into(),
            triple: "aarch64-unknown-linux-musl".into(),
            features: vec![],
        };
        let err = config(Some(&t)).unwrap_err().to_string();
        assert!(err.contains("runs wasmtime 47.0.0"), "{err}");
        t.wasmtime = WASMTIME_VERSION.into();
        t.features = vec!["enable_nan_canonicalization".into()];
        let err = config(Some(&t)).unwrap_err().to_string();
        assert!(err.contains("unknown CPU feature"), "{err}");
        t.triple = "not a triple".into();
        t.features.clear();
        assert!(config(Some(&t)).is_err());
    }
}
