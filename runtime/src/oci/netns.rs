//! Pod network namespaces: one per pod, shared by its containers, with loopback up. Made with
//! iproute2's `ip netns`, so they are visible to `ip netns` on the node and survive the agent.

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::process::Command;

/// Where `ip netns` keeps the namespace `name`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(name)
}

fn ip(args: &[&str]) -> std::result::Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e} (is iproute2 installed?)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Creates the namespace (or keeps the one already there) with loopback up.
pub fn create(name: &str) -> Result<PathBuf> {
    let p = path(name);
    if !p.exists() {
        ip(&["netns", "add", name]).map_err(|m| Error::Start {
            id: name.to_string(),
            message: format!("creating the pod's network namespace: {m}"),
        })?;
    }
    ip(&["-n", name, "link", "set", "lo", "up"]).map_err(|m| Error::Start {
        id: name.to_string(),
        message: format!("bringing up loopback: {m}"),
    })?;
    Ok(p)
}

/// Removes the namespace; gone already is fine.
pub fn delete(name: &str) {
    if path(name).exists() {
        if let Err(m) = ip(&["netns", "delete", name]) {
            tracing::warn!(netns = name, error = %m, "cannot remove a pod network namespace");
        }
    }
}
