//! The client credential file (`admin.conf`), Shoal's kubeconfig: where the controller is, the
//! CA to trust, and the client certificate and key to present.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// `HOST:PORT` of the controller.
    pub server: String,
    /// CA certificate, PEM.
    pub certificate_authority: String,
    /// Client certificate, PEM.
    pub client_certificate: String,
    /// Client key, PEM.
    pub client_key: String,
    /// The CA that signs the certificates nodes serve each other with, PEM (nodes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_certificate_authority: Option<String>,
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Credentials> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the credential file {}: {e} (start `shoal controller` or `shoal up`, or pass --config / SHOAL_CONFIG)",
                path.display()
            ))
        })?;
        serde_yaml_ng::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_yaml_ng::to_string(self).map_err(|e| Error::Config(e.to_string()))?;
        crate::pki::write_private(path, text.as_bytes())
    }
}
