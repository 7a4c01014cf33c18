//! A task worker runs one attempt at a time: it calls the kind's handler,
//! turns a panic into a failed attempt, and records the outcome under the
//! attempt's lease, which the store refuses if the lease was taken back.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, AtomicResponse, Context, Handler, Message, Supervised,
    WrapFuture,
};
use chrono::TimeDelta;
use futures_util::FutureExt as _;
use tracing::Instrument as _;

use super::parts::QueueParts;
use crate::domain::{Finished, Lease, LeasedTask, Outcome, Task, TaskStatus};
use crate::storage::StoreError;
use crate::tasks::{TaskError, TaskHandlers};
use crate::telemetry::{self, TraceParent};

/// Pause before trying again to record an outcome; it doubles each time,
/// up to the longest.
const RECORD_RETRY: Duration = Duration::from_millis(100);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(2);

pub struct TaskWorker {
    parts: Arc<QueueParts>,
    handlers: Arc<TaskHandlers>,
    /// Workers running now, shared by the pool's workers.
    live: Arc<AtomicUsize>,
}

impl TaskWorker {
    pub fn new(
        parts: Arc<QueueParts>,
        handlers: Arc<TaskHandlers>,
        live: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            parts,
            handlers,
            live,
        }
    }
}

impl Actor for TaskWorker {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.live.fetch_add(1, Ordering::SeqCst);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// After a handler panicked, the worker stops and its `Supervisor` starts
/// it afresh: whatever the panic left behind goes with the old instance.
impl Supervised for TaskWorker {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.parts.metrics.actor_restarted("TaskWorker");
        tracing::warn!(actor = "TaskWorker", "restarting after a handler panicked");
    }
}

/// Run one attempt of a leased task and record how it ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Run(pub LeasedTask);

impl Handler<Run> for TaskWorker {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, Run(leased): Run, _: &mut Context<Self>) -> Self::Result {
        let span = tracing::info_span!(
            "task",
            task_id = %leased.task.id,
            kind = %leased.task.kind,
            attempt = leased.task.attempts,
        );
        let parent = leased.task.trace_parent.clone().map(TraceParent);
        telemetry::continue_trace(&span, parent.as_ref());
        let attempt = Attempt {
            parts: self.parts.clone(),
            handlers: self.handlers.clone(),
        };
        let run = attempt.run(leased).instrument(span);
        AtomicResponse::new(Box::pin(run.into_actor(self).map(
            |panicked, _, ctx: &mut Context<Self>| {
                if panicked {
                    ctx.stop();
                }
            },
        )))
    }
}

/// What one attempt needs, owned so that it can run as a future.
struct Attempt {
    parts: Arc<QueueParts>,
    handlers: Arc<TaskHandlers>,
}

impl Attempt {
    /// Runs the attempt and records it. Returns whether the handler panicked.
    async fn run(self, leased: LeasedTask) -> bool {
        let lease = leased.lease();
        let task = leased.task;
        let metrics = &self.parts.metrics;
        if let Some(started) = task.started_at {
            let waited = (started - task.run_at).as_seconds_f64();
            metrics.task_started(task.kind.as_str(), waited);
        }
        let started = std::time::Instant::now();
        let (outcome, panicked) = match self.handlers.get(&task.kind) {
            None => {
                let error = format!("no handler for task kind {:?}", task.kind.as_str());
                (Outcome::Rejected { error }, false)
            }
            Some(handler) => match AssertUnwindSafe(handler.run(&task)).catch_unwind().await {
                Ok(Ok(result)) => (Outcome::Succeeded(result), false),
                Ok(Err(TaskError::Retry(error))) => (self.retry(&task, error), false),
                Ok(Err(TaskError::Reject(error))) => (Outcome::Rejected { error }, false),
                Err(panic) => {
                    let error = format!("the handler panicked: {}", panic_message(&*panic));
                    tracing::error!(error, "task handler panicked");
                    (self.retry(&task, error), true)
                }
            },
        };
        let took = started.elapsed().as_secs_f64();
        if let Some(status) = self.record(lease, outcome).await {
            metrics.task_finished(task.kind.as_str(), status, took);
            if status.is_final() {
                self.parts.task_finished(&task, status);
            }
        }
        panicked
    }

    /// A failure, to be retried after the backoff for this attempt.
    fn retry(&self, task: &Task, error: String) -> Outcome {
        let delay = self
            .parts
            .config
            .retry
            .delay_ms(task.attempts, rand::random());
        let delay = TimeDelta::milliseconds(i64::try_from(delay).unwrap_or(i64::MAX));
        Outcome::Failed {
            error,
            retry_at: self.parts.clock.now() + delay,
        }
    }

    /// Records the outcome if the lease is still the task's, and answers the
    /// state it left the task in. While the store does not answer it tries
    /// again, with growing pauses, for as long as the lease can still be
    /// held (the pool keeps renewing it); past that the lease lapses and
    /// the task runs again: at least once, never lost.
    async fn record(&self, lease: Lease, outcome: Outcome) -> Option<TaskStatus> {
        let parts = &self.parts;
        let give_up = tokio::time::Instant::now() + parts.config.lease_for;
        let mut pause = RECORD_RETRY;
        loop {
            match parts.store.finish(lease, outcome.clone()).await {
                Ok(Finished::Recorded(status)) => {
                    tracing::debug!(status = status.as_str(), "attempt recorded");
                    return Some(status);
                }
                Ok(Finished::Stale) => {
                    parts.metrics.fencing_rejected("finish");
                    tracing::warn!(
                        "the lease was taken back before this attempt ended; its outcome is \
                         refused"
                    );
                    return None;
                }
                Err(StoreError::Unavailable(err))
                    if tokio::time::Instant::now() + pause < give_up =>
                {
                    tracing::debug!(error = %err, "could not record the attempt yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RECORD_RETRY_MAX);
                }
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        "could not record the attempt; its lease will lapse and the task run again"
                    );
                    return None;
                }
            }
        }
    }
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
