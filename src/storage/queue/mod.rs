//! Where tasks are kept: Redis in production, memory for the embedded
//! default. Both implement [`QueueStore`] with the same semantics, and one
//! behavioural test suite runs against each.
//!
//! Every state change is one atomic step (a Lua script on Redis, one lock
//! on memory), so a crash between two steps cannot lose or duplicate a task.
//! The model, the same in both stores:
//!
//! - Each user has an ordered set of ready task ids. Due delayed tasks and
//!   retries join its back (before any task enqueued after they fell due);
//!   tasks handed back or whose lease lapsed go to its front, in the order
//!   they ran.
//! - The users with ready work and room to run more (`max_running`) form a
//!   ring ordered by ticket. Leasing takes the head user's first task and
//!   moves the user to the back with a fresh ticket: round robin.
//! - A lease carries a fencing token from one counter for all tasks, so a
//!   newer lease always holds a larger token. Renewing, finishing and
//!   releasing must name the current token, or they are refused. A lapsed
//!   lease counts as a failed attempt, so a task that kills its worker every
//!   time ends `dead` instead of looping.
//! - Finished tasks are kept until `expires_at`, then purged.
//! - Every call is safe to send twice (a reply lost with its connection is
//!   sent again): the second answers what the first did, or finds nothing
//!   left to do.
//!
//! Times are milliseconds since the Unix epoch, from the caller's clock.

mod memory;
mod redis;

pub use memory::MemoryQueueStore;
pub use redis::RedisQueueStore;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{
    Fence, IdempotencyKey, LeasedTask, NewTask, Outcome, Task, TaskCounts, TaskId, TaskStatus,
    UserId,
};

/// Why a queue operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The backend could not be reached or did not answer in time. Nothing
    /// was written, or (if the answer was lost) the write is complete.
    #[error("queue backend unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// The backend answered with something it should not have.
    #[error("queue backend failed")]
    Failed(#[source] anyhow::Error),
}

/// An `Idempotency-Key` with a digest of the request it came with, so that
/// the key reused for a different request is told apart from a retry.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    pub fingerprint: String,
    /// When the key stops returning its task.
    pub expires_ms: i64,
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    Created(Task),
    /// The idempotency key (or the task id) was seen before: the task it
    /// created then, unchanged.
    Replayed(Task),
    /// The idempotency key came before with a different request.
    KeyReused,
    /// The user already has this many tasks waiting.
    Full {
        pending: u64,
    },
}

/// What a cancellation found.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancelled {
    Cancelled(Task),
    /// The task is running, succeeded or dead; it is returned as it stands.
    NotWaiting(Task),
    NotFound,
}

/// What recording an attempt's outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Recorded; the task is now in this state.
    Recorded(TaskStatus),
    /// The lease is no longer the task's current one: refused, not applied.
    Stale,
}

/// Names one lease call, so that the call sent again answers the leases it
/// made instead of leasing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseCall(pub Uuid);

impl LeaseCall {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for LeaseCall {
    fn default() -> Self {
        Self::new()
    }
}

/// One page of a user's tasks, newest first.
#[derive(Debug, Default)]
pub struct Page {
    pub items: Vec<Task>,
    /// Pass as `before` for the next page; `None` on the last.
    pub next: Option<TaskId>,
}

/// Per-user queues with leases, retries and retention.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Stores `task` at the back of its user's queue (or among the delayed
    /// ones, if `run_at` is later than `now_ms`), unless the user already
    /// has `max_pending` tasks waiting. The same task sent again is stored
    /// once and answered as created again.
    async fn enqueue(
        &self,
        task: NewTask,
        idempotency: Option<Idempotency>,
        limits: Limits,
        now_ms: i64,
    ) -> Result<Enqueued, QueueError>;

    /// A task of `user`'s, unless it is someone else's or has expired.
    async fn get(&self, user: UserId, id: TaskId, now_ms: i64) -> Result<Option<Task>, QueueError>;

    /// Up to `limit` of `user`'s tasks, newest first, older than `before`,
    /// only those in `status` if given.
    async fn list(
        &self,
        user: UserId,
        status: Option<TaskStatus>,
        before: Option<TaskId>,
        limit: usize,
        now_ms: i64,
    ) -> Result<Page, QueueError>;

    /// `user`'s tasks by state.
    async fn counts(&self, user: UserId) -> Result<TaskCounts, QueueError>;

    /// Cancels a waiting task of `user`'s; kept until `expires_ms`. A task
    /// cancelled already is answered as cancelled again, unchanged.
    async fn cancel(
        &self,
        user: UserId,
        id: TaskId,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<Cancelled, QueueError>;

    /// Cancels every waiting task of `user`'s. Returns how many.
    async fn cancel_all(
        &self,
        user: UserId,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<u64, QueueError>;

    /// Leases up to `max` ready tasks, round robin between users, each
    /// until `deadline_ms`. Due delayed tasks are made ready first. The
    /// same `call` made again answers the leases it made that are still
    /// current, and leases nothing more.
    async fn lease(
        &self,
        call: LeaseCall,
        max: usize,
        limits: Limits,
        now_ms: i64,
        deadline_ms: i64,
    ) -> Result<Vec<LeasedTask>, QueueError>;

    /// Extends leases that are still current to `deadline_ms`; answers, in
    /// order, whether each one was.
    async fn renew(
        &self,
        leases: &[(TaskId, Fence)],
        deadline_ms: i64,
    ) -> Result<Vec<bool>, QueueError>;

    /// Records how an attempt ended, if its lease is still current. A
    /// failure is retried at its `retry_at` while attempts remain, and is
    /// `dead` after; finished tasks are kept until `expires_ms`. Sent again
    /// for the same lease, it answers what was recorded the first time.
    async fn finish(
        &self,
        id: TaskId,
        fence: Fence,
        outcome: Outcome,
        limits: Limits,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<Finished, QueueError>;

    /// Hands current leases back unfinished (at shutdown): each task goes
    /// back to the front of its queue and the attempt is not counted.
    /// Returns how many were still current.
    async fn release(&self, leases: &[(TaskId, Fence)], limits: Limits) -> Result<u64, QueueError>;

    /// Takes back every lease that lapsed by `now_ms`: its task runs again
    /// first in its queue, or is `dead` if that was the last attempt.
    /// Returns how many.
    async fn reclaim(
        &self,
        limits: Limits,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<u64, QueueError>;

    /// Forgets every finished task and idempotency key past its expiry.
    /// Returns how many tasks went.
    async fn purge(&self, now_ms: i64) -> Result<u64, QueueError>;

    /// How much is waiting, over all users.
    async fn stats(&self) -> Result<QueueStats, QueueError>;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), QueueError>;

    /// A short name for health reports: `memory` or `redis`.
    fn name(&self) -> &'static str;
}

/// How much is waiting, over all users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Tasks queued or failed (awaiting a retry).
    pub waiting: u64,
    /// Users with at least one such task.
    pub users_waiting: u64,
    /// The `run_at` of the ready task that has been due longest.
    pub oldest_due_ms: Option<i64>,
}

/// The per-user bounds in force, passed with each call so that an operator
/// can change them while the service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most waiting tasks per user.
    pub max_pending: u64,
    /// Most running tasks per user; 0 means no bound.
    pub max_running: u64,
}

impl Limits {
    /// Whether a user with `running` tasks may start another.
    pub fn may_run(&self, running: u64) -> bool {
        self.max_running == 0 || running < self.max_running
    }
}

/// Most delayed tasks made ready in one lease call.
const PROMOTE_BATCH: usize = 1000;

/// The error recorded on a task whose lease lapsed.
const LEASE_LAPSED: &str = "the worker running this attempt stopped or lost its lease";
