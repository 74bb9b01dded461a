//! Stopping on SIGINT and SIGTERM, for the verbs that run until stopped.

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGINT or SIGTERM; exits at once on the second.
pub fn shutdown_on_signals(token: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if n == 0 {
                tracing::info!("shutting down (signal again to force)");
                token.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
