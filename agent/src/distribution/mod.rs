//! A client for the OCI distribution API (registry v2), as much of it as pulling needs:
//! manifests and blobs by reference, behind a registry's token challenge (`Bearer`, with the
//! pod's credentials sent to the token service) or `Basic` credentials, following redirects
//! to blob storage (without the registry's credentials). Every size a registry controls is
//! bounded, and every blob is hashed as it arrives.
//!
//! Written here rather than taken from `oci-client`: that crate brings reqwest, h2, a URL
//! parser with IDNA tables and the regex engine, about 1 MB of an agent, for the four
//! requests below. hyper and rustls are in the agent already.

mod parse;

pub use parse::{Challenge, Reference};

use crate::error::{Error, Result};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Response, StatusCode, Uri};
use sha2::{Digest as _, Sha256};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

/// A manifest or index larger than this is refused (containerd's limit is the same).
pub const MAX_MANIFEST: usize = 4 << 20;
/// A token service's answer larger than this is refused.
const MAX_TOKEN: usize = 64 << 10;
const MAX_REDIRECTS: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a response may stall (headers, or between two chunks of its body).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Credentials for a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Anonymous,
    Basic(String, String),
}

/// How requests to one registry are made: its scheme, credentials and the token it gave.
pub struct Client {
    reference: Reference,
    /// The image as written, for error messages.
    image: String,
    plain_http: bool,
    auth: Auth,
    /// What goes in `Authorization` once a challenge has been answered.
    authorization: Option<String>,
}

impl Client {
    pub fn new(image: &str, reference: Reference, auth: Auth, plain_http: bool) -> Client {
        Client {
            reference,
            image: image.to_string(),
            plain_http,
            auth,
            authorization: None,
        }
    }

    fn fail(&self, message: String) -> Error {
        Error::Artifact {
            reference: self.image.clone(),
            message: format!("pulling from {}: {message}", self.reference.registry()),
        }
    }

    /// The registry said no to these credentials (or to none).
    fn refused(&self, message: String) -> Error {
        Error::Refused {
            reference: self.image.clone(),
            message: format!("pulling from {}: {message}", self.reference.registry()),
        }
    }

    fn base(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", self.reference.api_host())
    }

    /// The manifest (or index) `r` names, its bytes and media type, checked against the
    /// digest when `r` has one.
    pub async fn manifest(&mut self, r: &Reference, accept: &[&str]) -> Result<(Vec<u8>, String)> {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            self.base(),
            r.repository(),
            r.manifest_ref()
        );
        let response = self.get(&url, &accept.join(", ")).await?;
        let media_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let bytes = self.read_all(response, MAX_MANIFEST, "manifest").await?;
        if let Some(want) = r.digest() {
            let got = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            if got != want {
                return Err(self.fail(format!(
                    "the registry sent a manifest hashing to {got} for {want}"
                )));
            }
        }
        Ok((bytes, media_type))
    }

    /// Writes the blob `digest` of `size` bytes to `to`, refusing more bytes than that and
    /// bytes that do not hash to it.
    pub async fn blob(&mut self, digest: &str, size: u64, to: &std::path::Path) -> Result<()> {
        let url = format!(
            "{}/v2/{}/blobs/{digest}",
            self.base(),
            self.reference.repository()
        );
        let mut response = self.get(&url, "*/*").await?;
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(|e| Error::io(to, e))?;
        let mut hash = Sha256::new();
        let mut got = 0u64;
        while let Some(frame) = self.next_frame(&mut response, digest).await? {
            got += frame.len() as u64;
            if got > size {
                return Err(self.fail(format!(
                    "blob {digest}: the registry sent more than the {size} bytes the manifest gives"
                )));
            }
            hash.update(&frame);
            file.write_all(&frame).await.map_err(|e| Error::io(to, e))?;
        }
        file.flush().await.map_err(|e| Error::io(to, e))?;
        let actual = format!("sha256:{}", hex::encode(hash.finalize()));
        if got != size || actual != digest {
            return Err(self.fail(format!(
                "blob {digest}: digest mismatch: the registry sent {got} bytes hashing to \
                 {actual} ({size} bytes expected)"
            )));
        }
        Ok(())
    }

    async fn next_frame(
        &self,
        response: &mut Response<Incoming>,
        what: &str,
    ) -> Result<Option<hyper::body::Bytes>> {
        loop {
            let frame = tokio::time::timeout(IDLE_TIMEOUT, response.body_mut().frame())
                .await
                .map_err(|_| self.fail(format!("{what}: the registry stopped sending")))?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(self.fail(format!("{what}: {e}"))),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    async fn read_all(
        &self,
        mut response: Response<Incoming>,
        limit: usize,
        what: &str,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(frame) = self.next_frame(&mut response, what).await? {
            if out.len() + frame.len() > limit {
                return Err(self.fail(format!("the {what} is larger than {limit} bytes")));
            }
            out.extend_from_slice(&frame);
        }
        Ok(out)
    }

    /// GET `url`: answers the registry's challenge once, follows redirects (sending the
    /// registry's credentials only to the registry itself); any status but 200 is an error
    /// naming it, with the registry's own message.
    async fn get(&mut self, url: &str, accept: &str) -> Result<Response<Incoming>> {
        let registry_host = self.reference.api_host().to_string();
        let mut url: Uri = url
            .parse()
            .map_err(|e| self.fail(format!("URL {url}: {e}")))?;
        let mut challenged = false;
        let mut redirects = 0;
        loop {
            let to_registry = is_host(&url, &registry_host);
            let authorization = self.authorization.as_deref().filter(|_| to_registry);
            let response = self.send(&url, accept, authorization).await?;
            let status = response.status();
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let next = step(status, to_registry, challenged, redirects);
            match next {
                Step::Done => return Ok(response),
                Step::Answer => {
                    challenged = true;
                    let challenge = header(hyper::header::WWW_AUTHENTICATE).unwrap_or_default();
                    self.answer(&challenge).await?;
                }
                Step::Follow => {
                    redirects += 1;
                    let location = header(hyper::header::LOCATION)
                        .ok_or_else(|| self.fail(format!("{url}: {status} with no Location")))?;
                    url = resolve(&url, &location)
                        .ok_or_else(|| self.fail(format!("{url}: bad redirect to {location:?}")))?;
                }
                Step::TooManyRedirects => {
                    return Err(self.fail(format!("{url}: more than {MAX_REDIRECTS} redirects")))
                }
                Step::Refused | Step::Failed => {
                    let body = self
                        .read_all(response, 4096, "error")
                        .await
                        .unwrap_or_default();
                    let message = registry_message(&body);
                    if next == Step::Refused {
                        return Err(self.refused(format!(
                            "{url}: {status}: access denied ({}){message}",
                            match self.auth {
                                Auth::Anonymous => {
                                    "no imagePullSecret has credentials for this registry"
                                }
                                Auth::Basic(..) => "with the imagePullSecret's credentials",
                            }
                        )));
                    }
                    return Err(self.fail(match status {
                        StatusCode::NOT_FOUND => format!("{url}: {status}: not found{message}"),
                        _ => format!("{url}: {status}{message}"),
                    }));
                }
            }
        }
    }

    /// Answers a `WWW-Authenticate` challenge: Basic with the credentials, or Bearer with a
    /// token from the realm it names.
    async fn answer(&mut self, header: &str) -> Result<()> {
        let challenge = Challenge::parse(header)
            .ok_or_else(|| self.fail(format!("the registry asks for credentials ({header:?})")))?;
        let basic = match &self.auth {
            Auth::Basic(u, p) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )),
            Auth::Anonymous => None,
        };
        match challenge.scheme.as_str() {
            "basic" => {
                let basic = basic.ok_or_else(|| {
                    self.refused(
                        "the registry asks for credentials and no imagePullSecret has any for it"
                            .into(),
                    )
                })?;
                self.authorization = Some(basic);
                Ok(())
            }
            "bearer" => {
                let realm = challenge.param("realm").ok_or_else(|| {
                    self.fail(format!("a Bearer challenge with no realm ({header:?})"))
                })?;
                let mut query = Vec::new();
                if let Some(service) = challenge.param("service") {
                    query.push(format!("service={}", encode(service)));
                }
                let scope = challenge
                    .param("scope")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository()));
                query.push(format!("scope={}", encode(&scope)));
                let sep = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{sep}{}", query.join("&"));
                let uri: Uri = url
                    .parse()
                    .map_err(|e| self.fail(format!("token realm {realm:?}: {e}")))?;
                // The credentials go to the token service only over TLS, or where the
                // registry itself is spoken to in plain HTTP (loopback, --insecure-registry).
                let safe = uri.scheme_str() == Some("https") || self.plain_http;
                let response = self
                    .send(&uri, "application/json", basic.as_deref().filter(|_| safe))
                    .await?;
                let status = response.status();
                let body = self.read_all(response, MAX_TOKEN, "token").await?;
                if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                    return Err(self.refused(format!(
                        "token service {realm}: {status}{}",
                        registry_message(&body)
                    )));
                }
                if status != StatusCode::OK {
                    return Err(self.fail(format!(
                        "token service {realm}: {status}{}",
                        registry_message(&body)
                    )));
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let t: Token = serde_json::from_slice(&body)
                    .map_err(|e| self.fail(format!("token service {realm}: {e}")))?;
                let token = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.fail(format!("token service {realm} sent no token")))?;
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
            other => Err(self.fail(format!(
                "the registry asks for {other} authentication, which Shoal does not speak"
            ))),
        }
    }

    /// One request on a connection of its own.
    async fn send(
        &self,
        url: &Uri,
        accept: &str,
        authorization: Option<&str>,
    ) -> Result<Response<Incoming>> {
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(self.fail(format!("{url}: not an http(s) URL"))),
        };
        let host = url
            .host()
            .ok_or_else(|| self.fail(format!("{url}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| self.fail(format!("{url}: connecting timed out")))?
        .map_err(|e| self.fail(format!("{url}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let path = url
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let authority = url
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let mut request = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, accept)
            .header(
                hyper::header::USER_AGENT,
                concat!("shoal/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(a) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, a);
        }
        let request = request
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .map_err(|e| self.fail(format!("{url}: {e}")))?;
        let exchange = async {
            if https {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("{host}: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(tls_config())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                request_on(tls, request).await
            } else {
                request_on(tcp, request).await
            }
        };
        tokio::time::timeout(IDLE_TIMEOUT, exchange)
            .await
            .map_err(|_| self.fail(format!("{url}: no answer")))?
            .map_err(|e| self.fail(format!("{url}: {e}")))
    }
}

async fn request_on<S>(
    stream: S,
    request: hyper::Request<http_body_util::Empty<hyper::body::Bytes>>,
) -> std::result::Result<Response<Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        // Ends with the response's body (or its error, which the body reports).
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// The TLS settings for registries: the system's roots (`/etc/ssl/certs`, or
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`), and the Mozilla roots where the system has none.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            shoal_transport::install_crypto_provider();
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "reading the system's CA certificates");
            }
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// What a response to a GET leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Done,
    /// The registry's challenge, answered once per request.
    Answer,
    Follow,
    TooManyRedirects,
    /// The credentials (or their absence) refused: final, the node's copy must not serve.
    Refused,
    Failed,
}

/// The decision behind [`Client::get`]: by the status, whether the URL is the registry's
/// (a redirect's storage host is not challenged for the registry's credentials), whether its
/// challenge was answered already, and how many redirects were followed.
fn step(status: StatusCode, to_registry: bool, challenged: bool, redirects: usize) -> Step {
    match status {
        StatusCode::OK => Step::Done,
        StatusCode::UNAUTHORIZED if to_registry && !challenged => Step::Answer,
        s if s.is_redirection() && redirects >= MAX_REDIRECTS => Step::TooManyRedirects,
        s if s.is_redirection() => Step::Follow,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Step::Refused,
        _ => Step::Failed,
    }
}

/// Whether `url` is served by `host` (`name[:port]`, as the registry's API host is written):
/// only there does the registry's `Authorization` go.
fn is_host(url: &Uri, host: &str) -> bool {
    url.authority().map(|a| a.as_str()) == Some(host)
}

/// `location` (absolute, or relative to `base`) as a URL.
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}").parse().ok();
    }
    let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
    format!("{scheme}://{authority}{dir}/{location}")
        .parse()
        .ok()
}

/// A query value, percent-encoded.
fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The registry's own words from an error body (`{"errors":[{"code","message"}]}`).
fn registry_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => {
            let parts: Vec<String> = e
                .errors
                .iter()
                .map(|e| format!("{} {}", e.code, e.message).trim().to_string())
                .collect();
            format!(" ({})", parts.join("; "))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_leads_to_one_step() {
        use Step::*;
        let found = StatusCode::TEMPORARY_REDIRECT;
        for (status, to_registry, challenged, redirects, want) in [
            (StatusCode::OK, true, false, 0, Done),
            (StatusCode::OK, false, true, 3, Done),
            (StatusCode::UNAUTHORIZED, true, false, 0, Answer),
            (StatusCode::UNAUTHORIZED, true, true, 0, Refused),
            // Blob storage's 401 is not the registry's challenge: no credentials go there.
            (StatusCode::UNAUTHORIZED, false, false, 1, Refused),
            (StatusCode::FORBIDDEN, true, false, 0, Refused),
            (found, true, false, 0, Follow),
            (found, false, true, MAX_REDIRECTS - 1, Follow),
            (found, false, true, MAX_REDIRECTS, TooManyRedirects),
            (StatusCode::NOT_FOUND, true, false, 0, Failed),
            (StatusCode::SERVICE_UNAVAILABLE, true, true, 0, Failed),
        ] {
            assert_eq!(
                step(status, to_registry, challenged, redirects),
                want,
                "{status} to_registry={to_registry} challenged={challenged} redirects={redirects}"
            );
        }
    }

    #[test]
    fn credentials_go_only_to_the_registrys_host() {
        let host = "reg.io:5000";
        for (url, want) in [
            ("https://reg.io:5000/v2/a/blobs/x", true),
            ("https://reg.io/v2/a/blobs/x", false),
            ("https://cdn.reg.io:5000/x", false),
            ("https://storage.example/x?sig=1", false),
        ] {
            assert_eq!(is_host(&url.parse().unwrap(), host), want, "{url}");
        }
    }

    #[test]
    fn redirects_resolve_against_the_request() {
        let base: Uri = "https://reg.io/v2/a/blobs/sha256:1".parse().unwrap();
        for (location, want) in [
            ("https://cdn.io/x?sig=1", "https://cdn.io/x?sig=1"),
            ("/other/y", "https://reg.io/other/y"),
            ("z", "https://reg.io/v2/a/blobs/z"),
        ] {
            assert_eq!(resolve(&base, location).unwrap().to_string(), want);
        }
    }

    #[test]
    fn error_bodies_give_the_registrys_words() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            registry_message(body),
            " (MANIFEST_UNKNOWN manifest unknown)"
        );
        assert_eq!(registry_message(b"<html>"), "");
    }
}
