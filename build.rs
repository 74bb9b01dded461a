//! Records the build's target triple: `shoal --version` reports it, and the tests build their
//! native reference fixtures for it.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SHOAL_HOST_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
