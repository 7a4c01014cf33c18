//! A user's queue manager: it applies that user's writes (enqueue,
//! cancel, cancel all) in the order they arrived, one store call at a
//! time, so a user flooding the service holds at most one call. The
//! enqueues that arrive while a call is out go together in the next, as
//! one script: a client with many requests in flight is served by few
//! calls. The manager asks to be retired after `queue.manager_idle_secs`
//! without work.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, Recipient,
    ResponseFuture, SpawnHandle, WrapFuture,
};
use futures_util::future::LocalBoxFuture;
use tokio::sync::oneshot;

use super::parts::{QueueError, QueueParts};
use super::pool::Wake;
use crate::domain::{
    Cancelled, Enqueued, Idempotency, NewTask, TaskId, TaskRequest, TaskStatus, UserId,
};

/// Enqueues one call carries at the most.
const BATCH: usize = 256;

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
    /// Writes not yet sent, in the order they arrived.
    waiting: VecDeque<Write>,
    /// A store call is out.
    writing: bool,
    /// Told to stop: it does once every write has been answered.
    retired: bool,
}

/// A write and who waits for its answer.
enum Write {
    Enqueue(NewTask, Option<Idempotency>, Reply<Enqueued>),
    Cancel(TaskId, Reply<Cancelled>),
    CancelAll(Reply<u64>),
}

type Reply<T> = oneshot::Sender<Result<T, QueueError>>;

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
            waiting: VecDeque::new(),
            writing: false,
            retired: false,
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

    /// Queues `write` behind every write before it; answers its reply.
    fn accept<T: Send + 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        write: impl FnOnce(Reply<T>) -> Write,
    ) -> ResponseFuture<Result<T, QueueError>> {
        self.busy(ctx);
        let (reply, answer) = oneshot::channel();
        self.waiting.push_back(write(reply));
        self.send_next(ctx);
        Box::pin(async move {
            answer
                .await
                .map_err(|_| QueueError::Busy(actix::MailboxError::Closed))?
        })
    }

    /// Sends the next write, unless one is out: every enqueue at the front,
    /// together, or a cancellation alone.
    fn send_next(&mut self, ctx: &mut Context<Self>) {
        if self.writing {
            return;
        }
        let Some(first) = self.waiting.pop_front() else {
            if self.retired {
                ctx.stop();
            }
            return;
        };
        self.writing = true;
        let parts = self.parts.clone();
        let write = match first {
            Write::Enqueue(task, idempotency, reply) => {
                let mut batch = vec![(task, idempotency, reply)];
                while batch.len() < BATCH
                    && let Some(Write::Enqueue(..)) = self.waiting.front()
                {
                    let Some(Write::Enqueue(task, idempotency, reply)) = self.waiting.pop_front()
                    else {
                        unreachable!("the front is an enqueue")
                    };
                    batch.push((task, idempotency, reply));
                }
                let pool = self.pool.clone();
                Box::pin(enqueue(parts, batch, pool)) as LocalBoxFuture<'static, ()>
            }
            Write::Cancel(id, reply) => {
                let user = self.user;
                Box::pin(async move {
                    let cancelled = parts.store.cancel(user, id).await;
                    if let Ok(Cancelled::Cancelled(task)) = &cancelled {
                        parts.task_finished(task, TaskStatus::Cancelled);
                    }
                    let _ = reply.send(cancelled.map_err(QueueError::from));
                })
            }
            Write::CancelAll(reply) => {
                let user = self.user;
                Box::pin(async move {
                    let cancelled = parts.store.cancel_all(user).await;
                    let _ = reply.send(cancelled.map_err(QueueError::from));
                })
            }
        };
        ctx.spawn(write.into_actor(self).map(|(), manager, ctx| {
            manager.writing = false;
            manager.send_next(ctx);
        }));
    }
}

/// Stores a batch of one user's tasks in one call and answers each.
async fn enqueue(
    parts: Arc<QueueParts>,
    batch: Vec<(NewTask, Option<Idempotency>, Reply<Enqueued>)>,
    pool: Recipient<Wake>,
) {
    let (tasks, replies): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|(task, idempotency, reply)| ((task, idempotency), reply))
        .unzip();
    let ready_now: Vec<bool> = tasks
        .iter()
        .map(|(task, _)| task.request.delay.is_zero())
        .collect();
    match parts.store.enqueue_many(tasks).await {
        Ok(enqueued) => {
            let mut wake = false;
            for ((enqueued, reply), ready_now) in enqueued.into_iter().zip(replies).zip(ready_now) {
                if let Enqueued::Created(task) = &enqueued {
                    parts.metrics.task_enqueued(task.kind.as_str());
                    wake |= ready_now;
                }
                let _ = reply.send(Ok(enqueued));
            }
            if wake {
                pool.do_send(Wake);
            }
        }
        Err(err) => {
            // Nothing was written (or all of it was, if only the answer
            // was lost): each caller hears the same.
            for reply in replies {
                let _ = reply.send(Err(QueueError::Store(err.clone())));
            }
        }
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
    type Result = ResponseFuture<Result<Enqueued, QueueError>>;

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        let task = NewTask {
            id: TaskId::new(),
            user_id: msg.user,
            created_at: self.parts.clock.now(),
            request: msg.request,
        };
        self.accept(ctx, |reply| Write::Enqueue(task, msg.idempotency, reply))
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
    type Result = ResponseFuture<Result<Cancelled, QueueError>>;

    fn handle(&mut self, msg: CancelTask, ctx: &mut Context<Self>) -> Self::Result {
        self.accept(ctx, |reply| Write::Cancel(msg.id, reply))
    }
}

/// Cancel every waiting task of a user's (their account is being deleted).
#[derive(Message)]
#[rtype(result = "Result<u64, QueueError>")]
pub struct CancelAll(pub UserId);

impl Handler<CancelAll> for QueueManager {
    type Result = ResponseFuture<Result<u64, QueueError>>;

    fn handle(&mut self, _: CancelAll, ctx: &mut Context<Self>) -> Self::Result {
        self.accept(ctx, Write::CancelAll)
    }
}

/// The router has forgotten this manager: stop once earlier writes are done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retired;

impl Handler<Retired> for QueueManager {
    type Result = ();

    fn handle(&mut self, _: Retired, ctx: &mut Context<Self>) {
        self.retired = true;
        self.send_next(ctx);
    }
}
