//! A user's queue manager: it applies that user's writes (enqueue,
//! cancel, cancel all) one at a time in the order they arrived, so a user
//! flooding the service holds at most one store call at a time, and asks
//! to be retired after `queue.manager_idle_secs` without work.

use std::sync::Arc;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, AtomicResponse, Context, Handler,
    Message, Recipient, SpawnHandle, WrapFuture,
};

use super::parts::{QueueError, QueueParts};
use super::pool::Wake;
use crate::domain::{
    Cancelled, Enqueued, Idempotency, NewTask, TaskId, TaskRequest, TaskStatus, UserId,
};

/// Writes a manager's mailbox holds before senders wait. Far beyond what
/// a client can have in flight, so every write the router forwards is
/// queued at once and none can overtake another, or `Retired`.
const MAILBOX_CAPACITY: usize = 1 << 20;

pub struct QueueManager {
    user: UserId,
    parts: Arc<QueueParts>,
    /// Told when a task is ready now, so that an idle worker takes it.
    pool: Recipient<Wake>,
    /// Told when this manager has been idle long enough to stop.
    retire: Recipient<Retire>,
    /// The pending "retire me" timer, pushed back by every message.
    idle: Option<SpawnHandle>,
}

impl QueueManager {
    pub fn new(
        user: UserId,
        parts: Arc<QueueParts>,
        pool: Recipient<Wake>,
        retire: Recipient<Retire>,
    ) -> Self {
        Self {
            user,
            parts,
            pool,
            retire,
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
            manager.retire.do_send(Retire {
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

/// A manager saying it has been idle for `queue.manager_idle_secs`, to
/// whoever started it (the router, which alone knows every manager).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire {
    pub user: UserId,
    pub manager: Addr<QueueManager>,
}

/// Enqueue a task for `user`.
#[derive(Message)]
#[rtype(result = "Result<Enqueued, QueueError>")]
pub struct Enqueue {
    pub user: UserId,
    pub request: TaskRequest,
    pub idempotency: Option<Idempotency>,
}

impl Handler<Enqueue> for QueueManager {
    type Result = AtomicResponse<Self, Result<Enqueued, QueueError>>;

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        let pool = self.pool.clone();
        self.serially(ctx, async move |parts| {
            let ready_now = msg.request.delay.is_zero();
            let task = NewTask {
                id: TaskId::new(),
                user_id: msg.user,
                created_at: parts.clock.now(),
                request: msg.request,
            };
            let enqueued = parts.store.enqueue(task, msg.idempotency).await?;
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
            let cancelled = parts.store.cancel(msg.user, msg.id).await?;
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
            Ok(parts.store.cancel_all(msg.0).await?)
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
