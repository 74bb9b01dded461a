//! `shoal logs POD [-c CONTAINER] [-f] [--previous] [--tail N]`

use crate::client::{check, connect};
use crate::ClientArgs;
use anyhow::Result;
use shoal_transport::proto::{Request, Response};
use std::io::Write;

#[derive(clap::Args)]
pub struct Args {
    /// The pod (or pod/NAME).
    pod: String,
    #[arg(short = 'c', long)]
    container: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Keep streaming new output.
    #[arg(short = 'f', long)]
    follow: bool,
    /// The log of the previous run of the container.
    #[arg(short = 'p', long)]
    previous: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: Args) -> Result<()> {
    let client = connect(&args.client).await?;
    let pod = crate::client::pod_name(&args.pod);
    let req = Request::Logs {
        namespace: args.namespace,
        pod,
        container: args.container,
        follow: args.follow,
        previous: args.previous,
        tail: args.tail,
    };
    let mut stream = client.stream(&req).await?;
    let mut out = std::io::stdout();
    // To a terminal, a container's escape sequences are shown, not obeyed; to a pipe or a
    // file, its bytes go as they are.
    let terminal = std::io::IsTerminal::is_terminal(&out);
    while let Some(r) = stream.next().await? {
        if let Response::Chunk(bytes) = check(r)? {
            if terminal {
                let text = String::from_utf8_lossy(&bytes);
                out.write_all(shoal_api::table::terminal_safe(&text, true).as_bytes())?;
            } else {
                out.write_all(&bytes)?;
            }
            out.flush()?;
        }
    }
    Ok(())
}
