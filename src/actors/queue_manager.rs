//! A user's queue manager: it applies that user's writes (enqueue,
//! cancel, cancel all) one at a time in the order they arrived, so a user
//! flooding the service holds at most one store call at a time, and asks
//! the router to retire it after `queue.manager_idle_secs` without work.

use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, AtomicResponse, Context, Handler,
    Message, SpawnHandle, WrapFuture,
};
use chrono::TimeDelta;
use serde_json::Value;

use super::queue::QueueParts;
use super::queue_router::{QueueRouter, Retire};
use super::worker_pool::{Wake, WorkerPool};
use crate::domain::{IdempotencyKey, NewTask, TaskId, TaskKind, TaskStatus, UserId};
use crate::storage::{Cancelled, Enqueued, Idempotency, QueueError};
use crate::telemetry::TraceParent;

/// Writes a manager's mailbox holds before senders wait. Far beyond what
/// a client can have in flight, so every write the router forwards is
/// queued at once and none can overtake another, or `Retired`.
const MAILBOX_CAPACITY: usize = 1 << 20;

pub struct QueueManager {
    user: UserId,
    parts: Arc<QueueParts>,
    pool: Addr<WorkerPool>,
    router: Addr<QueueRouter>,
    /// The pending "retire me" timer, pushed back by every message.
    idle: Option<SpawnHandle>,
}

impl QueueManager {
    pub fn new(
        user: UserId,
        parts: Arc<QueueParts>,
        pool: Addr<WorkerPool>,
        router: Addr<QueueRouter>,
    ) -> Self {
        Self {
            user,
            parts,
            pool,
            router,
            idle: None,
        }
    }

    /// Restarts the idle countdown.
    fn busy(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.idle.take() {
            ctx.cancel_future(timer);
        }
        let idle = self.parts.config.manager_idle;
        self.idle = Some(ctx.run_later(idle, |manager, ctx| {
            manager.router.do_send(Retire {
                user: manager.user,
                manager: ctx.address(),
            });
        }));
    }

    /// Runs `write` after every write that came before it.
    fn serially<T, F>(&mut self, ctx: &mut Context<Self>, write: F) -> AtomicResponse<Self, T>
    where
        F: AsyncFnOnce(&QueueParts) -> T + 'static,
        T: 'static,
    {
        self.busy(ctx);
        let parts = self.parts.clone();
        AtomicResponse::new(Box::pin(
            async move { write(&parts).await }
                .into_actor(self)
                .map(|t, _, _| t),
        ))
    }
}

impl Actor for QueueManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.busy(ctx);
    }
}

/// What a user asks to be run.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    pub kind: TaskKind,
    pub payload: Value,
    /// `None` takes `queue.max_attempts`.
    pub max_attempts: Option<u32>,
    /// How long after now the first attempt may start.
    pub delay: Duration,
    /// The trace of the request, for the attempts to join.
    pub trace: Option<TraceParent>,
}

/// Enqueue a task for `user`.
#[derive(Message)]
#[rtype(result = "Result<Enqueued, QueueError>")]
pub struct Enqueue {
    pub user: UserId,
    pub request: TaskRequest,
    /// The client's `Idempotency-Key` with a digest of the request.
    pub idempotency: Option<(IdempotencyKey, String)>,
}

impl Handler<Enqueue> for QueueManager {
    type Result = AtomicResponse<Self, Result<Enqueued, QueueError>>;

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        self.serially(ctx, async move |parts| {
            let now = parts.clock.now();
            let now_ms = now.timestamp_millis();
            let delay = TimeDelta::from_std(msg.request.delay).unwrap_or(TimeDelta::MAX);
            let task = NewTask {
                id: TaskId::new(),
                user_id: msg.user,
                kind: msg.request.kind,
                payload: msg.request.payload,
                max_attempts: msg
                    .request
                    .max_attempts
                    .unwrap_or(parts.config.default_max_attempts),
                created_at: now,
                run_at: now + delay,
                trace_parent: msg.request.trace.map(|TraceParent(parent)| parent),
            };
            let ready_now = delay.is_zero();
            let idempotency = msg.idempotency.map(|(key, fingerprint)| Idempotency {
                key,
                fingerprint,
                expires_ms: parts.later_ms(now_ms, parts.config.idempotency_ttl),
            });
            let limits = parts.limits.get();
            let enqueued = parts
                .store
                .enqueue(task, idempotency, limits, now_ms)
                .await?;
            if let Enqueued::Created(task) = &enqueued {
                parts.metrics.task_enqueued(task.kind.as_str());
                if ready_now {
                    pool.do_send(Wake);
                }
            }
            Ok(enqueued)
        })
    }
}

/// Cancel a waiting task of `user`'s.
#[derive(Message)]
#[rtype(result = "Result<Cancelled, QueueError>")]
pub struct CancelTask {
    pub user: UserId,
    pub id: TaskId,
}

impl Handler<CancelTask> for QueueManager {
    type Result = AtomicResponse<Self, Result<Cancelled, QueueError>>;

    fn handle(&mut self, msg: CancelTask, ctx: &mut Context<Self>) -> Self::Result {
        self.serially(ctx, async move |parts| {
            let now = parts.clock.now_millis();
            let expires = parts.later_ms(now, parts.config.result_ttl);
            let cancelled = parts.store.cancel(msg.user, msg.id, now, expires).await?;
            if let Cancelled::Cancelled(task) = &cancelled {
                parts.task_finished(task, TaskStatus::Cancelled);
            }
            Ok(cancelled)
        })
    }
}

/// Cancel every waiting task of a user's (their account is being deleted).
#[derive(Message)]
#[rtype(result = "Result<u64, QueueError>")]
pub struct CancelAll(pub UserId);

impl Handler<CancelAll> for QueueManager {
    type Result = AtomicResponse<Self, Result<u64, QueueError>>;

    fn handle(&mut self, msg: CancelAll, ctx: &mut Context<Self>) -> Self::Result {
        self.serially(ctx, async move |parts| {
            let now = parts.clock.now_millis();
            let expires = parts.later_ms(now, parts.config.result_ttl);
            parts.store.cancel_all(msg.0, now, expires).await
        })
    }
}

/// The router has forgotten this manager: stop once earlier writes are done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retired;

impl Handler<Retired> for QueueManager {
    type Result = ();

    fn handle(&mut self, _: Retired, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
