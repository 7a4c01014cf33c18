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
//! A store is given its [`QueuePolicy`] when it is made: the clock, the
//! per-user limits in force and how long leases, results and idempotency
//! keys last. A call then says what happens (`finish(lease, outcome)`),
//! and the store works out when. Times are milliseconds since the Unix
//! epoch, from that clock.

mod memory;
mod partitioned;
mod redis;

pub use memory::MemoryQueueStore;
pub use partitioned::PartitionedQueue;
pub use redis::RedisQueueStore;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;

use super::StoreError;
use crate::clock::Clock;
use crate::config::QueueSettings;
use crate::domain::{
    Bulk, Cancelled, CancelledTask, Enqueued, Finished, Idempotency, KindLimits, Lease, LeaseCall,
    LeasedTask, Limits, NewTask, Outcome, Page, QueueStats, Retried, Settled, Task, TaskCounts,
    TaskFilter, TaskId, TaskQuery, UserId, UserLoad, Wanted,
};

/// Per-user queues with leases, retries and retention.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Stores each task at the back of its user's queue (or among the
    /// delayed ones, if it asks to wait), in the order given, unless its
    /// user already has `max_pending` tasks waiting; one step for them all.
    /// The same task sent again is stored once and answered as created
    /// again. Answers each task's outcome, in order.
    async fn enqueue_many(
        &self,
        tasks: Vec<(NewTask, Option<Idempotency>)>,
    ) -> Result<Vec<Enqueued>, StoreError>;

    /// [`enqueue_many`](Self::enqueue_many) for one task.
    async fn enqueue(
        &self,
        task: NewTask,
        idempotency: Option<Idempotency>,
    ) -> Result<Enqueued, StoreError> {
        let mut enqueued = self.enqueue_many(vec![(task, idempotency)]).await?;
        enqueued
            .pop()
            .ok_or_else(|| StoreError::Failed(anyhow::anyhow!("enqueue answered nothing")))
    }

    /// A task of `user`'s, unless it is someone else's or has expired.
    async fn get(&self, user: UserId, id: TaskId) -> Result<Option<Task>, StoreError>;

    /// A page of `user`'s tasks, as `query` asks.
    async fn list(&self, user: UserId, query: TaskQuery) -> Result<Page, StoreError> {
        let filter = TaskFilter {
            user: Some(user),
            status: query.status,
            kind: None,
        };
        self.scan(&filter, query.before, query.limit).await
    }

    /// A page of the tasks `filter` matches, newest first, older than
    /// `before`: at most `limit`, and fewer once the page holds
    /// [`PAGE_BYTES`]. Narrowed by more than the user, a call looks at a
    /// bounded number of tasks and may come back short, with a cursor to
    /// go on from.
    async fn scan(
        &self,
        filter: &TaskFilter,
        before: Option<TaskId>,
        limit: usize,
    ) -> Result<Page, StoreError>;

    /// Queues a dead or cancelled task again under its id, its attempts
    /// reset, behind its user's ready tasks, whatever the user's quotas
    /// (an operator's call). The tasks of a deleted user are never queued
    /// again, and an expired task is not found.
    async fn retry(&self, id: TaskId) -> Result<Retried, StoreError>;

    /// Retries every dead or cancelled task `filter` matches, a slice at a
    /// time (each slice one step).
    async fn retry_matching(&self, filter: &TaskFilter) -> Result<Bulk, StoreError>;

    /// Cancels every waiting task `filter` matches, a slice at a time.
    /// Answers the counts and the tasks cancelled.
    async fn cancel_matching(
        &self,
        filter: &TaskFilter,
    ) -> Result<(Bulk, Vec<CancelledTask>), StoreError>;

    /// Keeps a user's tasks waiting, in their order, until resumed; they
    /// may still be enqueued and cancelled. Returns whether that changed
    /// anything.
    async fn pause(&self, user: UserId) -> Result<bool, StoreError>;

    /// Lets a paused user's tasks run again. Returns whether that changed
    /// anything.
    async fn resume(&self, user: UserId) -> Result<bool, StoreError>;

    /// Whether an operator paused `user`'s tasks.
    async fn is_paused(&self, user: UserId) -> Result<bool, StoreError>;

    /// The users with the most tasks waiting, most first: at most `most`,
    /// found among no more than [`LOAD_LOOK`] of the users with any.
    async fn busiest(&self, most: usize) -> Result<Vec<UserLoad>, StoreError>;

    /// `user`'s tasks by state.
    async fn counts(&self, user: UserId) -> Result<TaskCounts, StoreError>;

    /// Cancels a waiting task of `user`'s. A task cancelled already is
    /// answered as cancelled again, unchanged.
    async fn cancel(&self, user: UserId, id: TaskId) -> Result<Cancelled, StoreError>;

    /// Cancels every waiting task of `user`'s, as the user is deleted: no
    /// task of theirs can be retried after. Returns how many.
    async fn cancel_all(&self, user: UserId) -> Result<u64, StoreError>;

    /// Records how attempts ended, each if its lease is still current (a
    /// failure is retried at its `retry_at` while attempts remain, and is
    /// `dead` after), then leases what `wanted` asks for: up to `any` ready
    /// tasks round robin between users, then up to `newcomers` tasks of
    /// users with nothing running (see [`Wanted`]), due delayed tasks made
    /// ready first: one step where a worker would otherwise take two. Sent
    /// again, an outcome answers what was recorded the first time, and the
    /// same `call` answers the leases it made that are still current and
    /// leases nothing more.
    async fn settle(
        &self,
        ended: &[(Lease, Outcome)],
        call: LeaseCall,
        wanted: Wanted,
    ) -> Result<Settled, StoreError>;

    /// Leases up to `max` ready tasks round robin: [`settle`](Self::settle)
    /// recording nothing.
    async fn lease(&self, call: LeaseCall, max: usize) -> Result<Vec<LeasedTask>, StoreError> {
        Ok(self.settle(&[], call, Wanted::any(max)).await?.leased)
    }

    /// Extends leases that are still current by a lease period; answers,
    /// in order, whether each one was.
    async fn renew(&self, leases: &[Lease]) -> Result<Vec<bool>, StoreError>;

    /// Records how one attempt ended: [`settle`](Self::settle) leasing
    /// nothing.
    async fn finish(&self, lease: Lease, outcome: Outcome) -> Result<Finished, StoreError> {
        let settled = self
            .settle(&[(lease, outcome)], LeaseCall::new(), Wanted::default())
            .await?;
        settled
            .finished
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Failed(anyhow::anyhow!("finish answered nothing")))
    }

    /// Hands current leases back unfinished (at shutdown): each task goes
    /// back to the front of its queue and the attempt is not counted.
    /// Returns how many were still current.
    async fn release(&self, leases: &[Lease]) -> Result<u64, StoreError>;

    /// Takes back every lease that has lapsed: its task runs again first
    /// in its queue, or is `dead` if that was the last attempt. Returns
    /// how many.
    async fn reclaim(&self) -> Result<u64, StoreError>;

    /// Forgets every finished task and idempotency key past its expiry.
    /// Returns how many tasks went.
    async fn purge(&self) -> Result<u64, StoreError>;

    /// How much is waiting, over all users.
    async fn stats(&self) -> Result<QueueStats, StoreError>;

    /// Checks that the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// A short name for health reports: `memory` or `redis`.
    fn name(&self) -> &'static str;
}

/// The queue in Redis under `redis`'s prefix, in `partitions` partitions
/// (one: the whole queue under the prefix itself, as before partitions).
///
/// Which partition holds a user's tasks follows from the count, so the
/// count is written beside the queue the first time, and a start with
/// another count is refused: tasks would be looked for in the wrong
/// partition. (A Redis that does not answer yet cannot be asked; the start
/// goes on, as it does for everything else that needs Redis.)
pub async fn redis_queue(
    redis: Arc<super::Redis>,
    policy: QueuePolicy,
    partitions: usize,
) -> anyhow::Result<Arc<dyn QueueStore>> {
    match check_layout(&redis, partitions).await {
        Err(StoreError::Unavailable(err)) => tracing::warn!(
            error = %err,
            "could not check queue.partitions against the queue in Redis: it does not answer"
        ),
        checked => checked?,
    }
    if partitions <= 1 {
        return Ok(Arc::new(RedisQueueStore::new(redis, policy)));
    }
    let parts = redis
        .partitions(partitions)
        .into_iter()
        .map(|space| {
            let part =
                RedisQueueStore::in_partition(redis.clone(), space, partitions, policy.clone());
            Arc::new(part) as Arc<dyn QueueStore>
        })
        .collect();
    Ok(Arc::new(PartitionedQueue::new(parts, &policy)))
}

/// Refuses a partition count other than the one the queue in Redis was
/// laid out for; records it if none was.
async fn check_layout(redis: &super::Redis, partitions: usize) -> Result<(), StoreError> {
    use fred::prelude::KeysInterface as _;
    let key = format!("{}:queue-partitions", redis.prefix());
    let client = redis.client();
    let laid_out: Option<usize> = client.get(&key).await?;
    // Keys any queue that ever held a task has (the counters stay).
    let marks: Vec<String> = ["tasks", "sequence", "fences"]
        .iter()
        .map(|name| format!("{}:{name}", redis.prefix()))
        .collect();
    let laid_out = match laid_out {
        Some(count) => count,
        // Before the count was written there were no partitions: tasks
        // stored then are in the one under the prefix itself.
        None if client.exists::<u64, _>(marks).await? > 0 => 1,
        None => partitions,
    };
    if laid_out != partitions {
        return Err(StoreError::Failed(anyhow::anyhow!(
            "queue.partitions is {partitions}, but the queue under {} in Redis is laid out in \
             {laid_out}: set it back to {laid_out}. To change it, let the queue drain, stop every \
             replica, delete the key {key} (tasks kept from before are then out of reach), \
             and start them all with the new count",
            redis.prefix()
        )));
    }
    client
        .set::<(), _, _>(
            &key,
            partitions,
            None,
            Some(fred::types::SetOptions::NX),
            false,
        )
        .await?;
    Ok(())
}

/// Implements [`QueueStore`] for a test's store `$store` that wraps
/// another (its field `$inner`) to change how it settles: `settle` is its
/// own method `$settle`, and every other method is passed through.
#[cfg(test)]
macro_rules! queue_store_settling_with {
    ($store:ty, $inner:ident, $settle:ident) => {
        #[async_trait::async_trait]
        impl $crate::storage::QueueStore for $store {
            async fn enqueue_many(
                &self,
                tasks: Vec<($crate::domain::NewTask, Option<$crate::domain::Idempotency>)>,
            ) -> Result<Vec<$crate::domain::Enqueued>, $crate::storage::StoreError> {
                self.$inner.enqueue_many(tasks).await
            }
            async fn get(
                &self,
                user: $crate::domain::UserId,
                id: $crate::domain::TaskId,
            ) -> Result<Option<$crate::domain::Task>, $crate::storage::StoreError> {
                self.$inner.get(user, id).await
            }
            async fn scan(
                &self,
                filter: &$crate::domain::TaskFilter,
                before: Option<$crate::domain::TaskId>,
                limit: usize,
            ) -> Result<$crate::domain::Page, $crate::storage::StoreError> {
                self.$inner.scan(filter, before, limit).await
            }
            async fn retry(
                &self,
                id: $crate::domain::TaskId,
            ) -> Result<$crate::domain::Retried, $crate::storage::StoreError> {
                self.$inner.retry(id).await
            }
            async fn retry_matching(
                &self,
                filter: &$crate::domain::TaskFilter,
            ) -> Result<$crate::domain::Bulk, $crate::storage::StoreError> {
                self.$inner.retry_matching(filter).await
            }
            async fn cancel_matching(
                &self,
                filter: &$crate::domain::TaskFilter,
            ) -> Result<
                ($crate::domain::Bulk, Vec<$crate::domain::CancelledTask>),
                $crate::storage::StoreError,
            > {
                self.$inner.cancel_matching(filter).await
            }
            async fn pause(
                &self,
                user: $crate::domain::UserId,
            ) -> Result<bool, $crate::storage::StoreError> {
                self.$inner.pause(user).await
            }
            async fn resume(
                &self,
                user: $crate::domain::UserId,
            ) -> Result<bool, $crate::storage::StoreError> {
                self.$inner.resume(user).await
            }
            async fn is_paused(
                &self,
                user: $crate::domain::UserId,
            ) -> Result<bool, $crate::storage::StoreError> {
                self.$inner.is_paused(user).await
            }
            async fn busiest(
                &self,
                most: usize,
            ) -> Result<Vec<$crate::domain::UserLoad>, $crate::storage::StoreError> {
                self.$inner.busiest(most).await
            }
            async fn counts(
                &self,
                user: $crate::domain::UserId,
            ) -> Result<$crate::domain::TaskCounts, $crate::storage::StoreError> {
                self.$inner.counts(user).await
            }
            async fn cancel(
                &self,
                user: $crate::domain::UserId,
                id: $crate::domain::TaskId,
            ) -> Result<$crate::domain::Cancelled, $crate::storage::StoreError> {
                self.$inner.cancel(user, id).await
            }
            async fn cancel_all(
                &self,
                user: $crate::domain::UserId,
            ) -> Result<u64, $crate::storage::StoreError> {
                self.$inner.cancel_all(user).await
            }
            async fn renew(
                &self,
                leases: &[$crate::domain::Lease],
            ) -> Result<Vec<bool>, $crate::storage::StoreError> {
                self.$inner.renew(leases).await
            }
            async fn release(
                &self,
                leases: &[$crate::domain::Lease],
            ) -> Result<u64, $crate::storage::StoreError> {
                self.$inner.release(leases).await
            }
            async fn reclaim(&self) -> Result<u64, $crate::storage::StoreError> {
                self.$inner.reclaim().await
            }
            async fn purge(&self) -> Result<u64, $crate::storage::StoreError> {
                self.$inner.purge().await
            }
            async fn stats(
                &self,
            ) -> Result<$crate::domain::QueueStats, $crate::storage::StoreError> {
                self.$inner.stats().await
            }
            async fn ping(&self) -> Result<(), $crate::storage::StoreError> {
                Ok(())
            }
            fn name(&self) -> &'static str {
                "a test's"
            }
            async fn settle(
                &self,
                ended: &[($crate::domain::Lease, $crate::domain::Outcome)],
                call: $crate::domain::LeaseCall,
                wanted: $crate::domain::Wanted,
            ) -> Result<$crate::domain::Settled, $crate::storage::StoreError> {
                self.$settle(ended, call, wanted).await
            }
        }
    };
}
#[cfg(test)]
pub(crate) use queue_store_settling_with;

/// What a queue store is told besides its data: where time comes from,
/// the per-user limits in force, and how long things last.
#[derive(Clone)]
pub struct QueuePolicy {
    pub clock: Clock,
    /// Shared with whoever changes them while the service runs.
    pub limits: Arc<SharedLimits>,
    /// How long a lease lasts unless renewed.
    pub lease_for: Duration,
    /// How long a finished task stays readable.
    pub result_ttl: Duration,
    /// How long an `Idempotency-Key` keeps returning its task.
    pub idempotency_ttl: Duration,
}

impl QueuePolicy {
    pub fn new(settings: &QueueSettings, clock: Clock) -> Self {
        Self {
            clock,
            limits: Arc::new({
                let limits = SharedLimits::new(settings.limits());
                limits.set_kinds(settings.kind_limits());
                limits
            }),
            lease_for: settings.visibility_timeout(),
            result_ttl: settings.result_ttl(),
            idempotency_ttl: settings.idempotency_ttl(),
        }
    }

    /// The time now, the deadlines that follow from it, and the limits.
    fn now(&self) -> Moment {
        let now_ms = self.clock.now_millis();
        let later = |ttl: Duration| {
            now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
        };
        Moment {
            now_ms,
            lease_deadline_ms: later(self.lease_for),
            result_expires_ms: later(self.result_ttl),
            key_expires_ms: later(self.idempotency_ttl),
            limits: self.limits.get(),
        }
    }
}

/// One instant of a store call: every time it writes follows from `now_ms`.
#[derive(Debug, Clone, Copy)]
struct Moment {
    now_ms: i64,
    /// When a lease taken or renewed now lapses.
    lease_deadline_ms: i64,
    /// When a task finished now is forgotten.
    result_expires_ms: i64,
    /// When an `Idempotency-Key` seen now is forgotten.
    key_expires_ms: i64,
    limits: Limits,
}

/// The per-user and per-kind limits in force, shared by the store and
/// whoever changes them (a reload), so that a change applies at the next
/// call.
#[derive(Debug)]
pub struct SharedLimits {
    max_pending: AtomicU64,
    max_pending_bytes: AtomicU64,
    max_finished: AtomicU64,
    max_running: AtomicU64,
    kinds: RwLock<Arc<KindLimits>>,
}

impl SharedLimits {
    pub fn new(limits: Limits) -> Self {
        Self {
            max_pending: AtomicU64::new(limits.max_pending),
            max_pending_bytes: AtomicU64::new(limits.max_pending_bytes),
            max_finished: AtomicU64::new(limits.max_finished),
            max_running: AtomicU64::new(limits.max_running),
            kinds: RwLock::default(),
        }
    }

    /// The limits per kind in force.
    pub fn kinds(&self) -> Arc<KindLimits> {
        self.kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_kinds(&self, kinds: KindLimits) {
        *self.kinds.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(kinds);
    }

    pub fn get(&self) -> Limits {
        Limits {
            max_pending: self.max_pending.load(Ordering::Relaxed),
            max_pending_bytes: self.max_pending_bytes.load(Ordering::Relaxed),
            max_finished: self.max_finished.load(Ordering::Relaxed),
            max_running: self.max_running.load(Ordering::Relaxed),
        }
    }

    pub fn set(&self, limits: Limits) {
        self.max_pending
            .store(limits.max_pending, Ordering::Relaxed);
        self.max_pending_bytes
            .store(limits.max_pending_bytes, Ordering::Relaxed);
        self.max_finished
            .store(limits.max_finished, Ordering::Relaxed);
        self.max_running
            .store(limits.max_running, Ordering::Relaxed);
    }
}

/// Most delayed tasks made ready in one lease call.
const PROMOTE_BATCH: usize = 1000;

/// Bytes of task fields (payloads and results above all) one page of a
/// listing carries at most, beyond its first task: past it the page ends
/// early, with a cursor to go on from, so that no one read moves a user's
/// whole store.
const PAGE_BYTES: usize = 1024 * 1024;

/// Most tasks one listing narrowed by more than its user looks at; a page
/// may then come back short, with a cursor to go on from.
const LIST_SCAN: usize = 1000;

/// Most users with waiting tasks one look for the busiest reads.
pub const LOAD_LOOK: usize = 10_000;

/// Most entries one lease call looks at to find newcomers: those of users
/// who have started something since they joined are dropped as they go.
const NEWCOMER_LOOKS: usize = 64;

/// The error recorded on a task whose lease lapsed.
const LEASE_LAPSED: &str = "the worker running this attempt stopped or lost its lease";
