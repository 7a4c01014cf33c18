//! A task worker runs one attempt at a time: it calls the kind's handler,
//! turns a panic into a failed attempt (with the retry it earns), and
//! hands the outcome back to the pool, which records it under the
//! attempt's lease together with others'.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::{
    Actor, ActorContext, ActorFutureExt, AtomicResponse, Context, Handler, Message, Supervised,
    WrapFuture,
};
use chrono::TimeDelta;
use futures_util::FutureExt as _;
use tracing::Instrument as _;

use super::parts::QueueParts;
use crate::domain::{LeasedTask, Outcome, Task};
use crate::tasks::{TaskError, TaskHandlers};
use crate::telemetry::{self, TraceParent};

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

/// Run one attempt of a leased task; answers how it ended.
#[derive(Message)]
#[rtype(result = "Ended")]
pub struct Run(pub LeasedTask);

/// How an attempt ended, for the pool to record under its lease.
pub struct Ended {
    pub task: Task,
    pub outcome: Outcome,
    /// Seconds the handler took.
    pub took: f64,
}

impl Handler<Run> for TaskWorker {
    type Result = AtomicResponse<Self, Ended>;

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
            |(ended, panicked), _, ctx: &mut Context<Self>| {
                if panicked {
                    ctx.stop();
                }
                ended
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
    /// Runs the attempt. Answers how it ended and whether the handler
    /// panicked.
    async fn run(self, leased: LeasedTask) -> (Ended, bool) {
        let task = leased.task;
        if let Some(started) = task.started_at {
            let waited = (started - task.run_at).as_seconds_f64();
            self.parts.metrics.task_started(task.kind.as_str(), waited);
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
        let how = match &outcome {
            Outcome::Succeeded(_) => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::Rejected { .. } => "rejected",
        };
        tracing::debug!(outcome = how, took_ms = took * 1e3, "attempt ended");
        let ended = Ended {
            task,
            outcome,
            took,
        };
        (ended, panicked)
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
}

/// What a panic said, when it said it with a string.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
