//! `Object`: any one of the kinds, with the operations every kind shares.
//!
//! Objects travel and rest as JSON (as the Kubernetes API server keeps them): it is
//! self-describing, so optional fields may be omitted and later versions may add fields.

use crate::error::{Error, Result};
use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::objects::*;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! objects {
    ($($variant:ident),* $(,)?) => {
        #[derive(Clone, Debug, PartialEq)]
        pub enum Object {
            $($variant($variant),)*
        }

        impl Object {
            pub fn kind(&self) -> Kind {
                match self {
                    $(Object::$variant(_) => Kind::$variant,)*
                }
            }

            pub fn metadata(&self) -> &ObjectMeta {
                match self {
                    $(Object::$variant(o) => &o.metadata,)*
                }
            }

            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(Object::$variant(o) => &mut o.metadata,)*
                }
            }

            fn type_fields_mut(&mut self) -> (&mut String, &mut String) {
                match self {
                    $(Object::$variant(o) => (&mut o.api_version, &mut o.kind),)*
                }
            }

            /// Decodes one object of a known kind from any serde source.
            pub fn deserialize_as<'de, D: Deserializer<'de>>(kind: Kind, d: D) -> Result<Object, D::Error> {
                Ok(match kind {
                    $(Kind::$variant => Object::$variant(<$variant>::deserialize(d)?),)*
                })
            }
        }

        impl Serialize for Object {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Object::$variant(o) => o.serialize(s),)*
                }
            }
        }

        $(
            impl From<$variant> for Object {
                fn from(o: $variant) -> Object {
                    Object::$variant(o)
                }
            }

            impl TryFrom<Object> for $variant {
                type Error = Error;
                fn try_from(o: Object) -> Result<$variant> {
                    match o {
                        Object::$variant(v) => Ok(v),
                        other => Err(Error::Decode(format!(
                            "expected {}, got {}", stringify!($variant), other.kind()
                        ))),
                    }
                }
            }
        )*
    };
}

objects!(
    Namespace,
    Node,
    Pod,
    ReplicaSet,
    Deployment,
    DaemonSet,
    Job,
    Service,
    Endpoints,
    ConfigMap,
    Secret,
    Event,
    PersistentVolumeClaim,
    PersistentVolume,
    StorageClass,
    CronJob,
    NetworkPolicy,
    AgentUpgrade,
);

impl Object {
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// The namespace for namespaced kinds (`default` when unset), `None` for cluster kinds.
    pub fn namespace(&self) -> Option<&str> {
        self.kind()
            .namespaced()
            .then(|| self.metadata().namespace_or_default())
    }

    /// Fills `apiVersion` and `kind` (and the default namespace) so the object reads back
    /// exactly as a Kubernetes API server would show it.
    pub fn normalize(&mut self) {
        let kind = self.kind();
        let (api_version, k) = self.type_fields_mut();
        *api_version = kind.api_version().to_string();
        *k = kind.name().to_string();
        let meta = self.metadata_mut();
        if kind.namespaced() {
            if meta.namespace.is_none() {
                meta.namespace = Some("default".to_string());
            }
        } else {
            meta.namespace = None;
        }
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Encode(e.to_string()))
    }

    pub fn from_json(bytes: &[u8]) -> Result<Object> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))?;
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .and_then(Kind::from_manifest)
            .ok_or_else(|| {
                let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
                Error::Decode(format!("kind: {kind:?} is not a kind Shoal serves"))
            })?;
        Object::deserialize_as(kind, value).map_err(|e| Error::Decode(e.to_string()))
    }

    /// `deployment.apps/web` style reference, as kubectl prints after apply.
    pub fn reference(&self) -> String {
        let kind = self.kind();
        let group = kind
            .api_version()
            .split_once('/')
            .map(|(g, _)| format!(".{g}"))
            .unwrap_or_default();
        format!(
            "{}{}/{}",
            kind.name().to_ascii_lowercase(),
            group,
            self.name()
        )
    }

    /// The pod spec this object runs: a Pod's own, or the template of a workload.
    pub fn pod_spec_mut(&mut self) -> Option<&mut PodSpec> {
        match self {
            Object::Pod(p) => Some(&mut p.spec),
            Object::ReplicaSet(o) => Some(&mut o.spec.template.spec),
            Object::Deployment(o) => Some(&mut o.spec.template.spec),
            Object::DaemonSet(o) => Some(&mut o.spec.template.spec),
            Object::Job(o) => Some(&mut o.spec.template.spec),
            Object::CronJob(o) => Some(&mut o.spec.job_template.spec.template.spec),
            _ => None,
        }
    }

    pub fn into_typed<T: TryFrom<Object, Error = Error>>(self) -> Result<T> {
        T::try_from(self)
    }

    /// Serializes the `spec`-like part that drives `metadata.generation`: everything but
    /// metadata and status.
    pub fn spec_fingerprint(&self) -> Result<serde_json::Value> {
        let mut v = serde_json::to_value(self).map_err(|e| Error::Encode(e.to_string()))?;
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        Ok(v)
    }

    /// This object with the status of `source` (a status write keeps the stored spec).
    pub fn with_status_of(&self, source: &Object) -> Result<Object> {
        let encode = |o: &Object| serde_json::to_value(o).map_err(|e| Error::Encode(e.to_string()));
        let mut merged = encode(self)?;
        let status = encode(source)?.get("status").cloned();
        if let Some(m) = merged.as_object_mut() {
            match status {
                Some(st) => m.insert("status".into(), st),
                None => m.remove("status"),
            };
        }
        Object::deserialize_as(self.kind(), merged).map_err(|e| Error::Decode(e.to_string()))
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .and_then(Kind::from_manifest)
            .ok_or_else(|| serde::de::Error::custom("object has no known kind"))?;
        Object::deserialize_as(kind, value).map_err(serde::de::Error::custom)
    }
}
