//! How objects are laid down in the file: the format the nodes share (`shoal_transport::seal`),
//! its errors said as the store's.

use super::SecretCipher;
use crate::error::{Error, Result};
use shoal_api::Object;

/// The store's reading of a sealing error: a key that does not open a Secret, or a value that
/// is not an object.
pub fn sealing(e: shoal_transport::Error) -> Error {
    match e {
        shoal_transport::Error::Corrupt(m) => Error::Corrupt(m),
        shoal_transport::Error::Config(m) => Error::Config(m),
        shoal_transport::Error::Io { path, source } => Error::Io {
            path,
            source: std::sync::Arc::new(source),
        },
        other => Error::Crypto(other.to_string()),
    }
}

pub fn encode(cipher: &SecretCipher, key: &str, obj: &Object) -> Result<Vec<u8>> {
    shoal_transport::seal::encode(cipher, key, obj).map_err(sealing)
}

pub fn decode(cipher: &SecretCipher, key: &str, bytes: &[u8]) -> Result<Object> {
    shoal_transport::seal::decode(cipher, key, bytes).map_err(sealing)
}
