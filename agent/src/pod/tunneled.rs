//! What the node's tunnels ask of its pods: where a tunnel may connect, whom a pod's
//! NetworkPolicy lets in through one, logs, exec and the images held.

use super::*;

impl crate::tunnel::Pods for Supervisor {
    /// Whether a tunnel may connect to `ip:port` here: the address of a pod of this node, on
    /// any port of an address of its own and only a declared port of one it shares with the
    /// node (see [`shoal_api::tunnel_policy`]), so the node's own services stay out of reach.
    fn serves_at(&self, ip: std::net::IpAddr, port: u16, udp: bool) -> bool {
        let ip = ip.to_string();
        lock(&self.0.pods).values().any(|r| {
            let s = lock(&r.state);
            s.reported_ip.as_deref() == Some(ip.as_str())
                && shoal_api::tunnel_policy::pod_accepts(&s.pod, port, udp)
        })
    }

    fn admits(&self, from: std::net::IpAddr, ip: std::net::IpAddr, port: u16, udp: bool) -> bool {
        let protocol = shoal_api::policy::Protocol::of(udp);
        // The tunnel's client is on another node: only this node's loopback and bridge
        // address count as its own.
        (self.0.proxy.policies()).connection_allowed(from, ip, port, protocol, &|_| false)
    }

    fn speaks_for(&self, peer: &str, from: std::net::IpAddr) -> bool {
        self.0.proxy.speaks_for(peer, from)
    }

    fn take_packets(
        &self,
        peer: String,
        conn: quinn::Connection,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let proxy = self.0.proxy.clone();
        async move { proxy.take_packets(Some(&peer), &conn).await }
    }

    /// The log file of a container of a pod running here.
    fn log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        previous: bool,
    ) -> std::result::Result<PathBuf, String> {
        let running = lock(&self.0.pods)
            .values()
            .find(|r| r.namespace == namespace && r.name == pod)
            .map(|r| (r.dir.clone(), lock(&r.state).pod.clone()));
        // A pod that has finished (or ran before the agent restarted) keeps its logs until
        // it is deleted, as the kubelet keeps a terminated container's.
        let (dir, spec) = match running {
            Some(found) => found,
            None => self
                .0
                .local
                .list_typed::<Pod>(Kind::Pod)
                .into_iter()
                .find(|p| p.metadata.namespace_or_default() == namespace && p.metadata.name == pod)
                .map(|p| (self.0.data_dir.join("pods").join(&p.metadata.uid), p))
                .filter(|(dir, _)| dir.join("logs").is_dir())
                .ok_or_else(|| format!("pod {pod:?} is not on node {:?}", self.0.node))?,
        };
        let name = spec.choose_container(container)?;
        let current = dir.join("logs").join(format!("{name}.log"));
        Ok(if previous {
            shoal_runtime::logs::previous_path(&current)
        } else {
            current
        })
    }

    /// `runc exec` of `command` in a container of a pod running here (with a terminal when
    /// `tty`), or why it cannot be.
    fn exec_command(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        command: &[String],
        tty: bool,
    ) -> std::result::Result<std::process::Command, String> {
        let spec = lock(&self.0.pods)
            .values()
            .find(|r| r.namespace == namespace && r.name == pod)
            .map(|r| lock(&r.state).pod.clone())
            .ok_or_else(|| format!("pod {pod:?} does not run on node {:?}", self.0.node))?;
        if spec.runtime_class() != RuntimeClass::Runc {
            return Err(format!(
                "pod {pod:?} runs as WebAssembly: a wasm pod has no processes to exec into"
            ));
        }
        let runc =
            self.0.runc.as_ref().ok_or_else(|| {
                format!("node {:?} runs no OCI containers (no runc)", self.0.node)
            })?;
        let name = spec.choose_container(container)?;
        Ok(runc.exec_command(&container_key(&spec, &name), command, tty))
    }

    /// Is this pod still running here?
    fn has(&self, namespace: &str, pod: &str) -> bool {
        lock(&self.0.pods)
            .values()
            .any(|r| r.namespace == namespace && r.name == pod)
    }

    async fn images(&self) -> Result<Vec<u8>> {
        Supervisor::images(self).await
    }
}
