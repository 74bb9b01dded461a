//! Artifacts in and out on a stream: an admin's push, a node's module to compile (both as
//! chunk frames after the request), and a fetch's bytes from an offset on.

use super::refusal;
use crate::error::{Error, Result};
use crate::service::Service;
use shoal_transport::proto::{Request, Response};
use shoal_transport::quic::send_response;

/// Receives an upload: chunk frames after the request, filed only if size and digest match.
pub(super) async fn receive_push(
    recv: &mut quinn::RecvStream,
    service: &Service,
    reference: &str,
    size: u64,
    digest: &str,
    platforms: &[String],
) -> Response {
    let mut upload = match service.artifacts().begin() {
        Ok(u) => u,
        Err(e) => return Response::Error(e.into()),
    };
    while upload.written() < size {
        match shoal_transport::frame::read::<Request, _>(recv, shoal_transport::frame::MAX_FRAME)
            .await
        {
            Ok(Some(Request::Chunk(bytes))) => {
                if upload.written() + bytes.len() as u64 > size {
                    return refusal(Error::BadRequest(format!(
                        "upload of {reference} is longer than the {size} bytes announced"
                    )));
                }
                if let Err(e) = upload.write(&bytes) {
                    return Response::Error(e.into());
                }
            }
            Ok(Some(_)) => return refusal(Error::BadRequest("expected upload data".into())),
            Ok(None) => break,
            Err(e) => {
                let why = shoal_transport::report(&e);
                return refusal(Error::BadRequest(format!("upload of {reference}: {why}")));
            }
        }
    }
    match service
        .artifacts()
        .finish(upload, reference, size, digest, platforms)
    {
        Ok(blob) => {
            tracing::info!(reference, digest = %blob.digest, size = blob.size, "artifact pushed");
            service.precompile_for_nodes(&blob).await;
            Response::Artifact {
                digest: blob.digest,
                size: blob.size,
            }
        }
        Err(e) => Response::Error(e.into()),
    }
}

/// Receives a module `node` pulled from a registry (chunk frames after the request, as a
/// push), checks it is the `size` bytes of `digest`, and answers the code compiled for its
/// `target` as a fetch is answered. Nothing of it stays on the controller.
pub(super) async fn compile_upload(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    service: &Service,
    node: &str,
    digest: &str,
    size: u64,
    target: &shoal_api::WasmTarget,
) -> Result<()> {
    use sha2::Digest as _;
    use std::io::Write as _;
    let precompiled = service.precompiled();
    let turn = precompiled.upload_turn(node)?;
    let mut file = turn.create()?;
    let mut hasher = sha2::Sha256::new();
    let mut written = 0u64;
    while written < size {
        let bytes = match shoal_transport::frame::read::<Request, _>(
            recv,
            shoal_transport::frame::MAX_FRAME,
        )
        .await
        {
            Ok(Some(Request::Chunk(bytes))) => bytes,
            Ok(Some(_)) => return Err(Error::BadRequest("expected the module's bytes".into())),
            Ok(None) => break,
            Err(e) => {
                let why = shoal_transport::report(&e);
                return Err(Error::BadRequest(format!("upload of {digest}: {why}")));
            }
        };
        if written + bytes.len() as u64 > size {
            return Err(Error::BadRequest(format!(
                "upload of {digest} is longer than the {size} bytes announced"
            )));
        }
        hasher.update(&bytes);
        file.write_all(&bytes)
            .map_err(|e| Error::io(&turn.path, e))?;
        written += bytes.len() as u64;
    }
    if written != size {
        return Err(Error::BadRequest(format!(
            "upload of {digest} ended after {written} of the {size} bytes announced"
        )));
    }
    let got = format!("sha256:{}", hex::encode(hasher.finalize()));
    if got != digest {
        return Err(Error::BadRequest(format!(
            "upload announced as {digest} is {got}: digest mismatch"
        )));
    }
    drop(file);
    let code = precompiled.compile_upload(&turn, target).await?;
    drop(turn);
    let header = Response::Artifact {
        digest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(&code))),
        size: code.len() as u64,
    };
    let sent = async {
        send_response(send, &header).await?;
        for chunk in code.chunks(CHUNK) {
            send_response(send, &Response::Chunk(chunk.to_vec())).await?;
        }
        Ok::<_, shoal_transport::Error>(())
    };
    if let Err(e) = sent.await {
        tracing::debug!(error = %shoal_transport::report(&e), "compiled code's transfer ended early");
    }
    Ok(())
}

/// Chunk size for artifact transfers: small enough to resume cheaply, large enough to be fast.
const CHUNK: usize = 256 * 1024;

pub(super) async fn send_blob(
    send: &mut quinn::SendStream,
    blob: &crate::artifacts::Blob,
    offset: u64,
) -> shoal_transport::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io = |e| shoal_transport::Error::io(&blob.path, e);
    let header = Response::Artifact {
        digest: blob.digest.clone(),
        size: blob.size,
    };
    send_response(send, &header).await?;
    let mut file = tokio::fs::File::open(&blob.path).await.map_err(io)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(io)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        send_response(send, &Response::Chunk(buf[..n].to_vec())).await?;
    }
}
