//! The queue router: the one door for writes to the queues. It starts a
//! `QueueManager` for a user when they first write, forwards their writes
//! to it, and forgets it when it retires after `queue.manager_idle_secs`,
//! so memory follows the users with live work, not every user. Reads need
//! no ordering and do not come here: the `Queue` handle asks the store.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{
    Actor, Addr, AsyncContext, Context, Handler, Message, MessageResult, Recipient, ResponseFuture,
    Supervised,
};

use super::manager::{CancelAll, CancelTask, Enqueue, QueueManager, Retire, Retired};
use super::parts::{QueueError, QueueParts};
use super::pool::Wake;
use crate::domain::{Cancelled, Enqueued, UserId};

pub struct QueueRouter {
    parts: Arc<QueueParts>,
    /// The worker pool, which every manager wakes when work is ready.
    pool: Recipient<Wake>,
    managers: HashMap<UserId, Addr<QueueManager>>,
}

impl QueueRouter {
    pub fn new(parts: Arc<QueueParts>, pool: Recipient<Wake>) -> Self {
        Self {
            parts,
            pool,
            managers: HashMap::new(),
        }
    }

    /// The user's manager, started if they have none.
    fn manager(&mut self, user: UserId, ctx: &mut Context<Self>) -> Addr<QueueManager> {
        if let Some(manager) = self.managers.get(&user).filter(|m| m.connected()) {
            return manager.clone();
        }
        let retire = ctx.address().recipient();
        let manager =
            QueueManager::new(user, self.parts.clone(), self.pool.clone(), retire).start();
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
        Box::pin(async move { answer.await? })
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
