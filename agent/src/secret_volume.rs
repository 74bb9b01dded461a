//! Where a pod's Secret volumes live: in memory, never on the node's disk (the kubelet does
//! the same). As root, each is a tmpfs of its own, mode 0700; an agent that cannot mount
//! (not root: a wasm-only node) keeps them under /dev/shm, in a directory only it can read.

use std::path::{Path, PathBuf};

/// The tmpfs options: a Secret volume holds at most 4 MiB (Kubernetes caps a Secret at 1 MiB).
const OPTIONS: &std::ffi::CStr = c"mode=0700,size=4m";

/// Makes `dir` (inside the pod's directory) an in-memory place for a Secret volume and
/// returns the directory to write the files into.
pub fn prepare(dir: &Path, pod_uid: &str, volume: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mounted = rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        rustix::mount::MountFlags::NOSUID
            | rustix::mount::MountFlags::NODEV
            | rustix::mount::MountFlags::NOEXEC,
        OPTIONS,
    );
    match mounted {
        Ok(()) => Ok(dir.to_path_buf()),
        Err(_) => {
            let shm = fallback(pod_uid).join(volume);
            private_dir_all(&shm)?;
            Ok(shm)
        }
    }
}

/// Undoes [`prepare`] for every Secret volume of a pod.
pub fn release(volumes_dir: &Path, pod_uid: &str) {
    if let Ok(entries) = std::fs::read_dir(volumes_dir) {
        for e in entries.flatten() {
            let _ = rustix::mount::unmount(e.path(), rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(fallback(pod_uid));
}

fn fallback(pod_uid: &str) -> PathBuf {
    let me = rustix::process::geteuid().as_raw();
    Path::new("/dev/shm")
        .join(format!("shoal-{me}"))
        .join(pod_uid)
}

fn private_dir_all(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // The directories above were made 0700 too, but may have been there already.
    let mut p = dir.to_path_buf();
    while p != Path::new("/dev/shm") {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))?;
        if !p.pop() {
            break;
        }
    }
    Ok(())
}
