//! What reaches into a running pod through its node: an exec, a port-forward. What the
//! pod's spec and state already rule out is refused here, before any node is asked.

use super::{bad_request, scheduled, Reply, Service};
use shoal_transport::proto::{Request, Response, WireError};

impl Service {
    /// A log, an exec or a port-forward: the node that serves it, and what to ask it.
    pub(super) async fn reach_pod(&self, req: Request) -> std::result::Result<Reply, WireError> {
        match req {
            Request::Logs {
                ref namespace,
                ref pod,
                ..
            } => {
                let node = scheduled(&self.pod(namespace, pod).await?, "it has no logs")?;
                Ok(Reply::ToNode { node, request: req })
            }
            Request::Exec {
                ref namespace,
                ref pod,
                ref container,
                ref command,
                ..
            } => {
                let node = self.exec_node(namespace, pod, container, command).await?;
                Ok(Reply::ToNode { node, request: req })
            }
            Request::PortForward {
                ref namespace,
                ref pod,
                port,
            } => {
                let (node, ip) = self.port_forward_target(namespace, pod, port).await?;
                match port {
                    None => Ok(Reply::One(Response::Ok)),
                    Some(port) => {
                        let udp = false;
                        let request = Request::Dial {
                            ip,
                            port,
                            udp,
                            from: None,
                        };
                        Ok(Reply::ToNode { node, request })
                    }
                }
            }
            _ => Err(bad_request("not a request into a pod")),
        }
    }

    /// The node to run an exec on. What the pod's spec already rules out is refused here,
    /// before any node is asked (and before kubectl's fallback to SPDY asks again).
    async fn exec_node(
        &self,
        namespace: &str,
        pod: &str,
        container: &Option<String>,
        command: &[String],
    ) -> std::result::Result<String, WireError> {
        if command.is_empty() {
            return Err(bad_request("exec needs a command to run"));
        }
        let pod = self.pod(namespace, pod).await?;
        if pod.runtime_class() != shoal_api::RuntimeClass::Runc {
            return Err(bad_request(format!(
                "pod {:?} runs as WebAssembly: a wasm pod has no processes to exec into",
                pod.metadata.name
            )));
        }
        pod.choose_container(container.as_deref())
            .map_err(bad_request)?;
        scheduled(&pod, "nothing runs in it")
    }

    /// The node and address a port-forward to `port` of a pod connects to: the pod must be
    /// running with an address; one that shares its node's (wasm, hostNetwork) is reached
    /// only at a port it declares, as the node's own check has it. Without a port, only
    /// the pod is checked.
    async fn port_forward_target(
        &self,
        namespace: &str,
        name: &str,
        port: Option<u16>,
    ) -> std::result::Result<(String, String), WireError> {
        if port == Some(0) {
            return Err(bad_request("port-forward needs a port from 1 to 65535"));
        }
        let pod = self.pod(namespace, name).await?;
        let node = scheduled(&pod, "nothing listens in it")?;
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        let ip = status.and_then(|s| s.pod_ip.clone());
        let Some(ip) = ip.filter(|_| phase == "Running") else {
            return Err(bad_request(format!(
                "pod {name:?} is not running ({phase}): port-forward reaches running pods"
            )));
        };
        if let Some(port) = port.filter(|p| !shoal_api::tunnel_policy::pod_accepts(&pod, *p, false))
        {
            return Err(bad_request(format!(
                "pod {name:?} shares its node's address and declares no TCP containerPort {port}: a wasm or hostNetwork pod is reached only at its declared ports"
            )));
        }
        Ok((node, ip))
    }
}
