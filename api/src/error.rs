//! Errors of the object model: parse errors with positions, validation errors with field paths.

use std::fmt;

/// One problem with one field, named by its path (`spec.replicas: Invalid value: -1: ...`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not YAML/JSON at all; the message carries the line and column.
    #[error("{source_name}: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    /// A document is well-formed but does not fit the schema of its kind.
    #[error("{source_name}: document {document}{what}: {message}")]
    Schema {
        source_name: String,
        document: usize,
        what: String,
        message: String,
    },
    #[error("{0}")]
    UnknownKind(String),
    #[error("{kind} {name:?} is invalid: {}", join_errors(.errors))]
    Invalid {
        kind: String,
        name: String,
        errors: Vec<FieldError>,
    },
    #[error("invalid label selector {input:?}: {message}")]
    Selector { input: String, message: String },
    #[error("invalid quantity {input:?}: {message}")]
    Quantity { input: String, message: String },
    #[error("cannot encode object: {0}")]
    Encode(String),
    #[error("cannot decode object: {0}")]
    Decode(String),
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
