//! Kubernetes' protobuf encoding of request bodies, which kubectl's typed clients send for
//! built-in kinds (`create configmap|secret|deployment|job|service`, the Eviction of
//! `drain`): decoded into the JSON the rest of the door reads, so what follows (unknown-field
//! warnings, validation) is the same as for JSON. The envelope is `k8s\0` and a
//! `runtime.Unknown` holding the type and the object's bytes. The wire layout of the served
//! groups is generated from Kubernetes' `generated.proto` and `types.go` by
//! `tests/data/k8s_protobuf.py` (`protobuf.json.gz`); apimachinery's meta/v1 messages are
//! described below. A field the layout does not know is refused by number when it holds a
//! value (gogo writes every non-pointer scalar, set or not, so empty ones are passed over).

use base64::Engine as _;
use serde_json::{Map, Value};
use std::collections::HashMap;

const MAGIC: &[u8] = b"k8s\0";

/// apimachinery's messages, as the generated layout describes the others: `[number, JSON
/// name, type, repeated, pointer]`.
const META: &str = r#"{
 "meta.ObjectMeta": [[1,"name","string",false,false],[2,"generateName","string",false,false],
  [3,"namespace","string",false,false],[5,"uid","string",false,false],
  [6,"resourceVersion","string",false,false],[7,"generation","int",false,false],
  [8,"creationTimestamp","Time",false,false],[9,"deletionTimestamp","Time",false,true],
  [10,"deletionGracePeriodSeconds","int",false,true],
  [11,"labels","map:string",false,false],[12,"annotations","map:string",false,false],
  [13,"ownerReferences","meta.OwnerReference",true,false],[14,"finalizers","string",true,false]],
 "meta.OwnerReference": [[1,"kind","string",false,false],[3,"name","string",false,false],
  [4,"uid","string",false,false],[5,"apiVersion","string",false,false],
  [6,"controller","bool",false,true],[7,"blockOwnerDeletion","bool",false,true]],
 "meta.LabelSelector": [[1,"matchLabels","map:string",false,false],
  [2,"matchExpressions","meta.LabelSelectorRequirement",true,false]],
 "meta.LabelSelectorRequirement": [[1,"key","string",false,false],
  [2,"operator","string",false,false],[3,"values","string",true,false]],
 "meta.DeleteOptions": [[1,"gracePeriodSeconds","int",false,true],
  [2,"preconditions","meta.Preconditions",false,true],[3,"orphanDependents","bool",false,true],
  [4,"propagationPolicy","string",false,true],[5,"dryRun","string",true,false]],
 "meta.Preconditions": [[1,"uid","string",false,true],[2,"resourceVersion","string",false,true]],
 "meta.TypeMeta": [[1,"apiVersion","string",false,false],[2,"kind","string",false,false]],
 "meta.Unknown": [[1,"typeMeta","meta.TypeMeta",false,false],[2,"raw","bytes",false,false],
  [3,"contentEncoding","string",false,false],[4,"contentType","string",false,false]]
}"#;

/// One field of a message: number, JSON name, type, repeated, pointer.
type Field = (u32, String, String, bool, bool);

/// Every message's fields, by message name.
fn layout() -> &'static HashMap<String, Vec<Field>> {
    static LAYOUT: std::sync::OnceLock<HashMap<String, Vec<Field>>> = std::sync::OnceLock::new();
    LAYOUT.get_or_init(|| {
        let compressed: &[u8] = include_bytes!("protobuf.json.gz");
        let mut text = Vec::new();
        let generated =
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(compressed), &mut text)
                .ok()
                .and_then(|_| serde_json::from_slice::<HashMap<String, Vec<Field>>>(&text).ok());
        let mut all = generated.unwrap_or_else(|| {
            tracing::error!("the protobuf layout built into this binary does not decode");
            HashMap::new()
        });
        if let Ok(meta) = serde_json::from_str::<HashMap<String, Vec<Field>>>(META) {
            all.extend(meta);
        }
        all
    })
}

/// One field as it came off the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed64(u64),
    Fixed32,
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
                let (b, rest) = self
                    .0
                    .split_first_chunk::<8>()
                    .ok_or("a truncated fixed64")?;
                self.0 = rest;
                Wire::Fixed64(u64::from_le_bytes(*b))
            }
            5 => {
                self.0 = self.0.get(4..).ok_or("a truncated fixed32")?;
                Wire::Fixed32
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

fn b64(bytes: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A small message's varint fields and its length-delimited ones, by number.
type Small = (HashMap<u32, u64>, HashMap<u32, Vec<u8>>);

/// The varint fields of a small well-known message, by number (Time, IntOrString, Duration),
/// and its first string or bytes field.
fn small(bytes: &[u8]) -> Result<Small, String> {
    let (mut ints, mut blobs) = (HashMap::new(), HashMap::new());
    let mut r = Reader(bytes);
    while let Some((n, w)) = r.next()? {
        match w {
            Wire::Varint(v) => {
                ints.insert(n, v);
            }
            Wire::Bytes(b) => {
                blobs.insert(n, b.to_vec());
            }
            _ => {}
        }
    }
    Ok((ints, blobs))
}

/// One value of type `ty` from its wire form; `Null` for a zero value (not set).
fn value(ty: &str, wire: &Wire<'_>, path: &str) -> Result<Value, String> {
    let bytes = || match wire {
        Wire::Bytes(b) => Ok(*b),
        _ => Err(format!(
            "{path}: expected length-delimited bytes for a {ty}"
        )),
    };
    Ok(match (ty, wire) {
        ("string", _) => Value::String(text(bytes()?, path)?),
        ("bytes", _) => b64(bytes()?),
        ("int", Wire::Varint(v)) => Value::from(*v as i64),
        ("bool", Wire::Varint(v)) => Value::Bool(*v != 0),
        ("double", Wire::Fixed64(v)) => serde_json::Number::from_f64(f64::from_bits(*v))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        ("Time" | "MicroTime", _) => {
            let (ints, _) = small(bytes()?)?;
            let seconds = ints.get(&1).copied().unwrap_or(0) as i64;
            let nanos = ints.get(&2).copied().unwrap_or(0) as u32;
            match chrono::DateTime::from_timestamp(seconds, nanos) {
                Some(t) if seconds != 0 && ty == "Time" => {
                    Value::String(t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                }
                Some(t) if seconds != 0 => {
                    Value::String(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
                }
                _ => Value::Null,
            }
        }
        ("Quantity", _) => {
            let (_, blobs) = small(bytes()?)?;
            Value::String(text(blobs.get(&1).map(Vec::as_slice).unwrap_or(b""), path)?)
        }
        ("IntOrString", _) => {
            let (ints, blobs) = small(bytes()?)?;
            if ints.get(&1).copied().unwrap_or(0) == 1 {
                Value::String(text(blobs.get(&3).map(Vec::as_slice).unwrap_or(b""), path)?)
            } else {
                Value::from(ints.get(&2).copied().unwrap_or(0) as i64 as i32)
            }
        }
        ("Duration", _) => {
            let (ints, _) = small(bytes()?)?;
            let ns = ints.get(&1).copied().unwrap_or(0);
            Value::String(format!("{}ms", ns / 1_000_000))
        }
        ("RawExtension", _) => {
            let (_, blobs) = small(bytes()?)?;
            let raw = blobs.get(&1).map(Vec::as_slice).unwrap_or(b"");
            serde_json::from_slice(raw).unwrap_or(Value::Null)
        }
        (msg, Wire::Bytes(b)) => message(b, msg, path)?,
        _ => return Err(format!("{path}: a {ty} with an unexpected wire type")),
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The JSON of message `name` from its bytes.
fn message(bytes: &[u8], name: &str, path: &str) -> Result<Value, String> {
    let fields = layout()
        .get(name)
        .ok_or_else(|| format!("{path}: no layout for message {name}"))?;
    let mut out = Map::new();
    let mut r = Reader(bytes);
    while let Some((number, wire)) = r.next()? {
        let Some((_, json_name, ty, repeated, pointer)) = fields.iter().find(|f| f.0 == number)
        else {
            let empty = match wire {
                Wire::Varint(v) | Wire::Fixed64(v) => v == 0,
                Wire::Bytes(b) => b.is_empty(),
                Wire::Fixed32 => false,
            };
            if empty {
                continue;
            }
            return Err(format!(
                "{path}: field number {number} of {name} is not one Shoal reads"
            ));
        };
        let here = if path.is_empty() {
            json_name.clone()
        } else {
            format!("{path}.{json_name}")
        };
        if let Some(value_type) = ty.strip_prefix("map:") {
            let Wire::Bytes(entry) = wire else {
                return Err(format!("{here}: a map entry that is not a message"));
            };
            let (mut key, mut val) = (String::new(), Value::Null);
            let mut r = Reader(entry);
            while let Some((n, w)) = r.next()? {
                match n {
                    1 => key = text(w_bytes(&w, &here)?, &here)?,
                    2 => val = value(value_type, &w, &here)?,
                    _ => {}
                }
            }
            if val.is_null() {
                val = match value_type {
                    "string" | "bytes" | "Quantity" => Value::String(String::new()),
                    _ => Value::Object(Map::new()),
                };
            }
            if let Value::Object(m) = out
                .entry(json_name.clone())
                .or_insert_with(|| Value::Object(Map::new()))
            {
                m.insert(key, val);
            }
            continue;
        }
        let v = value(ty, &wire, &here)?;
        if *repeated {
            let item = if v.is_null() && !is_scalar(ty) {
                Value::Object(Map::new())
            } else {
                v
            };
            if let Value::Array(a) = out
                .entry(json_name.clone())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                a.push(item);
            }
            continue;
        }
        // A zero value is "not set" unless the Go field is a pointer (then it was set, to
        // zero or empty: `replicas: 0`, `emptyDir: {}`).
        if *pointer && v.is_null() && !is_scalar(ty) {
            out.insert(json_name.clone(), Value::Object(Map::new()));
        } else if *pointer && !v.is_null() || !is_zero(&v) {
            out.insert(json_name.clone(), v);
        }
    }
    Ok(Value::Object(out))
}

fn is_scalar(ty: &str) -> bool {
    matches!(ty, "string" | "bytes" | "int" | "bool" | "double")
}

fn w_bytes<'a>(w: &Wire<'a>, path: &str) -> Result<&'a [u8], String> {
    match w {
        Wire::Bytes(b) => Ok(b),
        _ => Err(format!("{path}: expected length-delimited bytes")),
    }
}

/// The JSON of a protobuf-encoded body, with its `apiVersion` and `kind`.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with Kubernetes' protobuf magic (k8s\\0)")?;
    let unknown = message(envelope, "meta.Unknown", "")?;
    let api_version = unknown["typeMeta"]["apiVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let kind = unknown["typeMeta"]["kind"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let served = shoal_api::Kind::from_manifest(&kind).is_some() || kind == "Eviction";
    if !served {
        return Err(format!(
            "a {kind:?} sent as protobuf is not a kind Shoal serves"
        ));
    }
    let raw = unknown["raw"]
        .as_str()
        .and_then(|r| base64::engine::general_purpose::STANDARD.decode(r).ok())
        .unwrap_or_default();
    let mut object = message(&raw, &kind, "")?;
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

    fn varint_field(n: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(n) << 3, out);
        varint(v, out);
    }

    fn envelope(kind: &str, api_version: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = Vec::new();
        bytes_field(1, api_version.as_bytes(), &mut type_meta);
        bytes_field(2, kind.as_bytes(), &mut type_meta);
        let mut unknown = Vec::new();
        bytes_field(1, &type_meta, &mut unknown);
        bytes_field(2, raw, &mut unknown);
        [MAGIC.to_vec(), unknown].concat()
    }

    /// A Deployment as `kubectl create deployment web --image=nginx --replicas=0` encodes it:
    /// a pointer set to zero (replicas) stays, non-pointer zeros (minReadySeconds, empty
    /// strings, the empty status) are "not set".
    #[test]
    fn a_deployment_decodes_with_go_presence() {
        let mut meta = Vec::new();
        bytes_field(1, b"web", &mut meta);
        bytes_field(11, &entry("app", b"web"), &mut meta);
        let mut container = Vec::new();
        bytes_field(1, b"nginx", &mut container);
        bytes_field(2, b"nginx", &mut container);
        bytes_field(5, b"", &mut container); // workingDir, empty
        bytes_field(8, b"", &mut container); // resources {}
        let mut pod_spec = Vec::new();
        bytes_field(2, &container, &mut pod_spec);
        bytes_field(3, b"Always", &mut pod_spec);
        varint_field(11, 0, &mut pod_spec); // hostNetwork false
        let mut template = Vec::new();
        let mut tmeta = Vec::new();
        bytes_field(11, &entry("app", b"web"), &mut tmeta);
        bytes_field(1, &tmeta, &mut template);
        bytes_field(2, &pod_spec, &mut template);
        let mut selector = Vec::new();
        bytes_field(1, &entry("app", b"web"), &mut selector);
        let mut spec = Vec::new();
        varint_field(1, 0, &mut spec); // replicas: 0 (a pointer)
        bytes_field(2, &selector, &mut spec);
        bytes_field(3, &template, &mut spec);
        bytes_field(4, b"", &mut spec); // strategy {}
        varint_field(5, 0, &mut spec); // minReadySeconds 0
        let mut d = Vec::new();
        bytes_field(1, &meta, &mut d);
        bytes_field(2, &spec, &mut d);
        bytes_field(3, b"", &mut d); // status {}
        let v = decode(&envelope("Deployment", "apps/v1", &d)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "nginx", "image": "nginx"}],
                            "restartPolicy": "Always"}}}})
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
        let at = body.windows(6).position(|w| w == b"Secret").unwrap();
        let mut other = body.clone();
        other.splice(at..at + 6, b"Widget".iter().copied());
        let err = decode(&other).unwrap_err();
        assert!(
            err.contains("\"Widget\" sent as protobuf is not a kind Shoal serves"),
            "{err}"
        );
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
