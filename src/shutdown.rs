//! The one stop signal. Every long-running task is spawned through a
//! [`Shutdown`], watches [`Shutdown::stopping`], and is waited for by
//! [`Shutdown::finished`], so that stopping the service means telling each
//! of them once and knowing when the last has ended (mini-redis's shape:
//! a broadcast to stop, a tracker to know when all work ended).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// Cheap to clone; clones share one signal and one set of tasks.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` on the current runtime, counted until it ends. The task
    /// is expected to watch [`stopping`](Self::stopping) and end soon after.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Resolves once the service has been told to stop.
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// Tells every task to stop.
    pub fn stop(&self) {
        self.token.cancel();
    }

    /// Waits at most `timeout` for every task to end after [`stop`]; answers
    /// whether they all did.
    ///
    /// [`stop`]: Self::stop
    pub async fn finished(&self, timeout: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_task_told_to_stop_is_waited_for_until_it_ends() {
        let shutdown = Shutdown::new();
        let cleaned_up = Arc::new(AtomicBool::new(false));
        let (watch, flag) = (shutdown.clone(), cleaned_up.clone());
        shutdown.spawn(async move {
            watch.stopping().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });

        shutdown.stop();

        assert!(shutdown.finished(Duration::from_secs(5)).await);
        assert!(cleaned_up.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_task_that_will_not_end_is_given_up_on_after_the_timeout() {
        let shutdown = Shutdown::new();
        shutdown.spawn(std::future::pending());
        shutdown.stop();
        assert!(!shutdown.finished(Duration::from_millis(20)).await);
    }
}
