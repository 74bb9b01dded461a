//! `subPath` and `subPathExpr`: a path inside a volume mounted instead of the volume's root,
//! resolved so that a pod cannot reach outside the volume.
//!
//! The path is opened with `openat2(RESOLVE_BENEATH)` from the volume's root: a symlink may
//! point elsewhere inside the volume (as Kubernetes allows), but no `..`, absolute symlink or
//! magic link leads out. What is mounted is the open descriptor itself, so a symlink swapped
//! in after the check (CVE-2017-1002101) changes nothing:
//! - wasmtime opens its `/proc/<agent>/fd/<n>` path (the descriptor lives as long as the
//!   container's spec);
//! - for runc, the agent first binds that descriptor at a path of the pod's own
//!   (`<pod>/subpaths/...`), as the kubelet does: the kernel refuses a bind from a
//!   descriptor of another mount namespace, which runc's container init is in.
//!
//! Missing directories on the way are made (as the kubelet does), each inside a directory
//! already opened beneath the root, with the root's mode.

use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A subPath to resolve when its container starts (each start: an init container may make
/// what a later container mounts).
#[derive(Clone, Debug)]
pub struct Pending {
    /// Which of the container's mounts it is.
    pub mount: usize,
    /// The volume's root.
    pub root: PathBuf,
    pub sub: String,
    /// Where to bind it for runc; `None` for wasm, which opens the descriptor's path itself
    /// and mounts only directories.
    pub bind_at: Option<PathBuf>,
}

impl Pending {
    /// Resolves it and points the container's mount at what was checked.
    pub fn apply(&self, spec: &mut shoal_runtime::ContainerSpec) -> Result<(), String> {
        let volume = |e: &dyn std::fmt::Display| format!("volume mount {}: {e}", self.mount);
        let resolved = resolve(&self.root, &self.sub).map_err(|e| volume(&e))?;
        let path = match &self.bind_at {
            Some(target) => {
                bind(&resolved, target).map_err(|e| volume(&e))?;
                target.clone()
            }
            None if !resolved.is_dir => {
                return Err(format!(
                    "subPath {:?} is a file; a wasm container mounts only directories",
                    self.sub
                ))
            }
            None => resolved.path.clone(),
        };
        let m = spec
            .mounts
            .get_mut(self.mount)
            .ok_or_else(|| volume(&"no such mount"))?;
        m.host_path = path;
        spec.held.push(resolved.fd);
        Ok(())
    }
}

/// A subPath, checked and held open.
#[derive(Debug)]
pub struct Resolved {
    /// The path that names the held descriptor (`/proc/<pid>/fd/<n>`).
    pub path: PathBuf,
    pub fd: Arc<OwnedFd>,
    pub is_dir: bool,
}

/// `$(VAR)` in a subPathExpr from the container's environment; a reference to a variable
/// that is not set stays as written, as Kubernetes leaves it. The result must still be a
/// relative path without `..`.
pub fn expand(expr: &str, env: &[(String, String)]) -> Result<String, String> {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let path = crate::env::expand(expr, &lookup);
    shoal_api::validate::check_relative_path(&path)
        .map_err(|m| format!("subPathExpr {expr:?} expands to {path:?}, which {m}"))?;
    Ok(path)
}

/// Opens `sub` beneath `volume`, making missing directories.
pub fn resolve(volume: &Path, sub: &str) -> std::io::Result<Resolved> {
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let root = rustix::fs::open(volume, flags | OFlags::DIRECTORY, Mode::empty())?;
    let root_mode = rustix::fs::fstat(&root)?.st_mode & 0o7777;
    let opened = match rustix::fs::openat2(&root, sub, flags, Mode::empty(), beneath) {
        Err(rustix::io::Errno::NOENT) => {
            let mut made = PathBuf::new();
            for part in Path::new(sub).components() {
                let parent = rustix::fs::openat2(
                    &root,
                    if made.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        made.as_path()
                    },
                    flags | OFlags::DIRECTORY,
                    Mode::empty(),
                    beneath,
                )?;
                match rustix::fs::mkdirat(&parent, part.as_os_str(), Mode::from_raw_mode(root_mode))
                {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                made.push(part);
            }
            rustix::fs::openat2(&root, sub, flags, Mode::empty(), beneath)
        }
        other => other,
    }
    .map_err(|e| {
        let why = match e {
            rustix::io::Errno::XDEV => "it leads outside the volume".to_string(),
            other => std::io::Error::from(other).to_string(),
        };
        std::io::Error::other(format!("subPath {sub:?} of {}: {why}", volume.display()))
    })?;
    let is_dir = rustix::fs::fstat(&opened)?.st_mode & 0o170000 == 0o040000;
    use std::os::fd::AsRawFd;
    let path = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        opened.as_raw_fd()
    ));
    Ok(Resolved {
        path,
        fd: Arc::new(opened),
        is_dir,
    })
}

/// Binds a resolved subPath at `target` (made as a file or directory like it), replacing
/// what an earlier start of the container bound there.
pub fn bind(resolved: &Resolved, target: &Path) -> std::io::Result<()> {
    let _ = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if resolved.is_dir {
        std::fs::create_dir_all(target)?;
    } else if !target.exists() {
        std::fs::File::create(target)?;
    }
    rustix::mount::mount_bind(&resolved.path, target).map_err(|e| {
        std::io::Error::other(format!("binding a subPath at {}: {e}", target.display()))
    })
}

/// Unbinds and removes every subPath bound under `dir` (a pod's `subpaths`). Nothing is
/// removed that is still mounted: a recursive removal would reach into the volume.
pub fn release(dir: &Path) {
    let Ok(containers) = std::fs::read_dir(dir) else {
        return;
    };
    for container in containers.flatten() {
        let Ok(targets) = std::fs::read_dir(container.path()) else {
            continue;
        };
        for target in targets.flatten() {
            let path = target.path();
            let _ = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH);
            let removed = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir(&path));
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "a subPath mount point stays");
            }
        }
        let _ = std::fs::remove_dir(container.path());
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subpath_stays_inside_its_volume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let volume = dir.path().join("v");
        std::fs::create_dir_all(volume.join("conf")).expect("conf");
        std::fs::write(volume.join("conf/app.ini"), "x=1").expect("file");
        std::fs::write(dir.path().join("secret"), "outside").expect("outside");
        std::os::unix::fs::symlink("../secret", volume.join("escape")).expect("link");
        std::os::unix::fs::symlink("/etc/passwd", volume.join("absolute")).expect("link");
        std::os::unix::fs::symlink("conf/app.ini", volume.join("inside")).expect("link");

        let file = resolve(&volume, "conf/app.ini").expect("a file inside");
        assert!(!file.is_dir);
        assert_eq!(std::fs::read_to_string(&file.path).expect("read"), "x=1");
        let linked = resolve(&volume, "inside").expect("a symlink that stays inside");
        assert_eq!(std::fs::read_to_string(&linked.path).expect("read"), "x=1");
        for bad in ["escape", "absolute", "conf/../../secret"] {
            let err = resolve(&volume, bad).expect_err(bad).to_string();
            assert!(err.contains("leads outside the volume"), "{bad}: {err}");
        }
        // Missing directories are made beneath the root, with its mode.
        let made = resolve(&volume, "data/one").expect("made");
        assert!(made.is_dir && volume.join("data/one").is_dir());
        // A symlinked directory on the way out is not followed to make anything.
        std::os::unix::fs::symlink(dir.path(), volume.join("up")).expect("link");
        assert!(resolve(&volume, "up/new").is_err());
        assert!(!dir.path().join("new").exists(), "nothing made outside");
    }

    #[test]
    fn a_subpath_expr_expands_the_environment_and_stays_relative() {
        let env = vec![("POD".to_string(), "web-1".to_string())];
        assert_eq!(expand("logs/$(POD)", &env), Ok("logs/web-1".to_string()));
        assert_eq!(expand("$(NOPE)", &env), Ok("$(NOPE)".to_string()));
        let up = vec![("X".to_string(), "../..".to_string())];
        assert!(expand("a/$(X)", &up).is_err_and(|m| m.contains("..")));
    }
}
