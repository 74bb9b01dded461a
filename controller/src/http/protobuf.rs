//! Kubernetes' protobuf encoding of request bodies, for the kinds kubectl's typed clients send
//! that way (`create configmap|secret|namespace`, the Eviction of `drain`): decoded into the
//! JSON the rest of the door reads. The envelope is `k8s\0` and a `runtime.Unknown` holding the
//! type and the object's bytes; each message is described by its field numbers from
//! Kubernetes' `generated.proto`. A field outside these tables is refused by number when it
//! holds a value (kubectl writes every scalar, set or not, so empty ones are passed over).

use base64::Engine as _;
use serde_json::{Map, Value};

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Ty {
    Str,
    /// bytes, base64 in JSON
    Bytes,
    Int,
    Bool,
    /// metav1.Time: seconds and nanos, RFC 3339 in JSON
    Time,
    Msg(&'static [Field]),
    StrMap,
    BytesMap,
    Strs,
    Msgs(&'static [Field]),
}

struct Field(u32, &'static str, Ty);

const OWNER_REFERENCE: &[Field] = &[
    Field(1, "kind", Ty::Str),
    Field(3, "name", Ty::Str),
    Field(4, "uid", Ty::Str),
    Field(5, "apiVersion", Ty::Str),
    Field(6, "controller", Ty::Bool),
    Field(7, "blockOwnerDeletion", Ty::Bool),
];

const OBJECT_META: &[Field] = &[
    Field(1, "name", Ty::Str),
    Field(2, "generateName", Ty::Str),
    Field(3, "namespace", Ty::Str),
    Field(5, "uid", Ty::Str),
    Field(6, "resourceVersion", Ty::Str),
    Field(7, "generation", Ty::Int),
    Field(8, "creationTimestamp", Ty::Time),
    Field(9, "deletionTimestamp", Ty::Time),
    Field(11, "labels", Ty::StrMap),
    Field(12, "annotations", Ty::StrMap),
    Field(13, "ownerReferences", Ty::Msgs(OWNER_REFERENCE)),
    Field(14, "finalizers", Ty::Strs),
];

const CONFIG_MAP: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "data", Ty::StrMap),
    Field(3, "binaryData", Ty::BytesMap),
    Field(4, "immutable", Ty::Bool),
];

const SECRET: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "data", Ty::BytesMap),
    Field(3, "type", Ty::Str),
    Field(4, "stringData", Ty::StrMap),
    Field(5, "immutable", Ty::Bool),
];

const NAMESPACE: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "spec", Ty::Msg(&[Field(1, "finalizers", Ty::Strs)])),
    Field(3, "status", Ty::Msg(&[Field(1, "phase", Ty::Str)])),
];

const PRECONDITIONS: &[Field] = &[
    Field(1, "uid", Ty::Str),
    Field(2, "resourceVersion", Ty::Str),
];

const DELETE_OPTIONS: &[Field] = &[
    Field(1, "gracePeriodSeconds", Ty::Int),
    Field(2, "preconditions", Ty::Msg(PRECONDITIONS)),
    Field(3, "orphanDependents", Ty::Bool),
    Field(4, "propagationPolicy", Ty::Str),
    Field(5, "dryRun", Ty::Strs),
];

const EVICTION: &[Field] = &[
    Field(1, "metadata", Ty::Msg(OBJECT_META)),
    Field(2, "deleteOptions", Ty::Msg(DELETE_OPTIONS)),
];

const TYPE_META: &[Field] = &[Field(1, "apiVersion", Ty::Str), Field(2, "kind", Ty::Str)];

const UNKNOWN: &[Field] = &[
    Field(1, "typeMeta", Ty::Msg(TYPE_META)),
    Field(2, "raw", Ty::Bytes),
    Field(3, "contentEncoding", Ty::Str),
    Field(4, "contentType", Ty::Str),
];

fn schema(kind: &str) -> Option<&'static [Field]> {
    Some(match kind {
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "Eviction" => EVICTION,
        "DeleteOptions" => DELETE_OPTIONS,
        _ => return None,
    })
}

/// One field as it came off the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first().ok_or("a truncated varint")?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint longer than 10 bytes".into())
    }

    fn next(&mut self) -> Result<Option<(u32, Wire<'a>)>, String> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = u32::try_from(tag >> 3).map_err(|_| "a field number out of range")?;
        let wire = match tag & 7 {
            0 => Wire::Varint(self.varint()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "a length out of range")?;
                if len > self.0.len() {
                    return Err(format!(
                        "field {number}: {len} bytes announced, {} left",
                        self.0.len()
                    ));
                }
                let (bytes, rest) = self.0.split_at(len);
                self.0 = rest;
                Wire::Bytes(bytes)
            }
            1 => {
                self.0 = self.0.get(8..).ok_or("a truncated fixed64")?;
                Wire::Fixed
            }
            5 => {
                self.0 = self.0.get(4..).ok_or("a truncated fixed32")?;
                Wire::Fixed
            }
            other => {
                return Err(format!(
                    "field {number}: wire type {other} is not protobuf's"
                ))
            }
        };
        Ok(Some((number, wire)))
    }
}

fn text(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what}: not UTF-8"))
}

fn map_entry(bytes: &[u8], what: &str) -> Result<(String, Vec<u8>), String> {
    let mut r = Reader(bytes);
    let (mut key, mut value) = (String::new(), Vec::new());
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Bytes(b)) => key = text(b, what)?,
            (2, Wire::Bytes(b)) => value = b.to_vec(),
            _ => {}
        }
    }
    Ok((key, value))
}

fn time(bytes: &[u8]) -> Result<Value, String> {
    let mut r = Reader(bytes);
    let mut seconds = 0i64;
    while let Some((n, w)) = r.next()? {
        if let (1, Wire::Varint(v)) = (n, w) {
            seconds = v as i64;
        }
    }
    if seconds == 0 {
        return Ok(Value::Null);
    }
    Ok(chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| Value::String(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
        .unwrap_or(Value::Null))
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn message(bytes: &[u8], fields: &[Field], path: &str) -> Result<Value, String> {
    let mut out = Map::new();
    let mut r = Reader(bytes);
    while let Some((number, wire)) = r.next()? {
        let Some(Field(_, name, ty)) = fields.iter().find(|f| f.0 == number) else {
            let empty = match wire {
                Wire::Varint(v) => v == 0,
                Wire::Bytes(b) => b.is_empty(),
                Wire::Fixed => false,
            };
            if empty {
                continue;
            }
            return Err(format!(
                "{path}: field number {number} is not one Shoal reads"
            ));
        };
        let here = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
        let bytes = |w: &Wire<'_>| match w {
            Wire::Bytes(b) => Ok(b.to_vec()),
            _ => Err(format!("{here}: expected length-delimited bytes")),
        };
        let value = match (ty, &wire) {
            (Ty::Str, _) => Value::String(text(&bytes(&wire)?, &here)?),
            (Ty::Bytes, _) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes(&wire)?))
            }
            (Ty::Int, Wire::Varint(v)) => Value::from(*v as i64),
            (Ty::Bool, Wire::Varint(v)) => Value::Bool(*v != 0),
            (Ty::Time, _) => time(&bytes(&wire)?)?,
            (Ty::Msg(inner), _) => message(&bytes(&wire)?, inner, &here)?,
            (Ty::StrMap | Ty::BytesMap, _) => {
                let (k, v) = map_entry(&bytes(&wire)?, &here)?;
                let v = match ty {
                    Ty::StrMap => Value::String(text(&v, &here)?),
                    _ => Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
                };
                let entry = out
                    .entry(name.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = entry {
                    m.insert(k, v);
                }
                continue;
            }
            (Ty::Strs | Ty::Msgs(_), _) => {
                let item = match ty {
                    Ty::Msgs(inner) => message(&bytes(&wire)?, inner, &here)?,
                    _ => Value::String(text(&bytes(&wire)?, &here)?),
                };
                let entry = out
                    .entry(name.to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = entry {
                    a.push(item);
                }
                continue;
            }
            _ => return Err(format!("{here}: unexpected wire type")),
        };
        if !is_empty(&value) {
            out.insert(name.to_string(), value);
        }
    }
    Ok(Value::Object(out))
}

/// The JSON of a protobuf-encoded body, with its `apiVersion` and `kind`.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with Kubernetes' protobuf magic (k8s\\0)")?;
    let unknown = message(envelope, UNKNOWN, "")?;
    let api_version = unknown["typeMeta"]["apiVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let kind = unknown["typeMeta"]["kind"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let fields = schema(&kind).ok_or_else(|| {
        format!(
            "a {kind} sent as protobuf is not read yet (Shoal reads ConfigMap, Secret, Namespace and Eviction that way): send it as JSON, e.g. kubectl create ... --dry-run=client -o yaml | kubectl apply -f -"
        )
    })?;
    let raw = unknown["raw"]
        .as_str()
        .and_then(|r| base64::engine::general_purpose::STANDARD.decode(r).ok())
        .unwrap_or_default();
    let mut object = message(&raw, fields, "")?;
    if let Value::Object(m) = &mut object {
        m.insert("apiVersion".into(), api_version.into());
        m.insert("kind".into(), kind.into());
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(n: u32, b: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(n) << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        bytes_field(1, k.as_bytes(), &mut e);
        bytes_field(2, v, &mut e);
        e
    }

    /// A Secret as kubectl encodes it: every scalar written, set or not.
    fn secret() -> Vec<u8> {
        let mut meta = Vec::new();
        bytes_field(1, b"token", &mut meta);
        bytes_field(2, b"", &mut meta);
        bytes_field(3, b"shop", &mut meta);
        bytes_field(8, b"", &mut meta); // creationTimestamp, zero
        bytes_field(11, &entry("app", b"web"), &mut meta);
        let mut s = Vec::new();
        bytes_field(1, &meta, &mut s);
        bytes_field(2, &entry("key", b"\x00\xffbin"), &mut s);
        bytes_field(3, b"Opaque", &mut s);
        let mut type_meta = Vec::new();
        bytes_field(1, b"v1", &mut type_meta);
        bytes_field(2, b"Secret", &mut type_meta);
        let mut unknown = Vec::new();
        bytes_field(1, &type_meta, &mut unknown);
        bytes_field(2, &s, &mut unknown);
        bytes_field(3, b"", &mut unknown);
        bytes_field(4, b"", &mut unknown);
        [MAGIC.to_vec(), unknown].concat()
    }

    #[test]
    fn a_secret_decodes_as_its_json() {
        let v = decode(&secret()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "token", "namespace": "shop", "labels": {"app": "web"}},
                "data": {"key": base64::engine::general_purpose::STANDARD.encode(b"\x00\xffbin")},
                "type": "Opaque"})
        );
    }

    #[test]
    fn broken_and_unread_bodies_are_named() {
        let body = secret();
        for cut in [5, body.len() / 2, body.len() - 1] {
            assert!(decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(b"{\"kind\": \"Secret\"}")
            .unwrap_err()
            .contains("magic"));
        let deployment = body.windows(6).position(|w| w == b"Secret").unwrap();
        let mut other = body.clone();
        other.splice(deployment..deployment + 6, b"Widget".iter().copied());
        assert!(decode(&other)
            .unwrap_err()
            .contains("a Widget sent as protobuf is not read"));
        // A field with a value that the table does not know is refused by number.
        let mut meta = Vec::new();
        bytes_field(1, b"n", &mut meta);
        let mut secret = Vec::new();
        bytes_field(1, &meta, &mut secret);
        bytes_field(9, b"x", &mut secret);
        let mut type_meta = Vec::new();
        bytes_field(2, b"Secret", &mut type_meta);
        let mut unknown = Vec::new();
        bytes_field(1, &type_meta, &mut unknown);
        bytes_field(2, &secret, &mut unknown);
        let extra = [MAGIC.to_vec(), unknown].concat();
        assert!(
            decode(&extra).unwrap_err().contains("field number 9"),
            "{:?}",
            decode(&extra)
        );
    }
}
