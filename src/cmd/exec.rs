//! `shoal exec POD [-c CONTAINER] [-i] -- COMMAND...`: runs a command in a container of an
//! OCI pod, as `kubectl exec` does; its output comes here and its exit code is shoal's.

use crate::client::{check, connect};
use crate::ClientArgs;
use anyhow::{bail, Context, Result};
use shoal_transport::frame;
use shoal_transport::proto::{ExecFrame, Request, Response};
use std::io::Write;
use tokio::io::AsyncReadExt;

#[derive(clap::Args)]
pub struct Args {
    /// The pod (or pod/NAME).
    pod: String,
    #[arg(short = 'c', long)]
    container: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Pass this program's input to the command (its end closes the command's).
    #[arg(short = 'i', long)]
    stdin: bool,
    #[command(flatten)]
    client: ClientArgs,
    /// The command and its arguments, after `--`.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

pub async fn run(args: Args) -> Result<()> {
    let client = connect(&args.client).await?;
    let pod = crate::client::pod_name(&args.pod);
    let req = Request::Exec {
        namespace: args.namespace,
        pod,
        container: args.container,
        command: args.command,
        stdin: args.stdin,
        tty: false,
    };
    let (mut send, mut recv) = client.open(&req).await?;
    match frame::read::<Response, _>(&mut recv, frame::MAX_FRAME).await? {
        Some(r) => {
            check(r)?;
        }
        None => bail!("the controller closed the stream without answering"),
    }
    // The sending side stays open until the command exits: its end tells the node that the
    // caller went away.
    let _held = if args.stdin {
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; ExecFrame::MAX_DATA];
            loop {
                let frame = match input.read(&mut buf).await {
                    Ok(0) | Err(_) => ExecFrame::StdinClosed,
                    Ok(n) => ExecFrame::Stdin(buf[..n].to_vec()),
                };
                let last = frame == ExecFrame::StdinClosed;
                if frame::write(&mut send, &frame).await.is_err() || last {
                    std::future::pending::<()>().await;
                }
            }
        });
        None
    } else {
        Some(send)
    };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    loop {
        match frame::read::<ExecFrame, _>(&mut recv, ExecFrame::MAX_FRAME)
            .await
            .context("reading the command's output")?
        {
            Some(ExecFrame::Stdout(d)) => {
                out.write_all(&d)?;
                out.flush()?;
            }
            Some(ExecFrame::Stderr(d)) => {
                err.write_all(&d)?;
                err.flush()?;
            }
            Some(ExecFrame::Exit(code)) => std::process::exit(code),
            Some(_) => {}
            None => bail!("the node ended the exec before the command exited"),
        }
    }
}
