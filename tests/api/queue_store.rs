//! The queue-store contract: Redis and memory behave the same. Each check
//! runs against both stores, on a clock the test moves.

use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use serde_json::json;
use tollgate::clock::Clock;
use tollgate::domain::{
    Bulk, Cancelled, Enqueued, Fence, Finished, Idempotency, IdempotencyKey, KindLimit, KindLimits,
    KindLoad, Lease, LeaseCall, LeasedTask, Limits, NewTask, Outcome, Page, QueueStats, Retried,
    Settled, TaskFilter, TaskId, TaskKind, TaskQuery, TaskRequest, TaskStatus, UserId, Wanted,
};
use tollgate::storage::{MemoryQueueStore, QueuePolicy, QueueStore, SharedLimits, redis_queue};

use crate::helpers::TestRedis;

/// "Now" at the start of every check, in milliseconds since the epoch.
const T0: i64 = 1_700_000_000_000;
const LEASE_MS: i64 = 30_000;
const TTL_MS: i64 = 3_600_000;
/// How long an idempotency key is remembered.
const KEY_MS: i64 = 1_000;
const OPEN: Limits = Limits {
    max_pending: 10_000,
    max_pending_bytes: 1 << 30,
    max_finished: 10_000,
    max_running: 0,
};

/// A store under test, with the clock it reads, the limits it applies and
/// the partitions it keeps users' tasks in.
pub struct Queue {
    store: Arc<dyn QueueStore>,
    clock: Clock,
    limits: Arc<SharedLimits>,
    partitions: usize,
}

impl std::ops::Deref for Queue {
    type Target = dyn QueueStore;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

impl Queue {
    /// A store in `partitions` partitions made by `make` from a policy on a
    /// manual clock at `T0`.
    async fn new<F: std::future::Future<Output = Arc<dyn QueueStore>>>(
        partitions: usize,
        make: impl FnOnce(QueuePolicy) -> F,
    ) -> Self {
        let clock = Clock::manual(at(T0));
        let policy = QueuePolicy {
            clock: clock.clone(),
            limits: Arc::new(SharedLimits::new(OPEN)),
            lease_for: millis(LEASE_MS),
            result_ttl: millis(TTL_MS),
            idempotency_ttl: millis(KEY_MS),
        };
        let limits = policy.limits.clone();
        Self {
            store: make(policy).await,
            clock,
            limits,
            partitions,
        }
    }

    /// Moves the clock forward to `ms`.
    fn now(&self, ms: i64) -> &Self {
        let by = ms - self.clock.now_millis();
        assert!(by >= 0, "the clock only moves forward");
        self.clock.advance(millis(by));
        self
    }

    fn limit(&self, limits: Limits) {
        self.limits.set(limits);
    }

    /// `count` new users whose tasks the store keeps in one partition:
    /// their turns keep the order they arrived in. (Across partitions, a
    /// round gives every user a turn in the order the partitions are
    /// walked; see `turns_across_partitions_go_round_every_user`.)
    fn neighbours<const N: usize>(&self) -> [UserId; N] {
        let first = UserId::new();
        let mut users = [first; N];
        for user in users.iter_mut().skip(1) {
            *user = std::iter::repeat_with(UserId::new)
                .find(|user| user.shard(self.partitions) == first.shard(self.partitions))
                .unwrap();
        }
        users
    }

    /// Sets `kind`'s limits as one partition applies them, as a reload of
    /// `[queue.kinds.<kind>]` with that many times the partitions would:
    /// each partition applies its share.
    fn limit_kind(&self, kind: &str, limit: KindLimit) {
        let times = self.partitions as u64;
        let limit = KindLimit {
            max_running: limit.max_running.map(|most| most * times),
            max_per_second: limit.max_per_second.map(|rate| rate * times as u32),
        };
        let kinds: KindLimits = [(TaskKind::parse(kind).unwrap(), limit)].into();
        self.limits.set_kinds(kinds);
    }

    /// What the figures say of `kind`: (running, parked).
    async fn kind_load(&self, kind: &str) -> (u64, u64) {
        let stats = self.stats().await.unwrap();
        let load: Vec<&KindLoad> = stats
            .kinds
            .iter()
            .filter(|l| l.kind.as_str() == kind)
            .collect();
        assert_eq!(load.len(), 1, "{stats:?}");
        (load[0].running, load[0].parked)
    }
}

fn at(ms: i64) -> DateTime<chrono::Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms as u64)
}

fn task(user: UserId, n: u32) -> NewTask {
    task_at(user, n, T0)
}

/// Task `n` of `user`'s, accepted at `T0` (or at `run_at_ms` if that is
/// earlier) to run at `run_at_ms`.
fn task_at(user: UserId, n: u32, run_at_ms: i64) -> NewTask {
    let created_ms = run_at_ms.min(T0);
    NewTask {
        id: TaskId::new(),
        user_id: user,
        created_at: at(created_ms),
        request: TaskRequest {
            kind: TaskKind::parse("echo").unwrap(),
            payload: json!({ "n": n }),
            max_attempts: 3,
            delay: millis(run_at_ms - created_ms),
            trace_parent: None,
        },
    }
}

/// Task `n` of `user`'s, of `kind`.
fn task_of(user: UserId, n: u32, kind: &str) -> NewTask {
    let mut new = task(user, n);
    new.request.kind = TaskKind::parse(kind).unwrap();
    new
}

fn key(fingerprint: &str) -> Idempotency {
    Idempotency {
        key: IdempotencyKey::parse("order-42").unwrap(),
        fingerprint: fingerprint.into(),
    }
}

async fn enqueue(store: &Queue, new: NewTask) -> TaskId {
    match store.enqueue(new, None).await.unwrap() {
        Enqueued::Created(task) => task.id,
        other => panic!("not created: {other:?}"),
    }
}

async fn lease(store: &Queue, max: usize) -> Vec<LeasedTask> {
    store.lease(LeaseCall::new(), max).await.unwrap()
}

/// Asks for `any` tasks round robin and `newcomers` for users with
/// nothing running, in one call.
async fn lease_both(store: &Queue, call: LeaseCall, any: usize, newcomers: usize) -> Settled {
    let wanted = Wanted { any, newcomers };
    store.settle(&[], call, wanted).await.unwrap()
}

fn ns(leased: &[LeasedTask]) -> Vec<u64> {
    leased
        .iter()
        .map(|l| l.task.payload["n"].as_u64().unwrap())
        .collect()
}

/// Leases one task at a time and names its `n`, until none is ready.
async fn drain_order(store: &Queue) -> Vec<u64> {
    let mut order = Vec::new();
    while let Some(leased) = lease(store, 1).await.pop() {
        order.push(leased.task.payload["n"].as_u64().unwrap());
    }
    order
}

/// Leases one task at a time, finishing each, until none is left; answers
/// the order they ran in.
async fn run_all(store: &Queue) -> Vec<u64> {
    let mut order = Vec::new();
    while let Some(leased) = lease(store, 1).await.pop() {
        order.push(leased.task.payload["n"].as_u64().unwrap());
        finish(store, &leased, succeeded(0)).await;
    }
    order
}

fn succeeded(n: u32) -> Outcome {
    Outcome::Succeeded(json!({ "done": n }))
}

fn failed(error: &str, retry_at_ms: i64) -> Outcome {
    Outcome::Failed {
        error: error.into(),
        retry_at: at(retry_at_ms),
    }
}

async fn finish(store: &Queue, leased: &LeasedTask, outcome: Outcome) -> Finished {
    store.finish(leased.lease(), outcome).await.unwrap()
}

async fn status_of(store: &Queue, user: UserId, id: TaskId) -> TaskStatus {
    store.get(user, id).await.unwrap().unwrap().status
}

async fn one_users_tasks_are_leased_in_enqueue_order(store: Queue) {
    let user = UserId::new();
    for n in 0..5 {
        enqueue(&store, task(user, n)).await;
    }

    assert_eq!(drain_order(&store).await, [0, 1, 2, 3, 4]);
}

async fn users_take_turns_in_the_order_they_arrived(store: Queue) {
    let [a, b, c] = store.neighbours();
    for n in 0..4 {
        enqueue(&store, task(a, n)).await;
    }
    for n in 10..12 {
        enqueue(&store, task(b, n)).await;
    }
    enqueue(&store, task(c, 20)).await;

    assert_eq!(drain_order(&store).await, [0, 10, 20, 1, 11, 2, 3]);
}

async fn a_batch_lease_goes_round_the_users_too(store: Queue) {
    let [a, b] = store.neighbours();
    for n in 0..3 {
        enqueue(&store, task(a, n)).await;
    }
    enqueue(&store, task(b, 10)).await;

    let batch = lease(&store, 3).await;

    assert_eq!(ns(&batch), [0, 10, 1]);
    assert!(batch.iter().all(|l| l.task.status == TaskStatus::Running));
    assert!(batch.iter().all(|l| l.task.attempts == 1));
    let fences: Vec<Fence> = batch.iter().map(|l| l.fence).collect();
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
}

/// Leases taken in batches of any size follow the turns that leases taken
/// one at a time would: a batch that ends mid-round leaves the ring where
/// the round stopped, and a user out of room gives up its turn.
async fn batches_of_any_size_take_the_turns_single_leases_would(store: Queue) {
    store.limit(Limits {
        max_running: 3,
        ..OPEN
    });
    let [a, b, c, d] = store.neighbours();
    for n in 0..5 {
        enqueue(&store, task(a, n)).await;
    }
    for n in 10..12 {
        enqueue(&store, task(b, n)).await;
    }
    enqueue(&store, task(c, 20)).await;

    let first = lease(&store, 4).await;
    assert_eq!(ns(&first), [0, 10, 20, 1]);
    // A user arriving now queues behind those whose turn is still to come.
    enqueue(&store, task(d, 30)).await;
    assert_eq!(ns(&lease(&store, 1).await), [11]);
    // a reaches max_running after 2: its last two wait for room.
    assert_eq!(ns(&lease(&store, 10).await), [2, 30]);
    assert!(lease(&store, 10).await.is_empty());

    finish(&store, &first[0], succeeded(0)).await;
    assert_eq!(ns(&lease(&store, 10).await), [3]);
}

async fn max_running_holds_a_user_back_until_a_task_finishes(store: Queue) {
    store.limit(Limits {
        max_running: 1,
        ..OPEN
    });
    let [a, b] = store.neighbours();
    for n in 0..3 {
        enqueue(&store, task(a, n)).await;
    }
    enqueue(&store, task(b, 10)).await;

    let first = lease(&store, 10).await;
    assert_eq!(ns(&first), [0, 10], "one task per user");
    assert!(lease(&store, 10).await.is_empty());

    finish(&store, &first[0], succeeded(0)).await;
    let next = lease(&store, 10).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].task.payload["n"], 1);
}

async fn lifting_max_running_lets_held_users_run_at_once(store: Queue) {
    store.limit(Limits {
        max_running: 1,
        ..OPEN
    });
    let user = UserId::new();
    for n in 0..3 {
        enqueue(&store, task(user, n)).await;
    }
    assert_eq!(ns(&lease(&store, 10).await), [0]);

    store.limit(OPEN);

    assert_eq!(
        ns(&lease(&store, 10).await),
        [1, 2],
        "no task had to finish"
    );
}

async fn newcomers_workers_take_users_with_nothing_running_in_the_order_they_came(store: Queue) {
    let [a, b, c] = store.neighbours();
    for n in 0..3 {
        enqueue(&store, task(a, n)).await;
    }
    assert_eq!(
        ns(&lease(&store, 1).await),
        [0],
        "a has something running now"
    );
    enqueue(&store, task(b, 10)).await;
    enqueue(&store, task(b, 11)).await;
    enqueue(&store, task(c, 20)).await;

    let first = lease_both(&store, LeaseCall::new(), 0, 1).await;
    assert!(first.leased.is_empty());
    assert_eq!(ns(&first.newcomers), [10], "b came first");
    let second = lease_both(&store, LeaseCall::new(), 0, 5).await;
    assert_eq!(
        ns(&second.newcomers),
        [20],
        "a and b have something running"
    );
    assert!(
        lease_both(&store, LeaseCall::new(), 0, 5)
            .await
            .newcomers
            .is_empty()
    );

    // Those served for newcomers kept their places in the round.
    assert_eq!(drain_order(&store).await, [1, 11, 2]);
}

async fn a_user_started_round_robin_is_no_newcomer_in_the_same_call(store: Queue) {
    let [a, b] = store.neighbours();
    enqueue(&store, task(a, 0)).await;
    enqueue(&store, task(a, 1)).await;
    enqueue(&store, task(b, 10)).await;

    let call = LeaseCall::new();
    let settled = lease_both(&store, call, 1, 2).await;

    assert_eq!(ns(&settled.leased), [0]);
    assert_eq!(ns(&settled.newcomers), [10]);
    let again = lease_both(&store, call, 1, 2).await;
    assert_eq!(ns(&again.leased), [0], "the same call answers the same");
    assert_eq!(ns(&again.newcomers), [10]);
}

async fn a_newcomer_at_max_running_waits_for_room(store: Queue) {
    store.limit(Limits {
        max_running: 1,
        ..OPEN
    });
    let user = UserId::new();
    enqueue(&store, task(user, 0)).await;
    enqueue(&store, task(user, 1)).await;

    assert_eq!(
        ns(&lease_both(&store, LeaseCall::new(), 0, 1).await.newcomers),
        [0]
    );
    assert!(lease(&store, 10).await.is_empty(), "no room for a second");
}

async fn delayed_tasks_wait_for_their_time(store: Queue) {
    let user = UserId::new();
    let later = enqueue(&store, task_at(user, 1, T0 + 5_000)).await;
    enqueue(&store, task(user, 0)).await;

    let now = lease(&store, 10).await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].task.payload["n"], 0);
    assert!(lease(store.now(T0 + 4_999), 10).await.is_empty());
    let due = lease(store.now(T0 + 5_000), 10).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].task.id, later);
}

async fn a_success_is_recorded_and_kept_until_it_expires(store: Queue) {
    let user = UserId::new();
    let id = enqueue(&store, task(user, 7)).await;
    let leased = lease(&store, 1).await.remove(0);

    let finished = finish(store.now(T0 + 10), &leased, succeeded(7)).await;

    assert_eq!(finished, Finished::Recorded(TaskStatus::Succeeded));
    let stored = store.get(user, id).await.unwrap().unwrap();
    assert_eq!(stored.status, TaskStatus::Succeeded);
    assert_eq!(stored.result, Some(json!({ "done": 7 })));
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.started_at.unwrap().timestamp_millis(), T0);
    assert_eq!(stored.finished_at.unwrap().timestamp_millis(), T0 + 10);
    assert_eq!(
        stored.expires_at.unwrap().timestamp_millis(),
        T0 + 10 + TTL_MS
    );
    assert_eq!(store.counts(user).await.unwrap().succeeded, 1);

    store.now(T0 + 10 + TTL_MS);
    assert!(
        store.get(user, id).await.unwrap().is_none(),
        "gone at expiry"
    );
    assert_eq!(store.purge().await.unwrap(), 1);
    assert_eq!(store.counts(user).await.unwrap().succeeded, 0);
}

async fn failures_retry_at_their_time_until_the_attempts_run_out(store: Queue) {
    let user = UserId::new();
    let id = enqueue(&store, task(user, 0)).await;
    let mut now = T0;
    for attempt in 1..=3 {
        let leased = lease(store.now(now), 1).await;
        assert_eq!(leased.len(), 1, "attempt {attempt} is leased at {now}");
        assert_eq!(leased[0].task.attempts, attempt);
        let retry_at = now + 1_000;
        let finished = finish(
            &store,
            &leased[0],
            failed(&format!("boom {attempt}"), retry_at),
        )
        .await;
        let expected = if attempt < 3 {
            TaskStatus::Failed
        } else {
            TaskStatus::Dead
        };
        assert_eq!(finished, Finished::Recorded(expected));
        if attempt < 3 {
            assert!(
                lease(store.now(retry_at - 1), 1).await.is_empty(),
                "not before its time"
            );
        }
        now = retry_at;
    }
    let dead = store.get(user, id).await.unwrap().unwrap();
    assert_eq!(dead.error.as_deref(), Some("boom 3"));
    assert!(dead.expires_at.is_some());
    assert!(lease(store.now(now + 60_000), 1).await.is_empty());
}

async fn recording_an_outcome_again_answers_what_was_recorded(store: Queue) {
    let user = UserId::new();
    let id = enqueue(&store, task(user, 0)).await;
    let leased = lease(&store, 1).await.remove(0);

    let first = finish(&store, &leased, failed("flaky", T0 + 1000)).await;
    let again = finish(&store, &leased, failed("flaky", T0 + 1000)).await;

    assert_eq!(first, Finished::Recorded(TaskStatus::Failed));
    assert_eq!(again, first);
    let stored = store.get(user, id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.attempts), (TaskStatus::Failed, 1));
    assert_eq!(
        lease(store.now(T0 + 1000), 10).await.len(),
        1,
        "queued once"
    );
}

async fn a_rejected_attempt_is_dead_at_once(store: Queue) {
    let user = UserId::new();
    let id = enqueue(&store, task(user, 0)).await;
    let leased = lease(&store, 1).await.remove(0);

    let rejected = Outcome::Rejected {
        error: "410 Gone".into(),
    };
    assert_eq!(
        finish(&store, &leased, rejected).await,
        Finished::Recorded(TaskStatus::Dead)
    );
    assert_eq!(status_of(&store, user, id).await, TaskStatus::Dead);
}

async fn a_reclaimed_lease_is_fenced_off(store: Queue) {
    let user = UserId::new();
    let id = enqueue(&store, task(user, 0)).await;
    let stale = lease(&store, 1).await.remove(0);

    let lapsed = T0 + LEASE_MS;
    assert_eq!(store.now(lapsed).reclaim().await.unwrap(), 1);
    assert_eq!(status_of(&store, user, id).await, TaskStatus::Failed);
    assert_eq!(
        finish(&store, &stale, succeeded(0)).await,
        Finished::Stale,
        "refused before the task is leased again"
    );
    let current = lease(&store, 1).await.remove(0);

    assert!(current.fence > stale.fence);
    assert_eq!(current.task.attempts, 2);
    assert_eq!(store.renew(&[stale.lease()]).await.unwrap(), [false]);
    // Whatever the stale holder reports: success, failure or rejection.
    let rejected = Outcome::Rejected {
        error: "late rejection".into(),
    };
    for outcome in [succeeded(1), failed("late failure", lapsed), rejected] {
        assert_eq!(finish(&store, &stale, outcome).await, Finished::Stale);
    }
    let still = store.get(user, id).await.unwrap().unwrap();
    assert_eq!(
        (still.status, still.attempts),
        (TaskStatus::Running, 2),
        "not applied"
    );
    // The error is still the lapse's, not either late report.
    let error = still.error.unwrap_or_default();
    assert!(error.contains("lost its lease"), "{error}");
    assert_eq!(
        finish(&store, &current, succeeded(2)).await,
        Finished::Recorded(TaskStatus::Succeeded)
    );
    let done = store.get(user, id).await.unwrap().unwrap();
    assert_eq!(done.result, Some(json!({ "done": 2 })));
}

async fn a_renewed_lease_is_not_reclaimed(store: Queue) {
    let user = UserId::new();
    enqueue(&store, task(user, 0)).await;
    let leased = lease(&store, 1).await.remove(0);

    // Renewed just before it would lapse: good for another lease period.
    let renewed = store.now(T0 + LEASE_MS - 1).renew(&[leased.lease()]).await;

    assert_eq!(renewed.unwrap(), [true]);
    assert_eq!(store.now(T0 + LEASE_MS).reclaim().await.unwrap(), 0);
    assert_eq!(store.now(T0 + 2 * LEASE_MS - 1).reclaim().await.unwrap(), 1);
}

async fn a_lapse_on_the_last_attempt_is_dead(store: Queue) {
    let user = UserId::new();
    let mut single = task(user, 0);
    single.request.max_attempts = 1;
    let id = enqueue(&store, single).await;
    lease(&store, 1).await;

    store.now(T0 + LEASE_MS).reclaim().await.unwrap();

    let dead = store.get(user, id).await.unwrap().unwrap();
    assert_eq!(dead.status, TaskStatus::Dead);
    assert!(dead.error.unwrap().contains("lost its lease"));
}

async fn a_reclaimed_task_runs_before_the_rest_of_its_queue(store: Queue) {
    let user = UserId::new();
    for n in 0..3 {
        enqueue(&store, task(user, n)).await;
    }
    lease(&store, 1).await;

    store.now(T0 + LEASE_MS).reclaim().await.unwrap();

    assert_eq!(drain_order(&store).await, [0, 1, 2]);
}

async fn released_leases_go_back_first_without_counting_the_attempt(store: Queue) {
    let user = UserId::new();
    let id = enqueue(&store, task(user, 0)).await;
    enqueue(&store, task(user, 1)).await;
    let leased = lease(&store, 1).await.remove(0);

    let never_leased = Lease {
        task: id,
        user,
        fence: Fence(0),
    };
    let released = store
        .release(&[leased.lease(), never_leased])
        .await
        .unwrap();

    assert_eq!(released, 1, "only the current lease");
    let back = store.get(user, id).await.unwrap().unwrap();
    assert_eq!((back.status, back.attempts), (TaskStatus::Queued, 0));
    assert!(back.started_at.is_none());
    assert_eq!(drain_order(&store).await, [0, 1]);
}

async fn only_waiting_tasks_of_ones_own_can_be_cancelled_and_again_is_harmless(store: Queue) {
    let (user, other) = (UserId::new(), UserId::new());
    let running = enqueue(&store, task(user, 0)).await;
    let waiting = enqueue(&store, task(user, 1)).await;
    let delayed = enqueue(&store, task_at(user, 2, T0 + 60_000)).await;
    lease(&store, 1).await;

    let cancel = |id| store.cancel(user, id);
    assert!(
        matches!(cancel(waiting).await.unwrap(), Cancelled::Cancelled(t) if t.status == TaskStatus::Cancelled)
    );
    assert!(matches!(
        cancel(delayed).await.unwrap(),
        Cancelled::Cancelled(_)
    ));
    assert!(
        matches!(cancel(running).await.unwrap(), Cancelled::NotWaiting(t) if t.status == TaskStatus::Running)
    );
    assert!(
        matches!(
            cancel(waiting).await.unwrap(),
            Cancelled::Cancelled(t) if t.status == TaskStatus::Cancelled
        ),
        "cancelling again changes nothing"
    );
    assert_eq!(
        store.cancel(other, running).await.unwrap(),
        Cancelled::NotFound
    );
    assert!(
        lease(store.now(T0 + 60_000), 10).await.is_empty(),
        "cancelled tasks never run"
    );
}

async fn cancelling_all_of_a_users_tasks_spares_running_ones_and_others(store: Queue) {
    let (user, other) = (UserId::new(), UserId::new());
    let running = enqueue(&store, task(user, 0)).await;
    lease(&store, 1).await;
    for n in 1..4 {
        enqueue(&store, task(user, n)).await;
    }
    enqueue(&store, task_at(user, 9, T0 + 60_000)).await;
    enqueue(&store, task(other, 10)).await;

    assert_eq!(store.cancel_all(user).await.unwrap(), 4);

    let counts = store.counts(user).await.unwrap();
    assert_eq!(
        (counts.cancelled, counts.running, counts.pending()),
        (4, 1, 0)
    );
    assert_eq!(status_of(&store, user, running).await, TaskStatus::Running);
    assert_eq!(drain_order(&store).await, [10]);
}

async fn a_full_queue_refuses_more(store: Queue) {
    store.limit(Limits {
        max_pending: 2,
        ..OPEN
    });
    let user = UserId::new();
    for n in 0..2 {
        enqueue(&store, task(user, n)).await;
    }

    let third = store.enqueue(task(user, 2), None).await.unwrap();

    assert_eq!(third, Enqueued::Full { pending: 2 });
    assert_eq!(store.counts(user).await.unwrap().queued, 2);
    lease(&store, 1).await;
    assert!(
        matches!(
            store.enqueue(task(user, 3), None).await.unwrap(),
            Enqueued::Created(_)
        ),
        "a running task is not pending"
    );
}

async fn waiting_payloads_are_bounded_in_bytes_until_they_run_or_are_cancelled(store: Queue) {
    // Each payload is `{"n":N}`, 7 bytes of JSON: three fit.
    store.limit(Limits {
        max_pending_bytes: 21,
        ..OPEN
    });
    let [user, other] = store.neighbours();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(enqueue(&store, task(user, n)).await);
    }
    let refused = store.enqueue(task(user, 3), None).await.unwrap();
    assert_eq!(refused, Enqueued::FullBytes { bytes: 21 });
    assert!(
        matches!(
            store.enqueue(task(other, 3), None).await.unwrap(),
            Enqueued::Created(_)
        ),
        "the bound is each user's own"
    );

    // A running task's payload is no longer waiting.
    let running = lease(&store, 1).await.remove(0);
    ids.push(enqueue(&store, task(user, 4)).await);
    // A failed attempt waiting for its retry is waiting again.
    finish(&store, &running, failed("again", T0 + 60_000)).await;
    let refused = store.enqueue(task(user, 5), None).await.unwrap();
    assert_eq!(refused, Enqueued::FullBytes { bytes: 28 });

    // Cancelled tasks free what they held.
    for id in &ids[1..3] {
        assert!(matches!(
            store.cancel(user, *id).await.unwrap(),
            Cancelled::Cancelled(_)
        ));
    }
    enqueue(&store, task(user, 6)).await;
    let refused = store.enqueue(task(user, 7), None).await.unwrap();
    assert_eq!(refused, Enqueued::FullBytes { bytes: 21 });
}

async fn the_oldest_finished_tasks_are_forgotten_to_keep_fewer_than_the_limit(store: Queue) {
    store.limit(Limits {
        max_finished: 3,
        ..OPEN
    });
    let user = UserId::new();
    // Five tasks: the first four finish, the fifth waits behind them.
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(enqueue(&store, task(user, n)).await);
    }
    for leased in lease(&store, 4).await {
        finish(&store, &leased, succeeded(0)).await;
    }
    assert_eq!(store.counts(user).await.unwrap().succeeded, 4);

    // The next enqueue makes room: fewer than three finished are kept, the
    // oldest gone first; waiting ones are never touched.
    enqueue(&store, task(user, 5)).await;
    let counts = store.counts(user).await.unwrap();
    assert_eq!((counts.succeeded, counts.queued), (2, 2));
    for gone in &ids[..2] {
        assert!(store.get(user, *gone).await.unwrap().is_none());
    }
    for kept in &ids[2..] {
        assert!(store.get(user, *kept).await.unwrap().is_some());
    }
    // Purging expired tasks later finds nothing left of the forgotten.
    assert_eq!(store.now(T0 + TTL_MS).purge().await.unwrap(), 2);
}

async fn a_user_far_past_the_finished_bound_gets_under_it_without_being_refused(store: Queue) {
    let user = UserId::new();
    for n in 0..1_100 {
        enqueue(&store, task(user, n)).await;
    }
    loop {
        let leased = lease(&store, 100).await;
        if leased.is_empty() {
            break;
        }
        for running in &leased {
            finish(&store, running, succeeded(0)).await;
        }
    }
    assert_eq!(store.counts(user).await.unwrap().succeeded, 1_100);
    store.limit(Limits {
        max_finished: 3,
        ..OPEN
    });

    // A call forgets as many as it may look at (1,000) and takes the task;
    // the next gets under the bound.
    enqueue(&store, task(user, 1_100)).await;
    assert_eq!(store.counts(user).await.unwrap().succeeded, 100);
    enqueue(&store, task(user, 1_101)).await;
    assert_eq!(store.counts(user).await.unwrap().succeeded, 2);
}

async fn an_idempotency_key_returns_its_task_for_the_same_request_only(store: Queue) {
    let (user, other) = (UserId::new(), UserId::new());
    let first = store.enqueue(task(user, 0), Some(key("a"))).await.unwrap();
    let Enqueued::Created(original) = first else {
        panic!("{first:?}")
    };

    store.now(T0 + KEY_MS - 1);
    let again = store.enqueue(task(user, 1), Some(key("a"))).await;
    let changed = store.enqueue(task(user, 2), Some(key("b"))).await;
    let elsewhere = store.enqueue(task(other, 3), Some(key("a"))).await;
    store.now(T0 + KEY_MS);
    let expired = store.enqueue(task(user, 4), Some(key("a"))).await;

    assert_eq!(again.unwrap(), Enqueued::Replayed(original.clone()));
    assert_eq!(changed.unwrap(), Enqueued::KeyReused);
    assert!(matches!(elsewhere.unwrap(), Enqueued::Created(t) if t.user_id == other));
    assert!(matches!(expired.unwrap(), Enqueued::Created(t) if t.id != original.id));
    assert_eq!(store.counts(user).await.unwrap().queued, 2);
}

async fn enqueueing_the_same_task_again_stores_it_once_and_answers_the_same(store: Queue) {
    let user = UserId::new();
    let new = task(user, 0);

    let first = store.enqueue(new.clone(), None).await.unwrap();
    let second = store.enqueue(new, None).await.unwrap();

    let Enqueued::Created(task) = first else {
        panic!("{first:?}")
    };
    assert_eq!(second, Enqueued::Created(task));
    assert_eq!(drain_order(&store).await, [0]);
}

async fn a_page_of_large_tasks_ends_early_and_the_cursor_goes_on(store: Queue) {
    let user = UserId::new();
    // Twenty tasks of 60 KiB: more than a page carries (1 MiB) at once.
    let mut ids = Vec::new();
    for n in 0..20 {
        let mut new = task(user, n);
        new.request.payload = json!({ "n": n, "blob": "x".repeat(60 * 1024) });
        ids.push(enqueue(&store, new).await);
    }

    for status in [None, Some(TaskStatus::Queued)] {
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let query = TaskQuery {
                status,
                before,
                limit: TaskQuery::MAX_LIMIT,
            };
            let page = store.list(user, query).await.unwrap();
            // 1 MiB holds 17 of them; the one that crosses it ends the page.
            assert!(
                page.items.len() <= 18,
                "a page of {} tasks of 60 KiB",
                page.items.len()
            );
            seen.extend(page.items.iter().map(|t| t.id));
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        // Every task once, newest first, over more than one page.
        let newest_first: Vec<TaskId> = ids.iter().rev().copied().collect();
        assert_eq!(seen, newest_first, "{status:?}");
    }
}

async fn listing_pages_newest_first_and_filters_by_status(store: Queue) {
    let [user, other] = store.neighbours();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(enqueue(&store, task(user, n)).await);
    }
    enqueue(&store, task(other, 9)).await;
    let leased = lease(&store, 1).await.remove(0);
    finish(&store, &leased, succeeded(0)).await;
    let page = |status, before, limit| TaskQuery {
        status,
        before,
        limit,
    };

    let first = store.list(user, page(None, None, 2)).await.unwrap();
    let second = store.list(user, page(None, first.next, 2)).await.unwrap();
    let last = store.list(user, page(None, second.next, 2)).await.unwrap();
    let queued = store
        .list(user, page(Some(TaskStatus::Queued), None, 10))
        .await
        .unwrap();
    let done = store
        .list(user, page(Some(TaskStatus::Succeeded), None, 10))
        .await
        .unwrap();

    let page_ids = |page: &Page| page.items.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(page_ids(&first), [ids[4], ids[3]]);
    assert_eq!(page_ids(&second), [ids[2], ids[1]]);
    assert_eq!(page_ids(&last), [ids[0]]);
    assert!(last.next.is_none());
    assert_eq!(page_ids(&queued), [ids[4], ids[3], ids[2], ids[1]]);
    assert_eq!(page_ids(&done), [ids[0]]);
}

async fn a_lease_call_made_again_answers_the_leases_it_made(store: Queue) {
    let user = UserId::new();
    for n in 0..3 {
        enqueue(&store, task(user, n)).await;
    }
    let call = LeaseCall::new();

    let first = store.lease(call, 2).await.unwrap();
    let again = store.lease(call, 2).await.unwrap();
    finish(&store, &first[0], succeeded(0)).await;
    let after_one_ended = store.lease(call, 2).await.unwrap();

    assert_eq!(ns(&first), [0, 1]);
    let fences = |leased: &[LeasedTask]| leased.iter().map(|l| l.fence).collect::<Vec<_>>();
    assert_eq!(
        fences(&again),
        fences(&first),
        "the same leases, not new ones"
    );
    assert_eq!(ns(&after_one_ended), [1], "only those still current");
    assert_eq!(
        ns(&lease(&store, 10).await),
        [2],
        "a new call leases the rest"
    );
}

async fn cancelled_tasks_leave_nothing_behind_to_skip(store: Queue) {
    let [user, other] = store.neighbours();
    for n in 0..100 {
        let id = enqueue(&store, task(user, n)).await;
        store.cancel(user, id).await.unwrap();
    }
    enqueue(&store, task(user, 100)).await;
    enqueue(&store, task(other, 200)).await;

    assert_eq!(
        ns(&lease(&store, 1).await),
        [100],
        "the user keeps their turn"
    );
    assert_eq!(ns(&lease(&store, 1).await), [200]);
}

async fn cancelling_more_than_a_batch_cancels_them_all(store: Queue) {
    let user = UserId::new();
    for n in 0..1200 {
        enqueue(&store, task(user, n)).await;
    }
    let failing = lease(&store, 5).await;
    for leased in &failing {
        finish(&store, leased, failed("again", T0 + 60_000)).await;
    }

    assert_eq!(store.cancel_all(user).await.unwrap(), 1200);

    let counts = store.counts(user).await.unwrap();
    assert_eq!((counts.cancelled, counts.pending()), (1200, 0));
    assert!(lease(store.now(T0 + 60_000), 10).await.is_empty());
    enqueue(&store, task(user, 9999)).await;
    assert_eq!(ns(&lease(&store, 10).await), [9999]);
}

async fn tasks_sent_back_keep_the_order_they_ran_in(store: Queue) {
    let user = UserId::new();
    for n in 0..4 {
        enqueue(&store, task(user, n)).await;
    }
    let released = lease(&store, 2).await;
    let backwards: Vec<Lease> = released.iter().rev().map(LeasedTask::lease).collect();
    store.release(&backwards).await.unwrap();
    // Leased together, so they lapse together.
    let lapsing = lease(&store, 3).await;

    store.now(T0 + LEASE_MS).reclaim().await.unwrap();

    assert_eq!(ns(&lapsing), [0, 1, 2], "released ones first, in order");
    assert_eq!(drain_order(&store).await, [0, 1, 2, 3]);
}

async fn due_retries_run_before_tasks_enqueued_after_them(store: Queue) {
    let user = UserId::new();
    enqueue(&store, task(user, 0)).await;
    let first = lease(&store, 1).await.remove(0);
    finish(&store, &first, failed("once", T0 + 1_000)).await;

    let mut later = task(user, 1);
    later.created_at = at(T0 + 1_000);
    enqueue(store.now(T0 + 1_000), later).await;

    let order = ns(&lease(&store, 1).await);
    assert_eq!(order, [0], "the retry, due first, goes first");
}

async fn a_lowered_max_running_holds_back_users_already_waiting(store: Queue) {
    let user = UserId::new();
    for n in 0..3 {
        enqueue(&store, task(user, n)).await;
    }
    store.limit(Limits {
        max_running: 1,
        ..OPEN
    });

    assert_eq!(lease(&store, 10).await.len(), 1);
    assert!(lease(&store, 10).await.is_empty());
}

async fn the_figures_count_waiting_tasks_and_the_longest_due(store: Queue) {
    let [a, b] = store.neighbours();
    let figures = || async { store.stats().await.unwrap() };
    let expect = |waiting, users_waiting, oldest_due_ms| QueueStats {
        waiting,
        users_waiting,
        oldest_due_ms,
        kinds: Vec::new(),
    };
    assert_eq!(figures().await, QueueStats::default());
    let early = enqueue(&store, task_at(a, 0, T0 - 5_000)).await;
    enqueue(&store, task(a, 1)).await;
    enqueue(&store, task_at(b, 2, T0 + 60_000)).await;
    enqueue(&store, task(b, 3)).await;
    assert_eq!(figures().await, expect(4, 2, Some(T0 - 5_000)));

    store.cancel(a, early).await.unwrap();
    assert_eq!(figures().await, expect(3, 2, Some(T0)));
    lease(&store, 1).await;
    assert_eq!(
        figures().await,
        expect(2, 1, Some(T0)),
        "a has nothing waiting"
    );
    let b_task = lease(&store, 1).await.remove(0);
    assert_eq!(figures().await, expect(1, 1, None), "nothing due is left");

    finish(&store, &b_task, failed("later", T0 + 1_000)).await;
    assert_eq!(figures().await, expect(2, 1, None), "a retry waits too");
    let lapsed = T0 + LEASE_MS;
    store.now(lapsed).reclaim().await.unwrap();
    assert_eq!(
        figures().await,
        expect(3, 2, Some(lapsed)),
        "due again at once"
    );
}

async fn a_task_keeps_the_trace_it_was_enqueued_in(store: Queue) {
    let user = UserId::new();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut traced = task(user, 0);
    traced.request.trace_parent = Some(parent.to_owned());
    enqueue(&store, traced).await;
    enqueue(&store, task(user, 1)).await;

    let leased = lease(&store, 2).await;

    assert_eq!(leased[0].task.trace_parent.as_deref(), Some(parent));
    assert_eq!(leased[1].task.trace_parent, None);
}

/// Leases one task and ends it dead; answers its id.
async fn one_dead(store: &Queue) -> TaskId {
    let leased = lease(store, 1).await.remove(0);
    let rejected = Outcome::Rejected {
        error: "410 Gone".into(),
    };
    finish(store, &leased, rejected).await;
    leased.task.id
}

async fn a_dead_or_cancelled_task_is_queued_again_under_its_id(store: Queue) {
    let user = UserId::new();
    enqueue(&store, task(user, 0)).await;
    let dead = one_dead(&store).await;
    let cancelled = enqueue(&store, task(user, 1)).await;
    store.cancel(user, cancelled).await.unwrap();
    let waiting = enqueue(&store, task(user, 2)).await;

    let Retried::Retried(retried) = store.now(T0 + 5).retry(dead).await.unwrap() else {
        panic!("a dead task is retried");
    };
    let again = store.retry(cancelled).await.unwrap();
    let not_retriable = store.retry(waiting).await.unwrap();

    assert_eq!((retried.id, retried.status), (dead, TaskStatus::Queued));
    assert_eq!((retried.attempts, retried.error.as_deref()), (0, None));
    assert_eq!(retried.finished_at, None);
    assert_eq!(retried.expires_at, None);
    assert!(matches!(again, Retried::Retried(ref task) if task.status == TaskStatus::Queued));
    assert!(matches!(not_retriable, Retried::NotRetriable(ref task) if task.id == waiting));
    assert_eq!(store.retry(TaskId::new()).await.unwrap(), Retried::NotFound);
    let counts = store.counts(user).await.unwrap();
    assert_eq!((counts.queued, counts.dead, counts.cancelled), (3, 0, 0));
    // Behind the task that was waiting, in the order retried.
    assert_eq!(drain_order(&store).await, [2, 0, 1]);
    // Retried tasks are no longer finished: a purge leaves them be.
    store.now(T0 + 2 * TTL_MS).purge().await.unwrap();
    assert_eq!(status_of(&store, user, dead).await, TaskStatus::Running);
}

async fn a_deleted_users_tasks_and_expired_ones_are_never_retried(store: Queue) {
    let (gone, stays) = (UserId::new(), UserId::new());
    enqueue(&store, task(gone, 0)).await;
    let dead = one_dead(&store).await;
    enqueue(&store, task(stays, 2)).await;
    let expiring = one_dead(&store).await;
    let waiting = enqueue(&store, task(gone, 1)).await;
    // As the account is deleted.
    store.cancel_all(gone).await.unwrap();

    let dead_again = store.retry(dead).await.unwrap();
    let cancelled_again = store.retry(waiting).await.unwrap();
    let in_bulk = store
        .retry_matching(&TaskFilter {
            user: Some(gone),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    store.now(T0 + TTL_MS);
    let expired = store.retry(expiring).await.unwrap();
    let expired_in_bulk = store.retry_matching(&TaskFilter::default()).await.unwrap();

    assert!(matches!(dead_again, Retried::NotRetriable(ref t) if t.status == TaskStatus::Dead));
    assert!(
        matches!(cancelled_again, Retried::NotRetriable(ref t) if t.status == TaskStatus::Cancelled)
    );
    assert_eq!(
        in_bulk,
        Bulk {
            matched: 2,
            changed: 0
        }
    );
    assert_eq!(expired, Retried::NotFound);
    assert_eq!(expired_in_bulk, Bulk::default());
    assert!(lease(&store, 10).await.is_empty());
}

async fn tasks_across_users_are_found_newest_first_by_user_status_and_kind(store: Queue) {
    let [ann, bob] = store.neighbours();
    // Ids are made with the task, in creation order.
    let sha = || {
        let mut sha = task(bob, 3);
        sha.request.kind = TaskKind::parse("sha256").unwrap();
        sha
    };
    let ids = [
        enqueue(&store, task(ann, 0)).await,
        enqueue(&store, task(bob, 1)).await,
        enqueue(&store, task(ann, 2)).await,
        enqueue(&store, sha()).await,
    ];
    let dead = one_dead(&store).await;
    let scan = |filter: TaskFilter, before: Option<TaskId>, limit: usize| {
        let store = &store;
        async move { store.scan(&filter, before, limit).await.unwrap() }
    };
    let ids_of = |page: &Page| -> Vec<TaskId> { page.items.iter().map(|t| t.id).collect() };

    let everyone = scan(TaskFilter::default(), None, 10).await;
    let first = scan(TaskFilter::default(), None, 3).await;
    let rest = scan(TaskFilter::default(), first.next, 3).await;
    let bobs = TaskFilter {
        user: Some(bob),
        ..TaskFilter::default()
    };
    let shas = TaskFilter {
        kind: Some(TaskKind::parse("sha256").unwrap()),
        ..TaskFilter::default()
    };
    let deads = TaskFilter {
        status: Some(TaskStatus::Dead),
        ..TaskFilter::default()
    };

    assert_eq!(ids_of(&everyone), [ids[3], ids[2], ids[1], ids[0]]);
    assert_eq!(everyone.next, None);
    assert_eq!(ids_of(&first), [ids[3], ids[2], ids[1]]);
    assert_eq!(ids_of(&rest), [ids[0]]);
    assert_eq!(ids_of(&scan(bobs, None, 10).await), [ids[3], ids[1]]);
    assert_eq!(ids_of(&scan(shas, None, 10).await), [ids[3]]);
    assert_eq!(ids_of(&scan(deads, None, 10).await), [dead]);
    assert_eq!(dead, ids[0], "the first enqueued ran first");
}

async fn tasks_are_retried_or_cancelled_in_bulk_by_filter(store: Queue) {
    let (ann, bob) = (UserId::new(), UserId::new());
    for n in 0..3 {
        enqueue(&store, task(ann, n)).await;
    }
    let deaths = [one_dead(&store).await, one_dead(&store).await];
    for n in 10..12 {
        enqueue(&store, task(bob, n)).await;
    }
    let deads = TaskFilter {
        status: Some(TaskStatus::Dead),
        ..TaskFilter::default()
    };
    let anns = TaskFilter {
        user: Some(ann),
        ..TaskFilter::default()
    };
    let bobs = TaskFilter {
        user: Some(bob),
        ..TaskFilter::default()
    };

    let retried = store.retry_matching(&deads).await.unwrap();
    let again = store.retry_matching(&deads).await.unwrap();
    let (cancelled, ended) = store.cancel_matching(&anns).await.unwrap();
    let nothing_to_retry = store.retry_matching(&bobs).await.unwrap();

    assert_eq!(
        retried,
        Bulk {
            matched: 2,
            changed: 2
        }
    );
    assert_eq!(
        again,
        Bulk {
            matched: 0,
            changed: 0
        }
    );
    // Ann's three tasks wait again: all matched, all cancelled.
    assert_eq!(
        cancelled,
        Bulk {
            matched: 3,
            changed: 3
        }
    );
    assert_eq!(
        nothing_to_retry,
        Bulk {
            matched: 2,
            changed: 0
        }
    );
    for id in deaths {
        assert_eq!(status_of(&store, ann, id).await, TaskStatus::Cancelled);
    }
    // Each task cancelled is named, for its event (the retried ones from
    // their first attempt again).
    assert_eq!(ended.len(), 3);
    assert!(
        ended
            .iter()
            .all(|t| t.user == ann && t.attempts == 0 && t.kind.as_str() == "echo")
    );
    assert!(deaths.iter().all(|id| ended.iter().any(|t| t.id == *id)));
    assert_eq!(drain_order(&store).await, [10, 11]);
}

async fn a_paused_users_tasks_wait_while_others_run_and_resume_in_order(store: Queue) {
    let (ann, bob) = (UserId::new(), UserId::new());
    for n in 0..3 {
        enqueue(&store, task(ann, n)).await;
    }
    assert!(store.pause(ann).await.unwrap());
    assert!(!store.pause(ann).await.unwrap(), "paused already");
    enqueue(&store, task(ann, 3)).await;
    for n in 10..12 {
        enqueue(&store, task(bob, n)).await;
    }

    let while_paused = drain_order(&store).await;
    let counts = store.counts(ann).await.unwrap();
    // Waiting, but not overdue: nothing is due while only Ann's wait.
    let paused_figures = store.stats().await.unwrap();
    assert!(store.resume(ann).await.unwrap());
    let resumed_figures = store.stats().await.unwrap();
    assert!(!store.resume(ann).await.unwrap(), "running already");
    let after = drain_order(&store).await;

    assert_eq!(while_paused, [10, 11]);
    assert_eq!(counts.queued, 4);
    assert_eq!(
        (paused_figures.waiting, paused_figures.oldest_due_ms),
        (4, None)
    );
    assert_eq!(resumed_figures.oldest_due_ms, Some(T0));
    assert_eq!(after, [0, 1, 2, 3]);
}

async fn the_users_with_the_most_waiting_come_first(store: Queue) {
    let (ann, bob, cid) = (UserId::new(), UserId::new(), UserId::new());
    for (user, count) in [(ann, 2), (bob, 4), (cid, 1)] {
        for n in 0..count {
            enqueue(&store, task(user, n)).await;
        }
    }
    // Leases go round robin: one of each user's runs.
    lease(&store, 3).await;

    let busiest = store.busiest(2).await.unwrap();

    let loads: Vec<(UserId, u64, u64)> = busiest
        .iter()
        .map(|load| (load.user, load.waiting, load.running))
        .collect();
    assert_eq!(loads, [(bob, 3, 1), (ann, 1, 1)]);
}

const RUNNING_TWO: KindLimit = KindLimit {
    max_running: Some(2),
    max_per_second: None,
};

async fn a_kind_at_its_max_running_waits_while_the_tasks_behind_it_run(store: Queue) {
    store.limit_kind("webhook", RUNNING_TWO);
    let [ann, bob] = store.neighbours();
    for (n, kind) in ["webhook", "webhook", "webhook", "echo"].iter().enumerate() {
        enqueue(&store, task_of(ann, n as u32, kind)).await;
    }
    for (n, kind) in [(10, "webhook"), (11, "echo")] {
        enqueue(&store, task_of(bob, n, kind)).await;
    }

    let first = lease(&store, 10).await;

    let mut started = ns(&first);
    started.sort();
    // Round robin: Ann's first and Bob's first webhook, then the echoes
    // behind Ann's other two.
    assert_eq!(started, [0, 3, 10, 11], "two webhooks, and every echo");
    assert_eq!(store.kind_load("webhook").await, (2, 2));
    assert!(lease(&store, 10).await.is_empty(), "no room yet");

    // Each webhook that ends makes room for the next, in the order they
    // were enqueued.
    let mut order = Vec::new();
    for ended in first.iter().filter(|t| t.task.kind.as_str() == "webhook") {
        finish(&store, ended, succeeded(0)).await;
        order.extend(ns(&lease(&store, 10).await));
    }
    assert_eq!(order, [1, 2]);
    assert_eq!(store.kind_load("webhook").await, (2, 0));
}

async fn a_kind_paused_by_max_running_0_resumes_in_order_when_raised(store: Queue) {
    store.limit_kind(
        "webhook",
        KindLimit {
            max_running: Some(0),
            max_per_second: None,
        },
    );
    let [ann, bob] = store.neighbours();
    let mut webhooks = Vec::new();
    for n in 0..3 {
        webhooks.push(enqueue(&store, task_of(ann, n, "webhook")).await);
        enqueue(&store, task_of(bob, 10 + n, "echo")).await;
    }

    let while_paused = drain_order(&store).await;
    let parked = store.kind_load("webhook").await;
    // A parked task can still be cancelled, and is then never leased.
    let cancelled = store.cancel(ann, webhooks[1]).await.unwrap();
    store.limit_kind("webhook", RUNNING_TWO);
    let resumed = run_all(&store).await;

    assert_eq!(while_paused, [10, 11, 12]);
    assert_eq!(parked, (0, 3));
    assert!(
        matches!(cancelled, Cancelled::Cancelled(_)),
        "{cancelled:?}"
    );
    assert_eq!(resumed, [0, 2]);
    assert_eq!(store.kind_load("webhook").await, (0, 0));
}

async fn a_kinds_max_per_second_holds_in_any_second(store: Queue) {
    let five = KindLimit {
        max_running: None,
        max_per_second: Some(5),
    };
    store.limit_kind("webhook", five);
    let [user, other] = store.neighbours();
    for n in 0..20 {
        enqueue(&store, task_of(user, n, "webhook")).await;
    }
    enqueue(&store, task_of(other, 99, "echo")).await;

    // Workers asking every 50 ms for a little over two seconds, three at
    // a time.
    let mut starts = Vec::new();
    let mut others = Vec::new();
    for step in 0..=42 {
        let now = T0 + step * 50;
        for leased in store.now(now).lease(LeaseCall::new(), 3).await.unwrap() {
            match leased.task.kind.as_str() {
                "webhook" => starts.push((now - T0, leased.task.payload["n"].as_u64().unwrap())),
                _ => others.push(now),
            }
        }
    }

    let times: Vec<i64> = starts.iter().map(|(at, _)| *at).collect();
    // Never more than five in any second, each as soon as the second
    // before it allows (the first call also starts the echo).
    assert_eq!(
        times,
        [
            0, 0, 50, 50, 50, 1000, 1000, 1050, 1050, 1050, 2000, 2000, 2050, 2050, 2050
        ]
    );
    let ns: Vec<u64> = starts.iter().map(|(_, n)| *n).collect();
    assert_eq!(ns, (0..15).collect::<Vec<_>>(), "in order");
    assert_eq!(others, [T0], "another kind is not held back");
    assert_eq!(store.kind_load("webhook").await, (15, 5));
}

async fn parking_a_task_never_lets_a_user_past_max_running(store: Queue) {
    store.limit(Limits {
        max_running: 2,
        ..OPEN
    });
    store.limit_kind(
        "webhook",
        KindLimit {
            max_running: Some(0),
            max_per_second: None,
        },
    );
    let user = UserId::new();
    enqueue(&store, task_of(user, 0, "webhook")).await;
    for n in 1..4 {
        enqueue(&store, task(user, n)).await;
    }

    let leased = lease(&store, 4).await;

    assert_eq!(ns(&leased), [1, 2]);
    assert_eq!(store.counts(user).await.unwrap().running, 2);
}

async fn memory_store() -> (Queue, ()) {
    let store = Queue::new(1, |policy| async {
        Arc::new(MemoryQueueStore::new(policy)) as _
    })
    .await;
    (store, ())
}

async fn redis_store() -> (Queue, TestRedis) {
    redis_store_at(TestRedis::new()).await
}

/// The queue in seven partitions on one Redis.
async fn redis_store_in_7() -> (Queue, TestRedis) {
    redis_store_at(TestRedis::new().partitioned(7)).await
}

/// A store under `redis`'s prefix, in its partitions, on whichever Redis
/// it names.
pub async fn redis_store_at(redis: TestRedis) -> (Queue, TestRedis) {
    let connection = redis.connect().await;
    let partitions = redis.partitions;
    let store = Queue::new(partitions, |policy| async move {
        redis_queue(connection, policy, partitions).await.unwrap()
    })
    .await;
    (store, redis)
}

for_each_store!(
    Queue: memory => memory_store, redis => redis_store, redis_in_7 => redis_store_in_7;
    one_users_tasks_are_leased_in_enqueue_order,
    users_take_turns_in_the_order_they_arrived,
    a_batch_lease_goes_round_the_users_too,
    batches_of_any_size_take_the_turns_single_leases_would,
    max_running_holds_a_user_back_until_a_task_finishes,
    lifting_max_running_lets_held_users_run_at_once,
    newcomers_workers_take_users_with_nothing_running_in_the_order_they_came,
    a_user_started_round_robin_is_no_newcomer_in_the_same_call,
    a_newcomer_at_max_running_waits_for_room,
    delayed_tasks_wait_for_their_time,
    a_success_is_recorded_and_kept_until_it_expires,
    failures_retry_at_their_time_until_the_attempts_run_out,
    recording_an_outcome_again_answers_what_was_recorded,
    a_rejected_attempt_is_dead_at_once,
    a_reclaimed_lease_is_fenced_off,
    a_renewed_lease_is_not_reclaimed,
    a_lapse_on_the_last_attempt_is_dead,
    a_reclaimed_task_runs_before_the_rest_of_its_queue,
    released_leases_go_back_first_without_counting_the_attempt,
    only_waiting_tasks_of_ones_own_can_be_cancelled_and_again_is_harmless,
    cancelling_all_of_a_users_tasks_spares_running_ones_and_others,
    a_full_queue_refuses_more,
    waiting_payloads_are_bounded_in_bytes_until_they_run_or_are_cancelled,
    the_oldest_finished_tasks_are_forgotten_to_keep_fewer_than_the_limit,
    a_user_far_past_the_finished_bound_gets_under_it_without_being_refused,
    an_idempotency_key_returns_its_task_for_the_same_request_only,
    enqueueing_the_same_task_again_stores_it_once_and_answers_the_same,
    a_lease_call_made_again_answers_the_leases_it_made,
    cancelled_tasks_leave_nothing_behind_to_skip,
    cancelling_more_than_a_batch_cancels_them_all,
    tasks_sent_back_keep_the_order_they_ran_in,
    due_retries_run_before_tasks_enqueued_after_them,
    a_lowered_max_running_holds_back_users_already_waiting,
    the_figures_count_waiting_tasks_and_the_longest_due,
    a_task_keeps_the_trace_it_was_enqueued_in,
    listing_pages_newest_first_and_filters_by_status,
    a_page_of_large_tasks_ends_early_and_the_cursor_goes_on,
    a_dead_or_cancelled_task_is_queued_again_under_its_id,
    a_deleted_users_tasks_and_expired_ones_are_never_retried,
    tasks_across_users_are_found_newest_first_by_user_status_and_kind,
    tasks_are_retried_or_cancelled_in_bulk_by_filter,
    a_paused_users_tasks_wait_while_others_run_and_resume_in_order,
    the_users_with_the_most_waiting_come_first,
    a_kind_at_its_max_running_waits_while_the_tasks_behind_it_run,
    a_kind_paused_by_max_running_0_resumes_in_order_when_raised,
    a_kinds_max_per_second_holds_in_any_second,
    parking_a_task_never_lets_a_user_past_max_running,
);

#[actix_web::test]
async fn redis_finds_across_users_the_tasks_stored_before_their_index() {
    let (store, redis) = redis_store().await;
    let (ann, bob) = (UserId::new(), UserId::new());
    let finished = enqueue(&store, task(ann, 0)).await;
    let running = enqueue(&store, task(bob, 1)).await;
    let delayed = enqueue(&store, task_at(ann, 2, T0 + 60_000)).await;
    let queued = enqueue(&store, task(bob, 3)).await;
    finish(&store, &lease(&store, 1).await.remove(0), succeeded(0)).await;
    lease(&store, 1).await;
    // Bob's waiting task is then in no index but his ready ones.
    store.pause(bob).await.unwrap();
    // As a version without the index of every task left them.
    let tag = format!("{{{}}}", redis.prefix());
    redis.del(&format!("{tag}:tasks")).await;

    let connection = redis.connect().await;
    let fresh = Queue::new(1, |policy| async {
        redis_queue(connection, policy, 1).await.unwrap()
    })
    .await;
    let found = fresh.scan(&TaskFilter::default(), None, 10).await.unwrap();

    let ids: Vec<TaskId> = found.items.iter().map(|task| task.id).collect();
    assert_eq!(ids, [queued, delayed, running, finished]);
    assert_eq!(redis.keys_matching(":tasks-indexed").await.len(), 1);
}

#[actix_web::test]
async fn redis_keeps_nothing_of_a_finished_task_once_it_is_purged() {
    let (store, redis) = redis_store().await;
    let user = UserId::new();
    store.enqueue(task(user, 0), Some(key("f"))).await.unwrap();
    let leased = lease(&store, 1).await.remove(0);
    finish(&store, &leased, succeeded(0)).await;

    assert_eq!(store.now(T0 + TTL_MS).purge().await.unwrap(), 1);

    // Only the counters remain, the number of partitions the queue is laid
    // out in, and the record of the lease call, which Redis drops by itself
    // when a lease would have lapsed.
    let mut kept = redis.keys().await;
    kept.sort();
    let tag = format!("{{{}}}", redis.prefix());
    let call = kept.remove(1);
    assert!(call.starts_with(&format!("{tag}:lease-call:")), "{call}");
    assert!(redis.ttl_ms(&call).await > 0, "{call} expires");
    let counters = [
        "fences",
        "queue-partitions",
        "sequence",
        "tickets",
        "waiting",
    ]
    .map(|c| format!("{tag}:{c}"));
    assert_eq!(kept, counters);
}

#[actix_web::test]
async fn redis_purges_every_expired_idempotency_key_however_many() {
    let (store, redis) = redis_store().await;
    let user = UserId::new();
    for n in 0..1500 {
        let key = Idempotency {
            key: IdempotencyKey::parse(&format!("key-{n}")).unwrap(),
            fingerprint: "f".into(),
        };
        store.enqueue(task(user, n), Some(key)).await.unwrap();
    }
    assert_eq!(redis.keys_matching("idempotency:*").await.len(), 1500);

    store.now(T0 + KEY_MS).purge().await.unwrap();

    assert_eq!(redis.keys_matching("idempotency:*").await.len(), 0);
}

/// What holds across partitions: the checks above keep the users whose
/// turns they compare in one partition; these spread users over them.
pub mod partitioned {
    use super::*;

    /// One new user in each partition, in partition order.
    fn one_per_partition(store: &Queue) -> Vec<UserId> {
        (0..store.partitions)
            .map(|part| {
                std::iter::repeat_with(UserId::new)
                    .find(|user| user.shard(store.partitions) == part)
                    .unwrap()
            })
            .collect()
    }

    /// The user whose task `n` is: task `10 * u + k` is user `u`'s `k`th.
    fn owner(n: u64) -> usize {
        (n / 10) as usize
    }

    async fn turns_across_partitions_go_round_every_user(store: Queue) {
        let users = one_per_partition(&store);
        for (u, &user) in users.iter().enumerate() {
            for k in 0..3 {
                enqueue(&store, task(user, (10 * u + k) as u32)).await;
            }
        }

        let batch = ns(&lease(&store, users.len()).await);
        let rest = drain_order(&store).await;

        let mut first_round: Vec<usize> = batch.iter().map(|&n| owner(n)).collect();
        first_round.sort_unstable();
        assert_eq!(
            first_round,
            (0..users.len()).collect::<Vec<_>>(),
            "{batch:?}"
        );
        for round in rest.chunks(users.len()) {
            let mut owners: Vec<usize> = round.iter().map(|&n| owner(n)).collect();
            owners.sort_unstable();
            assert_eq!(owners, (0..users.len()).collect::<Vec<_>>(), "{rest:?}");
        }
        let order = [batch, rest].concat();
        for u in 0..users.len() {
            let own: Vec<u64> = order.iter().copied().filter(|&n| owner(n) == u).collect();
            assert_eq!(own, [0, 1, 2].map(|k| (10 * u + k) as u64), "in order");
        }
    }

    async fn a_newcomer_in_another_partition_starts_at_once(store: Queue) {
        let users = one_per_partition(&store);
        let (busy, newcomer) = (users[0], users[users.len() - 1]);
        for n in 0..5 {
            enqueue(&store, task(busy, n)).await;
        }
        assert_eq!(ns(&lease(&store, 1).await), [0]);

        enqueue(&store, task(newcomer, 60)).await;
        let settled = lease_both(&store, LeaseCall::new(), 0, 1).await;

        assert_eq!(ns(&settled.newcomers), [60]);
    }

    async fn pages_across_partitions_come_newest_first_without_gaps(store: Queue) {
        let users = one_per_partition(&store);
        let mut ids = Vec::new();
        for n in 0..20 {
            let user = users[(n * 3) % users.len()];
            ids.push(enqueue(&store, task(user, n as u32)).await);
        }
        ids.reverse();

        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store.scan(&TaskFilter::default(), before, 3).await.unwrap();
            assert!(page.items.len() <= 3);
            seen.extend(page.items.iter().map(|task| task.id));
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        let everyone = store.scan(&TaskFilter::default(), None, 100).await.unwrap();

        assert_eq!(seen, ids);
        assert_eq!(everyone.items.len(), 20);
        assert_eq!(everyone.next, None);
    }

    async fn looks_across_users_add_up_every_partition(store: Queue) {
        let users = one_per_partition(&store);
        for (u, &user) in users.iter().enumerate() {
            for k in 0..=u {
                enqueue(&store, task(user, (10 * u + k) as u32)).await;
            }
        }
        let leased = lease(&store, users.len()).await;
        let finished = finish(&store, &leased[0], succeeded(0)).await;

        let stats = store.stats().await.unwrap();
        let busiest = store.busiest(2).await.unwrap();
        let cancelled = store.cancel_matching(&TaskFilter::default()).await.unwrap();

        assert_eq!(finished, Finished::Recorded(TaskStatus::Succeeded));
        let total: usize = (1..=users.len()).sum();
        assert_eq!(stats.waiting, (total - users.len()) as u64);
        assert_eq!(stats.users_waiting, users.len() as u64 - 1);
        let loads: Vec<(UserId, u64)> = busiest.iter().map(|l| (l.user, l.waiting)).collect();
        let last = users.len() - 1;
        assert_eq!(
            loads,
            [
                (users[last], last as u64),
                (users[last - 1], last as u64 - 1)
            ]
        );
        assert_eq!(cancelled.0.changed, (total - users.len()) as u64);
    }

    async fn a_queue_is_refused_another_number_of_partitions(store: Queue, redis: &TestRedis) {
        enqueue(&store, task(UserId::new(), 0)).await;
        let policy = QueuePolicy {
            clock: store.clock.clone(),
            limits: store.limits.clone(),
            lease_for: millis(LEASE_MS),
            result_ttl: millis(TTL_MS),
            idempotency_ttl: millis(KEY_MS),
        };
        let other = store.partitions + 1;

        let refused = redis_queue(redis.connect().await, policy, other).await;

        let err = format!("{:#}", refused.err().expect("refused"));
        assert!(
            err.contains(&format!("queue.partitions is {other}")),
            "{err}"
        );
    }

    /// Runs every check above, each on a partitioned queue `make` builds.
    pub async fn every_check_on(make: impl AsyncFn() -> (Queue, TestRedis)) {
        turns_across_partitions_go_round_every_user(make().await.0).await;
        a_newcomer_in_another_partition_starts_at_once(make().await.0).await;
        pages_across_partitions_come_newest_first_without_gaps(make().await.0).await;
        looks_across_users_add_up_every_partition(make().await.0).await;
        let (store, redis) = make().await;
        a_queue_is_refused_another_number_of_partitions(store, &redis).await;
    }

    #[actix_web::test]
    async fn the_queue_in_seven_partitions_is_fair_and_whole_across_them() {
        every_check_on(redis_store_in_7).await;
    }

    #[actix_web::test]
    async fn an_unpartitioned_queue_with_tasks_is_refused_partitions() {
        let (store, redis) = redis_store().await;
        enqueue(&store, task(UserId::new(), 0)).await;
        // As a version before the number of partitions was written left it.
        let tag = format!("{{{}}}", redis.prefix());
        redis.del(&format!("{tag}:queue-partitions")).await;
        let policy = QueuePolicy::new(
            &tollgate::config::Settings::embedded_default().queue,
            store.clock.clone(),
        );

        let refused = redis_queue(redis.connect().await, policy.clone(), 12).await;
        let kept = redis_queue(redis.connect().await, policy, 1).await;

        let err = format!("{:#}", refused.err().expect("refused"));
        assert!(err.contains("laid out in 1"), "{err}");
        assert!(kept.is_ok());
    }
}
