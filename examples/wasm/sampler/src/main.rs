//! An IoT sampler, run once a minute by a CronJob: reads its sensor and appends one line,
//! `UNIX-SECONDS VALUE`, to a file on a persistent volume, keeping the last `KEEP` lines (1440 by
//! default: a day of minutes), so the file stays bounded on a device that runs for years.
//!
//! The sensor is the file `SENSOR` names (a device the node gives the pod, say, its first
//! line read as the value); without one the value is simulated (a temperature that follows
//! the time of day). The file is `OUT`, `/data/readings.txt` by default. Build it for
//! `wasm32-wasip1`.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let out = std::env::var("OUT").unwrap_or_else(|_| "/data/readings.txt".into());
    let keep: usize = std::env::var("KEEP")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(1440);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let value = match std::env::var("SENSOR") {
        Ok(path) => match std::fs::read_to_string(&path) {
            Ok(text) => text.lines().next().unwrap_or("").trim().to_string(),
            Err(e) => {
                eprintln!("cannot read the sensor {path}: {e}");
                std::process::exit(1);
            }
        },
        Err(_) => simulated(now),
    };
    let mut lines: Vec<String> = std::fs::read_to_string(&out)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default();
    lines.push(format!("{now} {value}"));
    let skip = lines.len().saturating_sub(keep);
    let text: String = lines[skip..].iter().map(|l| format!("{l}\n")).collect();
    // Written aside and renamed over, so the server never reads half a file.
    let aside = format!("{out}.new");
    let written = std::fs::File::create(&aside)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&aside, &out));
    if let Err(e) = written {
        eprintln!("cannot write {out}: {e}");
        std::process::exit(1);
    }
    println!("sampled {value} at {now}");
}

/// A temperature in °C that rises by day and falls by night, in tenths.
fn simulated(now: u64) -> String {
    let minute_of_day = (now / 60) % 1440;
    let from_noon = (minute_of_day as i64 - 720).abs();
    let tenths = 250 - from_noon * 100 / 720;
    format!("{}.{}", tenths / 10, tenths % 10)
}
