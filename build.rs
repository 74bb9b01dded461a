//! Records what `shoal --version` reports: the target triple (also used by the tests to build
//! their native reference fixtures) and the commit, from `SHOAL_COMMIT` or `git`.

use std::process::Command;

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SHOAL_HOST_TARGET={target}");
    let commit = std::env::var("SHOAL_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SHOAL_COMMIT={commit}");
    // The build's flavour: the full binary, or an agent (without the controller), and whether
    // it compiles wasm.
    let has = |f: &str| std::env::var_os(format!("CARGO_FEATURE_{f}")).is_some();
    let flavour = match (has("CONTROLLER"), has("CRANELIFT")) {
        (true, true) => "",
        (true, false) => ", no wasm compiler",
        (false, true) => ", agent only",
        (false, false) => ", agent only, no wasm compiler",
    };
    println!("cargo:rustc-env=SHOAL_FLAVOUR={flavour}");
    println!("cargo:rerun-if-env-changed=SHOAL_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    // A new commit moves HEAD (detached) or the branch it points to.
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        if let Some(branch) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=.git/{branch}");
        }
    }
}

/// The short commit hash of HEAD.
fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}
