//! How objects are laid down in the file: a format byte, then JSON (or sealed JSON for Secrets).

use super::SecretCipher;
use crate::error::{Error, Result};
use shoal_api::{Kind, Object};

const PLAIN: u8 = 0;
const SEALED: u8 = 1;

pub fn encode(cipher: &SecretCipher, key: &str, obj: &Object) -> Result<Vec<u8>> {
    let json = obj.to_json().map_err(|e| Error::Internal(e.to_string()))?;
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
