//! QUIC endpoints with mutual TLS. Every request runs on its own bidirectional stream: the
//! client writes one request frame and finishes its side; the server answers with one or more
//! response frames (a watch streams many) and finishes.

use crate::credentials::Credentials;
use crate::error::{Error, Result};
use crate::frame;
use crate::pki::{ca_hash, identity_of, pem_to_der, Identity, Issued, JoinToken, SERVER_NAME};
use crate::proto::{Request, Response};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const ALPN: &[u8] = b"shoal/1";
/// Silence after which a peer is taken for gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
pub const KEEP_ALIVE: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two nodes, which carry pods' packets: a path that went silent is given up within
/// seconds, so the packets take the controller's relay instead (see `shoal_api::pod_routes`).
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
pub const PEER_KEEP_ALIVE: Duration = Duration::from_secs(1);
/// Pods' packets (QUIC datagrams) a connection holds until they are read, or sent: bounded,
/// so a flood of connections costs little (256 without a certificate hold 64 MiB at most),
/// and large enough for a burst at link speed while the reader is busy.
pub const DATAGRAM_BUFFER: usize = 256 * 1024;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Requests one client may have in flight on its connection; more wait for credit. quinn keeps
/// state for every stream a peer may open, so this is also what each connection costs the
/// controller in memory (about 130 bytes a stream): 1,024 made a 1,000-node fleet cost
/// 130 MiB of controller memory for nothing.
pub const SERVER_STREAMS: u32 = 128;

/// Bytes a connection to the controller may have in flight before it is authenticated (a join
/// request is a few KiB), so a flood of connections without a certificate costs the
/// controller little: 256 of them at most hold 64 MiB. The controller raises it for
/// connections with a valid certificate.
pub const UNAUTHENTICATED_WINDOW: u32 = 256 * 1024;

fn transport_config(max_streams: u32) -> Arc<quinn::TransportConfig> {
    Arc::new(base_transport(max_streams))
}

fn base_transport(max_streams: u32) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .expect("15 s is a valid idle timeout"),
    ));
    t.max_concurrent_bidi_streams(max_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.datagram_receive_buffer_size(Some(DATAGRAM_BUFFER));
    // Packets waiting for the congestion window: beyond this the oldest are dropped, as a
    // router's queue would, so a pod's TCP connection slows down instead of queueing
    // (quinn's default, 1 MiB, is 80 ms at 100 Mbit/s).
    t.datagram_send_buffer_size(DATAGRAM_BUFFER);
    t
}

/// The transport between two nodes' peer endpoints: as [`base_transport`], with a path that
/// went silent given up sooner.
fn peer_transport() -> Arc<quinn::TransportConfig> {
    let mut t = base_transport(SERVER_STREAMS);
    t.keep_alive_interval(Some(PEER_KEEP_ALIVE));
    t.max_idle_timeout(Some(
        PEER_IDLE_TIMEOUT
            .try_into()
            .expect("4 s is a valid idle timeout"),
    ));
    Arc::new(t)
}

fn tls(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| Error::Pki(format!("bad private key PEM: {e}")))
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(tls)?;
    Ok(Arc::new(roots))
}

/// The controller's listening endpoint.
pub struct Server {
    endpoint: Endpoint,
}

impl Server {
    pub fn bind(listen: SocketAddr, ca_pem: &str, server: &Issued) -> Result<Server> {
        Server::bind_with(listen, ca_pem, ca_pem, server, true)
    }

    /// A node's endpoint for its peers: only clients with a certificate of the cluster (CA
    /// `ca_pem`); it serves a certificate of the peer CA (`peer_ca_pem`).
    pub fn bind_peer(
        listen: SocketAddr,
        ca_pem: &str,
        peer_ca_pem: &str,
        server: &Issued,
    ) -> Result<Server> {
        Server::bind_with(listen, ca_pem, peer_ca_pem, server, false)
    }

    fn bind_with(
        listen: SocketAddr,
        ca_pem: &str,
        chain_ca_pem: &str,
        server: &Issued,
        anonymous: bool,
    ) -> Result<Server> {
        let mut cfg = server_tls(ca_pem, chain_ca_pem, server, anonymous)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(cfg).map_err(tls)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        // The controller's door takes connections without a certificate (joins); a node's
        // peer endpoint takes only other nodes, which carry pods' packets.
        let transport = if anonymous {
            let mut t = base_transport(SERVER_STREAMS);
            t.receive_window(UNAUTHENTICATED_WINDOW.into());
            Arc::new(t)
        } else {
            peer_transport()
        };
        config.transport_config(transport);
        let endpoint = Endpoint::server(config, listen).map_err(|e| Error::Connect {
            addr: listen.to_string(),
            message: format!("cannot listen: {e}"),
        })?;
        Ok(Server { endpoint })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .map_err(|e| Error::Connection(e.to_string()))
    }

    /// The next incoming connection, after its handshake; `None` once closed.
    pub async fn accept(&self) -> Option<quinn::Incoming> {
        self.endpoint.accept().await
    }

    pub fn close(&self) {
        self.endpoint
            .close(0u32.into(), b"controller shutting down");
    }
}

/// The TLS side of a server: its certificate chained to `chain_ca_pem`, and client
/// certificates of `ca_pem` verified (optional when `anonymous`). No ALPN yet.
fn server_tls(
    ca_pem: &str,
    chain_ca_pem: &str,
    server: &Issued,
    anonymous: bool,
) -> Result<rustls::ServerConfig> {
    let ca = pem_to_der(ca_pem)?;
    let chain = vec![pem_to_der(&server.cert_pem)?, pem_to_der(chain_ca_pem)?];
    let builder = WebPkiClientVerifier::builder_with_provider(roots(&ca)?, provider());
    // Anonymous connections are let through the controller's handshake so that a new
    // node can join with a token; the API refuses them everything else.
    let builder = if anonymous {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    let verifier = builder.build().map_err(tls)?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key(&server.key_pem)?)
        .map_err(tls)
}

/// The controller's HTTPS door (the Kubernetes API over TCP): the same certificate and
/// client verification as its QUIC endpoint, speaking HTTP/1.1.
pub fn https_config(ca_pem: &str, server: &Issued) -> Result<Arc<rustls::ServerConfig>> {
    let mut cfg = server_tls(ca_pem, ca_pem, server, true)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The identity and key fingerprint of a TLS session's client certificate, as
/// [`peer_identity`] and [`peer_key`] give them for a QUIC connection.
pub fn tls_peer(certs: Option<&[CertificateDer<'_>]>) -> (Identity, Option<String>) {
    match certs.and_then(|c| c.first()) {
        Some(c) => (identity_of(c), crate::pki::fingerprint_of_cert(c).ok()),
        None => (Identity::Anonymous, None),
    }
}

/// The identity a connection proved with its client certificate.
pub fn peer_identity(conn: &Connection) -> Identity {
    peer_certificate(conn)
        .map(|c| identity_of(&c))
        .unwrap_or(Identity::Anonymous)
}

/// The fingerprint of the key a connection's client certificate is for, if it presented one
/// ([`crate::pki::fingerprint_of_cert`]).
pub fn peer_key(conn: &Connection) -> Option<String> {
    peer_certificate(conn).and_then(|c| crate::pki::fingerprint_of_cert(&c).ok())
}

/// How long the connection's client certificate was issued for, if it presented one.
pub fn peer_lifetime(conn: &Connection) -> Option<Duration> {
    let cert = peer_certificate(conn)?;
    let (_, x509) = x509_parser::parse_x509_certificate(&cert).ok()?;
    let v = x509.validity();
    let secs = v.not_after.timestamp() - v.not_before.timestamp();
    u64::try_from(secs).ok().map(Duration::from_secs)
}

fn peer_certificate(conn: &Connection) -> Option<CertificateDer<'static>> {
    conn.peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().cloned())
}

pub async fn send_response(send: &mut SendStream, response: &Response) -> Result<()> {
    match response {
        Response::List { items, revision } => {
            for part in list_parts(items, LIST_PART_BYTES) {
                frame::write(send, &Response::ListPart(part.to_vec())).await?;
            }
            let rest = &items[list_split(items, LIST_PART_BYTES)..];
            let last = Response::List {
                items: rest.to_vec(),
                revision: *revision,
            };
            frame::write(send, &last).await
        }
        other => frame::write(send, other).await,
    }
}

/// A list part's items at most, in bytes: well under a frame.
const LIST_PART_BYTES: usize = frame::MAX_FRAME / 4;

/// Where the last part of a list starts: everything before it goes in parts of at most
/// `max` bytes (an item larger than that goes alone).
fn list_split(items: &[Vec<u8>], max: usize) -> usize {
    let total: usize = items.iter().map(Vec::len).sum();
    if total <= max {
        return 0;
    }
    list_parts(items, max).map(<[Vec<u8>]>::len).sum()
}

/// The parts before the last one ([`list_split`]).
fn list_parts(items: &[Vec<u8>], max: usize) -> impl Iterator<Item = &[Vec<u8>]> {
    let total: usize = items.iter().map(Vec::len).sum();
    let mut start = 0;
    let mut sent = 0;
    std::iter::from_fn(move || {
        if total - sent <= max || start >= items.len() {
            return None;
        }
        let mut end = start;
        let mut size = 0;
        while end < items.len() && (end == start || size + items[end].len() <= max) {
            size += items[end].len();
            end += 1;
        }
        let part = &items[start..end];
        start = end;
        sent += size;
        Some(part)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_cut_into_parts_that_fit_and_nothing_is_lost() {
        let items: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 30]).collect();
        // Small enough: one frame.
        assert_eq!(list_parts(&items, 1000).count(), 0);
        assert_eq!(list_split(&items, 1000), 0);
        // 300 bytes in parts of at most 100: the parts, then the rest.
        let parts: Vec<&[Vec<u8>]> = list_parts(&items, 100).collect();
        assert!(parts
            .iter()
            .all(|p| p.iter().map(Vec::len).sum::<usize>() <= 100));
        let split = list_split(&items, 100);
        let mut again: Vec<Vec<u8>> = parts.concat();
        assert_eq!(again.len(), split);
        again.extend_from_slice(&items[split..]);
        assert_eq!(again, items);
        assert!(items[split..].iter().map(Vec::len).sum::<usize>() <= 100);
        // An item larger than a part goes alone.
        let big = vec![vec![1u8; 500], vec![2u8; 10], vec![3u8; 10]];
        let parts: Vec<&[Vec<u8>]> = list_parts(&big, 100).collect();
        assert_eq!(parts[0].len(), 1);
    }
}

/// A client connection to the controller.
pub struct Client {
    endpoint: Endpoint,
    conn: Connection,
}

async fn resolve(server: &str) -> Result<SocketAddr> {
    let connect = |message: String| Error::Connect {
        addr: server.to_string(),
        message,
    };
    tokio::net::lookup_host(server)
        .await
        .map_err(|e| connect(format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| connect("the name resolves to no address".into()))
}

impl Client {
    /// Connects with the client certificate from `creds` (mutual TLS).
    pub async fn connect(creds: &Credentials) -> Result<Client> {
        let ca = pem_to_der(&creds.certificate_authority)?;
        let certs = vec![pem_to_der(&creds.client_certificate)?];
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_root_certificates(roots(&ca)?)
            .with_client_auth_cert(certs, private_key(&creds.client_key)?)
            .map_err(tls)?;
        Client::connect_with(&creds.server, cfg, None).await
    }

    /// Connects to another node's peer endpoint at `addr`, which must prove it is `node` with
    /// a certificate of the peer CA, presenting this node's certificate; gives up after
    /// `timeout`.
    pub async fn connect_peer(
        addr: SocketAddr,
        node: &str,
        creds: &Credentials,
        timeout: Duration,
    ) -> Result<Client> {
        let peer_ca = creds.peer_certificate_authority.as_deref().ok_or_else(|| {
            Error::Config("this node does not know the peer CA yet (it renews its credential on its next connection)".into())
        })?;
        let ca = pem_to_der(peer_ca)?;
        let certs = vec![pem_to_der(&creds.client_certificate)?];
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_root_certificates(roots(&ca)?)
            .with_client_auth_cert(certs, private_key(&creds.client_key)?)
            .map_err(tls)?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(cfg).map_err(tls)?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(peer_transport());
        let bind: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let connect_err = |message: String| Error::Connect {
            addr: addr.to_string(),
            message,
        };
        let mut endpoint = Endpoint::client(bind)
            .map_err(|e| connect_err(format!("cannot open a UDP socket: {e}")))?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(addr, node)
            .map_err(|e| connect_err(e.to_string()))?;
        let conn = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => return Err(connect_err(format!("no answer within {timeout:?}"))),
            Ok(Err(e)) => return Err(connect_err(e.to_string())),
            Ok(Ok(conn)) => conn,
        };
        Ok(Client { endpoint, conn })
    }

    /// Connects with no client certificate, trusting the server only if its CA hashes to what
    /// the join token pins.
    pub async fn connect_with_token(server: &str, token: &JoinToken) -> Result<Client> {
        let verifier = Arc::new(PinnedCa {
            expected: token.ca_hash.clone(),
            mismatch: Mutex::new(None),
            provider: provider(),
        });
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        Client::connect_with(server, cfg, Some(verifier)).await
    }

    /// A connection without any client certificate, verifying the server with `ca_pem`.
    pub async fn connect_anonymous(server: &str, ca_pem: &str) -> Result<Client> {
        let ca = pem_to_der(ca_pem)?;
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_root_certificates(roots(&ca)?)
            .with_no_client_auth();
        Client::connect_with(server, cfg, None).await
    }

    async fn connect_with(
        server: &str,
        mut cfg: rustls::ClientConfig,
        pinned: Option<Arc<PinnedCa>>,
    ) -> Result<Client> {
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        let addr = resolve(server).await?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(cfg).map_err(tls)?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(transport_config(64));
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .expect("a literal socket address");
        let mut endpoint = Endpoint::client(bind).map_err(|e| Error::Connect {
            addr: server.to_string(),
            message: format!("cannot open a UDP socket: {e}"),
        })?;
        endpoint.set_default_client_config(config);
        let connect_err = |message: String| Error::Connect {
            addr: server.to_string(),
            message,
        };
        let connecting = endpoint
            .connect(addr, SERVER_NAME)
            .map_err(|e| connect_err(e.to_string()))?;
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => return Err(connect_err(format!("no answer within {CONNECT_TIMEOUT:?}: is the controller running and reachable over UDP?"))),
            Ok(Err(e)) => {
                if let Some((expected, actual)) = pinned.and_then(|p| p.mismatch.lock().ok().and_then(|m| m.clone())) {
                    return Err(Error::CaMismatch { expected, actual });
                }
                return Err(connect_err(e.to_string()));
            }
            Ok(Ok(conn)) => conn,
        };
        Ok(Client { endpoint, conn })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Sends `req` and returns the single response.
    pub async fn call(&self, req: &Request) -> Result<Response> {
        let answer = async {
            let mut s = self.stream(req).await?;
            let mut parts: Vec<Vec<u8>> = Vec::new();
            loop {
                let next = s.next().await?.ok_or_else(|| {
                    Error::Stream("the server closed the stream without answering".into())
                })?;
                match next {
                    Response::ListPart(items) => parts.extend(items),
                    Response::List { items, revision } if !parts.is_empty() => {
                        parts.extend(items);
                        return Ok(Response::List {
                            items: parts,
                            revision,
                        });
                    }
                    other => return Ok(other),
                }
            }
        };
        answer.await.map_err(|e| self.why(e))
    }

    /// Sends `req` and returns the stream of responses (for watches and logs).
    pub async fn stream(&self, req: &Request) -> Result<ResponseStream> {
        let (mut send, recv) = self.open(req).await?;
        send.finish()
            .map_err(|e| self.why(Error::Stream(e.to_string())))?;
        Ok(ResponseStream {
            recv: frame::Reader::new(recv, frame::MAX_FRAME),
            _send: send,
        })
    }

    /// Sends `req`, then the file at `body` as [`Request::Chunk`] frames on the same stream
    /// (an upload), and returns the stream of responses. A server that refuses the upload
    /// stops reading it and answers why: then that answer is what the stream holds.
    pub async fn upload(&self, req: &Request, body: &std::path::Path) -> Result<ResponseStream> {
        use tokio::io::AsyncReadExt;
        let mut file = tokio::fs::File::open(body)
            .await
            .map_err(|e| Error::io(body, e))?;
        let (mut send, recv) = self.open(req).await?;
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        loop {
            let n = file.read(&mut buf).await.map_err(|e| Error::io(body, e))?;
            if n == 0 {
                let _ = send.finish();
                break;
            }
            if frame::write(&mut send, &Request::Chunk(buf[..n].to_vec()))
                .await
                .is_err()
            {
                break;
            }
        }
        Ok(ResponseStream {
            recv: frame::Reader::new(recv, frame::MAX_FRAME),
            _send: send,
        })
    }

    /// Opens a stream with `req` and keeps its sending side for what goes both ways (exec).
    pub async fn open(&self, req: &Request) -> Result<(SendStream, RecvStream)> {
        let opened = async {
            let (mut send, recv) = self
                .conn
                .open_bi()
                .await
                .map_err(|e| Error::Connection(e.to_string()))?;
            frame::write(&mut send, req).await?;
            Ok((send, recv))
        };
        opened.await.map_err(|e| self.why(e))
    }

    /// A stream error as the reason the connection closed, when it did: the server says why
    /// it closed it (a revoked certificate, say), which "connection lost" would hide.
    fn why(&self, e: Error) -> Error {
        match (&e, self.conn.close_reason()) {
            (Error::Stream(_) | Error::Connection(_), Some(reason)) => {
                Error::Connection(reason.to_string())
            }
            _ => e,
        }
    }

    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
    }
}

/// The size of an upload's chunk frames.
const UPLOAD_CHUNK: usize = 256 * 1024;

pub struct ResponseStream {
    recv: frame::Reader<RecvStream>,
    _send: SendStream,
}

impl ResponseStream {
    /// The next response; `None` when the server finished the stream. Cancel-safe: a
    /// `select!` over a watch and a timer loses nothing when the timer wins.
    pub async fn next(&mut self) -> Result<Option<Response>> {
        self.recv.next().await
    }
}

/// Trusts a server whose chain ends in a CA whose hash the join token pins, then verifies the
/// server certificate against that CA as usual.
#[derive(Debug)]
struct PinnedCa {
    expected: String,
    mismatch: Mutex<Option<(String, String)>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .last()
            .ok_or_else(|| rustls::Error::General("the server sent no CA certificate".into()))?;
        let actual = ca_hash(ca);
        if actual != self.expected {
            if let Ok(mut m) = self.mismatch.lock() {
                *m = Some((self.expected.clone(), actual.clone()));
            }
            return Err(rustls::Error::General(format!(
                "CA hash mismatch: token pins {}, server has {actual}",
                self.expected
            )));
        }
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(
            end_entity,
            &intermediates[..intermediates.len() - 1],
            server_name,
            ocsp,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
