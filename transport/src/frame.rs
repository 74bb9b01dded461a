//! Frames: a 4-byte big-endian length, then a postcard body that starts with the protocol
//! version. Bodies past the size cap are refused before any allocation; a stream that ends
//! inside a frame is reported as truncated, never mistaken for a whole message. A [`Reader`]
//! follows a stream of frames and may be cancelled between any two bytes.

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
    Reader::new(r, max).next().await
}

/// Reads frame after frame from one stream, keeping a partly read frame between calls, so
/// [`Reader::next`] may be dropped (the branch of a `select!` that lost) without losing bytes
/// or its place in the stream.
///
/// Not tokio-util's `LengthDelimitedCodec`: it reserves the whole announced length as soon as
/// it reads a header, so every peer stream could pin [`MAX_FRAME`] bytes by announcing a frame
/// and sending nothing. Here the body grows only as its bytes arrive.
pub struct Reader<R> {
    inner: R,
    max: usize,
    header: [u8; 4],
    /// Header bytes read so far.
    got: usize,
    /// The announced body size, once the header is whole.
    size: Option<usize>,
    body: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Reader {
            inner,
            max,
            header: [0; 4],
            got: 0,
            size: None,
            body: Vec::new(),
        }
    }

    /// The next frame; `Ok(None)` when the stream ended cleanly between frames. Cancel-safe.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        let size = loop {
            if let Some(size) = self.size {
                break size;
            }
            let n = self
                .inner
                .read(&mut self.header[self.got..])
                .await
                .map_err(|e| Error::Stream(e.to_string()))?;
            if n == 0 {
                return if self.got == 0 {
                    Ok(None)
                } else {
                    Err(Error::Truncated {
                        got: self.got,
                        expected: 4,
                    })
                };
            }
            self.got += n;
            if self.got == 4 {
                let size = u32::from_be_bytes(self.header) as usize;
                if size > self.max {
                    return Err(Error::FrameTooLarge {
                        size,
                        max: self.max,
                    });
                }
                self.size = Some(size);
                self.body = Vec::with_capacity(size.min(READ_CHUNK));
            }
        };
        let mut chunk = [0u8; READ_CHUNK];
        while self.body.len() < size {
            let want = (size - self.body.len()).min(READ_CHUNK);
            let n = self
                .inner
                .read(&mut chunk[..want])
                .await
                .map_err(|e| Error::Stream(e.to_string()))?;
            if n == 0 {
                return Err(Error::Truncated {
                    got: 4 + self.body.len(),
                    expected: 4 + size,
                });
            }
            self.body.extend_from_slice(&chunk[..n]);
        }
        let body = std::mem::take(&mut self.body);
        (self.got, self.size) = (0, None);
        decode_body(&body).map(Some)
    }
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
            let target = shoal_api::WasmTarget {
                wasmtime: "48.0.8".into(),
                triple: "pulley32".into(),
                features,
            };
            let fetch = Request::FetchPrecompiled {
                reference: "sha256:00".into(),
                target: target.clone(),
                offset: 7,
            };
            let compile = Request::Compile {
                digest: "sha256:00".into(),
                size: 7,
                target,
            };
            for req in [fetch, compile] {
                let bytes = encode(&req).unwrap();
                assert_eq!(read_all(&bytes, MAX_FRAME).unwrap(), Some(req));
            }
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

    /// A read dropped halfway through a frame (a lost `select!` branch) costs nothing: the
    /// next read carries on where it stopped.
    #[tokio::test]
    async fn a_reader_dropped_mid_frame_loses_nothing() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = Reader::new(rx, MAX_FRAME);
        let bytes = [encode(&sample()).unwrap(), encode(&sample()).unwrap()].concat();
        tx.write_all(&bytes[..3]).await.unwrap();
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            reader.next::<Request>(),
        );
        assert!(early.await.is_err(), "half a header is not a frame");
        tx.write_all(&bytes[3..10]).await.unwrap();
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            reader.next::<Request>(),
        );
        assert!(early.await.is_err(), "part of a body is not a frame");
        tx.write_all(&bytes[10..]).await.unwrap();
        drop(tx);
        assert_eq!(reader.next::<Request>().await.unwrap(), Some(sample()));
        assert_eq!(reader.next::<Request>().await.unwrap(), Some(sample()));
        assert_eq!(reader.next::<Request>().await.unwrap(), None);
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
