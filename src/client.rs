//! What every client verb shares: finding the credential, connecting, turning server errors
//! into messages, and reading manifests from files, directories or stdin.

use crate::ClientArgs;
use anyhow::{anyhow, bail, Context, Result};
use shoal_api::{parse_manifests, Parsed};
use shoal_transport::proto::{Request, Response};
use shoal_transport::{Client, Credentials, Seen, Watcher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `/var/lib/shoal` for root (as K3s's /var/lib/rancher), else `~/.local/share/shoal`.
pub fn default_data_dir() -> PathBuf {
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if root {
        return PathBuf::from("/var/lib/shoal");
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("shoal")
}

/// `dir` made absolute against the working directory at start: pods bind-mount files from the
/// data dir, and a relative path means something else inside a container's mount namespace.
pub fn absolute(dir: PathBuf) -> Result<PathBuf> {
    if dir.is_absolute() {
        return Ok(dir);
    }
    let here = std::env::current_dir().context("reading the working directory")?;
    Ok(here.join(dir))
}

pub fn config_path(args: &ClientArgs) -> PathBuf {
    args.config
        .clone()
        .unwrap_or_else(|| default_data_dir().join("admin.conf"))
}

pub async fn connect(args: &ClientArgs) -> Result<Client> {
    let path = config_path(args);
    let creds = Credentials::load(&path)?;
    Client::connect(&creds).await.with_context(|| {
        format!(
            "connecting to the controller at {} (from {})",
            creds.server,
            path.display()
        )
    })
}

/// Sends a request and returns its response, or the server's error as kubectl words it.
pub async fn call(client: &Client, req: &Request) -> Result<Response> {
    check(client.call(req).await?)
}

/// What a watcher met, with the server's refusal worded as [`check`] words it.
pub async fn next_seen(watcher: &mut Watcher, client: &Client) -> Result<Seen> {
    match watcher.next(client).await {
        Ok(seen) => Ok(seen),
        Err(shoal_transport::Error::Refused(e)) => Err(check(Response::Error(e))
            .err()
            .unwrap_or_else(|| anyhow!("the server refused"))),
        Err(e) => Err(e.into()),
    }
}

/// A pod named as `NAME`, `pod/NAME` or `pods/NAME`, as kubectl takes it.
pub fn pod_name(arg: &str) -> String {
    arg.strip_prefix("pod/")
        .or_else(|| arg.strip_prefix("pods/"))
        .unwrap_or(arg)
        .to_string()
}

pub fn check(response: Response) -> Result<Response> {
    match response {
        Response::Error(e) => {
            let code = e.code.reason();
            Err(anyhow!("Error from server ({code}): {}", e.message))
        }
        other => Ok(other),
    }
}

/// Reads `-f` arguments: files, directories (their .yaml, .yml and .json files, sorted) or `-`.
pub fn read_manifests(paths: &[PathBuf]) -> Result<Vec<Parsed>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading stdin")?;
            out.extend(parse_manifests("<stdin>", &text)?);
        } else if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    matches!(
                        f.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            files.sort();
            for f in files {
                out.extend(read_file(&f)?);
            }
        } else {
            out.extend(read_file(p)?);
        }
    }
    if out.is_empty() {
        bail!("no objects passed to apply");
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<Vec<Parsed>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut parsed = parse_manifests(&path.display().to_string(), &text)?;
    // `file://` images are relative to the manifest that names them.
    let base = path.parent().unwrap_or(Path::new("."));
    for p in &mut parsed {
        if let Some(spec) = p.object.pod_spec_mut() {
            for c in spec.init_containers.iter_mut().chain(&mut spec.containers) {
                if let Some(rel) = c.image.strip_prefix("file://") {
                    if !rel.starts_with('/') {
                        c.image = format!("file://{}", base.join(rel).display());
                    }
                }
            }
        }
    }
    Ok(parsed)
}

/// Writes `obj` back after changing it (scale, pause, cordon, label), replacing what is
/// stored as `kubectl replace` does (Shoal's apply merges with the manifest applied last,
/// which a read-modify-write must not overwrite). Without a resourceVersion the controller
/// retries a concurrent write itself (a status update between the read and the write).
pub async fn replace(client: &Client, mut obj: shoal_api::Object) -> Result<()> {
    obj.metadata_mut().resource_version.clear();
    let req = Request::Update {
        object: obj.to_json()?,
        options: Default::default(),
    };
    match call(client, &req).await? {
        Response::Written { warnings, .. } => {
            for w in warnings {
                eprintln!("Warning: {w}");
            }
            Ok(())
        }
        other => Err(anyhow!(other.unexpected())),
    }
}
