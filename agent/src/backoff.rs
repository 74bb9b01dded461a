//! The agent's one back-off: a delay that doubles with each failure in a row, up to a ceiling,
//! with jitter where many nodes would otherwise retry in step (a controller coming back to a
//! fleet). Container restarts, pod preparation, reconnecting and joining all use it.

use rand::Rng;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub base: Duration,
    /// The most it grows to.
    pub max: Duration,
    /// Whether a delay is drawn from [half of it, all of it), so retries spread out.
    pub jitter: bool,
}

impl Backoff {
    /// A failed container's restart: 10 s, 20 s, 40 s, ... 5 min (the kubelet's).
    pub const RESTART: Backoff = Backoff {
        base: Duration::from_secs(10),
        max: Duration::from_secs(300),
        jitter: false,
    };

    /// A pod that cannot be prepared yet (an image that cannot be pulled, a missing
    /// ConfigMap): 10 s, 20 s, 40 s, then every minute.
    pub const PREPARE: Backoff = Backoff {
        base: Duration::from_secs(10),
        max: Duration::from_secs(60),
        jitter: false,
    };

    /// Reaching the controller (connecting, joining): 1 s, 2 s, ... 30 s, jittered.
    pub const RECONNECT: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(30),
        jitter: true,
    };

    /// The longest delay after `failures` failures in a row (the first is `base`).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay to wait after `failures` failures in a row.
    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        if self.jitter {
            ceiling.mul_f64(rand::rng().random_range(0.5..1.0))
        } else {
            ceiling
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_their_ceiling_and_jitter_stays_within_it() {
        let secs = |b: Backoff| -> Vec<u64> { (1..=8).map(|n| b.ceiling(n).as_secs()).collect() };
        assert_eq!(secs(Backoff::RESTART), [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(secs(Backoff::PREPARE), [10, 20, 40, 60, 60, 60, 60, 60]);
        assert_eq!(secs(Backoff::RECONNECT), [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(Backoff::RESTART.ceiling(0), Duration::from_secs(10));
        assert_eq!(Backoff::RESTART.ceiling(u32::MAX), Duration::from_secs(300));
        for n in 1..10 {
            let d = Backoff::RECONNECT.delay(n);
            let c = Backoff::RECONNECT.ceiling(n);
            assert!(d >= c / 2 && d <= c, "{n}: {d:?} of {c:?}");
        }
    }
}
