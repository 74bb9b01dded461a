//! The controller's errors, and their mapping to wire codes at the one boundary.

use shoal_transport::proto::{ErrorCode, WireError};
use std::path::Path;

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
    #[error("store: {context}: {message}")]
    Store { context: String, message: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Crypto(String),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("configuration: {0}")]
    Config(String),
    #[error("transport: {0}")]
    Transport(String),
    #[error("the store is shut down")]
    Closed,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn store(context: impl Into<String>, e: impl std::fmt::Display) -> Self {
        Error::Store {
            context: context.into(),
            message: e.to_string(),
        }
    }

    pub fn io(path: &Path, e: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
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
            message: e.to_string(),
        }
    }
}

impl From<shoal_api::Error> for Error {
    fn from(e: shoal_api::Error) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<shoal_transport::Error> for Error {
    fn from(e: shoal_transport::Error) -> Self {
        Error::Transport(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
