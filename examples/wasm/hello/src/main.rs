//! The first workload a Shoal user runs: says hello with its configuration, then reports a
//! heartbeat every few seconds until it is stopped.

use std::time::Duration;

fn main() {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello".into());
    let pod = std::env::var("POD_NAME").unwrap_or_else(|_| "somewhere".into());
    println!("{greeting} from {pod}");
    let beats: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(u64::MAX);
    for i in 1..=beats {
        std::thread::sleep(Duration::from_secs(5));
        println!("heartbeat {i}");
    }
}
