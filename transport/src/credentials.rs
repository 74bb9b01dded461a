//! The client credential file (`admin.conf`, a node's `node.conf`): a kubeconfig, so kubectl
//! reads the same file Shoal's own verbs do. It says where the controller is, the CA to trust,
//! and the client certificate and key to present, all inline (`*-data`).

use crate::error::{Error, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The name every credential file gives its cluster and context.
const CLUSTER: &str = "shoal";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `HOST:PORT` of the controller (QUIC on UDP, HTTPS on TCP).
    pub server: String,
    /// CA certificate, PEM.
    pub certificate_authority: String,
    /// Client certificate, PEM.
    pub client_certificate: String,
    /// Client key, PEM.
    pub client_key: String,
    /// The CA that signs the certificates nodes serve each other with, PEM (nodes only).
    pub peer_certificate_authority: Option<String>,
}

/// The file as Shoal wrote it before it was a kubeconfig: still read, rewritten on next save.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Flat {
    server: String,
    certificate_authority: String,
    client_certificate: String,
    client_key: String,
    #[serde(default)]
    peer_certificate_authority: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    clusters: Vec<Named<Cluster>>,
    users: Vec<Named<User>>,
    contexts: Vec<Named<Context>>,
    #[serde(default)]
    current_context: String,
}

#[derive(Serialize, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize, Deserialize)]
struct Cluster {
    cluster: ClusterData,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterData {
    server: String,
    #[serde(default)]
    certificate_authority_data: String,
    /// The name the controller's certificate always carries, whatever address reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls_server_name: Option<String>,
    /// Shoal's own: the peer CA of a node's file (kubectl ignores fields it does not know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peer_certificate_authority_data: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct User {
    user: UserData,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct UserData {
    #[serde(default)]
    client_certificate_data: String,
    #[serde(default)]
    client_key_data: String,
}

#[derive(Serialize, Deserialize)]
struct Context {
    context: ContextData,
}

#[derive(Serialize, Deserialize)]
struct ContextData {
    cluster: String,
    user: String,
}

fn encode(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem)
}

fn decode(what: &str, data: &str) -> std::result::Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| format!("{what} is not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("{what} is not PEM text"))
}

/// `HOST:PORT` from a kubeconfig's `https://HOST:PORT` (a path after it is not Shoal's).
fn host_port(server: &str) -> std::result::Result<String, String> {
    let rest = server
        .strip_prefix("https://")
        .ok_or_else(|| format!("server {server:?} is not an https:// address"))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(format!("server {server:?} is not https://HOST:PORT"));
    }
    Ok(rest.to_string())
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Credentials> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the credential file {}: {e} (start `shoal controller` or `shoal up`, or pass --config / SHOAL_CONFIG)",
                path.display()
            ))
        })?;
        Credentials::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Reads a kubeconfig (its current context), or the flat file of earlier releases.
    pub fn parse(text: &str) -> std::result::Result<Credentials, String> {
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        if value.get("clusters").is_none() {
            let flat: Flat = serde_yaml_ng::from_value(value).map_err(|e| e.to_string())?;
            return Ok(Credentials {
                server: flat.server,
                certificate_authority: flat.certificate_authority,
                client_certificate: flat.client_certificate,
                client_key: flat.client_key,
                peer_certificate_authority: flat.peer_certificate_authority,
            });
        }
        let config: Kubeconfig = serde_yaml_ng::from_value(value).map_err(|e| e.to_string())?;
        let context = config
            .contexts
            .iter()
            .find(|c| c.name == config.current_context)
            .or_else(|| config.contexts.first())
            .ok_or("the kubeconfig has no context")?;
        let cluster = config
            .clusters
            .iter()
            .find(|c| c.name == context.value.context.cluster)
            .ok_or_else(|| format!("context {:?} names no cluster of the file", context.name))?;
        let user = config
            .users
            .iter()
            .find(|u| u.name == context.value.context.user)
            .ok_or_else(|| format!("context {:?} names no user of the file", context.name))?;
        let c = &cluster.value.cluster;
        let u = &user.value.user;
        Ok(Credentials {
            server: host_port(&c.server)?,
            certificate_authority: decode(
                "certificate-authority-data",
                &c.certificate_authority_data,
            )?,
            client_certificate: decode("client-certificate-data", &u.client_certificate_data)?,
            client_key: decode("client-key-data", &u.client_key_data)?,
            peer_certificate_authority: c
                .peer_certificate_authority_data
                .as_deref()
                .map(|d| decode("peer-certificate-authority-data", d))
                .transpose()?,
        })
    }

    /// The kubeconfig text of these credentials; the user is named after the certificate's
    /// identity (`admin`, `system:node:pi-1`).
    pub fn to_kubeconfig(&self) -> Result<String> {
        let user = match crate::pki::pem_to_der(&self.client_certificate)
            .map(|der| crate::pki::identity_of(&der))
        {
            Ok(crate::Identity::Admin(name)) => name,
            Ok(crate::Identity::Node(name)) => format!("system:node:{name}"),
            _ => CLUSTER.to_string(),
        };
        let config = Kubeconfig {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![Named {
                name: CLUSTER.into(),
                value: Cluster {
                    cluster: ClusterData {
                        server: format!("https://{}", self.server),
                        certificate_authority_data: encode(&self.certificate_authority),
                        tls_server_name: Some(crate::pki::SERVER_NAME.into()),
                        peer_certificate_authority_data: self
                            .peer_certificate_authority
                            .as_deref()
                            .map(encode),
                    },
                },
            }],
            users: vec![Named {
                name: user.clone(),
                value: User {
                    user: UserData {
                        client_certificate_data: encode(&self.client_certificate),
                        client_key_data: encode(&self.client_key),
                    },
                },
            }],
            contexts: vec![Named {
                name: CLUSTER.into(),
                value: Context {
                    context: ContextData {
                        cluster: CLUSTER.into(),
                        user,
                    },
                },
            }],
            current_context: CLUSTER.into(),
        };
        serde_yaml_ng::to_string(&config).map_err(|e| Error::Config(e.to_string()))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::pki::write_private(path, self.to_kubeconfig()?.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credentials {
        Credentials {
            server: "127.0.0.1:6443".into(),
            certificate_authority: "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"
                .into(),
            client_certificate: "cert".into(),
            client_key: "key".into(),
            peer_certificate_authority: Some("peer".into()),
        }
    }

    #[test]
    fn a_kubeconfig_reads_back_as_written() {
        let text = sample().to_kubeconfig().unwrap();
        assert!(text.contains("server: https://127.0.0.1:6443"), "{text}");
        assert!(text.contains("current-context: shoal"), "{text}");
        assert_eq!(Credentials::parse(&text).unwrap(), sample());
    }

    #[test]
    fn the_flat_file_of_earlier_releases_still_reads() {
        let flat =
            "server: 10.0.0.1:6443\ncertificateAuthority: ca\nclientCertificate: c\nclientKey: k\n";
        let creds = Credentials::parse(flat).unwrap();
        assert_eq!(creds.server, "10.0.0.1:6443");
        assert_eq!(creds.client_key, "k");
        assert_eq!(creds.peer_certificate_authority, None);
    }

    #[test]
    fn a_broken_kubeconfig_says_what_is_wrong() {
        let text = sample().to_kubeconfig().unwrap();
        let no_scheme = text.replace("https://", "");
        assert!(Credentials::parse(&no_scheme)
            .unwrap_err()
            .contains("not an https:// address"));
        let bad_data = text.replace("client-key-data: ", "client-key-data: '%%%'\n  x: ");
        assert!(Credentials::parse(&bad_data).is_err());
        let other = text.replace("current-context: shoal", "current-context: gone");
        // An unknown current context falls back to the first one, as Shoal writes one only.
        assert!(Credentials::parse(&other).is_ok());
    }
}
