//! Unpacking image layers (tar, gzip or zstd) without trusting them. A hostile tarball must not
//! write outside the directory it is unpacked into: entries with `..` or absolute paths are
//! refused, as are hard links out of the layer, relative symlinks that climb above its root, and
//! any entry that would be written through a symlink. A refused layer leaves nothing behind:
//! callers unpack into a scratch directory inside the store and rename it when done.
//!
//! Whiteouts (`.wh.NAME`, and `.wh..wh..opq` for an opaque directory) are either kept in
//! overlayfs' own form (a 0:0 character device, the `trusted.overlay.opaque` xattr), so unpacked
//! layers stack as overlay lower directories, or applied (the named entries removed), when layers
//! are copied one over another into a plain directory.

use crate::error::{Error, Result};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// What to do with whiteout entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whiteouts {
    /// Keep them as overlayfs whiteouts: the directory becomes an overlay lower layer.
    Overlay,
    /// Remove what they name: the layer is applied over the layers below it in place.
    Apply,
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What an unpack did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
    /// Device nodes and FIFOs are not unpacked: the runtime provides /dev.
    pub skipped: u64,
}

/// Opens a layer blob, decompressing gzip or zstd as its first bytes say.
pub fn open(blob: &Path) -> Result<Box<dyn Read>> {
    let file = fs::File::open(blob).map_err(|e| Error::io(blob, e))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let head = reader.fill_buf().map_err(|e| Error::io(blob, e))?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(reader).map_err(|e| Error::Layer {
                layer: blob.display().to_string(),
                message: format!("not a zstd stream: {e}"),
            })?,
        )
    } else {
        Box::new(reader)
    })
}

/// Unpacks the tar stream `from` into `dest` (which must exist). `name` labels errors.
pub fn unpack(name: &str, from: impl Read, dest: &Path, whiteouts: Whiteouts) -> Result<Unpacked> {
    let err = |message: String| Error::Layer {
        layer: name.to_string(),
        message,
    };
    let as_root = rustix::process::geteuid().is_root();
    let mut archive = tar::Archive::new(from);
    let mut done = Unpacked::default();
    let entries = archive
        .entries()
        .map_err(|e| err(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| err(format!("reading the archive: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| err(format!("entry name: {e}")))?
            .into_owned();
        let rel = clean(&raw).map_err(|why| err(format!("entry {}: {why}", raw.display())))?;
        let Some(file_name) = rel.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue; // the archive's root directory itself
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = ensure_dir(dest, parent_rel)
            .map_err(|why| err(format!("entry {}: {why}", raw.display())))?;
        done.entries += 1;
        if apply_whiteout(&file_name, &parent, whiteouts)? {
            continue;
        }
        let path = parent.join(&file_name);
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let kind = header.entry_type();
        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove(&path)?;
                        fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
                    }
                    Err(_) => fs::create_dir(&path).map_err(|e| Error::io(&path, e))?,
                }
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::io(&path, e))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove(&path)?;
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                done.bytes += std::io::copy(&mut entry, &mut out)
                    .map_err(|e| err(format!("entry {}: {e}", raw.display())))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::io(&path, e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| err(format!("entry {}: {e}", raw.display())))?
                    .ok_or_else(|| err(format!("symlink {} has no target", raw.display())))?
                    .into_owned();
                if target.is_relative() && climbs_out(parent_rel, &target) {
                    return Err(err(format!(
                        "symlink {} -> {} points outside the image",
                        raw.display(),
                        target.display()
                    )));
                }
                remove(&path)?;
                symlink(&target, &path).map_err(|e| Error::io(&path, e))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| err(format!("entry {}: {e}", raw.display())))?
                    .ok_or_else(|| err(format!("hard link {} has no target", raw.display())))?
                    .into_owned();
                let target_rel = clean(&target).map_err(|why| {
                    err(format!(
                        "hard link {} -> {}: {why}",
                        raw.display(),
                        target.display()
                    ))
                })?;
                let source = inside(dest, &target_rel).map_err(|why| {
                    err(format!(
                        "hard link {} -> {}: {why}",
                        raw.display(),
                        target.display()
                    ))
                })?;
                remove(&path)?;
                fs::hard_link(&source, &path).map_err(|e| Error::io(&path, e))?;
                continue; // a hard link shares its target's owner and mode
            }
            _ => {
                done.skipped += 1;
                continue;
            }
        }
        if as_root {
            let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
            let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
            std::os::unix::fs::lchown(&path, uid, gid).map_err(|e| Error::io(&path, e))?;
            if kind != tar::EntryType::Symlink && mode & 0o6000 != 0 {
                // chown clears setuid/setgid; put them back.
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|e| Error::io(&path, e))?;
            }
        }
    }
    Ok(done)
}

/// An overlay whiteout entry (`.wh..wh..opq`, `.wh.NAME`) in `parent`, kept as overlayfs
/// takes it or applied to what is unpacked already; `false` when the entry is not one.
fn apply_whiteout(file_name: &str, parent: &Path, whiteouts: Whiteouts) -> Result<bool> {
    if file_name == OPAQUE {
        match whiteouts {
            Whiteouts::Overlay => {
                rustix::fs::lsetxattr(
                    parent,
                    "trusted.overlay.opaque",
                    b"y",
                    rustix::fs::XattrFlags::empty(),
                )
                .map_err(|e| Error::io(parent, e))?;
            }
            Whiteouts::Apply => {
                for child in fs::read_dir(parent).map_err(|e| Error::io(parent, e))? {
                    let child = child.map_err(|e| Error::io(parent, e))?;
                    remove(&child.path())?;
                }
            }
        }
        return Ok(true);
    }
    if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
        let target = parent.join(hidden);
        match whiteouts {
            Whiteouts::Overlay => {
                remove(&target)?;
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| Error::io(&target, e))?;
            }
            Whiteouts::Apply => remove(&target)?,
        }
        return Ok(true);
    }
    Ok(false)
}

/// A relative path with no `..`, no root and no `.`; refused otherwise.
fn clean(p: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("path traversal (`..`) is not allowed"),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are not allowed")
            }
        }
    }
    Ok(out)
}

/// Would a relative symlink in `dir` (relative to the root) reach above the root?
fn climbs_out(dir: &Path, target: &Path) -> bool {
    let mut depth = dir.components().count() as i64;
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

/// `root/rel`, checking that no component on the way is a symlink (which could lead out).
fn inside(root: &Path, rel: &Path) -> std::result::Result<PathBuf, String> {
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("{} is a symlink", at.display()))
            }
            Ok(_) => {}
            Err(_) => return Err(format!("{} does not exist in the layer", at.display())),
        }
    }
    Ok(at)
}

/// Creates `root/rel` as directories, refusing to go through a symlink or a file.
fn ensure_dir(root: &Path, rel: &Path) -> std::result::Result<PathBuf, String> {
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "it would be written through the symlink {}",
                    at.display()
                ))
            }
            Ok(_) => return Err(format!("{} is not a directory", at.display())),
            Err(_) => fs::create_dir(&at).map_err(|e| format!("{}: {e}", at.display()))?,
        }
    }
    Ok(at)
}

/// Removes whatever is at `path` (not following symlinks); nothing there is fine.
fn remove(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| Error::io(path, e)),
        Ok(_) => fs::remove_file(path).map_err(|e| Error::io(path, e)),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with raw (unchecked) names, as a hostile producer would write it.
    fn tar_of(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if *kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_size(data.len() as u64);
            {
                let gnu = h.as_gnu_mut().expect("gnu header");
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    use tar::EntryType::{Directory as D, Link as L, Regular as F, Symlink as S};

    #[test]
    fn hostile_layers_are_refused_and_write_nothing_outside() {
        let cases: [(&str, Vec<u8>, &str); 6] = [
            (
                "traversal",
                tar_of(&[("../escaped", F, "", b"x")]),
                "path traversal",
            ),
            (
                "absolute",
                tar_of(&[("/tmp/escaped", F, "", b"x")]),
                "absolute",
            ),
            (
                "hard link out",
                tar_of(&[("h", L, "../../etc/passwd", b"")]),
                "path traversal",
            ),
            (
                "symlink out",
                tar_of(&[("a/s", S, "../../escaped", b"")]),
                "outside the image",
            ),
            (
                "write through a symlink",
                tar_of(&[("s", S, "/", b""), ("s/escaped", F, "", b"x")]),
                "through the symlink",
            ),
            (
                "hard link through a symlink",
                tar_of(&[("s", S, "/etc", b""), ("h", L, "s/passwd", b"")]),
                "is a symlink",
            ),
        ];
        for (what, tar, expect) in cases {
            let outer = tempfile::tempdir().expect("tmp");
            let dest = outer.path().join("layer");
            fs::create_dir(&dest).expect("dest");
            let e = unpack(what, &tar[..], &dest, Whiteouts::Apply)
                .expect_err(what)
                .to_string();
            assert!(e.contains(expect), "{what}: {e}");
            let outside: Vec<_> = fs::read_dir(outer.path())
                .expect("read")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(outside, vec!["layer"], "{what} wrote outside the layer");
        }
    }

    #[test]
    fn files_links_and_whiteouts() {
        let base = tar_of(&[
            ("etc/", D, "", b""),
            ("etc/motd", F, "", b"hello"),
            ("etc/gone", F, "", b"x"),
            ("etc/link", S, "motd", b""),
            ("etc/hard", L, "etc/motd", b""),
            ("bin/", D, "", b""),
            ("bin/sh", S, "/bin/busybox", b""),
            ("opaque/", D, "", b""),
            ("opaque/old", F, "", b"x"),
        ]);
        let top = tar_of(&[
            ("etc/.wh.gone", F, "", b""),
            ("opaque/.wh..wh..opq", F, "", b""),
            ("opaque/new", F, "", b"y"),
        ]);
        let dir = tempfile::tempdir().expect("tmp");
        let done = unpack("base", &base[..], dir.path(), Whiteouts::Apply).expect("base");
        assert_eq!(done.entries, 9);
        assert_eq!(
            fs::read_to_string(dir.path().join("etc/hard")).expect("hard"),
            "hello"
        );
        assert_eq!(
            fs::read_link(dir.path().join("bin/sh")).expect("link"),
            Path::new("/bin/busybox")
        );
        unpack("top", &top[..], dir.path(), Whiteouts::Apply).expect("top");
        assert!(!dir.path().join("etc/gone").exists());
        assert!(dir.path().join("etc/motd").exists());
        assert!(!dir.path().join("opaque/old").exists());
        assert!(dir.path().join("opaque/new").exists());
    }

    #[test]
    fn gzip_and_zstd_layers_are_read() {
        let tar = tar_of(&[("f", F, "", b"compressed")]);
        let dir = tempfile::tempdir().expect("tmp");
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, &tar).expect("gz");
            e.finish().expect("gz")
        };
        let zst = ruzstd::encoding::compress_to_vec(
            &tar[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        for (name, bytes) in [("plain", tar.clone()), ("gzip", gz), ("zstd", zst)] {
            let blob = dir.path().join(name);
            fs::write(&blob, bytes).expect("blob");
            let dest = dir.path().join(format!("{name}.d"));
            fs::create_dir(&dest).expect("dest");
            unpack(name, open(&blob).expect("open"), &dest, Whiteouts::Apply).expect(name);
            assert_eq!(
                fs::read_to_string(dest.join("f")).expect("f"),
                "compressed",
                "{name}"
            );
        }
    }
}
