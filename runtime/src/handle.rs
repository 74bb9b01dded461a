//! A running container as its supervisor sees it: a way to stop it and how it ended.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Exit code 0.
    Completed,
    /// A non-zero exit or a trap.
    Error,
    /// It went over its memory limit.
    OOMKilled,
    /// Stopped by the supervisor.
    Killed,
}

impl ExitReason {
    /// The reason as Kubernetes shows it in a terminated container state.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error | ExitReason::Killed => "Error",
            ExitReason::OOMKilled => "OOMKilled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub reason: ExitReason,
    pub message: Option<String>,
}

/// Asks the container to stop within the grace period; may report the exit itself.
type StopFn = dyn Fn(Duration, &ExitSender) + Send + Sync;

/// Returned by [`crate::Workload::start`].
#[derive(Clone)]
pub struct Handle {
    stop: Arc<StopFn>,
    sender: ExitSender,
    exit: watch::Receiver<Option<Exit>>,
    /// When the container started, as its executor knows it (for one an earlier agent
    /// started, when that agent started it).
    started_at: Option<std::time::SystemTime>,
}

/// The executor's side of a handle: reports the exit once.
pub struct ExitSender(Arc<watch::Sender<Option<Exit>>>);

impl ExitSender {
    /// Records how the container ended; a later report (after a forced stop) is ignored.
    pub fn send(&self, exit: Exit) {
        self.0.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(exit);
                true
            } else {
                false
            }
        });
    }
}

impl Clone for ExitSender {
    fn clone(&self) -> Self {
        ExitSender(self.0.clone())
    }
}

impl Handle {
    pub fn new(
        stop: impl Fn(Duration, &ExitSender) + Send + Sync + 'static,
    ) -> (Handle, ExitSender) {
        let (tx, rx) = watch::channel(None);
        let sender = ExitSender(Arc::new(tx));
        (
            Handle {
                stop: Arc::new(stop),
                sender: sender.clone(),
                exit: rx,
                started_at: None,
            },
            sender,
        )
    }

    /// The handle of a container that started at `at`.
    pub fn started_at(mut self, at: Option<std::time::SystemTime>) -> Handle {
        self.started_at = at;
        self
    }

    /// When the container started, if its executor knows.
    pub fn start_time(&self) -> Option<std::time::SystemTime> {
        self.started_at
    }

    /// Asks the container to stop; it is killed if still running after `grace`.
    pub fn stop(&self, grace: Duration) {
        (self.stop)(grace, &self.sender)
    }

    /// How it ended, if it has.
    pub fn exit(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// Waits until it ends.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit.clone();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                return Exit {
                    code: 137,
                    reason: ExitReason::Killed,
                    message: Some("the executor went away".into()),
                };
            }
        }
    }
}
