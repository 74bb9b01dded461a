//! The node's ends of tunnels and requests from outside: what the controller asks over the
//! node's own connection ([`serve`]: logs, images, tunnels relayed through it), and other
//! nodes' service proxies connecting directly ([`peer`]). Both reach the pods only through
//! [`Pods`], which the supervisor implements: this module never sees the supervisor itself.

mod exec;
pub mod peer;
pub mod serve;

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;

/// What the tunnel ends ask of the node's pods.
pub trait Pods: Clone + Send + Sync + 'static {
    /// Whether a tunnel may connect to `ip:port` here (see [`shoal_api::tunnel_policy`]).
    fn serves_at(&self, ip: IpAddr, port: u16, udp: bool) -> bool;
    /// Whether NetworkPolicy lets a tunnel's client `from` reach the pod at `ip:port` here.
    fn admits(&self, from: IpAddr, ip: IpAddr, port: u16, udp: bool) -> bool;
    /// Whether node `peer` may give `from` as a tunnel's client: not another node's pod.
    fn speaks_for(&self, peer: &str, from: IpAddr) -> bool;
    /// The log file of a container of a pod here, or why there is none.
    fn log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        previous: bool,
    ) -> Result<PathBuf, String>;
    /// How to run `command` in a container of a pod here (`runc exec`), or why it cannot be.
    fn exec_command(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        command: &[String],
        tty: bool,
    ) -> Result<std::process::Command, String>;
    /// Takes the pods' packets node `peer` sends on its direct connection `conn` (see
    /// `shoal_api::pod_routes`), until it closes.
    fn take_packets(
        &self,
        peer: String,
        conn: quinn::Connection,
    ) -> impl Future<Output = ()> + Send + 'static;
    /// Whether the pod still runs here.
    fn has(&self, namespace: &str, pod: &str) -> bool;
    /// The container images the node holds, as JSON for `shoal images`.
    fn images(&self) -> impl Future<Output = crate::Result<Vec<u8>>> + Send;
}
