//! Getting the node's certificate: once, with the join token; afterwards from the data dir.

use crate::error::{Error, Result};
use crate::AgentConfig;
use shoal_transport::pki::node_key_and_csr;
use shoal_transport::proto::{Request, Response};
use shoal_transport::{Client, Credentials, JoinToken};

/// The node's credential: `DATA_DIR/node.conf` if it joined before, else joins now.
pub async fn credentials(config: &AgentConfig) -> Result<Credentials> {
    let path = config.data_dir.join("node.conf");
    if path.exists() {
        let mut creds = Credentials::load(&path)?;
        if creds.server != config.server {
            creds.server = config.server.clone();
            creds.save(&path)?;
        }
        return Ok(creds);
    }
    let token = config.token.as_deref().ok_or_else(|| {
        Error::Join(format!(
            "this node has not joined yet and no --token was given ({} is missing)",
            path.display()
        ))
    })?;
    let token = JoinToken::parse(token)?;
    // The token pins the CA: a server with another CA is refused before anything is sent.
    let client = Client::connect_with_token(&config.server, &token).await?;
    let (key_pem, csr_pem) = node_key_and_csr(&config.name)?;
    let answer = client
        .call(&Request::Join {
            secret: token.secret.clone(),
            node_name: config.name.clone(),
            csr_pem,
        })
        .await?;
    client.close().await;
    let (cert_pem, ca_pem) = match answer {
        Response::Joined { cert_pem, ca_pem } => (cert_pem, ca_pem),
        Response::Error(e) => return Err(Error::Join(e.message)),
        other => return Err(Error::Join(format!("unexpected answer {other:?}"))),
    };
    let creds = Credentials {
        server: config.server.clone(),
        certificate_authority: ca_pem,
        client_certificate: cert_pem,
        client_key: key_pem,
    };
    creds.save(&path)?;
    tracing::info!(node = %config.name, "joined the cluster");
    Ok(creds)
}
