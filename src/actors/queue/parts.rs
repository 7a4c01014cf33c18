//! What every actor of the task side shares: the store, the clock, the
//! settings in the units they use, metrics and events, and the one error
//! the task side answers with. A leaf: it imports no other module here.

use std::sync::Arc;
use std::time::Duration;

use actix::MailboxError;

use crate::clock::Clock;
use crate::config::QueueSettings;
use crate::domain::{CancelledTask, RetryPolicy, Task, TaskId, TaskStatus, UserId};
use crate::events::{Event, Events};
use crate::storage::{QueueStore, StoreError};
use crate::telemetry::Metrics;

/// What the queue actors need from the settings, in the units they use.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub retry: RetryPolicy,
    /// How long a lease lasts unless renewed.
    pub lease_for: Duration,
    /// A user's manager stops after this long without requests.
    pub manager_idle: Duration,
    /// How often idle workers look for work nobody announced.
    pub poll_interval: Duration,
}

impl From<&QueueSettings> for QueueConfig {
    fn from(settings: &QueueSettings) -> Self {
        Self {
            retry: RetryPolicy {
                base_ms: settings.backoff_base_ms,
                max_ms: settings.backoff_max_ms,
            },
            lease_for: settings.visibility_timeout(),
            manager_idle: settings.manager_idle(),
            poll_interval: settings.poll_interval(),
        }
    }
}

/// The parts every queue actor shares.
pub struct QueueParts {
    pub store: Arc<dyn QueueStore>,
    pub clock: Clock,
    pub config: QueueConfig,
    pub metrics: Metrics,
    pub events: Events,
}

impl QueueParts {
    /// Tells other services of a task an operator cancelled in bulk.
    pub fn task_cancelled(&self, task: &CancelledTask) {
        let kind = task.kind.as_str().to_owned();
        self.publish_finished(
            task.id,
            task.user,
            kind,
            TaskStatus::Cancelled,
            task.attempts,
        );
    }

    /// Tells other services that `task` has reached `status`, a final state.
    pub fn task_finished(&self, task: &Task, status: TaskStatus) {
        let kind = task.kind.as_str().to_owned();
        self.publish_finished(task.id, task.user_id, kind, status, task.attempts);
    }

    fn publish_finished(
        &self,
        task_id: TaskId,
        user_id: UserId,
        kind: String,
        status: TaskStatus,
        attempts: u32,
    ) {
        self.events.publish(Event::TaskFinished {
            task_id,
            user_id,
            kind,
            status,
            attempts,
        });
    }
}

/// Why the task side did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// An actor on the way did not answer: stopping, or overwhelmed.
    #[error("a queue actor is not answering")]
    Busy(#[from] MailboxError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl QueueError {
    /// Whether a retry may succeed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Busy(_) => true,
            Self::Store(err) => err.is_unavailable(),
        }
    }
}
