//! `shoal token create|list|delete`: join tokens for agents.

use crate::client::{call, connect};
use crate::ClientArgs;
use anyhow::{bail, Result};
use shoal_transport::proto::{Request, Response, TokenInfo};

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
        /// How long the token may be used (30m, 24h, 7d); by default until it is deleted.
        #[arg(long, value_parser = super::duration::parse)]
        ttl: Option<std::time::Duration>,
        /// How many nodes may join with it; by default any number.
        #[arg(long)]
        usages: Option<u32>,
    },
    /// List the join tokens (never their secrets).
    List,
    /// Delete a join token by its id (the first 8 characters of its secret).
    Delete { id: String },
}

pub async fn run(args: Args) -> Result<()> {
    let client = connect(&args.client).await?;
    match args.command {
        TokenCommand::Create {
            description,
            ttl,
            usages,
        } => {
            let ttl_secs = ttl.map(|d| d.as_secs());
            let req = Request::CreateToken {
                description,
                ttl_secs,
                usages,
            };
            match call(&client, &req).await? {
                Response::Token(t) => println!("{t}"),
                other => bail!(other.unexpected()),
            }
        }
        TokenCommand::List => match call(&client, &Request::ListTokens).await? {
            Response::Json(json) => {
                let tokens: Vec<TokenInfo> = serde_json::from_slice(&json)?;
                println!("{:<10} {:<22} {:<7} DESCRIPTION", "ID", "EXPIRES", "USED");
                for t in tokens {
                    let used = match t.usages {
                        Some(n) => format!("{}/{n}", t.used),
                        None => t.used.to_string(),
                    };
                    println!(
                        "{:<10} {:<22} {:<7} {}",
                        t.id,
                        t.expires.as_deref().unwrap_or("never"),
                        used,
                        shoal_api::table::terminal_safe(&t.description, false)
                    );
                }
            }
            other => bail!(other.unexpected()),
        },
        TokenCommand::Delete { id } => {
            call(&client, &Request::DeleteToken { id: id.clone() }).await?;
            println!("token {id} deleted");
        }
    }
    client.close().await;
    Ok(())
}
