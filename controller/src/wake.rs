//! How the controller's loops decide to run again: on a change to a kind they care about, or
//! every `resync` (level-triggered: a missed change is never missed for long).

use crate::store::Store;
use shoal_api::{Kind, Object};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Waker {
    store: Store,
    kinds: &'static [Kind],
    tick: tokio::time::Interval,
    watch: Option<crate::store::Watch>,
}

impl Waker {
    pub fn new(store: Store, kinds: &'static [Kind], resync: Duration) -> Waker {
        Waker {
            store,
            kinds,
            tick: tokio::time::interval(resync),
            watch: None,
        }
    }

    /// Returns when the loop should run again; `false` once `shutdown` is cancelled.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        loop {
            if self.watch.is_none() {
                self.watch = self.store.watch(self.store.revision(), None).ok();
            }
            let watch = &mut self.watch;
            let changed = async {
                match watch.as_mut() {
                    Some(w) => w.next().await.map(|c| c.object.kind()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = self.tick.tick() => return true,
                c = changed => match c {
                    Ok(kind) if self.kinds.contains(&kind) => return true,
                    Ok(_) => {}
                    // Fell behind the change log: start over from now, and run.
                    Err(_) => {
                        self.watch = None;
                        return true;
                    }
                },
            }
        }
    }
}

/// Objects of one kind as their type, skipping any that do not decode.
pub fn typed<T: TryFrom<Object, Error = shoal_api::Error>>(objects: Vec<Object>) -> Vec<T> {
    objects
        .into_iter()
        .filter_map(|o| o.into_typed().ok())
        .collect()
}
