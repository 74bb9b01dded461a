//! A hostPath's `type`, as the kubelet checks it before the pod starts: what must be at the
//! path (a directory, a file, a socket, a device), or what is made there when nothing is
//! (`DirectoryOrCreate`, `FileOrCreate`). Empty: no check, as in Kubernetes.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

/// Checks (or makes) what `type_` says is at `path`; an error says what is there instead.
pub fn prepare(path: &Path, type_: Option<&str>) -> Result<(), String> {
    let type_ = type_.unwrap_or("");
    let meta = std::fs::metadata(path);
    let shown = path.display();
    match (type_, &meta) {
        ("", _) => Ok(()),
        ("DirectoryOrCreate", Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path)
                .and_then(|()| {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                })
                .map_err(|e| format!("cannot make directory {shown}: {e}"))
        }
        ("FileOrCreate", Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o644)))
                .map_err(|e| format!("cannot make file {shown}: {e}"))
        }
        (_, Err(e)) => Err(format!("hostPath type check failed: {shown}: {e}")),
        (t, Ok(m)) => {
            let ft = m.file_type();
            let is = match t {
                "DirectoryOrCreate" | "Directory" => ft.is_dir(),
                "FileOrCreate" | "File" => ft.is_file(),
                "Socket" => ft.is_socket(),
                "CharDevice" => ft.is_char_device(),
                "BlockDevice" => ft.is_block_device(),
                other => return Err(format!("unknown hostPath type {other:?}")),
            };
            if is {
                Ok(())
            } else {
                Err(format!("hostPath type check failed: {shown} is not a {t}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prepare;

    #[test]
    fn host_path_types_are_checked_or_made() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path().join("made/deeper");
        prepare(&d, Some("DirectoryOrCreate")).expect("made");
        assert!(d.is_dir());
        prepare(&d, Some("Directory")).expect("a directory");
        let f = dir.path().join("made/file");
        prepare(&f, Some("FileOrCreate")).expect("made");
        assert!(f.is_file());
        prepare(&f, Some("File")).expect("a file");
        prepare(&dir.path().join("none"), None).expect("no check");
        for (path, t, says) in [
            (&f, "Directory", "is not a Directory"),
            (&d, "File", "is not a File"),
            (&f, "Socket", "is not a Socket"),
            (&d, "CharDevice", "is not a CharDevice"),
            (&dir.path().join("none"), "Directory", "No such file"),
        ] {
            let e = prepare(path, Some(t)).expect_err(t);
            assert!(e.contains(says), "{t}: {e}");
        }
        prepare(std::path::Path::new("/dev/null"), Some("CharDevice")).expect("a device");
    }
}
