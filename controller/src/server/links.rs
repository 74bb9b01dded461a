//! What the QUIC door keeps about connections: each node's session link (the one its agent
//! registered on, which relays and tunnels go through), and the connections without a
//! certificate, bounded per address and in all.

use shoal_transport::proto::{Request, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a node's established session has to answer before a new session of the same node
/// takes its place (after an agent restart, the old connection is dead but not yet timed out).
const SESSION_PROBE: Duration = Duration::from_secs(2);
/// Connections without a certificate at once from one address: enough for a site's devices
/// behind one NAT joining together (and the scale bench's 50).
const ANONYMOUS_PER_ADDRESS: usize = 64;
const ANONYMOUS_TOTAL: usize = 256;

/// The session connection of each node, by name, so requests for a node (logs, tunnels) can be
/// relayed. Only the connection a node registers itself on (`PutNode`) becomes its link: any
/// other connection made with the node's certificate never takes it over.
/// With it, how many bytes a second of each node's pods' packets the controller relays.
#[derive(Clone)]
pub struct NodeLinks(Arc<Mutex<HashMap<String, quinn::Connection>>>, u64);

impl NodeLinks {
    pub fn new(relay_rate: u64) -> NodeLinks {
        NodeLinks(Arc::default(), relay_rate)
    }

    /// Bytes per second of each node's pods' packets relayed (`--relay-rate`).
    pub(super) fn relay_rate(&self) -> u64 {
        self.1
    }

    /// Makes `conn` the session of `node`, unless another live session holds it: that one
    /// must fail to answer within [`SESSION_PROBE`] (an agent that restarted left it behind).
    /// Whether `conn` is new as the session.
    pub(super) async fn claim(
        &self,
        node: &str,
        conn: &quinn::Connection,
    ) -> std::result::Result<bool, String> {
        let current = self.get(node);
        match current {
            Some(c) if c.stable_id() == conn.stable_id() => return Ok(false),
            Some(c) if c.close_reason().is_none() && answers(&c).await => {
                return Err(format!(
                    "node {node:?} already has a session from {}: a second agent with this node's certificate is refused",
                    c.remote_address()
                ));
            }
            Some(c) => c.close(2u32.into(), b"replaced by a new session of this node"),
            None => {}
        }
        if let Ok(mut m) = self.0.lock() {
            m.insert(node.to_string(), conn.clone());
        }
        Ok(true)
    }

    pub(super) fn remove(&self, node: &str, conn: &quinn::Connection) {
        if let Ok(mut m) = self.0.lock() {
            if m.get(node)
                .is_some_and(|c| c.stable_id() == conn.stable_id())
            {
                m.remove(node);
            }
        }
    }

    /// Whether `node` has a live session here: it registered on this controller since it
    /// started, and its connection has not closed.
    pub fn connected(&self, node: &str) -> bool {
        self.get(node).is_some_and(|c| c.close_reason().is_none())
    }

    pub fn get(&self, node: &str) -> Option<quinn::Connection> {
        self.0.lock().ok().and_then(|m| m.get(node).cloned())
    }

    /// Sends `request` to `node` over its session; its answers come on the stream returned
    /// (with the sending half, which must live as long as the answers are read).
    pub async fn ask(
        &self,
        node: &str,
        request: &Request,
    ) -> crate::Result<(quinn::SendStream, quinn::RecvStream)> {
        let (mut to_node, from_node) = self.open(node, request).await?;
        to_node.finish().map_err(|e| {
            crate::Error::unreachable(node, &shoal_transport::Error::Stream(e.to_string()))
        })?;
        Ok((to_node, from_node))
    }

    /// Opens a stream to `node` with `request` and keeps its sending side open, for what
    /// goes both ways (exec).
    pub async fn open(
        &self,
        node: &str,
        request: &Request,
    ) -> crate::Result<(quinn::SendStream, quinn::RecvStream)> {
        let conn = self
            .get(node)
            .ok_or_else(|| crate::Error::Unreachable(format!("node {node:?} is not connected")))?;
        let opened = async {
            let (mut to_node, from_node) = conn
                .open_bi()
                .await
                .map_err(|e| shoal_transport::Error::Connection(e.to_string()))?;
            shoal_transport::frame::write(&mut to_node, request).await?;
            Ok::<_, shoal_transport::Error>((to_node, from_node))
        };
        opened
            .await
            .map_err(|e| crate::Error::unreachable(node, &e))
    }
}

/// Whether a node's connection still answers a request within [`SESSION_PROBE`].
async fn answers(conn: &quinn::Connection) -> bool {
    let probe = async {
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        shoal_transport::frame::write(&mut send, &Request::WhoAmI)
            .await
            .ok()?;
        send.finish().ok()?;
        shoal_transport::frame::read::<Response, _>(&mut recv, 64 * 1024)
            .await
            .ok()
            .flatten()
    };
    matches!(
        tokio::time::timeout(SESSION_PROBE, probe).await,
        Ok(Some(_))
    )
}

/// Connections without a certificate, by address: bounded per address and in all.
#[derive(Clone, Default)]
pub(super) struct Anonymous(Arc<Mutex<HashMap<std::net::IpAddr, usize>>>);

impl Anonymous {
    pub(super) fn enter(&self, ip: std::net::IpAddr) -> Option<AnonymousSlot> {
        let mut m = self.0.lock().ok()?;
        let total: usize = m.values().sum();
        let here = m.entry(ip).or_insert(0);
        if *here >= ANONYMOUS_PER_ADDRESS || total >= ANONYMOUS_TOTAL {
            return None;
        }
        *here += 1;
        Some(AnonymousSlot(self.clone(), ip))
    }
}

pub(super) struct AnonymousSlot(Anonymous, std::net::IpAddr);

impl Drop for AnonymousSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = (self.0).0.lock() {
            if let Some(n) = m.get_mut(&self.1) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.1);
                }
            }
        }
    }
}
