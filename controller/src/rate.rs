//! Token buckets, one per caller: how often a peer may do something (record an Event), with a
//! burst. Time is handed in, so the decision is tested without waiting.

use std::collections::HashMap;
use std::time::Instant;

/// Events a node may record at once: enough for the 256 it holds while disconnected.
pub const EVENT_BURST: f64 = 300.0;
/// Events a node may record a second, sustained (the kubelet's eventRecordQPS is 5).
pub const EVENT_PER_SECOND: f64 = 5.0;
/// Modules a node may have the controller compile at once (`Request::Compile`): a node's
/// registry modules after its compile cache was lost.
pub const COMPILE_BURST: f64 = 16.0;
/// Modules a node may have compiled a second, sustained: one a minute.
pub const COMPILE_PER_SECOND: f64 = 1.0 / 60.0;
/// Callers remembered at most; the fullest buckets are forgotten first.
const MAX_CALLERS: usize = 10_000;

pub struct Buckets {
    burst: f64,
    per_second: f64,
    buckets: HashMap<String, (f64, Instant)>,
}

impl Buckets {
    pub fn new(burst: f64, per_second: f64) -> Self {
        Buckets {
            burst,
            per_second,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token from `caller`'s bucket; `false` if it is empty.
    pub fn take(&mut self, caller: &str, now: Instant) -> bool {
        if self.buckets.len() >= MAX_CALLERS && !self.buckets.contains_key(caller) {
            let (burst, rate) = (self.burst, self.per_second);
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = self
            .buckets
            .entry(caller.to_string())
            .or_insert((self.burst, now));
        let refilled = *tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_second;
        *tokens = refilled.min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Buckets::new(3.0, 2.0);
        let taken: Vec<bool> = (0..5).map(|_| b.take("n1", t0)).collect();
        assert_eq!(taken, [true, true, true, false, false]);
        // Another caller has its own bucket.
        assert!(b.take("n2", t0));
        // Half a second buys one more at 2/s; a long pause refills only up to the burst.
        assert!(b.take("n1", t0 + Duration::from_millis(500)));
        assert!(!b.take("n1", t0 + Duration::from_millis(500)));
        let later = t0 + Duration::from_secs(3600);
        let taken: Vec<bool> = (0..4).map(|_| b.take("n1", later)).collect();
        assert_eq!(taken, [true, true, true, false]);
    }
}
