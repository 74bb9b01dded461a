//! `shoal port-forward POD [LOCAL:]REMOTE...`: listens on local ports and forwards each
//! connection to a port of the pod, as `kubectl port-forward` does: through the controller,
//! which has the pod's node connect to it. Runs until interrupted.

use crate::client::{call, check, connect};
use crate::ClientArgs;
use anyhow::{anyhow, bail, Context, Result};
use shoal_transport::frame;
use shoal_transport::proto::{Request, Response};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// The pod (or pod/NAME).
    pod: String,
    /// The ports: `8080` (the same here), `9000:8080` (9000 here to the pod's 8080) or
    /// `:8080` (a free port here).
    #[arg(required = true)]
    ports: Vec<String>,
    /// The local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: std::net::IpAddr,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// `[LOCAL:]REMOTE`: the local port (0 for a free one) and the pod's.
fn parse_port(spec: &str) -> Result<(u16, u16)> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| anyhow!("{spec:?}: {p:?} is not a port number"))
    };
    let (local, remote) = match spec.split_once(':') {
        Some(("", remote)) => (0, port(remote)?),
        Some((local, remote)) => (port(local)?, port(remote)?),
        None => (port(spec)?, port(spec)?),
    };
    if remote == 0 {
        bail!("{spec:?}: the pod's port must be from 1 to 65535");
    }
    Ok((local, remote))
}

pub async fn run(args: Args) -> Result<()> {
    let ports = args
        .ports
        .iter()
        .map(|s| parse_port(s))
        .collect::<Result<Vec<_>>>()?;
    let client = Arc::new(connect(&args.client).await?);
    let pod = crate::client::pod_name(&args.pod);
    // The pod checked (and the caller authorized) before anything listens.
    let check_pod = Request::PortForward {
        namespace: args.namespace.clone(),
        pod: pod.clone(),
        port: None,
    };
    call(&client, &check_pod).await?;
    let mut listeners = Vec::new();
    for (local, remote) in ports {
        let listener = tokio::net::TcpListener::bind((args.address, local))
            .await
            .with_context(|| format!("listening on {}:{local}", args.address))?;
        let at = listener.local_addr()?;
        println!("Forwarding from {at} -> {remote}");
        listeners.push((listener, remote));
    }
    let mut serving = tokio::task::JoinSet::new();
    for (listener, remote) in listeners {
        let request = Request::PortForward {
            namespace: args.namespace.clone(),
            pod: pod.clone(),
            port: Some(remote),
        };
        serving.spawn(serve(listener, client.clone(), request));
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        done = serving.join_next() => match done {
            Some(Ok(Err(e))) => Err(e.context("accepting a connection")),
            _ => Ok(()),
        },
    }
}

/// Accepts connections on `listener`, each forwarded with `request`.
async fn serve(
    listener: tokio::net::TcpListener,
    client: Arc<shoal_transport::Client>,
    request: Request,
) -> Result<()> {
    let port = listener.local_addr()?.port();
    loop {
        let (conn, _) = listener.accept().await?;
        println!("Handling connection for {port}");
        let (client, request) = (client.clone(), request.clone());
        tokio::spawn(async move {
            if let Err(e) = forward(&client, &request, conn).await {
                eprintln!("error forwarding port {port}: {e:#}");
            }
        });
    }
}

/// One connection: the pod's node connects to the pod, then the bytes flow both ways.
async fn forward(
    client: &shoal_transport::Client,
    request: &Request,
    mut conn: tokio::net::TcpStream,
) -> Result<()> {
    let (send, mut recv) = client.open(request).await?;
    match frame::read::<Response, _>(&mut recv, frame::MAX_FRAME).await? {
        Some(r) => {
            check(r)?;
        }
        None => bail!("the controller closed the stream without answering"),
    }
    let mut tunnel = tokio::io::join(recv, send);
    tokio::io::copy_bidirectional(&mut conn, &mut tunnel).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_read_as_kubectl_reads_them() {
        assert_eq!(parse_port("8080").unwrap(), (8080, 8080));
        assert_eq!(parse_port("9000:8080").unwrap(), (9000, 8080));
        assert_eq!(parse_port(":8080").unwrap(), (0, 8080));
        assert!(parse_port("x").is_err());
        assert!(parse_port("9000:0").is_err());
    }
}
