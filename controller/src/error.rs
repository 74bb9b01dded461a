//! The controller's errors, and their mapping to wire codes at the one boundary. Errors keep
//! their sources (shared, as one failed group commit answers every writer in it); a wire
//! message is the whole chain.

use shoal_transport::proto::{ErrorCode, WireError};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("revision {requested} has been compacted (the oldest kept is {compacted}): list again and watch from the list's revision")]
    Compacted { requested: u64, compacted: u64 },
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("store: {context}")]
    Store {
        context: String,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Crypto(String),
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Transport(Arc<shoal_transport::Error>),
    /// An object that does not encode, decode or convert.
    #[error(transparent)]
    Api(Arc<shoal_api::Error>),
    #[error("the store is shut down")]
    Closed,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn store(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Store {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source: Arc::new(source),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::Invalid(_) => ErrorCode::Invalid,
            Error::Compacted { .. } => ErrorCode::Compacted,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            _ => ErrorCode::Internal,
        }
    }
}

impl From<Error> for WireError {
    fn from(e: Error) -> WireError {
        WireError {
            code: e.code(),
            message: shoal_transport::report(&e).to_string(),
        }
    }
}

impl From<shoal_api::Error> for Error {
    fn from(e: shoal_api::Error) -> Self {
        Error::Api(Arc::new(e))
    }
}

impl From<shoal_transport::Error> for Error {
    fn from(e: shoal_transport::Error) -> Self {
        Error::Transport(Arc::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
