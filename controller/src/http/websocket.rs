//! The server side of WebSocket (RFC 6455), as much as kubectl's exec and port-forward need:
//! the handshake, and whole messages in and out. Everything a client sends is bounded: a message
//! is at most [`MAX_MESSAGE`] bytes however it is fragmented, a control frame 125.

use super::{failure, Body, Response};
use base64::Engine as _;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::StatusCode;
use sha1::Digest as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest message taken from a client (kubectl sends stdin in 32 KiB pieces).
pub const MAX_MESSAGE: usize = 1 << 20;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = sha1::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// The first of `served` that the client offers in `Sec-WebSocket-Protocol`.
pub fn chosen(headers: &HeaderMap, served: &[&'static str]) -> Option<&'static str> {
    let offered: Vec<&str> = headers
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .collect();
    served.iter().copied().find(|p| offered.contains(p))
}

/// Whether the request asks to upgrade to WebSocket.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The answer that accepts the upgrade (`key` is the client's `Sec-WebSocket-Key`) with
/// `protocol`.
pub fn switching(key: &HeaderValue, protocol: &'static str) -> Response {
    let accept = accept_key(key.to_str().unwrap_or(""));
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "a bad Sec-WebSocket-Key",
        );
    };
    let mut r = hyper::Response::new(Body::Full(None));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        hyper::header::UPGRADE,
        HeaderValue::from_static("websocket"),
    );
    h.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        hyper::header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, accept);
    r
}

/// What a client sent: a data message, a ping to answer, or its close.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Data(Vec<u8>),
    Ping(Vec<u8>),
    Close,
}

/// Why a client's frames were not taken.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the WebSocket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the client sent a frame that breaks RFC 6455: {0}")]
    Protocol(&'static str),
    #[error("the client sent a message of more than {MAX_MESSAGE} bytes")]
    TooLarge,
}

/// A client's side of the connection, read message by message.
pub struct Reader<R> {
    r: R,
    /// A fragmented message so far: a ping may come between its fragments.
    partial: Option<Vec<u8>>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(r: R) -> Reader<R> {
        Reader { r, partial: None }
    }

    /// The next message, its fragments put together, or a control frame.
    pub async fn next(&mut self) -> Result<Incoming, Error> {
        loop {
            let r = &mut self.r;
            let mut head = [0u8; 2];
            r.read_exact(&mut head).await?;
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0f;
            if head[0] & 0x70 != 0 {
                return Err(Error::Protocol("reserved bits set without an extension"));
            }
            if head[1] & 0x80 == 0 {
                return Err(Error::Protocol("a client's frame must be masked"));
            }
            let len = match head[1] & 0x7f {
                126 => u64::from(r.read_u16().await?),
                127 => r.read_u64().await?,
                n => u64::from(n),
            };
            let control = opcode & 0x8 != 0;
            if control && (len > 125 || !fin) {
                return Err(Error::Protocol("a control frame is short and whole"));
            }
            let have = self.partial.as_ref().map_or(0, Vec::len) as u64;
            if have.saturating_add(len) > MAX_MESSAGE as u64 {
                return Err(Error::TooLarge);
            }
            let mut mask = [0u8; 4];
            r.read_exact(&mut mask).await?;
            // At most MAX_MESSAGE, checked above.
            let mut payload = vec![0u8; len as usize];
            r.read_exact(&mut payload).await?;
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            match (opcode, self.partial.as_mut()) {
                (CLOSE, _) => return Ok(Incoming::Close),
                (PING, _) => return Ok(Incoming::Ping(payload)),
                (PONG, _) => continue,
                (TEXT | BINARY, None) => self.partial = Some(payload),
                (CONTINUATION, Some(m)) => m.extend_from_slice(&payload),
                (TEXT | BINARY, Some(_)) => {
                    return Err(Error::Protocol("a new message inside a fragmented one"))
                }
                (CONTINUATION, None) => {
                    return Err(Error::Protocol("a continuation of no message"))
                }
                _ => return Err(Error::Protocol("an unknown opcode")),
            }
            if fin {
                return Ok(Incoming::Data(self.partial.take().unwrap_or_default()));
            }
        }
    }
}

/// Writes one whole, unmasked frame (a server's are never masked).
pub async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    opcode: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    w.write_all(&frame).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's frame: masked, as RFC 6455 requires.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn fragments_come_together_and_pings_are_told_apart() {
        let mut wire = client_frame(false, BINARY, b"\x00hel");
        wire.extend(client_frame(true, PING, b"hb"));
        wire.extend(client_frame(true, CONTINUATION, &[b'l'; 300]));
        wire.extend(client_frame(true, CLOSE, b""));
        let mut r = Reader::new(wire.as_slice());
        // A ping between fragments is answered before the message ends.
        assert_eq!(r.next().await.unwrap(), Incoming::Ping(b"hb".to_vec()));
        let mut whole = b"\x00hel".to_vec();
        whole.extend([b'l'; 300]);
        assert_eq!(r.next().await.unwrap(), Incoming::Data(whole));
        assert_eq!(r.next().await.unwrap(), Incoming::Close);
    }

    #[tokio::test]
    async fn unmasked_oversized_and_truncated_frames_are_refused() {
        let mut unmasked = client_frame(true, BINARY, b"x");
        unmasked[1] &= 0x7f;
        let e = Reader::new(unmasked.as_slice()).next().await.unwrap_err();
        assert!(e.to_string().contains("masked"), "{e}");
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(u64::MAX).to_be_bytes());
        let e = Reader::new(huge.as_slice()).next().await.unwrap_err();
        assert!(matches!(e, Error::TooLarge), "{e}");
        let whole = client_frame(true, BINARY, b"hello");
        let e = Reader::new(&whole[..whole.len() - 2])
            .next()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Io(_)), "{e}");
    }
}
