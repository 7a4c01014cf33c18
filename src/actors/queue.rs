//! The task side of the actor system, started as one piece: the
//! `QueueRouter` with its per-user `QueueManager`s on the calling arbiter,
//! and the `WorkerPool` with its `TaskWorker`s on an arbiter (thread) of
//! their own, so that running tasks never delays routing requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use actix::{Addr, Arbiter, ArbiterHandle, MailboxError, Supervisor};

use super::queue_router::{LiveManagers, QueueRouter};
use super::worker_pool::{Drain, PoolSizes, PoolStatus, Resize, Status, WorkerPool};
use crate::clock::Clock;
use crate::config::QueueSettings;
use crate::domain::{RetryPolicy, Task, TaskStatus};
use crate::events::{Event, Events};
use crate::storage::{Limits, QueueStore};
use crate::tasks::TaskHandlers;
use crate::telemetry::{Metrics, Pool};

/// What the queue actors need from the settings, in the units they use.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub workers: usize,
    /// Attempts for a task that does not ask for a number.
    pub default_max_attempts: u32,
    pub retry: RetryPolicy,
    /// How long a lease lasts unless renewed.
    pub lease_for: Duration,
    pub result_ttl: Duration,
    pub idempotency_ttl: Duration,
    /// A user's manager stops after this long without requests.
    pub manager_idle: Duration,
    /// How often idle workers look for work nobody announced.
    pub poll_interval: Duration,
}

impl From<&QueueSettings> for QueueConfig {
    fn from(settings: &QueueSettings) -> Self {
        Self {
            workers: settings.workers,
            default_max_attempts: settings.max_attempts,
            retry: RetryPolicy {
                base_ms: settings.backoff_base_ms,
                max_ms: settings.backoff_max_ms,
            },
            lease_for: settings.visibility_timeout(),
            result_ttl: settings.result_ttl(),
            idempotency_ttl: settings.idempotency_ttl(),
            manager_idle: settings.manager_idle(),
            poll_interval: settings.poll_interval(),
        }
    }
}

/// The per-user limits in force, shared by every queue actor, so that a
/// change reaches all of them at once.
#[derive(Debug)]
pub struct SharedLimits {
    max_pending: AtomicU64,
    max_running: AtomicU64,
}

impl SharedLimits {
    pub fn new(limits: Limits) -> Self {
        Self {
            max_pending: AtomicU64::new(limits.max_pending),
            max_running: AtomicU64::new(limits.max_running),
        }
    }

    pub fn get(&self) -> Limits {
        Limits {
            max_pending: self.max_pending.load(Ordering::Relaxed),
            max_running: self.max_running.load(Ordering::Relaxed),
        }
    }

    pub fn set(&self, limits: Limits) {
        self.max_pending
            .store(limits.max_pending, Ordering::Relaxed);
        self.max_running
            .store(limits.max_running, Ordering::Relaxed);
    }
}

impl From<&QueueSettings> for Limits {
    fn from(settings: &QueueSettings) -> Self {
        Self {
            max_pending: settings.max_pending_per_user as u64,
            max_running: settings.max_running_per_user as u64,
        }
    }
}

/// The parts every queue actor shares.
pub struct QueueParts {
    pub store: Arc<dyn QueueStore>,
    pub clock: Clock,
    pub config: QueueConfig,
    pub limits: SharedLimits,
    pub metrics: Metrics,
    pub events: Events,
}

impl QueueParts {
    /// Tells other services that `task` has reached `status`, a final state.
    pub fn task_finished(&self, task: &Task, status: TaskStatus) {
        self.events.publish(Event::TaskFinished {
            task_id: task.id,
            user_id: task.user_id,
            kind: task.kind.as_str().to_owned(),
            status,
            attempts: task.attempts,
        });
    }

    /// `now` plus `ttl`, in milliseconds since the epoch.
    pub fn later_ms(&self, now_ms: i64, ttl: Duration) -> i64 {
        now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A handle on the running task side. Cheap to clone; the workers' thread
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct Queue {
    pub router: Addr<QueueRouter>,
    pub pool: Addr<WorkerPool>,
    parts: Arc<QueueParts>,
    _workers_thread: Arc<ArbiterGuard>,
}

impl Queue {
    /// Starts the router here and the pool with `config.workers` workers on
    /// a thread of their own. Must run inside an actix `System`.
    pub fn start(
        store: Arc<dyn QueueStore>,
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
            limits: SharedLimits::new(Limits::from(settings)),
            metrics,
            events,
        });
        let sizes = Arc::new(PoolSizes {
            target: AtomicUsize::new(settings.workers),
            live: Arc::default(),
        });
        let reported = Arc::downgrade(&sizes);
        parts.metrics.observe_pool(Pool::Workers, move || {
            let sizes = reported.upgrade()?;
            Some((
                sizes.target.load(Ordering::SeqCst),
                sizes.live.load(Ordering::SeqCst),
            ))
        });
        let thread = Arbiter::new().handle();
        let pool = {
            let parts = parts.clone();
            Supervisor::start_in_arbiter(&thread, move |_| WorkerPool::new(parts, handlers, sizes))
        };
        let router = {
            let (parts, pool) = (parts.clone(), pool.clone());
            Supervisor::start(move |_| QueueRouter::new(parts, pool))
        };
        Self {
            router,
            pool,
            parts,
            _workers_thread: Arc::new(ArbiterGuard(thread)),
        }
    }

    /// The limits in force now.
    pub fn limits(&self) -> Limits {
        self.parts.limits.get()
    }

    /// The queue store, for inspection by tests and tools.
    pub fn store(&self) -> Arc<dyn QueueStore> {
        self.parts.store.clone()
    }

    /// Applies new pool sizes and limits from reloaded settings.
    pub fn retune(&self, settings: &QueueSettings) {
        self.parts.limits.set(Limits::from(settings));
        self.pool.do_send(Resize(settings.workers));
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
        Fence, LeasedTask, NewTask, Outcome, Task, TaskCounts, TaskId, TaskKind, TaskStatus, UserId,
    };
    use crate::storage::{
        Cancelled, Enqueued, Finished, Idempotency, LeaseCall, MemoryQueueStore, Page, QueueError,
        QueueStats,
    };
    use crate::tasks::{TaskError, TaskHandler};

    /// The memory store, made slow to lease and, for its first few calls to
    /// `finish`, unreachable.
    struct Unsteady {
        inner: MemoryQueueStore,
        lease_delay: Duration,
        /// Lease calls that have returned.
        leases_answered: AtomicU32,
        finishes_to_fail: AtomicU32,
    }

    #[async_trait]
    impl QueueStore for Unsteady {
        async fn enqueue(
            &self,
            task: NewTask,
            idempotency: Option<Idempotency>,
            limits: Limits,
            now_ms: i64,
        ) -> Result<Enqueued, QueueError> {
            self.inner.enqueue(task, idempotency, limits, now_ms).await
        }

        async fn get(
            &self,
            user: UserId,
            id: TaskId,
            now_ms: i64,
        ) -> Result<Option<Task>, QueueError> {
            self.inner.get(user, id, now_ms).await
        }

        async fn list(
            &self,
            user: UserId,
            status: Option<TaskStatus>,
            before: Option<TaskId>,
            limit: usize,
            now_ms: i64,
        ) -> Result<Page, QueueError> {
            self.inner.list(user, status, before, limit, now_ms).await
        }

        async fn counts(&self, user: UserId) -> Result<TaskCounts, QueueError> {
            self.inner.counts(user).await
        }

        async fn cancel(
            &self,
            user: UserId,
            id: TaskId,
            now_ms: i64,
            expires_ms: i64,
        ) -> Result<Cancelled, QueueError> {
            self.inner.cancel(user, id, now_ms, expires_ms).await
        }

        async fn cancel_all(
            &self,
            user: UserId,
            now_ms: i64,
            expires_ms: i64,
        ) -> Result<u64, QueueError> {
            self.inner.cancel_all(user, now_ms, expires_ms).await
        }

        async fn lease(
            &self,
            call: LeaseCall,
            max: usize,
            limits: Limits,
            now_ms: i64,
            deadline_ms: i64,
        ) -> Result<Vec<LeasedTask>, QueueError> {
            tokio::time::sleep(self.lease_delay).await;
            let leased = self.inner.lease(call, max, limits, now_ms, deadline_ms);
            let leased = leased.await;
            self.leases_answered.fetch_add(1, Ordering::SeqCst);
            leased
        }

        async fn renew(
            &self,
            leases: &[(TaskId, Fence)],
            deadline_ms: i64,
        ) -> Result<Vec<bool>, QueueError> {
            self.inner.renew(leases, deadline_ms).await
        }

        async fn finish(
            &self,
            id: TaskId,
            fence: Fence,
            outcome: Outcome,
            limits: Limits,
            now_ms: i64,
            expires_ms: i64,
        ) -> Result<Finished, QueueError> {
            let failing =
                self.finishes_to_fail
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if failing.is_ok() {
                return Err(QueueError::Unavailable(anyhow::anyhow!(
                    "connection refused"
                )));
            }
            self.inner
                .finish(id, fence, outcome, limits, now_ms, expires_ms)
                .await
        }

        async fn release(
            &self,
            leases: &[(TaskId, Fence)],
            limits: Limits,
        ) -> Result<u64, QueueError> {
            self.inner.release(leases, limits).await
        }

        async fn reclaim(
            &self,
            limits: Limits,
            now_ms: i64,
            expires_ms: i64,
        ) -> Result<u64, QueueError> {
            self.inner.reclaim(limits, now_ms, expires_ms).await
        }

        async fn purge(&self, now_ms: i64) -> Result<u64, QueueError> {
            self.inner.purge(now_ms).await
        }

        async fn stats(&self) -> Result<QueueStats, QueueError> {
            self.inner.stats().await
        }

        async fn ping(&self) -> Result<(), QueueError> {
            Ok(())
        }

        fn name(&self) -> &'static str {
            "unsteady"
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
        Queue::start(store, handlers, &settings, clock, Metrics::noop(), events)
    }

    /// Stores one ready task with `max_attempts` and returns its user and id.
    async fn ready_task(store: &Unsteady, max_attempts: u32) -> (UserId, TaskId) {
        let now = Utc::now();
        let task = NewTask {
            id: TaskId::new(),
            user_id: UserId::new(),
            kind: TaskKind::parse("counted").unwrap(),
            payload: Value::Null,
            max_attempts,
            created_at: now,
            run_at: now,
            trace_parent: None,
        };
        let (user, id) = (task.user_id, task.id);
        let limits = Limits {
            max_pending: 10,
            max_running: 0,
        };
        let stored = store
            .inner
            .enqueue(task, None, limits, now.timestamp_millis())
            .await;
        assert!(matches!(stored, Ok(Enqueued::Created(_))));
        (user, id)
    }

    async fn status(store: &Unsteady, user: UserId, id: TaskId) -> Task {
        let now = Utc::now().timestamp_millis();
        store.get(user, id, now).await.unwrap().unwrap()
    }

    #[actix_web::test]
    async fn a_drain_waits_for_a_lease_call_out_and_hands_its_tasks_back_unrun() {
        let store = Arc::new(Unsteady {
            inner: MemoryQueueStore::new(),
            lease_delay: Duration::from_millis(300),
            leases_answered: AtomicU32::new(0),
            finishes_to_fail: AtomicU32::new(0),
        });
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
        let store = Arc::new(Unsteady {
            inner: MemoryQueueStore::new(),
            lease_delay: Duration::ZERO,
            leases_answered: AtomicU32::new(0),
            finishes_to_fail: AtomicU32::new(3),
        });
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
        let store = Arc::new(Unsteady {
            inner: MemoryQueueStore::new(),
            lease_delay: Duration::from_millis(300),
            leases_answered: AtomicU32::new(0),
            finishes_to_fail: AtomicU32::new(0),
        });
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
            if runs.load(Ordering::SeqCst) == 4 && status.live == 1 {
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
