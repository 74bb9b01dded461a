//! The controller process: opens the store and the PKI in the data dir, writes the admin
//! credential and the join token, and serves the API over QUIC until shut down.

use crate::error::{Error, Result};
use crate::service::{Reply, Service};
use crate::store::{Store, StoreConfig};
use shoal_transport::pki::{Ca, JoinToken, ADMIN_ORG};
use shoal_transport::proto::{ErrorCode, Response, WireError};
use shoal_transport::quic::{peer_identity, read_request, send_response};
use shoal_transport::{Credentials, Identity, Server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Streams one connection may have open at once; more wait.
const STREAMS_PER_CONNECTION: usize = 256;
/// A client gets this long to send its request once it opened a stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Extra names and addresses for the server certificate.
    pub tls_san: Vec<String>,
    /// The address written into admin.conf; by default the listen address (loopback when the
    /// controller listens on every interface).
    pub advertise: Option<String>,
    pub store: StoreConfig,
}

pub struct Controller {
    service: Service,
    server: Server,
    admin_config: PathBuf,
    token: String,
}

impl Controller {
    pub async fn start(config: ControllerConfig) -> Result<Controller> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tls_dir = dir.join("tls");
        std::fs::create_dir_all(&tls_dir).map_err(|e| Error::io(&tls_dir, e))?;
        let ca = Ca::load_or_create(&tls_dir)?;
        let store = Store::open(dir, config.store.clone())?;
        let service = Service::new(store, ca.hash());
        service.bootstrap().await?;

        let mut sans = config.tls_san.clone();
        sans.push(config.listen.ip().to_string());
        let server_cert = ca.issue_server(&sans)?;
        let server = Server::bind(config.listen, ca.cert_pem(), &server_cert)?;
        let bound = server.local_addr()?;

        let admin_config = dir.join("admin.conf");
        if !admin_config.exists() {
            let admin = ca.issue_client("admin", ADMIN_ORG)?;
            let host = if bound.ip().is_unspecified() {
                SocketAddr::new([127, 0, 0, 1].into(), bound.port()).to_string()
            } else {
                bound.to_string()
            };
            Credentials {
                server: config.advertise.clone().unwrap_or(host),
                certificate_authority: ca.cert_pem().to_string(),
                client_certificate: admin.cert_pem,
                client_key: admin.key_pem,
            }
            .save(&admin_config)?;
        } else if let Ok(mut creds) = Credentials::load(&admin_config) {
            // Keep the credential pointing at the port actually bound (tests bind port 0).
            let port = bound.port().to_string();
            if !creds.server.ends_with(&format!(":{port}")) && config.advertise.is_none() {
                if let Some((host, _)) = creds.server.rsplit_once(':') {
                    creds.server = format!("{host}:{port}");
                    creds.save(&admin_config)?;
                }
            }
        }

        let token_path = dir.join("token");
        let token = match std::fs::read_to_string(&token_path) {
            Ok(t) => t.trim().to_string(),
            Err(_) => {
                let token = service
                    .create_token("bootstrap token", Some(JoinToken::new(ca.hash())))
                    .await?;
                shoal_transport::pki::write_private(&token_path, format!("{token}\n").as_bytes())?;
                token
            }
        };
        tracing::info!(listen = %bound, data_dir = %dir.display(), "controller ready");
        Ok(Controller {
            service,
            server,
            admin_config,
            token,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.server.local_addr()?)
    }

    pub fn admin_config(&self) -> &PathBuf {
        &self.admin_config
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and waits for open requests.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let tracker = TaskTracker::new();
        loop {
            let incoming = tokio::select! {
                _ = shutdown.cancelled() => break,
                i = self.server.accept() => match i {
                    Some(i) => i,
                    None => break,
                },
            };
            let service = self.service.clone();
            let shutdown = shutdown.clone();
            let conn_tracker = tracker.clone();
            tracker.spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "handshake failed");
                        return;
                    }
                };
                serve_connection(conn, service, shutdown, conn_tracker).await;
            });
        }
        self.server.close();
        tracker.close();
        tracker.wait().await;
        Ok(())
    }
}

async fn serve_connection(
    conn: quinn::Connection,
    service: Service,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let who = peer_identity(&conn);
    tracing::debug!(remote = %conn.remote_address(), identity = %who, "connection");
    let limit = Arc::new(Semaphore::new(STREAMS_PER_CONNECTION));
    loop {
        let (send, recv) = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let service = service.clone();
        let who = who.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            serve_stream(send, recv, &service, &who, shutdown).await;
            drop(permit);
        });
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    service: &Service,
    who: &Identity,
    shutdown: CancellationToken,
) {
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut recv)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let _ = send_response(
                &mut send,
                &Response::Error(WireError {
                    code: ErrorCode::BadRequest,
                    message: e.to_string(),
                }),
            )
            .await;
            let _ = send.finish();
            return;
        }
        Err(_) => return,
    };
    match service.handle(who, request).await {
        Reply::One(response) => {
            let _ = send_response(&mut send, &response).await;
        }
        Reply::Watch(mut stream) => loop {
            let response = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = send.stopped() => break,
                r = stream.next() => r,
            };
            let last = matches!(response, Response::Error(_));
            if send_response(&mut send, &response).await.is_err() || last {
                break;
            }
        },
    }
    let _ = send.finish();
}
