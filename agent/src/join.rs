//! The node's credential: got once with a join token, kept in `DATA_DIR/node.conf`, and
//! renewed by the node itself before it expires, for the same key (the key its name is bound
//! to on the controller). Everything that connects with it reads the current one here.

use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::error::{Error, Result};
use shoal_transport::pki::{csr_for, lifetime_of, new_key, renewal_due};
use shoal_transport::proto::{ErrorCode, Request, Response};
use shoal_transport::{Client, Credentials, JoinToken};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The node's credential, shared by the controller link and the peer connections; replaced
/// in place when it is renewed. A node that has not joined yet has none: it runs what it can
/// without one (its static pods) while it joins.
#[derive(Clone)]
pub struct NodeCredentials {
    path: PathBuf,
    current: Arc<RwLock<Option<Credentials>>>,
}

impl NodeCredentials {
    /// `DATA_DIR/node.conf` if the node joined before (pointed at `--server` if that moved);
    /// none yet otherwise, which needs a token to become one.
    pub fn load(config: &AgentConfig) -> Result<NodeCredentials> {
        let path = config.data_dir.join("node.conf");
        let creds = if path.exists() {
            let mut creds = Credentials::load(&path)?;
            if creds.server != config.server {
                creds.server = config.server.clone();
                creds.save(&path)?;
            }
            Some(creds)
        } else {
            if config.token.is_none() {
                return Err(no_token(&path));
            }
            None
        };
        Ok(NodeCredentials {
            path,
            current: Arc::new(RwLock::new(creds)),
        })
    }

    /// [`NodeCredentials::load`], joining now if the node has not: tried again with back-off
    /// while the controller cannot be reached or asks it to wait (a device may boot before its
    /// network is up), refused at once when the controller says no (a wrong or used-up token,
    /// a name taken), or when `shutdown` comes first.
    pub async fn load_or_join(
        config: &AgentConfig,
        shutdown: &CancellationToken,
    ) -> Result<NodeCredentials> {
        let creds = NodeCredentials::load(config)?;
        if creds.get().is_none() {
            let mut failures = 0u32;
            while let Err(e) = creds.join(config).await {
                failures = failures.saturating_add(1);
                let delay = creds.retry_after(e, failures)?;
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        return Err(Error::Join("stopped before the node joined".into()));
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        Ok(creds)
    }

    /// The credential as it is now; `None` until the node has joined.
    pub fn get(&self) -> Option<Credentials> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, creds: Credentials) {
        match self.current.write() {
            Ok(mut c) => *c = Some(creds),
            Err(poisoned) => *poisoned.into_inner() = Some(creds),
        }
    }

    /// Joins with the token (once; see [`NodeCredentials::retry_after`] for what a failure
    /// means) and keeps the credential.
    pub async fn join(&self, config: &AgentConfig) -> Result<Credentials> {
        let creds = join(config, &self.path).await?;
        self.set(creds.clone());
        Ok(creds)
    }

    /// After the `failures`th failed join with `e`: how long to wait before the next, or `e`
    /// itself when no later try can succeed.
    pub fn retry_after(&self, e: Error, failures: u32) -> Result<Duration> {
        if !passes(&e) {
            return Err(e);
        }
        let delay = Backoff::RECONNECT.delay(failures);
        tracing::warn!(error = %shoal_transport::report(&e), retry_in = ?delay, "cannot join the cluster yet; trying again");
        Ok(delay)
    }

    /// Renews the certificate over `client` if it is due (or if the credential predates the
    /// peer CA); the connection in use goes on with the old one, the next uses the new.
    /// Returns whether it renewed.
    pub async fn renew_if_due(&self, client: &Client) -> Result<bool> {
        let Some(creds) = self.get() else {
            return Ok(false);
        };
        let (until, lifetime) = lifetime_of(&creds.client_certificate)?;
        let stale = creds.peer_certificate_authority.is_none();
        if !stale && !renewal_due(until, lifetime, SystemTime::now()) {
            return Ok(false);
        }
        let csr_pem = csr_for(&creds.client_key, "renewal")?;
        let signed = client
            .call(&Request::Renew { csr_pem })
            .await?
            .into_signed()
            .map_err(Error::Server)?;
        let renewed = Credentials {
            certificate_authority: signed.ca_pem,
            client_certificate: signed.cert_pem,
            peer_certificate_authority: Some(signed.peer_ca_pem),
            ..creds
        };
        renewed.save(&self.path)?;
        let (until, _) = lifetime_of(&renewed.client_certificate)?;
        self.set(renewed);
        tracing::info!(
            valid_until = %chrono::DateTime::<chrono::Utc>::from(until).to_rfc3339(),
            "renewed the node's certificate"
        );
        Ok(true)
    }
}

/// Renews the node's certificate over the controller link whenever it is due: checked on
/// every new connection and every `period`; a failure is tried again a period later, long
/// before the certificate expires.
pub async fn keep_renewed(
    creds: NodeCredentials,
    mut link: crate::config::Link,
    period: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let client = link.borrow_and_update().clone();
        if let Some(client) = client {
            if let Err(e) = creds.renew_if_due(&client).await {
                tracing::warn!(error = %shoal_transport::report(&e), "cannot renew the node's certificate; trying again later");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = link.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Whether a failed join may succeed later: the controller out of reach (connecting, a
/// connection lost) or busy. A CA that does not match the token never will.
fn passes(e: &Error) -> bool {
    use shoal_transport::Error as T;
    match e {
        Error::Server(_) => true,
        Error::Transport(t) => matches!(
            t,
            T::Connect { .. } | T::Connection(_) | T::Stream(_) | T::Truncated { .. }
        ),
        _ => false,
    }
}

fn no_token(path: &std::path::Path) -> Error {
    Error::Join(format!(
        "this node has not joined yet and no --token or --token-file was given ({} is missing)",
        path.display()
    ))
}

/// Joins with the token: a new key (it never leaves the node), the certificate for it, and the
/// token file removed once it has served.
async fn join(config: &AgentConfig, path: &std::path::Path) -> Result<Credentials> {
    let token = config.token.as_deref().ok_or_else(|| no_token(path))?;
    let token = JoinToken::parse(token)?;
    // The token pins the CA: a server with another CA is refused before anything is sent.
    let client = Client::connect_with_token(&config.server, &token).await?;
    let key_pem = new_key()?;
    let csr_pem = csr_for(&key_pem, &format!("system:node:{}", config.name))?;
    let answer = client
        .call(&Request::Join {
            secret: token.secret.clone(),
            node_name: config.name.clone(),
            csr_pem,
        })
        .await?;
    client.close().await;
    if let Response::Error(e) = &answer {
        if matches!(e.code, ErrorCode::TooManyRequests | ErrorCode::Internal) {
            // Not a no: the controller is busy or failed on its side.
            return Err(Error::Server(e.message.clone()));
        }
    }
    let signed = answer.into_signed().map_err(Error::Join)?;
    let creds = Credentials {
        server: config.server.clone(),
        certificate_authority: signed.ca_pem,
        client_certificate: signed.cert_pem,
        client_key: key_pem,
        peer_certificate_authority: Some(signed.peer_ca_pem),
    };
    creds.save(path)?;
    tracing::info!(node = %config.name, "joined the cluster");
    if let Some(file) = &config.token_file {
        // The token opens the cluster to new devices: it should not outlive its use here.
        match std::fs::remove_file(file) {
            Ok(()) => {
                tracing::info!(file = %file.display(), "removed the join token file: the node has its own credential now")
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %shoal_transport::report(&e), "cannot remove the join token file; remove it by hand")
            }
        }
    }
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_is_tried_again_only_when_it_may_succeed_later() {
        use shoal_transport::Error as T;
        let connect = T::Connect {
            addr: "127.0.0.1:6443".into(),
            message: "timed out".into(),
        };
        assert!(passes(&Error::Transport(connect)));
        assert!(passes(&Error::Server("busy".into())));
        let ca = T::CaMismatch {
            expected: "a".into(),
            actual: "b".into(),
        };
        assert!(!passes(&Error::Transport(ca)));
        assert!(!passes(&Error::Join("the join token is not valid".into())));
        assert!(!passes(&Error::Config("no token".into())));
    }

    #[test]
    fn a_certificate_is_renewed_after_two_thirds_of_its_life() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let life = Duration::from_secs(300);
        let until = t0 + life;
        let cases = [
            (0, false),
            (199, false),
            (200, true),
            (299, true),
            (400, true),
        ];
        for (after, due) in cases {
            let now = t0 + Duration::from_secs(after);
            assert_eq!(renewal_due(until, life, now), due, "{after}s in");
        }
    }
}
