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
    /// An object that fails validation, with each field at fault.
    #[error("{kind} {name:?} is invalid: {}", causes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidObject {
        kind: shoal_api::Kind,
        name: String,
        causes: Vec<shoal_api::error::FieldError>,
    },
    #[error("revision {requested} has been compacted (the oldest kept is {compacted}): list again and watch from the list's revision")]
    Compacted { requested: u64, compacted: u64 },
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A request that is not well-formed: a stream that ends early, a frame that does not
    /// decode, an upload longer than announced.
    #[error("{0}")]
    BadRequest(String),
    /// The caller did not say who it is, or said it with a credential that does not hold.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller asked more often than it may; it may try again later.
    #[error("{0}")]
    TooManyRequests(String),
    /// The node a request is for is not connected, or failed on the way (there is no wire
    /// code for "unavailable": clients retry an internal error).
    #[error("{0}")]
    Unreachable(String),
    #[error("store: {context}")]
    Store {
        context: String,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The store's file was closed after a write failed, and is opened again with the next
    /// write (see `store::Db`).
    #[error("store: the file is closed after a failed write and opens again with the next write")]
    Reopening,
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

    pub fn unreachable(node: &str, e: &shoal_transport::Error) -> Self {
        Error::Unreachable(format!("node {node:?}: {}", shoal_transport::report(e)))
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::Invalid(_) | Error::InvalidObject { .. } => ErrorCode::Invalid,
            Error::Compacted { .. } => ErrorCode::Compacted,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::BadRequest(_) => ErrorCode::BadRequest,
            Error::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Error::TooManyRequests(_) => ErrorCode::TooManyRequests,
            Error::Store { .. }
            | Error::Reopening
            | Error::Corrupt(_)
            | Error::Crypto(_)
            | Error::Io { .. }
            | Error::Config(_)
            | Error::Transport(_)
            | Error::Api(_)
            | Error::Closed
            | Error::Unreachable(_)
            | Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<Error> for WireError {
    fn from(e: Error) -> WireError {
        let causes = match &e {
            Error::InvalidObject { causes, .. } => causes
                .iter()
                .map(|c| shoal_transport::proto::Cause {
                    field: c.path.clone(),
                    message: c.message.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        WireError {
            code: e.code(),
            message: shoal_transport::report(&e).to_string(),
            causes,
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
