//! `shoal token create`

use crate::client::{call, connect};
use crate::ClientArgs;
use anyhow::{bail, Result};
use shoal_transport::proto::{Request, Response};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TokenCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(clap::Subcommand)]
enum TokenCommand {
    /// Create a join token for agents and print it.
    Create {
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
    },
}

pub async fn run(args: Args) -> Result<()> {
    let client = connect(&args.client).await?;
    match args.command {
        TokenCommand::Create { description } => {
            match call(&client, &Request::CreateToken { description }).await? {
                Response::Token(t) => println!("{t}"),
                other => bail!("unexpected answer: {other:?}"),
            }
        }
    }
    client.close().await;
    Ok(())
}
