//! Frames: a 4-byte big-endian length, then a postcard body that starts with the protocol
//! version. Bodies past the size cap are refused before any allocation; a stream that ends
//! inside a frame is reported as truncated, never mistaken for a whole message.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bumped on any incompatible change to [`crate::proto`].
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame accepted by default (artifact transfers chunk below this).
pub const MAX_FRAME: usize = 16 << 20;
/// How much of a frame is read at a time.
const READ_CHUNK: usize = 8 * 1024;

/// Encodes `msg` as one frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>> {
    let body =
        postcard::to_allocvec(&PROTOCOL_VERSION).map_err(|e| Error::Encode(e.to_string()))?;
    let body = postcard::to_extend(msg, body).map_err(|e| Error::Encode(e.to_string()))?;
    let len = u32::try_from(body.len()).map_err(|_| Error::FrameTooLarge {
        size: body.len(),
        max: u32::MAX as usize,
    })?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend(body);
    Ok(out)
}

/// Decodes a frame body (without the length prefix): the version first, so a peer of another
/// version gets a version error rather than a confusing decode error.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let (version, rest): (u32, _) =
        postcard::take_from_bytes(body).map_err(|e| Error::Decode(format!("version: {e}")))?;
    if version != PROTOCOL_VERSION {
        return Err(Error::Version {
            peer: version,
            ours: PROTOCOL_VERSION,
        });
    }
    let (msg, rest) = postcard::take_from_bytes(rest).map_err(|e| Error::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::Decode(format!("{} trailing bytes", rest.len())));
    }
    Ok(msg)
}

/// Reads one frame; `Ok(None)` when the stream ended cleanly between frames.
pub async fn read<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<T>> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r
            .read(&mut header[got..])
            .await
            .map_err(|e| Error::Stream(e.to_string()))?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(Error::Truncated { got, expected: 4 })
            };
        }
        got += n;
    }
    let size = u32::from_be_bytes(header) as usize;
    if size > max {
        return Err(Error::FrameTooLarge { size, max });
    }
    // The body grows as its bytes arrive: a peer that announces a large frame and sends
    // nothing costs nothing.
    let mut body = Vec::with_capacity(size.min(READ_CHUNK));
    let mut chunk = [0u8; READ_CHUNK];
    while body.len() < size {
        let want = (size - body.len()).min(READ_CHUNK);
        let n = r
            .read(&mut chunk[..want])
            .await
            .map_err(|e| Error::Stream(e.to_string()))?;
        if n == 0 {
            return Err(Error::Truncated {
                got: 4 + body.len(),
                expected: 4 + size,
            });
        }
        body.extend_from_slice(&chunk[..n]);
    }
    decode_body(&body).map(Some)
}

pub async fn write<T: Serialize, W: AsyncWrite + Unpin>(w: &mut W, msg: &T) -> Result<()> {
    let bytes = encode(msg)?;
    w.write_all(&bytes)
        .await
        .map_err(|e| Error::Stream(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Request, Response};
    use proptest::prelude::*;

    fn read_all(bytes: &[u8], max: usize) -> Result<Option<Request>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut r = bytes;
        rt.block_on(read::<Request, _>(&mut r, max))
    }

    fn sample() -> Request {
        Request::Get {
            kind: "Pod".into(),
            namespace: Some("default".into()),
            name: "web-1".into(),
        }
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(read_all(&bytes, MAX_FRAME).unwrap(), Some(sample()));
        assert_eq!(read_all(&[], MAX_FRAME).unwrap(), None);
    }

    /// Typed API values inside a request travel as postcard, which cannot skip a field: an
    /// empty list that serde left out would end the frame early (a 32-bit ARM node's wasm
    /// target has no CPU features, and its requests were refused as malformed).
    #[test]
    fn a_precompile_request_for_a_target_without_features_round_trips() {
        for features in [vec![], vec!["has_lse".to_string()]] {
            let req = Request::FetchPrecompiled {
                reference: "sha256:00".into(),
                target: shoal_api::WasmTarget {
                    wasmtime: "48.0.8".into(),
                    triple: "pulley32".into(),
                    features,
                },
                offset: 7,
            };
            let bytes = encode(&req).unwrap();
            assert_eq!(read_all(&bytes, MAX_FRAME).unwrap(), Some(req));
        }
    }

    #[test]
    fn truncated_frames_are_named() {
        let bytes = encode(&sample()).unwrap();
        for cut in 1..bytes.len() {
            let err = read_all(&bytes[..cut], MAX_FRAME).unwrap_err();
            assert!(
                matches!(err, Error::Truncated { .. }),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_reading() {
        let mut bytes = (u32::MAX).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 8]);
        let err = read_all(&bytes, MAX_FRAME).unwrap_err();
        assert!(
            matches!(err, Error::FrameTooLarge { size, .. } if size == u32::MAX as usize),
            "{err}"
        );
    }

    /// A frame that announces the most and sends little has only what arrived in memory.
    #[test]
    fn an_announced_frame_is_not_reserved_before_it_arrives() {
        let mut bytes = (MAX_FRAME as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 100]);
        let err = read_all(&bytes, MAX_FRAME).unwrap_err();
        assert!(
            matches!(err, Error::Truncated { got: 104, expected } if expected == 4 + MAX_FRAME),
            "{err}"
        );
    }

    #[test]
    fn another_protocol_version_is_told_apart() {
        let body = postcard::to_allocvec(&(PROTOCOL_VERSION + 1)).unwrap();
        let body = postcard::to_extend(&sample(), body).unwrap();
        let err = decode_body::<Request>(&body).unwrap_err();
        assert!(err.to_string().contains("protocol version 2"), "{err}");
    }

    proptest! {
        #[test]
        fn decoder_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_body::<Request>(&bytes);
            let _ = decode_body::<Response>(&bytes);
            let _ = read_all(&bytes, 1024);
        }

        #[test]
        fn flipped_bytes_never_panic(flip in 0usize..64, value in any::<u8>()) {
            let mut bytes = encode(&sample()).unwrap();
            let i = flip % bytes.len();
            bytes[i] = value;
            let _ = read_all(&bytes, MAX_FRAME);
        }
    }
}
