//! How the controller's loops decide to run again: on a change to a kind they care about, or
//! every `resync` (level-triggered: a missed change is never missed for long).

use crate::store::{ChangeType, Store};
use shoal_api::{Kind, Node, Object};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Waker {
    store: Store,
    kinds: &'static [Kind],
    tick: tokio::time::Interval,
    watch: Option<crate::store::Watch>,
    /// Each node's content without its heartbeat times, as last seen: a node that only
    /// proves it is alive (every agent, every 10 s) changes nothing the loops act on.
    nodes: HashMap<String, u64>,
}

impl Waker {
    pub fn new(store: Store, kinds: &'static [Kind], resync: Duration) -> Waker {
        Waker {
            store,
            kinds,
            tick: tokio::time::interval(resync),
            watch: None,
            nodes: HashMap::new(),
        }
    }

    /// Returns when the loop should run again; `false` once `shutdown` is cancelled.
    ///
    /// Changes coalesce: the pass that follows reads the store after this returns, so it sees
    /// every change made so far, and only changes made after this point wake the next call.
    /// A burst of 10,000 pod writes costs a few passes, not 10,000.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let run = self.next_change(shutdown).await;
        if run {
            self.watch = self.store.watch(self.store.revision(), None).await.ok();
        }
        run
    }

    async fn next_change(&mut self, shutdown: &CancellationToken) -> bool {
        loop {
            if self.watch.is_none() {
                self.watch = self.store.watch(self.store.revision(), None).await.ok();
            }
            let watch = &mut self.watch;
            let changed = async {
                match watch.as_mut() {
                    Some(w) => w.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = self.tick.tick() => return true,
                c = changed => match c {
                    Ok(c) if self.kinds.contains(&c.object.kind()) && self.matters(&c) => {
                        return true
                    }
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

impl Waker {
    /// Whether a change is worth a pass: anything but a node's heartbeat alone.
    fn matters(&mut self, change: &crate::store::Change) -> bool {
        let Object::Node(node) = &change.object else {
            return true;
        };
        let name = node.metadata.name.clone();
        if change.type_ == ChangeType::Deleted {
            self.nodes.remove(&name);
            return true;
        }
        let print = without_heartbeat(node);
        self.nodes.insert(name, print) != Some(print)
    }
}

/// A hash of a node with its resourceVersion and heartbeat times left out.
fn without_heartbeat(node: &Node) -> u64 {
    let mut n = node.clone();
    n.metadata.resource_version.clear();
    if let Some(status) = n.status.as_mut() {
        for c in &mut status.conditions {
            c.last_heartbeat_time = None;
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&n).unwrap_or_default().hash(&mut h);
    h.finish()
}
