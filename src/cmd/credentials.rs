//! `shoal credentials create|list|delete` and `shoal cert rotate`: admin credentials, each
//! with a lifetime, each revocable on its own.

use crate::client::{call, config_path, connect};
use crate::ClientArgs;
use anyhow::{bail, Result};
use shoal_transport::pki::{csr_for, new_key};
use shoal_transport::proto::{CredentialInfo, Request, Response};
use shoal_transport::{Client, Credentials};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: CredentialsCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(clap::Subcommand)]
enum CredentialsCommand {
    /// Issue an admin credential and write it as a credential file.
    Create {
        name: String,
        /// How long it is valid (24h, 30d, 365d).
        #[arg(long, default_value = "365d", value_parser = super::duration::parse)]
        ttl: std::time::Duration,
        /// Where to write it (readable by its owner only); `-` prints it.
        #[arg(short, long, default_value = "-")]
        output: PathBuf,
    },
    /// List the admin credentials and when they expire.
    List,
    /// Revoke an admin credential at once.
    Delete { name: String },
}

/// Asks the controller to certify a new key as admin credential `name`.
async fn issue(
    client: &Client,
    base: &Credentials,
    name: &str,
    ttl_secs: u64,
) -> Result<Credentials> {
    let key = new_key()?;
    let req = Request::IssueCredential {
        name: name.to_string(),
        ttl_secs,
        csr_pem: csr_for(&key, name)?,
    };
    let signed = call(client, &req)
        .await?
        .into_signed()
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Credentials {
        server: base.server.clone(),
        certificate_authority: signed.ca_pem,
        client_certificate: signed.cert_pem,
        client_key: key,
        peer_certificate_authority: None,
    })
}

pub async fn run(args: Args) -> Result<()> {
    let client = connect(&args.client).await?;
    let base = Credentials::load(&config_path(&args.client))?;
    match args.command {
        CredentialsCommand::Create { name, ttl, output } => {
            let creds = issue(&client, &base, &name, ttl.as_secs()).await?;
            if output.as_os_str() == "-" {
                print!("{}", creds.to_kubeconfig()?);
            } else {
                creds.save(&output)?;
                eprintln!("credential {name} written to {}", output.display());
            }
        }
        CredentialsCommand::List => match call(&client, &Request::ListCredentials).await? {
            Response::Json(json) => {
                let list: Vec<CredentialInfo> = serde_json::from_slice(&json)?;
                println!("{:<24} EXPIRES", "NAME");
                for c in list {
                    println!("{:<24} {}", c.name, c.expires);
                }
            }
            other => bail!(other.unexpected()),
        },
        CredentialsCommand::Delete { name } => {
            call(&client, &Request::DeleteCredential { name: name.clone() }).await?;
            println!("credential {name} revoked");
        }
    }
    client.close().await;
    Ok(())
}

#[derive(clap::Args)]
pub struct KubeconfigArgs {
    /// Issue a new admin credential of this name for it (revocable on its own with
    /// `shoal credentials delete NAME`); without: the credential in use.
    name: Option<String>,
    /// How long a new credential is valid.
    #[arg(long, default_value = "365d", value_parser = super::duration::parse)]
    ttl: std::time::Duration,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run_kubeconfig(args: KubeconfigArgs) -> Result<()> {
    let base = Credentials::load(&config_path(&args.client))?;
    let creds = match &args.name {
        None => base,
        Some(name) => {
            let client = connect(&args.client).await?;
            let creds = issue(&client, &base, name, args.ttl.as_secs()).await?;
            client.close().await;
            creds
        }
    };
    print!("{}", creds.to_kubeconfig()?);
    Ok(())
}

#[derive(clap::Args)]
pub struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(clap::Subcommand)]
enum CertCommand {
    /// Replace the key and certificate of the credential in use (the file from --config):
    /// the old one stops working at once.
    Rotate {
        /// How long the new certificate is valid.
        #[arg(long, default_value = "365d", value_parser = super::duration::parse)]
        ttl: std::time::Duration,
    },
}

pub async fn run_cert(args: CertArgs) -> Result<()> {
    let CertCommand::Rotate { ttl } = args.command;
    let path = config_path(&args.client);
    let base = Credentials::load(&path)?;
    let client = connect(&args.client).await?;
    let name = match call(&client, &Request::WhoAmI).await? {
        Response::Identity(who) => match who.strip_prefix("admin ") {
            Some(n) => n.trim_matches('"').to_string(),
            None => bail!("{} is not an admin credential ({who})", path.display()),
        },
        other => bail!(other.unexpected()),
    };
    let creds = issue(&client, &base, &name, ttl.as_secs()).await?;
    client.close().await;
    creds.save(&path)?;
    println!(
        "credential {name} rotated: {} holds the new key",
        path.display()
    );
    Ok(())
}
