//! SPDY/3.1 framing, as much as `kubectl port-forward` speaks: kubectl 1.31 and later tunnel
//! it inside WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`), so the bytes here come
//! from those messages put end to end. A client opens streams with SYN_STREAM, sends DATA on
//! them, pings; the server answers SYN_REPLY, DATA, PING.
//!
//! Header blocks are one zlib stream per direction, primed with the dictionary of the SPDY/3
//! draft: the client's is inflated with that dictionary laid in the window before it; ours
//! are written as stored (uncompressed) deflate blocks, which any zlib reader takes. Every size
//! a client controls is bounded.

use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// The largest frame taken from a client (kubectl writes data in 32 KiB pieces).
pub const MAX_FRAME: usize = 1 << 20;
/// The most a header block may inflate to, and the most pairs it may hold.
const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_HEADER_PAIRS: usize = 64;

/// The SPDY/3 header dictionary (draft 3, section 2.6.10.1); its Adler-32 is `0xe3c6a7c2`.
const DICTIONARY: &[u8] = include_bytes!("spdy_dictionary.bin");

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;

/// RST_STREAM's status for a stream that cannot be served.
pub const REFUSED_STREAM: u32 = 3;

/// What a client sent that the port-forward acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    Data {
        id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    RstStream {
        id: u32,
    },
    Ping(u32),
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, a SYN_REPLY or HEADERS (their header blocks still inflated,
    /// to keep the stream of them whole): nothing to do.
    Other,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the client's SPDY is broken: {0}")]
    Protocol(String),
    #[error("the client sent a SPDY frame of {0} bytes, more than the {MAX_FRAME} taken")]
    TooLarge(usize),
}

fn protocol(message: impl Into<String>) -> Error {
    Error::Protocol(message.into())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A client's frames, taken from the front of the bytes it sent so far.
pub struct Decoder {
    headers: Inflater,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            headers: Inflater::new(),
        }
    }
}

impl Decoder {
    /// The next whole frame at the front of `buf`, removed from it; `None` until one is whole.
    pub fn next(&mut self, buf: &mut Vec<u8>) -> Result<Option<Frame>, Error> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
        if len > MAX_FRAME {
            return Err(Error::TooLarge(len));
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let frame: Vec<u8> = buf.drain(..8 + len).collect();
        let (head, payload) = frame.split_at(8);
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            return Ok(Some(Frame::Data {
                id: be32(head) & 0x7fff_ffff,
                fin,
                data: payload.to_vec(),
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(protocol(format!("version {version}, where 3 is spoken")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |n: usize| {
            if payload.len() < n {
                Err(protocol(format!("a frame of type {kind} shorter than {n}")))
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            SYN_STREAM => {
                need(10)?;
                let block = self.headers.inflate(&payload[10..])?;
                Frame::SynStream {
                    id: be32(payload) & 0x7fff_ffff,
                    fin,
                    headers: header_pairs(&block)?,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4)?;
                self.headers.inflate(&payload[4..])?;
                Frame::Other
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    id: be32(payload) & 0x7fff_ffff,
                }
            }
            PING => {
                need(4)?;
                Frame::Ping(be32(payload))
            }
            GOAWAY => Frame::GoAway,
            _ => Frame::Other,
        }))
    }
}

/// The name/value pairs of an inflated header block: a count, then each name and value
/// after its length.
fn header_pairs(block: &[u8]) -> Result<Vec<(String, String)>, Error> {
    let short = || protocol("a header block cut short");
    let count = block.get(..4).map(be32).ok_or_else(short)? as usize;
    if count > MAX_HEADER_PAIRS {
        return Err(protocol(format!(
            "{count} headers in one block, more than {MAX_HEADER_PAIRS}"
        )));
    }
    let mut rest = &block[4..];
    let mut field = || -> Result<String, Error> {
        let n = rest.get(..4).map(be32).ok_or_else(short)? as usize;
        // A length near u32::MAX must not wrap where usize is 32 bits (armv7).
        let end = n.checked_add(4).ok_or_else(short)?;
        let body = rest.get(4..end).ok_or_else(short)?;
        rest = &rest[end..];
        Ok(String::from_utf8_lossy(body).into_owned())
    };
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let name = field()?;
        pairs.push((name, field()?));
    }
    Ok(pairs)
}

/// The client's header blocks: one zlib stream, inflated a block at a time.
struct Inflater {
    core: Box<DecompressorOxide>,
    /// The window, a ring of 32 KiB: the dictionary is laid in first, so the client's
    /// references into it resolve.
    ring: Vec<u8>,
    at: usize,
    /// The zlib header, until it is whole (2 bytes, and the dictionary's id when it has one).
    header: Vec<u8>,
    started: bool,
}

const RING: usize = 32 * 1024;

impl Inflater {
    fn new() -> Inflater {
        let mut ring = vec![0u8; RING];
        ring[..DICTIONARY.len()].copy_from_slice(DICTIONARY);
        Inflater {
            core: Box::default(),
            ring,
            at: DICTIONARY.len(),
            header: Vec::new(),
            started: false,
        }
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, Error> {
        if !self.started {
            let need = |h: &[u8]| {
                if h.len() >= 2 && h[1] & 0x20 != 0 {
                    6
                } else {
                    2
                }
            };
            while self.header.len() < need(&self.header) && !input.is_empty() {
                self.header.push(input[0]);
                input = &input[1..];
            }
            if self.header.len() < need(&self.header) {
                return Ok(Vec::new());
            }
            let h = &self.header;
            if h[0] & 0x0f != 8 || (u16::from(h[0]) << 8 | u16::from(h[1])) % 31 != 0 {
                return Err(protocol("its header blocks do not start as a zlib stream"));
            }
            if h.len() == 6 && be32(&h[2..]) != adler32(DICTIONARY) {
                return Err(protocol(
                    "its header blocks are primed with another dictionary than SPDY/3's",
                ));
            }
            self.started = true;
        }
        let mut out = Vec::new();
        loop {
            let (status, used, produced) = decompress(
                &mut self.core,
                input,
                &mut self.ring,
                self.at,
                inflate_flags::TINFL_FLAG_HAS_MORE_INPUT,
            );
            out.extend_from_slice(&self.ring[self.at..self.at + produced]);
            if out.len() > MAX_HEADER_BYTES {
                return Err(protocol(format!(
                    "a header block inflates to more than {MAX_HEADER_BYTES} bytes"
                )));
            }
            self.at = (self.at + produced) % RING;
            input = &input[used..];
            match status {
                TINFLStatus::HasMoreOutput => {}
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done if input.is_empty() => {
                    return Ok(out)
                }
                TINFLStatus::NeedsMoreInput => {}
                other => {
                    return Err(protocol(format!(
                        "its header blocks do not inflate ({other:?})"
                    )))
                }
            }
        }
    }
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    b << 16 | a
}

/// Our frames. Header blocks are stored deflate blocks of one zlib stream, as a client
/// expects them: the stream's header goes before the first.
#[derive(Default)]
pub struct Encoder {
    started: bool,
}

impl Encoder {
    fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(8 + payload.len());
        f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        f.extend_from_slice(&kind.to_be_bytes());
        f.push(flags);
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(payload);
        f
    }

    /// A SYN_REPLY without headers: the stream is accepted.
    pub fn syn_reply(&mut self, id: u32) -> Vec<u8> {
        let block = 0u32.to_be_bytes();
        let mut payload = id.to_be_bytes().to_vec();
        if !self.started {
            // CMF 0x78 (deflate, 32 KiB window), FLG 0x01: no dictionary, checks to 31.
            payload.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        let len = block.len() as u16;
        payload.push(0x00); // a stored block, not the last
        payload.extend_from_slice(&len.to_le_bytes());
        payload.extend_from_slice(&(!len).to_le_bytes());
        payload.extend_from_slice(&block);
        // Then an empty one, as a sync flush ends: Go's inflater hands out what it holds only
        // there, and would otherwise read on past the frame and fail for good.
        payload.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        Self::control(SYN_REPLY, 0, &payload)
    }

    /// DATA on stream `id`; `fin` ends our side of it.
    pub fn data(id: u32, data: &[u8], fin: bool) -> Vec<u8> {
        let mut f = Vec::with_capacity(8 + data.len());
        f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
        f.push(if fin { FLAG_FIN } else { 0 });
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        f
    }

    pub fn ping(id: u32) -> Vec<u8> {
        Self::control(PING, 0, &id.to_be_bytes())
    }

    pub fn rst_stream(id: u32, status: u32) -> Vec<u8> {
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(&status.to_be_bytes());
        Self::control(RST_STREAM, 0, &payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two header blocks as a client writes them (zlib level 9 against the dictionary,
    /// flushed after each; made with Python's `zlib.compressobj(zdict=...)`): the error and
    /// data streams of port-forward request 0 to port 8080. The second refers back into the
    /// first and the dictionary.
    const ERROR_BLOCK: &str = "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff";
    const DATA_BLOCK: &str = "c2aa19540e2512d60b000000ffff";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn syn_stream(id: u32, block: &[u8]) -> Vec<u8> {
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(block);
        Encoder::control(SYN_STREAM, 0, &payload)
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(adler32(DICTIONARY), 0xe3c6_a7c2);
    }

    #[test]
    fn streams_data_and_pings_are_read_across_any_split() {
        let mut wire = syn_stream(1, &hex(ERROR_BLOCK));
        wire.extend(syn_stream(3, &hex(DATA_BLOCK)));
        wire.extend(Encoder::data(3, b"GET / HTTP/1.0\r\n\r\n", true));
        wire.extend(Encoder::ping(7));
        // Byte by byte: frames come whole however the messages cut them.
        let mut d = Decoder::default();
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        for b in wire {
            buf.push(b);
            while let Some(f) = d.next(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        let pairs = |t: &str| {
            vec![
                ("streamtype".to_string(), t.to_string()),
                ("port".into(), "8080".into()),
                ("requestid".into(), "0".into()),
            ]
        };
        assert_eq!(
            frames,
            [
                Frame::SynStream {
                    id: 1,
                    fin: false,
                    headers: pairs("error")
                },
                Frame::SynStream {
                    id: 3,
                    fin: false,
                    headers: pairs("data")
                },
                Frame::Data {
                    id: 3,
                    fin: true,
                    data: b"GET / HTTP/1.0\r\n\r\n".to_vec()
                },
                Frame::Ping(7),
            ]
        );
    }

    #[test]
    fn what_a_client_cannot_send_is_refused() {
        let mut d = Decoder::default();
        let mut big = Encoder::data(1, b"", false);
        big[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(d.next(&mut big), Err(Error::TooLarge(_))));
        // Headers primed with some other dictionary.
        let mut other = hex(ERROR_BLOCK);
        other[2..6].copy_from_slice(&[1, 2, 3, 4]);
        let e = Decoder::default()
            .next(&mut syn_stream(1, &other))
            .unwrap_err();
        assert!(e.to_string().contains("another dictionary"), "{e}");
        // A header block that claims more pairs than it holds (stored, without a dictionary).
        let claims_five = [0x78, 0x01, 0x00, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 5];
        let e = Decoder::default()
            .next(&mut syn_stream(1, &claims_five))
            .unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
        // A field whose length is the largest a u32 holds: cut short, never wrapped.
        let mut huge = 1u32.to_be_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        let e = header_pairs(&huge).unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
    }

    #[test]
    fn our_replies_are_a_zlib_stream_any_reader_takes() {
        let mut e = Encoder::default();
        let first = e.syn_reply(1);
        let second = e.syn_reply(3);
        let mut stream = first[12..].to_vec();
        stream.extend_from_slice(&second[12..]);
        let mut z = flate2::Decompress::new(true);
        let mut out = Vec::with_capacity(16);
        z.decompress_vec(&stream, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(out, [0u8; 8], "two empty header blocks");
        // Each ends as a sync flush does, where Go's inflater hands its output over.
        assert!(
            first.ends_with(&[0, 0, 0, 0xff, 0xff]) && second.ends_with(&[0, 0, 0, 0xff, 0xff])
        );
        assert_eq!(&first[..4], &[0x80, 0x03, 0x00, 0x02]);
    }
}
