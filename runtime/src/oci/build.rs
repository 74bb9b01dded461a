//! Writing OCI image layouts from directories: enough to package a root filesystem as an image
//! (as `umoci` or `buildah` would) for a cluster that has no registry, and for the tests, which
//! build their images locally. Layers are deterministic tars (fixed times and owners), gzipped.

use super::image::{self, Descriptor, Platform, MEDIA_CONFIG, MEDIA_INDEX, MEDIA_MANIFEST};
use crate::error::{Error, Result};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::Path;

pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What an image says about running it.
#[derive(Clone, Debug, Default)]
pub struct ImageSpec {
    pub platform: Platform,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// A tar of everything under `dir`, named relative to it, with fixed times and root owners.
pub fn tar_dir(dir: &Path) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).map_err(|e| Error::io(dir, e))?;
    b.into_inner().map_err(|e| Error::io(dir, e))
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut e, bytes).map_err(|e| Error::Internal(e.to_string()))?;
    e.finish().map_err(|e| Error::Internal(e.to_string()))
}

fn put(out: &Path, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
    let hex = hex::encode(Sha256::digest(bytes));
    let path = out.join("blobs/sha256").join(&hex);
    std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    image::descriptor(media_type, &format!("sha256:{hex}"), bytes.len() as u64)
}

/// `platform` as the image spec's type (whose fields are enums with an `Other` for the rest).
fn oci_platform(platform: &Platform) -> Result<oci_spec::image::Platform> {
    serde_json::to_value(platform)
        .and_then(serde_json::from_value)
        .map_err(|e| Error::Internal(format!("platform {platform}: {e}")))
}

/// Writes an OCI image layout at `out` with one image per entry, each made of the given layer
/// tars (bottom first). index.json lists every image with its platform and `tag` as its name.
pub fn write_layout(out: &Path, tag: &str, images: &[(ImageSpec, Vec<Vec<u8>>)]) -> Result<()> {
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
    let mut manifests = Vec::new();
    for (spec, layers) in images {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        for tar in layers {
            diff_ids.push(format!("sha256:{}", hex::encode(Sha256::digest(tar))));
            layer_descs.push(put(out, MEDIA_LAYER_GZIP, &gzip(tar)?)?);
        }
        let mut run = serde_json::Map::new();
        if !spec.entrypoint.is_empty() {
            run.insert("Entrypoint".into(), json!(spec.entrypoint));
        }
        if !spec.cmd.is_empty() {
            run.insert("Cmd".into(), json!(spec.cmd));
        }
        if !spec.env.is_empty() {
            run.insert("Env".into(), json!(spec.env));
        }
        if let Some(w) = &spec.working_dir {
            run.insert("WorkingDir".into(), json!(w));
        }
        if let Some(u) = &spec.user {
            run.insert("User".into(), json!(u));
        }
        let mut config = json!({
            "os": spec.platform.os,
            "architecture": spec.platform.architecture,
            "config": run,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if let Some(v) = &spec.platform.variant {
            config["variant"] = json!(v);
        }
        let config = serde_json::to_vec(&config).map_err(|e| Error::Internal(e.to_string()))?;
        let manifest = image::manifest(put(out, MEDIA_CONFIG, &config)?, layer_descs)?;
        let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
        let mut d = put(out, MEDIA_MANIFEST, &bytes)?;
        d.set_platform(Some(oci_platform(&spec.platform)?));
        manifests.push(d);
    }
    let mut index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": manifests,
    });
    if let Some(list) = index["manifests"].as_array_mut() {
        for m in list {
            m["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        }
    }
    let write = |name: &str, v: &serde_json::Value| {
        let p = out.join(name);
        let bytes = serde_json::to_vec_pretty(v).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))
    };
    write("index.json", &index)?;
    write("oci-layout", &json!({"imageLayoutVersion": "1.0.0"}))
}

/// The applets a busybox image links, enough for shells, scripts and the tests.
const BUSYBOX_APPLETS: [&str; 27] = [
    "sh", "echo", "cat", "sleep", "ls", "head", "tail", "env", "id", "hostname", "true", "false",
    "mkdir", "rm", "touch", "wc", "grep", "printf", "dd", "kill", "ps", "test", "nc", "httpd",
    "wget", "ip", "mount",
];

/// A layer holding a static busybox (for example Debian's `busybox-static`, /bin/busybox) with
/// its common applets, /etc/passwd and /etc/group (root and `web`, uid 1000), /tmp and /etc:
/// a complete small image, built with no registry and no network.
pub fn busybox_layer(busybox: &Path) -> Result<Vec<u8>> {
    let dir = tempfile_dir()?;
    let root = dir.join("root");
    let mk = |p: &Path| std::fs::create_dir_all(p).map_err(|e| Error::io(p, e));
    for d in ["bin", "etc", "tmp", "root", "home/web"] {
        mk(&root.join(d))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox")).map_err(|e| Error::io(busybox, e))?;
    for a in BUSYBOX_APPLETS {
        let link = root.join("bin").join(a);
        std::os::unix::fs::symlink("busybox", &link).map_err(|e| Error::io(&link, e))?;
    }
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1000:web:/home/web:/bin/sh\n",
        ),
        ("etc/group", "root:x:0:\nweb:x:1000:\n"),
    ];
    for (p, text) in files {
        std::fs::write(root.join(p), text).map_err(|e| Error::io(&root.join(p), e))?;
    }
    let tar = tar_dir(&root);
    let _ = std::fs::remove_dir_all(&dir);
    tar
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "shoal-build-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    Ok(d)
}
