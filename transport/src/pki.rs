//! The cluster PKI: two signers made on the controller's first start, certificates with
//! lifetimes, and join tokens of the form `SHOAL1::<sha256 of the CA certificate>::<secret>`
//! that let a new node trust the CA before it has any certificate of its own (as K3s's
//! `K10<ca-hash>::<secret>`).
//!
//! Trust roots are kept apart, as K3s keeps its server and client CAs apart: the cluster CA
//! (`ca.crt`) signs the controller's serving certificate and every client certificate; the peer
//! CA (`peer-ca.crt`) signs only the certificates nodes serve each other with. Clients of the
//! controller trust the cluster CA alone, so nothing a node holds can serve as the controller.

use crate::error::{Error, Result};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The organisation in a client certificate that grants admin rights.
pub const ADMIN_ORG: &str = "shoal:admins";
/// The organisation of node certificates; the CN is `system:node:NAME`.
pub const NODE_ORG: &str = "shoal:nodes";
/// The name clients verify the controller's certificate against, always among its SANs.
pub const SERVER_NAME: &str = "shoal-controller";
/// How long node and admin certificates live unless told otherwise (K3s: a year).
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates are dated this far back, so a device whose clock is a little behind accepts
/// them.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// Names a node may never take: the controller's own, and what would read as an address.
pub fn check_node_name(name: &str, reserved: &[String]) -> Result<()> {
    let refuse = |why: String| Err(Error::Pki(format!("node name {name:?}: {why}")));
    if name == SERVER_NAME || reserved.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return refuse("is reserved for the controller; choose another --name".into());
    }
    if name == "localhost" || name.ends_with(".localhost") {
        return refuse("is reserved (localhost); choose another --name".into());
    }
    if name.parse::<std::net::IpAddr>().is_ok() || name.split('.').all(|p| p.parse::<u8>().is_ok())
    {
        return refuse("reads as an IP address; choose another --name".into());
    }
    Ok(())
}

/// The fingerprint of a public key: sha256 of its raw bits, hex. Bindings of names to keys
/// (a node's name, an admin credential) compare these.
pub fn fingerprint_of_cert(cert: &[u8]) -> Result<String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| Error::Pki(format!("cannot read the certificate: {e}")))?;
    Ok(hex::encode(Sha256::digest(
        x509.public_key().subject_public_key.data.as_ref(),
    )))
}

/// The fingerprint of the key a certificate request is for (see [`fingerprint_of_cert`]).
pub fn fingerprint_of_csr(csr_pem: &str) -> Result<String> {
    use rcgen::PublicKeyData;
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| Error::Pki(format!("the certificate request is not valid: {e}")))?;
    Ok(hex::encode(Sha256::digest(csr.public_key.der_bytes())))
}

/// When a certificate stops being valid, and how long it was issued for.
pub fn lifetime_of(cert_pem: &str) -> Result<(SystemTime, Duration)> {
    let der = pem_to_der(cert_pem)?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| Error::Pki(format!("cannot read the certificate: {e}")))?;
    let v = x509.validity();
    let (from, to) = (v.not_before.timestamp(), v.not_after.timestamp());
    let until = SystemTime::UNIX_EPOCH + Duration::from_secs(to.max(0) as u64);
    Ok((until, Duration::from_secs((to - from).max(0) as u64)))
}

/// Whether a certificate valid until `until`, issued for `lifetime`, is due for renewal at
/// `now`: once two thirds of its life are gone (K3s and the kubelet renew at a similar point).
pub fn renewal_due(until: SystemTime, lifetime: Duration, now: SystemTime) -> bool {
    match until.checked_sub(lifetime / 3) {
        Some(at) => now >= at,
        None => true,
    }
}

fn dated(params: &mut CertificateParams, ttl: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + ttl).into();
}

/// Who a connection belongs to, from its verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Admin(String),
    Node(String),
    /// No client certificate: may only join with a token.
    Anonymous,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Admin(n) => write!(f, "admin {n:?}"),
            Identity::Node(n) => write!(f, "node {n:?}"),
            Identity::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// Reads the identity from a client certificate the TLS layer has already verified.
pub fn identity_of(cert: &CertificateDer<'_>) -> Identity {
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(cert) else {
        return Identity::Anonymous;
    };
    let subject = x509.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("");
    let orgs: Vec<&str> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    if orgs.contains(&ADMIN_ORG) {
        Identity::Admin(cn.to_string())
    } else if orgs.contains(&NODE_ORG) {
        cn.strip_prefix("system:node:")
            .map(|n| Identity::Node(n.to_string()))
            .unwrap_or(Identity::Anonymous)
    } else {
        Identity::Anonymous
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Ca {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key: KeyPair,
}

fn pki_err(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |e| Error::Pki(format!("{what}: {e}"))
}

/// Writes `data` to `path` atomically, readable only by its owner.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Makes `dir` (and what is missing above it) and keeps it to its owner alone (0700): a data
/// dir holds keys, the store and pods' data.
pub fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(dir, e))
}

/// Keeps an existing file to its owner alone (0600).
pub fn make_private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(path, e))
}

pub fn pem_to_der(pem: &str) -> Result<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| Error::Pki(format!("bad certificate PEM: {e}")))
}

impl Ca {
    /// Loads `DIR/ca.crt` + `DIR/ca.key`, or makes a new CA there.
    pub fn load_or_create(dir: &Path) -> Result<Ca> {
        Ca::load_or_create_named(dir, "ca", "shoal-ca")
    }

    /// The signer of the certificates nodes serve each other with: `DIR/peer-ca.crt`.
    pub fn load_or_create_peer(dir: &Path) -> Result<Ca> {
        Ca::load_or_create_named(dir, "peer-ca", "shoal-peer-ca")
    }

    fn load_or_create_named(dir: &Path, stem: &str, common_name: &str) -> Result<Ca> {
        let (crt, key) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        if crt.exists() {
            let cert_pem = std::fs::read_to_string(&crt).map_err(|e| Error::io(&crt, e))?;
            let key_pem = std::fs::read_to_string(&key).map_err(|e| Error::io(&key, e))?;
            let key = KeyPair::from_pem(&key_pem).map_err(pki_err("the CA key"))?;
            let cert_der = pem_to_der(&cert_pem)?;
            return Ok(Ca {
                cert_der,
                cert_pem,
                key,
            });
        }
        let key_pair = KeyPair::generate().map_err(pki_err("generating the CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "shoal");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params
            .self_signed(&key_pair)
            .map_err(pki_err("signing the CA"))?;
        write_private(&key, key_pair.serialize_pem().as_bytes())?;
        std::fs::write(&crt, cert.pem()).map_err(|e| Error::io(&crt, e))?;
        Ok(Ca {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key: key_pair,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The hash a join token pins: sha256 of the CA certificate, hex.
    pub fn hash(&self) -> String {
        ca_hash(&self.cert_der)
    }

    fn issue(&self, params: CertificateParams) -> Result<Issued> {
        let key = KeyPair::generate().map_err(pki_err("generating a key"))?;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)
            .map_err(pki_err("loading the CA"))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(pki_err("signing"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The controller's serving certificate, for `SERVER_NAME`, localhost and `sans`.
    pub fn issue_server(&self, sans: &[String]) -> Result<Issued> {
        let mut names = vec![SERVER_NAME.to_string(), "localhost".to_string()];
        names.extend(sans.iter().cloned());
        names.sort();
        names.dedup();
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName).map_err(|_| {
                    Error::Pki(format!(
                        "--tls-san {n:?} is neither an IP address nor a DNS name"
                    ))
                }),
            })
            .collect::<Result<_>>()?;
        params
            .distinguished_name
            .push(DnType::CommonName, SERVER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // Made anew at every start, so a year is plenty.
        dated(&mut params, DEFAULT_CERT_TTL);
        self.issue(params)
    }

    /// A client certificate valid for `ttl`: `organization` decides what the holder may do.
    pub fn issue_client(
        &self,
        common_name: &str,
        organization: &str,
        ttl: Duration,
    ) -> Result<Issued> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, organization);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        dated(&mut params, ttl);
        self.issue(params)
    }
}

impl Ca {
    /// Signs a node's certificate request for `ttl`. The subject is set here, never taken from
    /// the request: a node gets `system:node:NAME` in `shoal:nodes`, whatever it asked for.
    pub fn sign_node(&self, csr_pem: &str, node_name: &str, ttl: Duration) -> Result<String> {
        let subject = format!("system:node:{node_name}");
        self.sign_request(
            csr_pem,
            &subject,
            NODE_ORG,
            ExtendedKeyUsagePurpose::ClientAuth,
            vec![],
            ttl,
        )
    }

    /// Signs an admin credential's request: `common_name` in the admins' organisation.
    pub fn sign_admin(&self, csr_pem: &str, common_name: &str, ttl: Duration) -> Result<String> {
        self.sign_request(
            csr_pem,
            common_name,
            ADMIN_ORG,
            ExtendedKeyUsagePurpose::ClientAuth,
            vec![],
            ttl,
        )
    }

    /// Signs the certificate a node serves its peers with (the direct path between service
    /// proxies): the node's identity, for the DNS name `node_name` alone, for server use only.
    /// Only the peer CA signs these ([`Ca::load_or_create_peer`]).
    pub fn sign_node_serving(
        &self,
        csr_pem: &str,
        node_name: &str,
        ttl: Duration,
    ) -> Result<String> {
        let name = node_name
            .to_string()
            .try_into()
            .map_err(|_| Error::Pki(format!("{node_name:?} is not a DNS name")))?;
        let sans = vec![SanType::DnsName(name)];
        let subject = format!("system:node:{node_name}");
        self.sign_request(
            csr_pem,
            &subject,
            NODE_ORG,
            ExtendedKeyUsagePurpose::ServerAuth,
            sans,
            ttl,
        )
    }

    /// A certificate for one use, whatever the request asked for: the subject, names, usages
    /// and lifetime are set here; only the key comes from the request.
    fn sign_request(
        &self,
        csr_pem: &str,
        common_name: &str,
        organization: &str,
        usage: ExtendedKeyUsagePurpose,
        sans: Vec<SanType>,
        ttl: Duration,
    ) -> Result<String> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Error::Pki(format!("the certificate request is not valid: {e}")))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, organization);
        csr.params.distinguished_name = dn;
        csr.params.subject_alt_names = sans;
        csr.params.is_ca = IsCa::NoCa;
        csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        csr.params.extended_key_usages = vec![usage];
        dated(&mut csr.params, ttl);
        let issuer = Issuer::from_ca_cert_der(&self.cert_der, &self.key)
            .map_err(pki_err("loading the CA"))?;
        let cert = csr
            .signed_by(&issuer)
            .map_err(pki_err("signing the node certificate"))?;
        Ok(cert.pem())
    }
}

/// A node's key and the request to certify it; the key stays with the node.
pub fn node_key_and_csr(node_name: &str) -> Result<(String, String)> {
    let key = new_key()?;
    let csr = csr_for(&key, &format!("system:node:{node_name}"))?;
    Ok((key, csr))
}

/// A new private key, PEM.
pub fn new_key() -> Result<String> {
    Ok(KeyPair::generate()
        .map_err(pki_err("generating a key"))?
        .serialize_pem())
}

/// A certificate request for the key `key_pem` (the signer decides the subject anyway).
pub fn csr_for(key_pem: &str, common_name: &str) -> Result<String> {
    let key = KeyPair::from_pem(key_pem).map_err(pki_err("the private key"))?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .serialize_request(&key)
        .map_err(pki_err("making the certificate request"))?
        .pem()
        .map_err(pki_err("encoding the certificate request"))
}

pub fn ca_hash(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// `SHOAL1::<ca-hash>::<secret>`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_hash: String,
    pub secret: String,
}

impl JoinToken {
    pub fn new(ca_hash: String) -> Self {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        JoinToken {
            ca_hash,
            secret: hex::encode(bytes),
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Token(format!(
                "invalid join token: {why} (expected SHOAL1::<ca-hash>::<secret>)"
            ))
        };
        let mut parts = s.trim().split("::");
        if parts.next() != Some("SHOAL1") {
            return Err(bad("it does not start with SHOAL1::"));
        }
        let ca_hash = parts
            .next()
            .ok_or_else(|| bad("no CA hash"))?
            .to_ascii_lowercase();
        if ca_hash.len() != 64 || !ca_hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad("the CA hash is not 64 hex digits"));
        }
        let secret = parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no secret"))?
            .to_string();
        if parts.next().is_some() {
            return Err(bad("too many parts"));
        }
        Ok(JoinToken { ca_hash, secret })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SHOAL1::{}::{}", self.ca_hash, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_print() {
        let t = JoinToken::new("a".repeat(64));
        assert_eq!(JoinToken::parse(&t.to_string()).unwrap(), t);
        for bad in [
            "",
            "K10abc::x",
            "SHOAL1::abc::x",
            &format!("SHOAL1::{}::", "a".repeat(64)),
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identities_come_from_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let ttl = DEFAULT_CERT_TTL;
        let admin = ca.issue_client("admin", ADMIN_ORG, ttl).unwrap();
        let node = ca.issue_client("system:node:pi-1", NODE_ORG, ttl).unwrap();
        let other = ca.issue_client("mallory", "elsewhere", ttl).unwrap();
        assert_eq!(
            identity_of(&pem_to_der(&admin.cert_pem).unwrap()),
            Identity::Admin("admin".into())
        );
        assert_eq!(
            identity_of(&pem_to_der(&node.cert_pem).unwrap()),
            Identity::Node("pi-1".into())
        );
        assert_eq!(
            identity_of(&pem_to_der(&other.cert_pem).unwrap()),
            Identity::Anonymous
        );
        // A node's request is signed with the subject the CA decides.
        let (key, csr) = node_key_and_csr("anything-i-like").unwrap();
        let signed = ca.sign_node(&csr, "pi-7", ttl).unwrap();
        assert_eq!(
            identity_of(&pem_to_der(&signed).unwrap()),
            Identity::Node("pi-7".into())
        );
        assert!(ca.sign_node("not a csr", "pi-7", ttl).is_err());
        // The certificate is for the request's key, and lives as long as it was told.
        assert_eq!(
            fingerprint_of_cert(&pem_to_der(&signed).unwrap()).unwrap(),
            fingerprint_of_csr(&csr).unwrap()
        );
        let again = csr_for(&key, "x").unwrap();
        assert_eq!(
            fingerprint_of_csr(&again).unwrap(),
            fingerprint_of_csr(&csr).unwrap()
        );
        let (until, lifetime) = lifetime_of(&signed).unwrap();
        assert_eq!(lifetime, ttl + CLOCK_SKEW);
        assert!(until > SystemTime::now() + ttl - Duration::from_secs(60));
        // Loading again gives the same CA; the peer CA is another.
        assert_eq!(Ca::load_or_create(dir.path()).unwrap().hash(), ca.hash());
        assert_ne!(
            Ca::load_or_create_peer(dir.path()).unwrap().hash(),
            ca.hash()
        );
    }

    #[test]
    fn names_that_would_impersonate_the_controller_are_refused() {
        let sans = vec!["ctl.example".to_string(), "10.0.0.1".to_string()];
        for bad in [
            "shoal-controller",
            "localhost",
            "a.localhost",
            "127.0.0.1",
            "10.0.0.1",
            "ctl.example",
            "1.2.3",
        ] {
            assert!(check_node_name(bad, &sans).is_err(), "{bad}");
        }
        for good in ["pi-1", "raspberrypi", "node-1.site-a"] {
            assert!(check_node_name(good, &sans).is_ok(), "{good}");
        }
    }
}
