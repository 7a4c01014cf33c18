//! The queue router: the one door to the queues. It starts a
//! `QueueManager` for a user when they first write, forwards their writes
//! to it, and forgets it when it retires after `queue.manager_idle_secs`,
//! so memory follows the users with live work, not every user. Reads need
//! no ordering, so the router answers them itself, without a manager.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Addr, Context, Handler, Message, MessageResult, ResponseFuture, Supervised};

use super::queue::QueueParts;
use super::queue_manager::{CancelAll, CancelTask, Enqueue, QueueManager, Retired};
use super::worker_pool::WorkerPool;
use crate::domain::{Task, TaskCounts, TaskId, TaskStatus, UserId};
use crate::storage::{Cancelled, Enqueued, Page, QueueError};

pub struct QueueRouter {
    parts: Arc<QueueParts>,
    pool: Addr<WorkerPool>,
    managers: HashMap<UserId, Addr<QueueManager>>,
}

impl QueueRouter {
    pub fn new(parts: Arc<QueueParts>, pool: Addr<WorkerPool>) -> Self {
        Self {
            parts,
            pool,
            managers: HashMap::new(),
        }
    }

    /// The user's manager, started if they have none.
    fn manager(&mut self, user: UserId, ctx: &mut Context<Self>) -> Addr<QueueManager> {
        use actix::AsyncContext as _;
        if let Some(manager) = self.managers.get(&user).filter(|m| m.connected()) {
            return manager.clone();
        }
        let manager =
            QueueManager::new(user, self.parts.clone(), self.pool.clone(), ctx.address()).start();
        self.managers.insert(user, manager.clone());
        manager
    }

    /// Sends a write to the user's manager and hands its answer back.
    fn forward<M, T>(
        &mut self,
        user: UserId,
        msg: M,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<T, QueueError>>
    where
        M: Message<Result = Result<T, QueueError>> + Send + 'static,
        T: Send + 'static,
        QueueManager: Handler<M>,
    {
        let answer = self.manager(user, ctx).send(msg);
        Box::pin(async move {
            answer
                .await
                .map_err(|err| QueueError::Unavailable(err.into()))?
        })
    }

    /// Runs a read against the store as a future of its own.
    fn read<T, F>(&self, read: F) -> ResponseFuture<Result<T, QueueError>>
    where
        F: AsyncFnOnce(&QueueParts) -> Result<T, QueueError> + 'static,
        T: 'static,
    {
        let parts = self.parts.clone();
        Box::pin(async move { read(&parts).await })
    }
}

impl Actor for QueueRouter {
    type Context = Context<Self>;
}

impl Supervised for QueueRouter {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(actor = "QueueRouter", "restarting");
        self.parts.metrics.actor_restarted("QueueRouter");
    }
}

impl Handler<Enqueue> for QueueRouter {
    type Result = ResponseFuture<Result<Enqueued, QueueError>>;

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        self.forward(msg.user, msg, ctx)
    }
}

impl Handler<CancelTask> for QueueRouter {
    type Result = ResponseFuture<Result<Cancelled, QueueError>>;

    fn handle(&mut self, msg: CancelTask, ctx: &mut Context<Self>) -> Self::Result {
        self.forward(msg.user, msg, ctx)
    }
}

impl Handler<CancelAll> for QueueRouter {
    type Result = ResponseFuture<Result<u64, QueueError>>;

    fn handle(&mut self, msg: CancelAll, ctx: &mut Context<Self>) -> Self::Result {
        self.forward(msg.0, msg, ctx)
    }
}

/// A manager saying it has been idle for `queue.manager_idle_secs`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire {
    pub user: UserId,
    pub manager: Addr<QueueManager>,
}

impl Handler<Retire> for QueueRouter {
    type Result = ();

    fn handle(&mut self, msg: Retire, _: &mut Context<Self>) {
        if self.managers.get(&msg.user) != Some(&msg.manager) {
            return;
        }
        // Gone from the map first: a write that comes later starts a new
        // manager, and those already sent reach the old one before `Retired`.
        self.managers.remove(&msg.user);
        msg.manager.do_send(Retired);
        if self.managers.capacity() > 64 && self.managers.capacity() > 4 * self.managers.len() {
            self.managers.shrink_to_fit();
        }
    }
}

/// One task of a user's.
#[derive(Message)]
#[rtype(result = "Result<Option<Task>, QueueError>")]
pub struct GetTask {
    pub user: UserId,
    pub id: TaskId,
}

impl Handler<GetTask> for QueueRouter {
    type Result = ResponseFuture<Result<Option<Task>, QueueError>>;

    fn handle(&mut self, msg: GetTask, _: &mut Context<Self>) -> Self::Result {
        self.read(async move |parts| {
            let now = parts.clock.now_millis();
            parts.store.get(msg.user, msg.id, now).await
        })
    }
}

/// A page of a user's tasks, newest first.
#[derive(Message)]
#[rtype(result = "Result<Page, QueueError>")]
pub struct ListTasks {
    pub user: UserId,
    pub status: Option<TaskStatus>,
    pub before: Option<TaskId>,
    pub limit: usize,
}

impl Handler<ListTasks> for QueueRouter {
    type Result = ResponseFuture<Result<Page, QueueError>>;

    fn handle(&mut self, msg: ListTasks, _: &mut Context<Self>) -> Self::Result {
        self.read(async move |parts| {
            let now = parts.clock.now_millis();
            let page = parts
                .store
                .list(msg.user, msg.status, msg.before, msg.limit, now);
            page.await
        })
    }
}

/// A user's tasks counted by state.
#[derive(Message)]
#[rtype(result = "Result<TaskCounts, QueueError>")]
pub struct CountTasks(pub UserId);

impl Handler<CountTasks> for QueueRouter {
    type Result = ResponseFuture<Result<TaskCounts, QueueError>>;

    fn handle(&mut self, msg: CountTasks, _: &mut Context<Self>) -> Self::Result {
        self.read(async move |parts| parts.store.counts(msg.0).await)
    }
}

/// Check that the queue store answers; replies with its name.
#[derive(Message)]
#[rtype(result = "Result<&'static str, QueueError>")]
pub struct PingQueue;

impl Handler<PingQueue> for QueueRouter {
    type Result = ResponseFuture<Result<&'static str, QueueError>>;

    fn handle(&mut self, _: PingQueue, _: &mut Context<Self>) -> Self::Result {
        self.read(async move |parts| {
            parts.store.ping().await?;
            Ok(parts.store.name())
        })
    }
}

/// How many users have a manager running.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct LiveManagers;

impl Handler<LiveManagers> for QueueRouter {
    type Result = MessageResult<LiveManagers>;

    fn handle(&mut self, _: LiveManagers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.managers.values().filter(|m| m.connected()).count())
    }
}
