//! Agent errors.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("joining the cluster: {0}")]
    Join(String),
    #[error("the controller answered: {0}")]
    Server(String),
    /// The controller has no such object.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Transport(#[from] shoal_transport::Error),
    #[error(transparent)]
    Runtime(#[from] shoal_runtime::Error),
    #[error("artifact {reference}: {message}")]
    Artifact { reference: String, message: String },
    /// A registry (or its token service) refused the credentials the pod has, or has none
    /// for it: unlike a registry out of reach, the node's copy must not stand in.
    #[error("artifact {reference}: {message}")]
    Refused { reference: String, message: String },
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The node's local state (a redb file).
    #[error("local state {path}")]
    Local {
        path: String,
        #[source]
        source: redb::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
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

/// A plain answer: `Ok`, or the controller's error.
pub(crate) fn expect_ok(r: shoal_transport::proto::Response) -> Result<()> {
    use shoal_transport::proto::Response;
    match r {
        Response::Ok => Ok(()),
        Response::Error(e) => Err(Error::Server(e.message)),
        other => Err(Error::Internal(other.unexpected())),
    }
}
