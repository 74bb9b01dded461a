//! `shoal logs POD [-c CONTAINER] [-f] [--previous] [--tail N] [--timestamps] [--since D | --since-time T]`

use crate::client::{check, connect};
use crate::ClientArgs;
use anyhow::Result;
use shoal_transport::proto::{Request, Response, Since};
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
    /// Each line after the time it was written (RFC 3339, the node's clock).
    #[arg(long)]
    timestamps: bool,
    /// Only lines newer than this, as kubectl takes it (`30s`, `5m`, `1h30m`).
    #[arg(long, value_parser = seconds_of, conflicts_with = "since_time")]
    since: Option<u64>,
    /// Only lines written at or after this time (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    since_time: Option<String>,
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
        timestamps: args.timestamps,
        since: match (args.since, args.since_time) {
            (Some(secs), _) => Some(Since::SecondsAgo(secs)),
            (None, Some(t)) => Some(Since::Time(t)),
            (None, None) => None,
        },
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

/// A duration as Go writes it (`90s`, `5m`, `1h30m`, `1.5h`), in whole seconds, rounded up.
fn seconds_of(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a duration (as 30s, 5m, 1h30m)");
    let mut rest = text;
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_end].parse().map_err(|_| bad())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(bad()),
        };
        total += number * unit;
        rest = &rest[unit_end..];
    }
    if total <= 0.0 || !total.is_finite() {
        return Err(bad());
    }
    Ok(total.ceil().min(u64::MAX as f64) as u64)
}

fn rfc3339(text: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|_| text.to_string())
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
}

#[cfg(test)]
mod tests {
    use super::seconds_of;

    #[test]
    fn durations_read_as_kubectl_reads_them() {
        assert_eq!(seconds_of("30s"), Ok(30));
        assert_eq!(seconds_of("5m"), Ok(300));
        assert_eq!(seconds_of("1h30m"), Ok(5400));
        assert_eq!(seconds_of("1.5h"), Ok(5400));
        assert_eq!(seconds_of("1500ms"), Ok(2));
        for bad in ["", "5", "m", "5d", "0s", "-5s"] {
            assert!(seconds_of(bad).is_err(), "{bad}");
        }
    }
}
