//! Fetching artifacts from the controller: into a partial file that a dropped link resumes from,
//! verified by digest before it is used, then kept by digest for the next pod.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use shoal_transport::proto::{Request, Response};
use shoal_transport::Client;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    pub fn new(data_dir: &Path) -> Result<ArtifactCache> {
        let dir = data_dir.join("artifacts");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(ArtifactCache { dir })
    }

    fn by_reference(&self, reference: &str) -> PathBuf {
        self.dir.join(format!(
            "ref-{}",
            hex::encode(Sha256::digest(reference.as_bytes()))
        ))
    }

    /// The local path of `reference`, fetching what is missing.
    pub async fn get(&self, client: &Client, reference: &str) -> Result<PathBuf> {
        let err = |message: String| Error::Artifact {
            reference: reference.to_string(),
            message,
        };
        let partial = self.by_reference(reference).with_extension("partial");
        let offset = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        let mut stream = client
            .stream(&Request::Fetch {
                reference: reference.to_string(),
                offset,
            })
            .await?;
        let (digest, size) = match stream.next().await? {
            Some(Response::Artifact { digest, size }) => (digest, size),
            Some(Response::Error(e)) => return Err(err(e.message)),
            other => return Err(err(format!("unexpected answer {other:?}"))),
        };
        let done = self.dir.join(digest.trim_start_matches("sha256:"));
        if done.exists() {
            return Ok(done);
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .map_err(|e| Error::io(&partial, e))?;
        let mut got = offset;
        while let Some(r) = stream.next().await? {
            match r {
                Response::Chunk(bytes) => {
                    file.write_all(&bytes).map_err(|e| Error::io(&partial, e))?;
                    got += bytes.len() as u64;
                }
                Response::Error(e) => return Err(err(e.message)),
                other => return Err(err(format!("unexpected answer {other:?}"))),
            }
        }
        file.sync_all().map_err(|e| Error::io(&partial, e))?;
        if got != size {
            return Err(err(format!(
                "transfer ended after {got} of {size} bytes (it resumes from there)"
            )));
        }
        let bytes = std::fs::read(&partial).map_err(|e| Error::io(&partial, e))?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if actual != digest {
            let _ = std::fs::remove_file(&partial);
            return Err(err(format!(
                "digest mismatch: expected {digest}, got {actual}"
            )));
        }
        std::fs::rename(&partial, &done).map_err(|e| Error::io(&done, e))?;
        tracing::info!(reference, %digest, size, "artifact fetched");
        Ok(done)
    }
}
