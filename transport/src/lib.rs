//! Shoal's wire: QUIC (quinn + rustls, ALPN `shoal/1`) with mutual TLS, the PKI behind it (a
//! cluster CA, node and admin certificates, join tokens that pin the CA), and the
//! length-prefixed postcard frames every request and response travels in.

pub mod credentials;
pub mod error;
pub mod frame;
pub mod pki;
pub mod proto;
pub mod quic;
pub mod seal;
pub mod watch;

pub use credentials::Credentials;
pub use error::{report, Error, Result};
pub use pki::{Ca, Identity, JoinToken};
pub use quic::{Client, ResponseStream, Server};
pub use watch::{Seen, Selection, Watcher};

/// Makes ring the process's default rustls provider, for libraries that build TLS clients of
/// their own (the registry client). Shoal uses ring everywhere: it builds for every target with
/// a plain C compiler. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
