//! Container images pushed to the controller: the image's top document (an index or a
//! manifest) by name, then, by digest, only the blobs the node's image store lacks: a new
//! version of an image costs the layers that changed. Each blob is fetched resumably and
//! checked against its digest before the store keeps it.

use crate::artifacts::ArtifactCache;
use crate::error::{Error, Result};
use shoal_runtime::oci::collect::{next_for, Next};
use shoal_runtime::oci::image::{digest_of, ConfigPlatform as _, ImageStore, Platform};
use shoal_transport::Client;
use std::sync::Arc;

/// What a fetch transferred, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    pub blobs: usize,
    pub reused: usize,
}

/// A blob into the store, from the controller unless the store has it.
async fn blob(
    artifacts: &ArtifactCache,
    client: &Client,
    store: &Arc<ImageStore>,
    digest: &str,
    fetched: &mut Fetched,
) -> Result<Vec<u8>> {
    if artifacts.get_into(client, digest, store).await? {
        fetched.blobs += 1;
    } else {
        fetched.reused += 1;
    }
    let path = store.blob_path(digest)?;
    std::fs::read(&path).map_err(|e| Error::io(&path, e))
}

/// The image `image`, pushed to the controller, in the node's store for `platform`; returns
/// its manifest digest.
pub async fn fetch(
    artifacts: &ArtifactCache,
    client: &Client,
    store: &Arc<ImageStore>,
    image: &str,
    platform: &Platform,
) -> Result<String> {
    let top_file = artifacts.get(Some(client), image).await?;
    let top = std::fs::read(&top_file).map_err(|e| Error::io(&top_file, e))?;
    if !matches!(top.first(), Some(b'{')) {
        // An image archive as one artifact (pushed whole): imported in one piece.
        let (store, platform) = (store.clone(), platform.clone());
        return tokio::task::spawn_blocking(move || store.import_artifact(&top_file, &platform))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(Error::from);
    }
    let mut fetched = Fetched::default();
    let mut doc = top;
    let mut manifest_digest = None;
    for _ in 0..4 {
        match next_for(image, &doc, platform)? {
            Next::Here => {
                manifest_digest = Some(store.put_bytes(&doc)?);
                break;
            }
            Next::Index(d) => doc = blob(artifacts, client, store, &d, &mut fetched).await?,
            Next::Manifest(d) => {
                blob(artifacts, client, store, &d, &mut fetched).await?;
                manifest_digest = Some(d);
                break;
            }
        }
    }
    let manifest_digest = manifest_digest.ok_or_else(|| Error::Artifact {
        reference: image.to_string(),
        message: "image indexes nest too deep".into(),
    })?;
    let path = store.blob_path(&manifest_digest)?;
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let manifest: shoal_runtime::oci::image::Manifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::Artifact {
            reference: image.to_string(),
            message: format!("image manifest: {e}"),
        })?;
    for d in std::iter::once(manifest.config()).chain(manifest.layers().iter()) {
        blob(artifacts, client, store, &digest_of(d), &mut fetched).await?;
    }
    let pulled = store.image(&manifest_digest)?;
    if !platform.runs(&pulled.config.platform()) {
        return Err(Error::Artifact {
            reference: image.to_string(),
            message: format!("no {platform} image (it has: {})", pulled.config.platform()),
        });
    }
    tracing::info!(
        image,
        digest = %manifest_digest,
        fetched = fetched.blobs,
        reused = fetched.reused,
        "image fetched from the controller"
    );
    Ok(manifest_digest)
}
