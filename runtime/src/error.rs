//! Runtime errors.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("artifact {path}: {message}")]
    Artifact { path: String, message: String },
    #[error("{id}: cannot start: {message}")]
    Start { id: String, message: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("layer {layer}: {message}")]
    Layer { layer: String, message: String },
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error("runc: {0}")]
    Runc(String),
    #[error("{0}")]
    Internal(String),
    #[error("wasm engine: {0}")]
    Engine(String),
}

impl Error {
    pub fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
