//! Runtime errors.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("artifact {path}: {message}")]
    Artifact { path: String, message: String },
    #[error("{id}: cannot start: {message}")]
    Start { id: String, message: String },
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
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
    pub fn io(path: &std::path::Path, source: impl Into<std::io::Error>) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source: source.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
