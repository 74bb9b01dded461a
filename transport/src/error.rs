//! Transport errors: what went wrong on the wire, said so the user knows what to fix.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("frame of {size} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { size: usize, max: usize },
    #[error("truncated frame: the stream ended after {got} of {expected} bytes")]
    Truncated { got: usize, expected: usize },
    #[error(
        "peer speaks protocol version {peer}, this shoal speaks {ours}: upgrade the older side"
    )]
    Version { peer: u32, ours: u32 },
    #[error("malformed frame: {0}")]
    Decode(String),
    #[error("cannot encode frame: {0}")]
    Encode(String),
    #[error("{0}")]
    Token(String),
    #[error("the controller's CA does not match the token: the token pins {expected}, the server presented {actual}")]
    CaMismatch { expected: String, actual: String },
    #[error("certificate: {0}")]
    Pki(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("connection: {0}")]
    Connection(String),
    #[error("stream: {0}")]
    Stream(String),
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Seal(String),
    #[error("stored object is corrupt: {0}")]
    Corrupt(String),
    /// The controller answered with an error (its message says what to fix).
    #[error("{0}")]
    Refused(crate::proto::WireError),
}

impl Error {
    pub fn io(path: &std::path::Path, source: impl Into<std::io::Error>) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source: source.into(),
        }
    }
}

/// An error with its sources, `outer: cause: root cause`, as logs and wire messages show it
/// (an error's own message leaves its source out, so that a chain is never said twice).
pub fn report<'a>(e: &'a (dyn std::error::Error + 'static)) -> Report<'a> {
    Report(e)
}

pub struct Report<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
