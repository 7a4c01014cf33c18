//! The task side of the actor system, started as one piece and used
//! through the [`Queue`] handle: writes go through the `QueueRouter` to
//! each user's `QueueManager` (on the calling arbiter), reads straight to
//! the store, and the `WorkerPool` with its `TaskWorker`s runs on an
//! arbiter (thread) of its own, so that running tasks never delays routing
//! requests.
//!
//! The modules form a chain, each importing only those below it: the
//! router starts managers, managers wake the pool, the pool runs workers,
//! and all of them share `parts`.

mod manager;
mod parts;
mod pool;
mod router;
mod worker;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::{Addr, Arbiter, ArbiterHandle, MailboxError, Supervisor};

pub use parts::QueueError;
pub use pool::PoolStatus;

use manager::{CancelAll, CancelTask, Enqueue};
use parts::{QueueConfig, QueueParts};
use pool::{Drain, Lane, PoolSizes, Resize, Status, Wake, WorkerPool};
use router::{LiveManagers, QueueRouter};

use crate::clock::Clock;
use crate::config::QueueSettings;
use crate::domain::{
    Bulk, Cancelled, Enqueued, Idempotency, KindLimits, Limits, Page, QueueStats, Retried, Task,
    TaskCounts, TaskFilter, TaskId, TaskQuery, TaskRequest, UserId, UserLoad,
};
use crate::events::Events;
use crate::storage::{QueueStore, SharedLimits};
use crate::tasks::TaskHandlers;
use crate::telemetry::{Metrics, Pool};

/// A handle on the running task side. Cheap to clone; the workers' thread
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct Queue {
    router: Addr<QueueRouter>,
    pool: Addr<WorkerPool>,
    parts: Arc<QueueParts>,
    /// The per-user limits the store applies, changed by a reload.
    limits: Arc<SharedLimits>,
    _workers_thread: Arc<ArbiterGuard>,
}

impl Queue {
    /// Starts the router here and the pool with `queue.workers` workers on
    /// a thread of their own, over `store`, whose limits are `limits`.
    /// Must run inside an actix `System`.
    pub fn start(
        store: Arc<dyn QueueStore>,
        limits: Arc<SharedLimits>,
        handlers: Arc<TaskHandlers>,
        settings: &QueueSettings,
        clock: Clock,
        metrics: Metrics,
        events: Events,
    ) -> Self {
        let parts = Arc::new(QueueParts {
            store,
            clock,
            config: QueueConfig::from(settings),
            metrics,
            events,
        });
        let sizes = Arc::new(PoolSizes::new(settings.workers, settings.newcomer_workers));
        for (pool, lane) in [
            (Pool::Workers, Lane::Any),
            (Pool::NewcomerWorkers, Lane::Newcomers),
        ] {
            let reported = Arc::downgrade(&sizes);
            parts.metrics.observe_pool(pool, move || {
                let sizes = reported.upgrade()?;
                let size = sizes.lane(lane);
                Some((
                    size.target.load(Ordering::SeqCst),
                    size.live.load(Ordering::SeqCst),
                ))
            });
        }
        let thread = Arbiter::new().handle();
        let pool = {
            let parts = parts.clone();
            Supervisor::start_in_arbiter(&thread, move |_| WorkerPool::new(parts, handlers, sizes))
        };
        let router = {
            let (parts, wake) = (parts.clone(), pool.clone().recipient());
            Supervisor::start(move |_| QueueRouter::new(parts, wake))
        };
        Self {
            router,
            pool,
            parts,
            limits,
            _workers_thread: Arc::new(ArbiterGuard(thread)),
        }
    }

    /// Queues a task for `user`, after every write of theirs that came
    /// before it.
    pub async fn enqueue(
        &self,
        user: UserId,
        request: TaskRequest,
        idempotency: Option<Idempotency>,
    ) -> Result<Enqueued, QueueError> {
        let enqueue = Enqueue {
            user,
            request,
            idempotency,
        };
        self.router.send(enqueue).await?
    }

    /// Cancels a waiting task of `user`'s.
    pub async fn cancel(&self, user: UserId, id: TaskId) -> Result<Cancelled, QueueError> {
        self.router.send(CancelTask { user, id }).await?
    }

    /// Cancels every waiting task of `user`'s; answers how many.
    pub async fn cancel_all(&self, user: UserId) -> Result<u64, QueueError> {
        self.router.send(CancelAll(user)).await?
    }

    /// A task of `user`'s, unless it is someone else's or has expired.
    pub async fn get(&self, user: UserId, id: TaskId) -> Result<Option<Task>, QueueError> {
        Ok(self.parts.store.get(user, id).await?)
    }

    /// A page of `user`'s tasks.
    pub async fn list(&self, user: UserId, query: TaskQuery) -> Result<Page, QueueError> {
        Ok(self.parts.store.list(user, query).await?)
    }

    /// `user`'s tasks counted by state.
    pub async fn counts(&self, user: UserId) -> Result<TaskCounts, QueueError> {
        Ok(self.parts.store.counts(user).await?)
    }

    /// A page of the tasks `filter` matches, across users, newest first.
    pub async fn scan(
        &self,
        filter: &TaskFilter,
        before: Option<TaskId>,
        limit: usize,
    ) -> Result<Page, QueueError> {
        Ok(self.parts.store.scan(filter, before, limit).await?)
    }

    /// Queues a dead or cancelled task again, and wakes the workers.
    pub async fn retry(&self, id: TaskId) -> Result<Retried, QueueError> {
        let retried = self.parts.store.retry(id).await?;
        self.pool.do_send(Wake);
        Ok(retried)
    }

    /// Retries every dead or cancelled task `filter` matches, and wakes
    /// the workers.
    pub async fn retry_matching(&self, filter: &TaskFilter) -> Result<Bulk, QueueError> {
        let retried = self.parts.store.retry_matching(filter).await?;
        self.pool.do_send(Wake);
        Ok(retried)
    }

    /// Cancels every waiting task `filter` matches, and tells other
    /// services of each as a single cancellation does.
    pub async fn cancel_matching(&self, filter: &TaskFilter) -> Result<Bulk, QueueError> {
        let (bulk, cancelled) = self.parts.store.cancel_matching(filter).await?;
        for task in &cancelled {
            self.parts.task_cancelled(task);
        }
        Ok(bulk)
    }

    /// Keeps `user`'s tasks waiting until resumed; answers whether that
    /// changed anything.
    pub async fn pause(&self, user: UserId) -> Result<bool, QueueError> {
        Ok(self.parts.store.pause(user).await?)
    }

    /// Lets a paused user's tasks run again, and wakes the workers.
    pub async fn resume(&self, user: UserId) -> Result<bool, QueueError> {
        let resumed = self.parts.store.resume(user).await?;
        self.pool.do_send(Wake);
        Ok(resumed)
    }

    /// The users with the most tasks waiting, most first, and the figures
    /// over all users.
    pub async fn load(&self, most: usize) -> Result<(Vec<UserLoad>, QueueStats), QueueError> {
        let busiest = self.parts.store.busiest(most).await?;
        Ok((busiest, self.parts.store.stats().await?))
    }

    /// Whether an operator paused `user`'s tasks.
    pub async fn is_paused(&self, user: UserId) -> Result<bool, QueueError> {
        Ok(self.parts.store.is_paused(user).await?)
    }

    /// Checks that the store answers; names it.
    pub async fn ping(&self) -> Result<&'static str, QueueError> {
        self.parts.store.ping().await?;
        Ok(self.parts.store.name())
    }

    /// The limits in force now.
    pub fn limits(&self) -> Limits {
        self.limits.get()
    }

    /// The limits per kind in force now.
    pub fn kind_limits(&self) -> Arc<KindLimits> {
        self.limits.kinds()
    }

    /// The queue store, for inspection by tests and tools.
    pub fn store(&self) -> Arc<dyn QueueStore> {
        self.parts.store.clone()
    }

    /// Applies new pool sizes and limits from reloaded settings.
    pub fn retune(&self, settings: &QueueSettings) {
        self.limits.set(settings.limits());
        self.limits.set_kinds(settings.kind_limits());
        self.pool.do_send(Resize {
            any: settings.workers,
            newcomers: settings.newcomer_workers,
        });
    }

    /// The pool's figures.
    pub async fn status(&self) -> Result<PoolStatus, MailboxError> {
        self.pool.send(Status).await
    }

    /// How many users have a queue manager running.
    pub async fn live_managers(&self) -> Result<usize, MailboxError> {
        self.router.send(LiveManagers).await
    }

    /// Stops leasing, lets running tasks finish for at most `timeout`, and
    /// returns the leases of those still running. Returns how many.
    pub async fn drain(&self, timeout: Duration) -> Result<u64, MailboxError> {
        self.pool.send(Drain { timeout }).await
    }
}

/// Stops an arbiter when dropped.
struct ArbiterGuard(ArbiterHandle);

impl Drop for ArbiterGuard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use async_trait::async_trait;
    use chrono::Utc;
    use serde_json::{Value, json};

    use super::*;
    use crate::config::Settings;
    use crate::domain::{
        Lease, LeaseCall, NewTask, Outcome, Settled, TaskKind, TaskStatus, Wanted,
    };
    use crate::storage::{MemoryQueueStore, QueuePolicy, StoreError};
    use crate::tasks::{TaskError, TaskHandler};

    /// The memory store, made slow to lease and, for its first few calls to
    /// `finish`, unreachable.
    struct Unsteady {
        inner: MemoryQueueStore,
        inner_limits: Arc<SharedLimits>,
        lease_delay: Duration,
        /// Lease calls that have returned.
        leases_answered: AtomicU32,
        finishes_to_fail: AtomicU32,
    }

    crate::storage::queue_store_settling_with!(Unsteady, inner, settle_unsteadily);

    impl Unsteady {
        async fn settle_unsteadily(
            &self,
            ended: &[(Lease, Outcome)],
            call: LeaseCall,
            wanted: Wanted,
        ) -> Result<Settled, StoreError> {
            if !ended.is_empty() {
                let failing =
                    self.finishes_to_fail
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                if failing.is_ok() {
                    return Err(StoreError::Unavailable(anyhow::anyhow!(
                        "connection refused"
                    )));
                }
            }
            if !wanted.is_none() {
                tokio::time::sleep(self.lease_delay).await;
            }
            let settled = self.inner.settle(ended, call, wanted).await;
            if !wanted.is_none() {
                self.leases_answered.fetch_add(1, Ordering::SeqCst);
            }
            settled
        }
    }

    impl Unsteady {
        /// The status of each of `tasks`.
        async fn counts_of(&self, tasks: &[(UserId, TaskId)]) -> Vec<TaskStatus> {
            let mut statuses = Vec::new();
            for &(user, id) in tasks {
                statuses.push(status(self, user, id).await.status);
            }
            statuses
        }
    }

    /// Counts its runs and succeeds.
    struct Counted(Arc<AtomicU32>);

    #[async_trait]
    impl TaskHandler for Counted {
        async fn run(&self, _: &Task) -> Result<Value, TaskError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(json!("done"))
        }
    }

    /// A queue of one worker on `store`, with the task `kind` counted.
    fn one_worker(store: Arc<Unsteady>, runs: Arc<AtomicU32>) -> Queue {
        workers(1, store, runs)
    }

    /// A queue of `count` workers on `store`, with the task `kind` counted.
    fn workers(count: usize, store: Arc<Unsteady>, runs: Arc<AtomicU32>) -> Queue {
        let mut settings = Settings::embedded_default().queue;
        settings.workers = count;
        settings.poll_interval_ms = 10;
        let handlers = Arc::new(TaskHandlers::empty().with("counted", Counted(runs)));
        let clock = Clock::system();
        let events = Events::disabled(clock.clone(), Metrics::noop());
        let limits = store.inner_limits.clone();
        Queue::start(
            store,
            limits,
            handlers,
            &settings,
            clock,
            Metrics::noop(),
            events,
        )
    }

    /// The memory store, made slow to lease by `lease_delay` and, for its
    /// first `finishes_to_fail` calls to `finish`, unreachable.
    fn unsteady(lease_delay: Duration, finishes_to_fail: u32) -> Arc<Unsteady> {
        let policy = QueuePolicy::new(&Settings::embedded_default().queue, Clock::system());
        Arc::new(Unsteady {
            inner_limits: policy.limits.clone(),
            inner: MemoryQueueStore::new(policy),
            lease_delay,
            leases_answered: AtomicU32::new(0),
            finishes_to_fail: AtomicU32::new(finishes_to_fail),
        })
    }

    /// Stores one ready task with `max_attempts` and returns its user and id.
    async fn ready_task(store: &Unsteady, max_attempts: u32) -> (UserId, TaskId) {
        let task = NewTask {
            id: TaskId::new(),
            user_id: UserId::new(),
            created_at: Utc::now(),
            request: TaskRequest {
                kind: TaskKind::parse("counted").unwrap(),
                payload: Value::Null,
                max_attempts,
                delay: Duration::ZERO,
                trace_parent: None,
            },
        };
        let (user, id) = (task.user_id, task.id);
        let stored = store.inner.enqueue(task, None).await;
        assert!(matches!(stored, Ok(Enqueued::Created(_))));
        (user, id)
    }

    async fn status(store: &Unsteady, user: UserId, id: TaskId) -> Task {
        store.get(user, id).await.unwrap().unwrap()
    }

    #[actix_web::test]
    async fn a_drain_waits_for_a_lease_call_out_and_hands_its_tasks_back_unrun() {
        let store = unsteady(Duration::from_millis(300), 0);
        let (user, id) = ready_task(&store, 1).await;
        let runs = Arc::new(AtomicU32::new(0));
        // The pool leases at once when it starts: that call takes 300 ms.
        let queue = one_worker(store.clone(), runs.clone());

        let handed_back = queue.drain(Duration::from_secs(5)).await.unwrap();

        assert!(
            store.leases_answered.load(Ordering::SeqCst) >= 1,
            "the drain answered while the lease call was out"
        );
        let task = status(&store, user, id).await;
        assert_eq!((task.status, task.attempts), (TaskStatus::Queued, 0));
        assert_eq!(runs.load(Ordering::SeqCst), 0, "it never ran");
        assert_eq!(handed_back, 0, "nothing was running when the drain ended");
    }

    #[actix_web::test]
    async fn an_outcome_is_recorded_once_the_store_answers_again() {
        let store = unsteady(Duration::ZERO, 3);
        let (user, id) = ready_task(&store, 1).await;
        let runs = Arc::new(AtomicU32::new(0));
        let queue = one_worker(store.clone(), runs.clone());

        let mut task = status(&store, user, id).await;
        for _ in 0..500 {
            if task.status.is_final() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            task = status(&store, user, id).await;
        }

        assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}");
        assert_eq!(task.attempts, 1);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        drop(queue);
    }

    #[actix_web::test]
    async fn shrinking_while_a_lease_call_is_out_loses_no_task_and_settles_at_the_new_size() {
        let store = unsteady(Duration::from_millis(300), 0);
        let mut tasks = Vec::new();
        for _ in 0..4 {
            tasks.push(ready_task(&store, 1).await);
        }
        let runs = Arc::new(AtomicU32::new(0));
        let queue = workers(4, store.clone(), runs.clone());
        let mut smaller = Settings::embedded_default().queue;
        smaller.workers = 1;

        // The first lease call, for four, is out for 300 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
        queue.retune(&smaller);

        for _ in 0..500 {
            let status = queue.status().await.expect("the pool is alive");
            let recorded = store.stats().await.unwrap().waiting == 0
                && store.counts_of(&tasks).await == [TaskStatus::Succeeded; 4];
            if recorded && status.live == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for &(user, id) in &tasks {
            let task = status(&store, user, id).await;
            assert_eq!((task.status, task.attempts), (TaskStatus::Succeeded, 1));
        }
        let status = queue.status().await.unwrap();
        assert_eq!((status.workers, status.live), (1, 1));
    }
}
