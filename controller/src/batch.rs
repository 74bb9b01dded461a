//! Many writes at once. The store folds concurrent writes into one durable commit (group
//! commit), so a controller that creates 10,000 pods one awaited write after another spends
//! its time waiting on fsync; issuing them together lets each commit carry hundreds.
//!
//! [`slow_start`] issues them in batches that double (1, 2, 4, ... up to [`MAX_BATCH`]) and
//! stops at the first batch with a failure, as Kubernetes' controllers do: a write that fails
//! for a reason that will fail them all (the store closed, a full disk) is tried a handful of
//! times, not 10,000.

use crate::error::Result;
use std::future::Future;

pub const MAX_BATCH: usize = 512;

/// Runs `write` for every item in doubling batches. Returns how many succeeded, or the first
/// error (after the rest of its batch finished). Writes that may lose a race harmlessly should
/// map that outcome to `Ok` themselves.
pub async fn slow_start<T, F, Fut>(items: Vec<T>, write: F) -> Result<usize>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut done = 0;
    let mut size = 1;
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let batch: Vec<Fut> = items.by_ref().take(size).map(&write).collect();
        let results = futures::future::join_all(batch).await;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(()) => done += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        size = (size * 2).min(MAX_BATCH);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[tokio::test]
    async fn batches_double_and_stop_at_a_failure() {
        let started = AtomicUsize::new(0);
        let in_flight = AtomicUsize::new(0);
        let peaks = Mutex::new(Vec::new());
        let write = |i: usize| {
            let (started, in_flight, peaks) = (&started, &in_flight, &peaks);
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::task::yield_now().await;
                peaks.lock().expect("lock").push(now);
                in_flight.fetch_sub(1, Ordering::SeqCst);
                if i == 20 {
                    Err(Error::Invalid("disk full".into()))
                } else {
                    Ok(())
                }
            }
        };
        // Batches 1, 2, 4, 8 (items 0..15), then 16 (items 15..31) holds item 20.
        let err = slow_start((0..100).collect(), write).await.unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(started.load(Ordering::SeqCst), 31);
        assert_eq!(peaks.lock().expect("lock").iter().max(), Some(&16));

        let all = slow_start((0..2000).collect(), |_: usize| async { Ok(()) }).await;
        assert_eq!(all.unwrap(), 2000);
    }
}
