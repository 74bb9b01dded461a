//! Trust: join tokens, and the binding of every certificate-holding name (a node, an admin
//! credential) to the one key allowed to use it. Every request passes [`Service::authenticate`]
//! before it is authorized, whichever door it came through: a certificate the CA signed is not
//! enough on its own, its key must still be the one bound to its name. Deleting a node or a
//! credential removes the binding, which revokes every certificate of that name at once (and
//! the doors close the connections that hold one).
//!
//! The records are Secrets in the system namespace (sealed at rest like every Secret), as
//! Kubernetes keeps bootstrap tokens in kube-system and K3s its node passwords:
//! `join-token-ID`, `node-key-NAME`, `credential-NAME`.

use crate::error::{Error, Result};
use crate::service::{Service, SYSTEM_NAMESPACE};
use crate::store::{ObjectKey, Op};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use shoal_api::{Kind, Object, ObjectMeta, Secret};
use shoal_transport::pki::{check_node_name, fingerprint_of_csr, JoinToken};
use shoal_transport::proto::{CredentialInfo, Response, TokenInfo, WireError};
use shoal_transport::Identity;
use std::collections::BTreeMap;
use std::time::Duration;

pub const TOKEN_TYPE: &str = "shoal.io/bootstrap-token";
const NODE_KEY_TYPE: &str = "shoal.dev/node-key";
const CREDENTIAL_TYPE: &str = "shoal.dev/credential";
/// The longest a certificate may be asked for: ten years.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates made before lifetimes (valid 2024 to 2124) live longer than this.
const LEGACY_LIFETIME: Duration = Duration::from_secs(50 * 365 * 24 * 3600);

/// How the controller issues certificates.
#[derive(Clone, Debug)]
pub struct TrustConfig {
    /// How long a node's client certificate lives; the agent renews it after two thirds.
    pub node_cert_ttl: Duration,
    /// Names no node may take: the controller's certificate names (`--tls-san`, its host
    /// name and addresses).
    pub reserved_names: Vec<String>,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            node_cert_ttl: shoal_transport::pki::DEFAULT_CERT_TTL,
            reserved_names: Vec::new(),
        }
    }
}

/// Why a token can no longer join a node, if it cannot.
pub fn token_refusal(t: &TokenInfo, now: DateTime<Utc>) -> Option<String> {
    if let Some(expires) = &t.expires {
        match DateTime::parse_from_rfc3339(expires) {
            Ok(at) if at <= now => {
                return Some(format!(
                    "join token {} expired at {expires}: create another with `shoal token create --ttl 24h`",
                    t.id
                ))
            }
            Ok(_) => {}
            Err(_) => return Some(format!("join token {} has an unreadable expiry", t.id)),
        }
    }
    match t.usages {
        Some(n) if t.used >= n => Some(format!(
            "join token {} is used up ({} of {n} joins): create another with `shoal token create`",
            t.id, t.used
        )),
        _ => None,
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A Secret's data, decoded; values that are not base64 UTF-8 are left out.
fn decoded(s: &Secret) -> BTreeMap<String, String> {
    s.data
        .iter()
        .filter_map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
            Some((k.clone(), String::from_utf8(bytes).ok()?))
        })
        .collect()
}

fn record(name: String, type_: &str, data: &[(&str, &str)]) -> Object {
    Object::Secret(Secret {
        metadata: ObjectMeta {
            name,
            namespace: Some(SYSTEM_NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: data.iter().map(|(k, v)| (k.to_string(), b64(v))).collect(),
        ..Default::default()
    })
}

fn token_info(s: &Secret) -> Option<TokenInfo> {
    if s.type_.as_deref() != Some(TOKEN_TYPE) {
        return None;
    }
    let d = decoded(s);
    let secret = d.get("secret")?;
    Some(TokenInfo {
        id: d
            .get("id")
            .cloned()
            .unwrap_or_else(|| secret.chars().take(8).collect()),
        description: d.get("description").cloned().unwrap_or_default(),
        expires: d.get("expires").cloned(),
        usages: d.get("usages").and_then(|u| u.parse().ok()),
        used: d.get("used").and_then(|u| u.parse().ok()).unwrap_or(0),
    })
}

fn ttl_of(secs: u64) -> Result<Duration> {
    let ttl = Duration::from_secs(secs);
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(Error::Invalid(format!(
            "a lifetime of {secs}s: must be between 1s and ten years"
        )));
    }
    Ok(ttl)
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn unauthenticated(message: String) -> WireError {
    crate::Error::Unauthenticated(message).into()
}

impl Service {
    async fn system_secret(&self, name: &str) -> Result<Option<Secret>> {
        let key = ObjectKey::new(Kind::Secret, Some(SYSTEM_NAMESPACE), name);
        Ok(self
            .store()
            .get(&key)
            .await?
            .and_then(|o| o.into_typed::<Secret>().ok()))
    }

    /// The key bound to `name` in the record `prefix-name`, if any.
    async fn bound_key(&self, prefix: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .system_secret(&format!("{prefix}-{name}"))
            .await?
            .and_then(|s| decoded(&s).remove("key")))
    }

    /// Checks that the key of a connection's certificate is still the one bound to its name,
    /// and gives the identity the request runs as. A node or credential deleted (or a node
    /// that joined again with another key) gets nothing.
    pub async fn authenticate(
        &self,
        identity: Identity,
        key: Option<&str>,
    ) -> std::result::Result<Identity, WireError> {
        let (prefix, name) = match &identity {
            Identity::Anonymous => return Ok(identity),
            Identity::Node(n) => ("node-key", n),
            Identity::Admin(n) => ("credential", n),
        };
        let bound = self
            .bound_key(prefix, name)
            .await
            .map_err(WireError::from)?;
        match (bound, key) {
            (Some(b), Some(k)) if b == k => Ok(identity),
            _ => Err(unauthenticated(match identity {
                Identity::Node(n) => format!(
                    "the certificate of node {n:?} has been revoked (the node was deleted, or joined again with another key): join it again with a new token"
                ),
                _ => format!(
                    "the credential {name:?} has been revoked or rotated: ask an admin for a new one (`shoal credentials create`)"
                ),
            })),
        }
    }

    /// Stores a join token (as a Secret in the system namespace) and returns it.
    pub async fn create_token(
        &self,
        description: &str,
        token: Option<JoinToken>,
        ttl_secs: Option<u64>,
        usages: Option<u32>,
    ) -> Result<String> {
        let token = token.unwrap_or_else(|| JoinToken::new(self.ca().hash()));
        let id: String = token.secret.chars().take(8).collect();
        let expires = ttl_secs
            .map(ttl_of)
            .transpose()?
            .map(|ttl| rfc3339(Utc::now() + ttl));
        if usages == Some(0) {
            return Err(Error::Invalid("--usages: must be at least 1".into()));
        }
        let usages = usages.map(|u| u.to_string());
        let mut data = vec![
            ("id", id.as_str()),
            ("secret", token.secret.as_str()),
            ("description", description),
            ("used", "0"),
        ];
        if let Some(e) = &expires {
            data.push(("expires", e));
        }
        if let Some(u) = &usages {
            data.push(("usages", u));
        }
        let obj = record(format!("join-token-{id}"), TOKEN_TYPE, &data);
        match self.store().create(obj).await {
            Ok(_) | Err(Error::AlreadyExists(_)) => Ok(token.to_string()),
            Err(e) => Err(e),
        }
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let secrets: Vec<Secret> = self
            .store()
            .list_typed(Kind::Secret, Some(SYSTEM_NAMESPACE))
            .await?;
        Ok(secrets.iter().filter_map(token_info).collect())
    }

    pub async fn delete_token(&self, id: &str) -> Result<()> {
        let key = ObjectKey::new(
            Kind::Secret,
            Some(SYSTEM_NAMESPACE),
            &format!("join-token-{id}"),
        );
        match self.system_secret(&key.name).await? {
            Some(s) if token_info(&s).is_some() => {
                self.store().delete(key, None).await?;
                Ok(())
            }
            _ => Err(Error::NotFound(format!("join token {id:?}"))),
        }
    }

    /// The token whose secret this is, if it may still join a node; else the reason.
    async fn usable_token(&self, secret: &str) -> Result<Secret> {
        let secrets: Vec<Secret> = self
            .store()
            .list_typed(Kind::Secret, Some(SYSTEM_NAMESPACE))
            .await?;
        let found = secrets.into_iter().find(|s| {
            token_info(s).is_some()
                && decoded(s).get("secret").is_some_and(|stored| {
                    crate::service::constant_time_eq(stored.as_bytes(), secret.as_bytes())
                })
        });
        let s = found.ok_or_else(|| {
            Error::Forbidden(
                "the join token is not valid for this cluster (create one with `shoal token create`)".into(),
            )
        })?;
        let info = token_info(&s).ok_or_else(|| Error::Internal("token record vanished".into()))?;
        match token_refusal(&info, Utc::now()) {
            Some(why) => Err(Error::Forbidden(why)),
            None => Ok(s),
        }
    }

    /// Spends one use of the token whose secret this is; refuses an unknown, expired or
    /// used-up token with the reason.
    async fn spend_token(&self, secret: &str) -> Result<()> {
        let _one_at_a_time = self.spending.lock().await;
        for _ in 0..5 {
            let mut s = self.usable_token(secret).await?;
            let used = token_info(&s).map_or(0, |t| t.used);
            s.data.insert("used".into(), b64(&(used + 1).to_string()));
            let revision = s.metadata.revision();
            match self.store().update(Object::Secret(s), Some(revision)).await {
                Ok(_) => return Ok(()),
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(
            "the join token is being used by many joins at once; try again".into(),
        ))
    }

    /// A node's first join: checks the token, binds the name to the key of `csr_pem` (a name
    /// already bound to another key is refused), and signs its client certificate.
    pub(crate) async fn join(
        &self,
        secret: &str,
        node_name: &str,
        csr_pem: &str,
    ) -> Result<Response> {
        shoal_api::validate::check_dns1123_subdomain(node_name)
            .map_err(|m| Error::Invalid(format!("node name: {m}")))?;
        check_node_name(node_name, &self.trust().reserved_names)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let key = fingerprint_of_csr(csr_pem).map_err(|e| Error::Invalid(e.to_string()))?;
        // The token is checked first, so a stranger learns nothing of which names are taken.
        let bound = self.bound_key("node-key", node_name).await?;
        match bound {
            Some(b) if b != key => {
                // Only a holder of a usable token learns that the name is taken.
                self.usable_token(secret).await?;
                return Err(Error::Conflict(format!(
                    "node name {node_name:?} is already taken by another device (its key differs): give this device another --name, or, if it replaces that device, `shoal delete node {node_name}` first"
                )));
            }
            _ => self.spend_token(secret).await?,
        }
        if bound.is_none() {
            let obj = record(
                format!("node-key-{node_name}"),
                NODE_KEY_TYPE,
                &[("key", &key), ("bound", &rfc3339(Utc::now()))],
            );
            match self.store().create(obj).await {
                Ok(_) => {}
                Err(Error::AlreadyExists(_)) => {
                    return Err(Error::Conflict(format!(
                        "node name {node_name:?} was just taken by another join; give this device another --name"
                    )))
                }
                Err(e) => return Err(e),
            }
        }
        tracing::info!(node = node_name, "node joined");
        self.signed_for_node(csr_pem, node_name)
    }

    /// A node renews its client certificate: the same key, the same name.
    pub(crate) async fn renew(&self, node: &str, csr_pem: &str) -> Result<Response> {
        let key = fingerprint_of_csr(csr_pem).map_err(|e| Error::Invalid(e.to_string()))?;
        if self.bound_key("node-key", node).await?.as_deref() != Some(key.as_str()) {
            return Err(Error::Forbidden(format!(
                "node {node:?} may renew its certificate only for the key bound to its name"
            )));
        }
        self.signed_for_node(csr_pem, node)
    }

    fn signed_for_node(&self, csr_pem: &str, node: &str) -> Result<Response> {
        let cert_pem = self
            .ca()
            .sign_node(csr_pem, node, self.trust().node_cert_ttl)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(self.joined(cert_pem))
    }

    pub(crate) fn joined(&self, cert_pem: String) -> Response {
        Response::Joined {
            cert_pem,
            ca_pem: self.ca().cert_pem().to_string(),
            peer_ca_pem: self.peer_ca().cert_pem().to_string(),
        }
    }

    /// Ends a node's binding: every certificate of that name stops working at once.
    pub(crate) async fn unbind_node(&self, node: &str) -> Result<()> {
        let key = ObjectKey::new(
            Kind::Secret,
            Some(SYSTEM_NAMESPACE),
            &format!("node-key-{node}"),
        );
        match self.store().delete(key, None).await {
            Ok(_) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.revoked(Identity::Node(node.to_string()));
        Ok(())
    }

    /// Binds an admin credential `name` to the key of `csr_pem` for `ttl_secs` and signs it;
    /// a name issued again is rotated: its old key stops working at once.
    pub(crate) async fn issue_credential(
        &self,
        name: &str,
        ttl_secs: u64,
        csr_pem: &str,
    ) -> Result<Response> {
        shoal_api::validate::check_dns1123_subdomain(name)
            .map_err(|m| Error::Invalid(format!("credential name: {m}")))?;
        let ttl = ttl_of(ttl_secs)?;
        let key = fingerprint_of_csr(csr_pem).map_err(|e| Error::Invalid(e.to_string()))?;
        let cert_pem = self
            .ca()
            .sign_admin(csr_pem, name, ttl)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        self.bind_credential(name, &key, Utc::now() + ttl).await?;
        tracing::info!(credential = name, "admin credential issued");
        Ok(self.joined(cert_pem))
    }

    /// Records (or replaces) the key of admin credential `name`.
    pub async fn bind_credential(
        &self,
        name: &str,
        key: &str,
        expires: DateTime<Utc>,
    ) -> Result<()> {
        let obj = record(
            format!("credential-{name}"),
            CREDENTIAL_TYPE,
            &[("key", key), ("expires", &rfc3339(expires))],
        );
        self.store()
            .write(vec![Op::Delete {
                key: ObjectKey::of(&obj),
                expected: None,
            }])
            .await
            .map(|_| ())
            .or_else(|e| match e {
                Error::NotFound(_) => Ok(()),
                e => Err(e),
            })?;
        self.store().create(obj).await?;
        self.revoked(Identity::Admin(name.to_string()));
        Ok(())
    }

    pub async fn list_credentials(&self) -> Result<Vec<CredentialInfo>> {
        let secrets: Vec<Secret> = self
            .store()
            .list_typed(Kind::Secret, Some(SYSTEM_NAMESPACE))
            .await?;
        Ok(secrets
            .iter()
            .filter(|s| s.type_.as_deref() == Some(CREDENTIAL_TYPE))
            .filter_map(|s| {
                Some(CredentialInfo {
                    name: s.metadata.name.strip_prefix("credential-")?.to_string(),
                    expires: decoded(s).remove("expires").unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Revokes admin credential `name` at once.
    pub(crate) async fn delete_credential(&self, who: &Identity, name: &str) -> Result<()> {
        if *who == Identity::Admin(name.to_string()) {
            return Err(Error::Invalid(format!(
                "{name:?} is the credential this request came with: revoke it with another one"
            )));
        }
        let key = ObjectKey::new(
            Kind::Secret,
            Some(SYSTEM_NAMESPACE),
            &format!("credential-{name}"),
        );
        match self.system_secret(&key.name).await? {
            Some(s) if s.type_.as_deref() == Some(CREDENTIAL_TYPE) => {
                self.store().delete(key, None).await?;
                self.revoked(Identity::Admin(name.to_string()));
                Ok(())
            }
            _ => Err(Error::NotFound(format!("credential {name:?}"))),
        }
    }

    /// Binds a node that joined before names were bound to keys (its certificate was made for
    /// a century, 2024 to 2124) to the key it connects with, on its first connection after
    /// the upgrade, if its Node still exists: a fleet upgrades without joining again, and a
    /// node deleted before the upgrade stays out.
    pub async fn adopt_legacy_node(
        &self,
        who: &Identity,
        key: Option<&str>,
        lifetime: Option<Duration>,
    ) -> Result<()> {
        let (Identity::Node(name), Some(key), Some(lifetime)) = (who, key, lifetime) else {
            return Ok(());
        };
        if lifetime < LEGACY_LIFETIME || self.bound_key("node-key", name).await?.is_some() {
            return Ok(());
        }
        let node = ObjectKey::new(Kind::Node, None, name);
        if self.store().get(&node).await?.is_none() {
            return Ok(());
        }
        let obj = record(
            format!("node-key-{name}"),
            NODE_KEY_TYPE,
            &[("key", key), ("bound", &rfc3339(Utc::now()))],
        );
        match self.store().create(obj).await {
            Ok(_) => {
                tracing::warn!(node = %name, "bound a node that joined before keys were bound to the key it connected with");
                Ok(())
            }
            Err(Error::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Binds the admin credential the controller wrote (`admin.conf`) if no binding of that
    /// name exists yet: a credential written before keys were bound keeps working.
    pub async fn adopt_credential(&self, name: &str, cert_pem: &str) -> Result<()> {
        if self.bound_key("credential", name).await?.is_some() {
            return Ok(());
        }
        let der = shoal_transport::pki::pem_to_der(cert_pem)?;
        let key = shoal_transport::pki::fingerprint_of_cert(&der)?;
        let (until, _) = shoal_transport::pki::lifetime_of(cert_pem)?;
        self.bind_credential(name, &key, until.into()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(expires: Option<&str>, usages: Option<u32>, used: u32) -> TokenInfo {
        TokenInfo {
            id: "abcd1234".into(),
            description: String::new(),
            expires: expires.map(str::to_string),
            usages,
            used,
        }
    }

    #[test]
    fn tokens_are_refused_once_expired_or_used_up() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cases = [
            (info(None, None, 1000), None),
            (info(Some("2026-12-04T12:00:01Z"), None, 0), None),
            (info(Some("2026-12-04T12:00:00Z"), None, 0), Some("expired")),
            (
                info(Some("2026-12-03T00:00:00Z"), Some(5), 0),
                Some("expired"),
            ),
            (info(None, Some(1), 0), None),
            (info(None, Some(1), 1), Some("used up")),
            (info(None, Some(3), 7), Some("used up")),
            (info(Some("garbage"), None, 0), Some("unreadable")),
        ];
        for (t, want) in cases {
            let got = token_refusal(&t, now);
            match want {
                None => assert_eq!(got, None, "{t:?}"),
                Some(w) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(w)),
                    "{t:?}: {got:?}"
                ),
            }
        }
    }
}
