//! `shoal push PATH NAME[:TAG]`: stores an artifact in the controller, for clusters with no
//! registry: a wasm module or component, or a container image (an OCI image layout directory,
//! an OCI archive, or a `docker save` tarball), which agents import and check by digest; or a
//! shoal binary for an `AgentUpgrade` (its platform read from its ELF header). Shows progress
//! on large uploads.

use crate::client::{check, connect};
use crate::ClientArgs;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use shoal_transport::proto::{Request, Response};
use shoal_transport::Client;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The artifact: a .wasm module or component; or a container image as an OCI image layout
    /// directory, an OCI archive (.tar) or `docker save` output (.tar, .tar.gz).
    file: PathBuf,
    /// The name pods use as their image: NAME[:TAG].
    reference: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> Result<()> {
    let client = connect(&args.client).await?;
    let digest = push(&client, &args.file, &args.reference).await?;
    println!(
        "{}@{digest}",
        args.reference.split(':').next().unwrap_or(&args.reference)
    );
    client.close().await;
    Ok(())
}

const CHUNK: usize = 256 * 1024;

/// Uploads `file` as `reference`; returns its digest. A container image goes up as its blobs
/// (only those the controller lacks) and its top document under `reference`.
pub async fn push(client: &Client, file: &Path, reference: &str) -> Result<String> {
    if file.is_dir() && !file.join("index.json").exists() {
        bail!(
            "{} is a directory but not an OCI image layout (it has no index.json)",
            file.display()
        );
    }
    let scratch = std::env::temp_dir().join(format!(
        "shoal-push-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let collected = shoal_runtime::oci::collect::collect(file, &scratch)
        .with_context(|| format!("reading the image {}", file.display()));
    let result = match collected {
        Ok(Some(image)) => push_image(client, image, reference).await,
        Ok(None) => match std::fs::read(file) {
            // A shoal binary for `AgentUpgrade`: its platform, so each node takes its own.
            Ok(bytes) => {
                let platform = shoal_api::elf_platform(&bytes).map(String::from);
                upload(client, &bytes, reference, platform.into_iter().collect()).await
            }
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", file.display())),
        },
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// A container image: the blobs the controller lacks, then the top document, tagged, with
/// the image's platforms for the scheduler.
async fn push_image(
    client: &Client,
    image: shoal_runtime::oci::collect::Collected,
    reference: &str,
) -> Result<String> {
    let digests: Vec<String> = image.blobs.keys().cloned().collect();
    let missing: Vec<String> = match check(
        client
            .call(&Request::Missing {
                digests: digests.clone(),
            })
            .await?,
    )? {
        Response::Json(json) => serde_json::from_slice(&json).context("the controller's answer")?,
        other => bail!(other.unexpected()),
    };
    let mut sent = 0u64;
    for digest in &missing {
        let path = &image.blobs[digest];
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        upload(client, &bytes, digest, vec![]).await?;
        sent += bytes.len() as u64;
    }
    eprintln!(
        "{reference}: sent {} of {} blobs ({:.1} MiB); the controller had the others",
        missing.len(),
        digests.len(),
        sent as f64 / 1048576.0
    );
    let platforms = image.platforms.iter().map(ToString::to_string).collect();
    upload(client, &image.top, reference, platforms).await
}

/// Uploads `bytes` as `reference`, with progress on large uploads; returns their digest.
async fn upload(
    client: &Client,
    bytes: &[u8],
    reference: &str,
    platforms: Vec<String>,
) -> Result<String> {
    let digest = format!("sha256:{}", hex_digest(bytes));
    let size = bytes.len() as u64;
    let conn = client.connection();
    let (mut send, mut recv) = conn.open_bi().await.context("opening an upload stream")?;
    shoal_transport::frame::write(
        &mut send,
        &Request::Push {
            reference: reference.into(),
            size,
            digest: digest.clone(),
            platforms,
        },
    )
    .await?;
    let show = size > 4 * CHUNK as u64 || std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut reader = bytes;
    let mut sent = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        shoal_transport::frame::write(&mut send, &Request::Chunk(buf[..n].to_vec())).await?;
        sent += n as u64;
        if show {
            let rate = sent as f64 / started.elapsed().as_secs_f64().max(1e-3) / (1024.0 * 1024.0);
            eprint!(
                "\rpushing {reference}: {:.1}/{:.1} MiB ({rate:.1} MiB/s)",
                sent as f64 / 1048576.0,
                size as f64 / 1048576.0
            );
        }
    }
    if show {
        eprintln!();
    }
    send.finish().context("finishing the upload")?;
    match shoal_transport::frame::read::<Response, _>(&mut recv, shoal_transport::frame::MAX_FRAME)
        .await?
    {
        Some(r) => match check(r)? {
            Response::Artifact { digest: stored, .. } => Ok(stored),
            other => bail!(other.unexpected()),
        },
        None => bail!("the controller closed the upload without answering"),
    }
}

pub fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
