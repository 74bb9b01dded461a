//! Sealing Secrets at rest, on the controller and on the nodes: XChaCha20-Poly1305 with a key
//! kept in the data dir, readable only by its owner (as K3s's `--secrets-encryption`). Objects
//! are laid down as a format byte, then JSON, or sealed JSON for Secrets.

use crate::error::{Error, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use shoal_api::{Kind, Object};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

pub struct SecretCipher {
    aead: XChaCha20Poly1305,
}

impl SecretCipher {
    pub fn load_or_create(path: &Path) -> Result<Self> {
        let key = match std::fs::read(path) {
            Ok(key) => {
                let mode = std::fs::metadata(path)
                    .map_err(|e| Error::io(path, e))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(Error::Config(format!(
                        "{} is readable by others (mode {:o}); run: chmod 600 {}",
                        path.display(),
                        mode & 0o777,
                        path.display()
                    )));
                }
                key
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; KEY_LEN];
                rand::rng().fill_bytes(&mut key);
                crate::pki::write_private(path, &key)?;
                key
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        if key.len() != KEY_LEN {
            return Err(Error::Config(format!(
                "{} holds {} bytes, expected a {KEY_LEN}-byte key",
                path.display(),
                key.len()
            )));
        }
        let aead = XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|_| Error::Config("bad secrets key".into()))?;
        Ok(SecretCipher { aead })
    }

    /// `nonce || ciphertext`; `aad` binds the ciphertext to the object's key.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::Seal("sealing a secret failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return Err(Error::Seal("sealed value is truncated".into()));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.aead
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| {
                Error::Seal(
                    "a stored secret does not decrypt: wrong secrets.key for this data dir?".into(),
                )
            })
    }
}

const PLAIN: u8 = 0;
const SEALED: u8 = 1;

/// `obj` as stored under `key`: Secrets sealed (bound to `key`), the rest plain JSON.
pub fn encode(cipher: &SecretCipher, key: &str, obj: &Object) -> Result<Vec<u8>> {
    let json = obj.to_json().map_err(|e| Error::Encode(e.to_string()))?;
    if obj.kind() == Kind::Secret {
        let mut out = vec![SEALED];
        out.extend(cipher.seal(key.as_bytes(), &json)?);
        Ok(out)
    } else {
        let mut out = Vec::with_capacity(json.len() + 1);
        out.push(PLAIN);
        out.extend(json);
        Ok(out)
    }
}

/// The object stored under `key`.
pub fn decode(cipher: &SecretCipher, key: &str, bytes: &[u8]) -> Result<Object> {
    let corrupt = |m: String| Error::Corrupt(format!("{key}: {m}"));
    let (tag, body) = bytes
        .split_first()
        .ok_or_else(|| corrupt("empty value".into()))?;
    let json = match *tag {
        PLAIN => body.to_vec(),
        SEALED => cipher.open(key.as_bytes(), body)?,
        other => return Err(corrupt(format!("unknown format {other}"))),
    };
    Object::from_json(&json).map_err(|e| corrupt(e.to_string()))
}
