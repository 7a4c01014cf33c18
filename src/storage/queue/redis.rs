//! Tasks in Redis through fred. Each state change is one Lua script (in
//! `lua/`), so it happens whole or not at all, and each script is safe to
//! run twice, so a command resent after a dropped connection does no harm.
//! Every key starts with the hash tag `{prefix}` (see [`Redis`]), or with a
//! partition's own (`{prefix.<i>}`) when the queue is partitioned: then
//! each partition holds every key below for its users.
//!
//! Keys, for prefix `p`:
//! - `{p}:task:<id>`: a hash per task, the fields of [`Task`] plus the
//!   current lease's `fence`, and `recorded_by` and `recorded_as`, the
//!   lease whose outcome was recorded last and what it was recorded as.
//! - `{p}:user:<user>`: a user's tasks counted by status, and `tasks`
//!   (all of them); gone with their last task.
//! - `{p}:user:<user>:ready`: a user's ready task ids, scored by run order
//!   from the `{p}:sequence` counter (below the lowest, for the front).
//! - `{p}:user:<user>:all`: a user's task ids, all scores 0 so that they
//!   sort by id (UUID v7: creation order). Listing by status filters it.
//! - `{p}:ring`, `{p}:tickets`: the round-robin ring of users and its counter.
//! - `{p}:fresh`: users that joined the ring with nothing running, by the
//!   ticket they joined with, for the workers kept for newcomers.
//! - `{p}:held`: users with ready tasks kept out of the ring by
//!   `max_running`, let back as their tasks finish (or at once if the bound
//!   is lifted).
//! - `{p}:paused`: users an operator paused, kept out of the ring.
//! - `{p}:tasks`: every task id, all scores 0 so that they sort by id, for
//!   looks across users; `{p}:tasks-indexed` marks that the tasks stored
//!   before it existed were added (at the first such look).
//! - `{p}:fences`: the counter behind every fencing token.
//! - `{p}:delayed`, `{p}:leases`, `{p}:expiry`, `{p}:idempotency`: ids (or
//!   keys) ordered by run_at, lease deadline and expiry.
//! - `{p}:user:<user>:idempotency:<key>`: what an `Idempotency-Key` made.
//! - `{p}:lease-call:<call>`: what a lease call leased ("id fence ..."),
//!   kept as long as a lease, so that the call sent again answers the same.
//! - `{p}:due`, `{p}:waiting`, `{p}:waiting-users`: every ready task by
//!   run_at, the waiting tasks counted, and the users with any waiting,
//!   for the queue's figures.

use std::collections::HashMap;

use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::prelude::{HashesInterface, KeysInterface, SetsInterface, Value};
use fred::types::scripts::Script;

use super::{
    LEASE_LAPSED, LIST_SCAN, LOAD_LOOK, NEWCOMER_LOOKS, PAGE_BYTES, PROMOTE_BATCH, QueuePolicy,
    QueueStore,
};
use crate::domain::{
    Backlog, Bulk, Cancelled, CancelledTask, Enqueued, Fence, Finished, Idempotency, KindLimits,
    KindLoad, Lease, LeaseCall, LeasedTask, NewTask, Outcome, Page, QueueStats, Retried, Settled,
    Task, TaskCounts, TaskFilter, TaskId, TaskKind, TaskStatus, UserId, UserLoad, Wanted,
};
use crate::lua_script;
use crate::storage::StoreError;
use crate::storage::redis::{Keyspace, Redis, SLICE, count};

/// The queue scripts, loaded into Redis on first use (and again after a
/// Redis restart forgets them).
struct Scripts {
    enqueue: Script,
    settle: Script,
    renew: Script,
    release: Script,
    reclaim: Script,
    purge: Script,
    cancel: Script,
    cancel_all: Script,
    list: Script,
    counts: Script,
    stats: Script,
    retry: Script,
    bulk: Script,
    pause: Script,
    index: Script,
    busiest: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            enqueue: lua_script!("enqueue.lua"),
            settle: lua_script!("settle.lua"),
            renew: lua_script!("renew.lua"),
            release: lua_script!("release.lua"),
            reclaim: lua_script!("reclaim.lua"),
            purge: lua_script!("purge.lua"),
            cancel: lua_script!("cancel.lua"),
            cancel_all: lua_script!("cancel_all.lua"),
            list: lua_script!("list.lua"),
            counts: lua_script!("counts.lua"),
            stats: lua_script!("stats.lua"),
            retry: lua_script!("retry.lua"),
            bulk: lua_script!("bulk.lua"),
            pause: lua_script!("pause.lua"),
            index: lua_script!("index.lua"),
            busiest: lua_script!("busiest.lua"),
        }
    }
}

pub struct RedisQueueStore {
    redis: Arc<Redis>,
    /// The keys this store keeps its tasks under: the whole queue, or one
    /// partition of it.
    space: Keyspace,
    /// How many partitions the queue has: each applies its share of the
    /// limits per kind.
    partitions: usize,
    scripts: Scripts,
    policy: QueuePolicy,
    /// Whether the index of every task is known to hold the tasks stored
    /// before it existed (see [`RedisQueueStore::index_older_tasks`]).
    indexed: tokio::sync::OnceCell<()>,
}

/// Set once every task stored before the index of every task existed has
/// been added to it.
const INDEXED_MARK: &str = "tasks-indexed";

impl RedisQueueStore {
    /// The whole queue under `redis`'s prefix.
    pub fn new(redis: Arc<Redis>, policy: QueuePolicy) -> Self {
        let space = redis.partitions(1).remove(0);
        Self::in_partition(redis, space, 1, policy)
    }

    /// One of `partitions` partitions of the queue, kept under `space`.
    pub fn in_partition(
        redis: Arc<Redis>,
        space: Keyspace,
        partitions: usize,
        policy: QueuePolicy,
    ) -> Self {
        Self {
            redis,
            space,
            partitions: partitions.max(1),
            scripts: Scripts::new(),
            policy,
            indexed: tokio::sync::OnceCell::new(),
        }
    }

    /// Runs a script with the prefix as its first argument.
    async fn run(&self, script: &Script, args: Vec<String>) -> Result<Value, StoreError> {
        self.redis.run_in(&self.space, script, args).await
    }

    /// Adds the tasks stored before the index of every task existed (each
    /// is in one of the expiry, due, delayed and lease indexes, or is a
    /// paused user's ready task) to it,
    /// once per key prefix: before a look across users. Tasks move between
    /// those indexes meanwhile, so passes go on until one adds nothing.
    async fn index_older_tasks(&self) -> Result<(), StoreError> {
        self.indexed
            .get_or_try_init(|| async {
                let mark = format!("{}:{INDEXED_MARK}", self.space.tag());
                if self.redis.client().exists::<u64, _>(&mark).await? > 0 {
                    return Ok(());
                }
                loop {
                    let mut added = 0;
                    for index in ["leases", "due", "delayed", "expiry", "paused"] {
                        let mut offset = 0;
                        loop {
                            let args =
                                vec![index.to_owned(), offset.to_string(), SLICE.to_string()];
                            let answer = self.run(&self.scripts.index, args).await?;
                            let (looked, new): (u64, u64) = answer.convert()?;
                            added += new;
                            offset += looked;
                            if looked < SLICE as u64 {
                                break;
                            }
                        }
                    }
                    if added == 0 {
                        break;
                    }
                }
                self.redis
                    .client()
                    .set::<(), _, _>(&mark, 1, None, None, false)
                    .await?;
                Ok(())
            })
            .await
            .copied()
    }

    /// Runs `bulk.lua` for `what` over every task `filter` matches, a
    /// slice a call; answers the counts and the tasks cancelled.
    async fn bulk(
        &self,
        what: &str,
        filter: &TaskFilter,
    ) -> Result<(Bulk, Vec<CancelledTask>), StoreError> {
        if filter.user.is_none() {
            self.index_older_tasks().await?;
        }
        let (mut total, mut after, mut cancelled) = (Bulk::default(), String::new(), Vec::new());
        loop {
            let now = self.policy.now();
            let (user, status, kind) = filter_args(filter);
            let args = vec![
                what.to_owned(),
                user,
                status,
                kind,
                after,
                SLICE.to_string(),
                now.now_ms.to_string(),
                now.result_expires_ms.to_string(),
                now.limits.max_running.to_string(),
            ];
            let answer = self.run(&self.scripts.bulk, args).await?.into_array();
            let mut answer = answer.into_iter();
            let mut next_count = || count(answer.next().unwrap_or(Value::Null));
            total.matched += next_count()?;
            total.changed += next_count()?;
            after = answer
                .next()
                .and_then(Value::into_string)
                .unwrap_or_default();
            let ended: Vec<(String, String, String, u32)> = answer
                .next()
                .unwrap_or(Value::Null)
                .convert()
                .unwrap_or_default();
            for (id, user, kind, attempts) in ended {
                let parsed = (
                    TaskId::parse(&id),
                    user.parse().ok(),
                    TaskKind::parse(&kind).ok(),
                );
                let (Some(id), Some(user), Some(kind)) = parsed else {
                    return Err(failed(anyhow!("bulk answered task {id} of {user}, {kind}")));
                };
                cancelled.push(CancelledTask {
                    id,
                    user: UserId(user),
                    kind,
                    attempts,
                });
            }
            if after.is_empty() {
                return Ok((total, cancelled));
            }
        }
    }

    async fn pause_or_resume(&self, user: UserId, what: &str) -> Result<bool, StoreError> {
        let max_running = self.policy.limits.get().max_running;
        let args = vec![user.to_string(), what.to_owned(), max_running.to_string()];
        Ok(count(self.run(&self.scripts.pause, args).await?)? > 0)
    }
}

/// A filter as the scripts take it: user, status and kind, '' for any.
fn filter_args(filter: &TaskFilter) -> (String, String, String) {
    (
        filter.user.map(|user| user.to_string()).unwrap_or_default(),
        filter
            .status
            .map(|status| status.as_str().to_owned())
            .unwrap_or_default(),
        filter
            .kind
            .as_ref()
            .map(|kind| kind.as_str().to_owned())
            .unwrap_or_default(),
    )
}

fn failed(err: anyhow::Error) -> StoreError {
    StoreError::Failed(err)
}

/// Reads the `{fence, task}` pairs a lease answers.
fn leases_from(answer: Option<Value>) -> anyhow::Result<Vec<LeasedTask>> {
    let leases = answer.map(Value::into_array).unwrap_or_default();
    leases
        .into_iter()
        .map(|lease| {
            let mut parts = lease.into_array().into_iter();
            let fence = parts
                .next()
                .and_then(|f| f.as_u64())
                .context("a lease without a fence")?;
            let task = task_from(parts.next().context("a lease without a task")?)?;
            Ok(LeasedTask {
                task,
                fence: Fence(fence),
            })
        })
        .collect()
}

/// Reads a task hash, as a script's HGETALL answers it, into a task.
fn task_from(value: Value) -> anyhow::Result<Task> {
    task_from_fields(&value.convert()?)
}

/// Reads the fields of a task hash into a task.
fn task_from_fields(fields: &HashMap<String, String>) -> anyhow::Result<Task> {
    let text = |name: &str| {
        fields
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("task field {name} is missing"))
    };
    let number = |name: &str| -> anyhow::Result<i64> {
        text(name)?
            .parse()
            .with_context(|| format!("task field {name} is not a number"))
    };
    let time = |name: &str| -> anyhow::Result<Option<DateTime<Utc>>> {
        match fields.get(name) {
            Some(ms) => Ok(Some(millis(ms.parse()?))),
            None => Ok(None),
        }
    };
    let json = |name: &str| -> anyhow::Result<Option<serde_json::Value>> {
        fields
            .get(name)
            .map(|raw| serde_json::from_str(raw))
            .transpose()
            .with_context(|| format!("task field {name} is not JSON"))
    };
    Ok(Task {
        id: TaskId::parse(text("id")?).context("task id")?,
        user_id: UserId(text("user")?.parse().context("task user")?),
        kind: TaskKind::parse(text("kind")?)?,
        payload: json("payload")?.unwrap_or_default(),
        status: TaskStatus::parse(text("status")?).context("task status")?,
        attempts: u32::try_from(number("attempts")?)?,
        max_attempts: u32::try_from(number("max_attempts")?)?,
        result: json("result")?,
        error: fields.get("error").cloned(),
        created_at: millis(number("created_at")?),
        run_at: millis(number("run_at")?),
        started_at: time("started_at")?,
        finished_at: time("finished_at")?,
        expires_at: time("expires_at")?,
        trace_parent: fields.get("traceparent").cloned(),
    })
}

fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The `(tag, rest)` of a script's tagged answer.
fn tagged(value: Value) -> anyhow::Result<(String, Vec<Value>)> {
    let mut items = value.into_array().into_iter();
    let tag = items
        .next()
        .and_then(Value::into_string)
        .context("the script answered without a tag")?;
    Ok((tag, items.collect()))
}

fn pairs(leases: &[Lease]) -> impl Iterator<Item = String> + '_ {
    leases
        .iter()
        .flat_map(|lease| [lease.task.to_string(), lease.fence.0.to_string()])
}

fn outcome_args(outcome: &Outcome) -> [String; 3] {
    match outcome {
        Outcome::Succeeded(result) => ["succeeded".into(), result.to_string(), String::new()],
        Outcome::Failed { error, retry_at } => [
            "failed".into(),
            error.clone(),
            retry_at.timestamp_millis().to_string(),
        ],
        Outcome::Rejected { error } => ["rejected".into(), error.clone(), String::new()],
    }
}

#[async_trait]
impl QueueStore for RedisQueueStore {
    async fn enqueue_many(
        &self,
        tasks: Vec<(NewTask, Option<Idempotency>)>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let now = self.policy.now();
        let mut args = vec![
            now.now_ms.to_string(),
            now.limits.max_pending.to_string(),
            now.limits.max_running.to_string(),
            PROMOTE_BATCH.to_string(),
            now.key_expires_ms.to_string(),
            now.limits.max_pending_bytes.to_string(),
            now.limits.max_finished.to_string(),
            SLICE.to_string(),
        ];
        for (new, idempotency) in &tasks {
            let (key, fingerprint) = match idempotency {
                Some(idem) => (idem.key.as_str(), idem.fingerprint.as_str()),
                None => ("", ""),
            };
            let request = &new.request;
            args.extend([
                new.id.to_string(),
                new.user_id.to_string(),
                request.kind.as_str().to_owned(),
                request.payload.to_string(),
                request.max_attempts.to_string(),
                new.created_at.timestamp_millis().to_string(),
                new.run_at().timestamp_millis().to_string(),
                key.to_owned(),
                fingerprint.to_owned(),
                request.trace_parent.clone().unwrap_or_default(),
            ]);
        }
        let answers = self.run(&self.scripts.enqueue, args).await?.into_array();
        if answers.len() != tasks.len() {
            return Err(failed(anyhow!("enqueue answered {answers:?}")));
        }
        tasks
            .into_iter()
            .zip(answers)
            .map(|((new, _), answer)| {
                let (tag, mut rest) = tagged(answer).map_err(failed)?;
                Ok(match tag.as_str() {
                    // Everything the store wrote came from the caller.
                    "created" => Enqueued::Created(new.into_task()),
                    "replayed" => {
                        Enqueued::Replayed(task_from(rest.swap_remove(0)).map_err(failed)?)
                    }
                    "reused" => Enqueued::KeyReused,
                    "full" => Enqueued::Full {
                        pending: rest.first().and_then(Value::as_u64).unwrap_or_default(),
                    },
                    "full_bytes" => Enqueued::FullBytes {
                        bytes: rest.first().and_then(Value::as_u64).unwrap_or_default(),
                    },
                    "full_finished" => Enqueued::FullFinished {
                        finished: rest.first().and_then(Value::as_u64).unwrap_or_default(),
                    },
                    other => return Err(failed(anyhow!("enqueue answered {other:?}"))),
                })
            })
            .collect()
    }

    async fn get(&self, user: UserId, id: TaskId) -> Result<Option<Task>, StoreError> {
        let now_ms = self.policy.clock.now_millis();
        let key = format!("{}:task:{id}", self.space.tag());
        let fields: HashMap<String, String> = self.redis.client().hgetall(key).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let task = task_from_fields(&fields).map_err(failed)?;
        let visible = task.user_id == user && task.is_live(now_ms);
        Ok(visible.then_some(task))
    }

    async fn scan(
        &self,
        filter: &TaskFilter,
        before: Option<TaskId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        if filter.user.is_none() {
            self.index_older_tasks().await?;
        }
        let now_ms = self.policy.clock.now_millis();
        let (user, status, kind) = filter_args(filter);
        let args = vec![
            user,
            status,
            kind,
            before.map(|id| id.to_string()).unwrap_or_default(),
            (limit + 1).to_string(),
            LIST_SCAN.to_string(),
            PAGE_BYTES.to_string(),
        ];
        let answer = self.run(&self.scripts.list, args).await?.into_array();
        let mut answer = answer.into_iter();
        let mut tasks = answer
            .next()
            .map(Value::into_array)
            .unwrap_or_default()
            .into_iter()
            .map(task_from)
            .collect::<anyhow::Result<Vec<Task>>>()
            .map_err(failed)?;
        let cursor = answer
            .next()
            .and_then(Value::into_string)
            .unwrap_or_default();
        let next = if tasks.len() > limit {
            Some(tasks[limit - 1].id)
        } else {
            // Short of a page where the scan stopped: go on from there.
            TaskId::parse(&cursor)
        };
        tasks.truncate(limit);
        tasks.retain(|t| t.is_live(now_ms));
        Ok(Page { items: tasks, next })
    }

    async fn retry(&self, id: TaskId) -> Result<Retried, StoreError> {
        let now = self.policy.now();
        let args = vec![
            id.to_string(),
            now.now_ms.to_string(),
            now.limits.max_running.to_string(),
        ];
        let answer = self.run(&self.scripts.retry, args).await?;
        let (tag, mut rest) = tagged(answer).map_err(failed)?;
        let mut task = || task_from(rest.swap_remove(0)).map_err(failed);
        Ok(match tag.as_str() {
            "retried" => Retried::Retried(task()?),
            "not_retriable" => Retried::NotRetriable(task()?),
            "not_found" => Retried::NotFound,
            other => return Err(failed(anyhow!("retry answered {other:?}"))),
        })
    }

    async fn retry_matching(&self, filter: &TaskFilter) -> Result<Bulk, StoreError> {
        Ok(self.bulk("retry", filter).await?.0)
    }

    async fn cancel_matching(
        &self,
        filter: &TaskFilter,
    ) -> Result<(Bulk, Vec<CancelledTask>), StoreError> {
        self.bulk("cancel", filter).await
    }

    async fn pause(&self, user: UserId) -> Result<bool, StoreError> {
        self.pause_or_resume(user, "pause").await
    }

    async fn resume(&self, user: UserId) -> Result<bool, StoreError> {
        self.pause_or_resume(user, "resume").await
    }

    async fn busiest(&self, most: usize) -> Result<Vec<UserLoad>, StoreError> {
        let args = vec![most.to_string(), LOAD_LOOK.to_string()];
        let answer: Vec<(String, u64, u64)> = self
            .run(&self.scripts.busiest, args)
            .await?
            .into_array()
            .into_iter()
            .map(|row| row.convert())
            .collect::<Result<_, _>>()?;
        answer
            .into_iter()
            .map(|(user, waiting, running)| {
                let user = UserId(
                    user.parse()
                        .map_err(|err| failed(anyhow!("user {user}: {err}")))?,
                );
                Ok(UserLoad {
                    user,
                    waiting,
                    running,
                })
            })
            .collect()
    }

    async fn is_paused(&self, user: UserId) -> Result<bool, StoreError> {
        let key = format!("{}:paused", self.space.tag());
        Ok(self.redis.client().sismember(key, user.to_string()).await?)
    }

    async fn counts(&self, user: UserId) -> Result<TaskCounts, StoreError> {
        let answer = self
            .run(&self.scripts.counts, vec![user.to_string()])
            .await?;
        let mut counts = TaskCounts::default();
        for (status, n) in TaskStatus::ALL.into_iter().zip(answer.into_array()) {
            // A status no task of the user's has had is not there at all.
            let n = n.as_u64().unwrap_or_default();
            counts.add(status, n);
        }
        Ok(counts)
    }

    async fn cancel(&self, user: UserId, id: TaskId) -> Result<Cancelled, StoreError> {
        let now = self.policy.now();
        let args = vec![
            user.to_string(),
            id.to_string(),
            now.now_ms.to_string(),
            now.result_expires_ms.to_string(),
        ];
        let answer = self.run(&self.scripts.cancel, args).await?;
        let (tag, mut rest) = tagged(answer).map_err(failed)?;
        let mut task = || task_from(rest.swap_remove(0)).map_err(failed);
        Ok(match tag.as_str() {
            "cancelled" => Cancelled::Cancelled(task()?),
            "not_waiting" => Cancelled::NotWaiting(task()?),
            "not_found" => Cancelled::NotFound,
            other => return Err(failed(anyhow!("cancel answered {other:?}"))),
        })
    }

    async fn cancel_all(&self, user: UserId) -> Result<u64, StoreError> {
        let now = self.policy.now();
        let (mut cancelled, mut after) = (0, String::new());
        loop {
            let args = vec![
                user.to_string(),
                now.now_ms.to_string(),
                now.result_expires_ms.to_string(),
                SLICE.to_string(),
                after,
            ];
            let answer = self.run(&self.scripts.cancel_all, args).await?.into_array();
            let mut answer = answer.into_iter();
            cancelled += count(answer.next().unwrap_or(Value::Null))?;
            after = answer
                .next()
                .and_then(Value::into_string)
                .unwrap_or_default();
            if after.is_empty() {
                return Ok(cancelled);
            }
        }
    }

    async fn settle(
        &self,
        ended: &[(Lease, Outcome)],
        call: LeaseCall,
        wanted: Wanted,
    ) -> Result<Settled, StoreError> {
        let now = self.policy.now();
        let mut args = vec![
            now.now_ms.to_string(),
            now.result_expires_ms.to_string(),
            now.lease_deadline_ms.to_string(),
            now.limits.max_running.to_string(),
            wanted.any.to_string(),
            PROMOTE_BATCH.to_string(),
            call.0.simple().to_string(),
            // How long Redis keeps what the call leased: as long as a lease.
            (now.lease_deadline_ms - now.now_ms).max(1).to_string(),
            wanted.newcomers.to_string(),
            NEWCOMER_LOOKS.to_string(),
            kind_limits_arg(&self.policy.limits.kinds(), self.partitions),
        ];
        for (lease, outcome) in ended {
            let [kind, value, retry_at] = outcome_args(outcome);
            args.extend([
                lease.task.to_string(),
                lease.fence.0.to_string(),
                kind,
                value,
                retry_at,
            ]);
        }
        let answer = self.run(&self.scripts.settle, args).await?.into_array();
        let mut answer = answer.into_iter();
        let finished = answer
            .next()
            .map(Value::into_array)
            .unwrap_or_default()
            .into_iter()
            .map(|status| match status.as_str().as_deref() {
                Some("stale") => Ok(Finished::Stale),
                Some(status) => TaskStatus::parse(status)
                    .map(Finished::Recorded)
                    .ok_or_else(|| anyhow!("settle answered {status:?}")),
                None => Err(anyhow!("settle answered {status:?}")),
            })
            .collect::<anyhow::Result<Vec<Finished>>>()
            .map_err(failed)?;
        if finished.len() != ended.len() {
            return Err(failed(anyhow!(
                "settle recorded {} of {}",
                finished.len(),
                ended.len()
            )));
        }
        let leased = leases_from(answer.next()).map_err(failed)?;
        let newcomers = leases_from(answer.next()).map_err(failed)?;
        let left: Vec<i64> = answer
            .next()
            .map(|left| left.convert())
            .transpose()?
            .unwrap_or_default();
        let &[users, newcomers_left, parked_kinds, next_due_ms] = left.as_slice() else {
            return Err(failed(anyhow!("settle answered what is left as {left:?}")));
        };
        Ok(Settled {
            finished,
            leased,
            newcomers,
            left: Backlog {
                users: users.unsigned_abs(),
                newcomers: newcomers_left.unsigned_abs(),
                parked_kinds: parked_kinds.unsigned_abs(),
                next_due_ms: (next_due_ms >= 0).then_some(next_due_ms),
            },
        })
    }

    async fn renew(&self, leases: &[Lease]) -> Result<Vec<bool>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let deadline_ms = self.policy.now().lease_deadline_ms;
        let args = std::iter::once(deadline_ms.to_string())
            .chain(pairs(leases))
            .collect();
        let answer = self.run(&self.scripts.renew, args).await?;
        Ok(answer
            .into_array()
            .into_iter()
            .map(|held| held.as_u64() == Some(1))
            .collect())
    }

    async fn release(&self, leases: &[Lease]) -> Result<u64, StoreError> {
        if leases.is_empty() {
            return Ok(0);
        }
        let max_running = self.policy.limits.get().max_running;
        let args = std::iter::once(max_running.to_string())
            .chain(pairs(leases))
            .collect();
        count(self.run(&self.scripts.release, args).await?)
    }

    async fn reclaim(&self) -> Result<u64, StoreError> {
        let now = self.policy.now();
        let args = || {
            vec![
                now.now_ms.to_string(),
                now.result_expires_ms.to_string(),
                now.limits.max_running.to_string(),
                SLICE.to_string(),
                LEASE_LAPSED.to_owned(),
            ]
        };
        self.redis
            .run_in_slices(&self.space, &self.scripts.reclaim, args)
            .await
    }

    async fn purge(&self) -> Result<u64, StoreError> {
        let now_ms = self.policy.clock.now_millis();
        let mut purged = 0;
        loop {
            let args = vec![now_ms.to_string(), SLICE.to_string()];
            let answer = self.run(&self.scripts.purge, args).await?.into_array();
            let [tasks, keys] = [0, 1].map(|i| answer.get(i).and_then(Value::as_u64));
            let (Some(tasks), Some(keys)) = (tasks, keys) else {
                return Err(failed(anyhow!("purge answered {answer:?}")));
            };
            purged += tasks;
            if tasks < SLICE as u64 && keys < SLICE as u64 {
                return Ok(purged);
            }
        }
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        let kinds: Vec<TaskKind> = self.policy.limits.kinds().keys().cloned().collect();
        let args = kinds.iter().map(|kind| kind.as_str().to_owned()).collect();
        let answer = self.run(&self.scripts.stats, args).await?.into_array();
        let number = |i: usize| answer.get(i).and_then(Value::as_u64);
        let (Some(waiting), Some(users_waiting)) = (number(0), number(1)) else {
            return Err(failed(anyhow!("stats answered {answer:?}")));
        };
        let oldest_due_ms = answer
            .get(2)
            .and_then(Value::as_str)
            .and_then(|due| due.parse::<f64>().ok())
            .map(|due| due as i64);
        let kinds = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| KindLoad {
                kind,
                running: number(3 + 2 * i).unwrap_or(0),
                parked: number(4 + 2 * i).unwrap_or(0),
            })
            .collect();
        Ok(QueueStats {
            waiting,
            users_waiting,
            oldest_due_ms,
            kinds,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.redis.ping().await
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// The limits per kind as `settle.lua` reads them: "kind max_running
/// max_per_second ...", -1 and 0 for no bound. Each of `partitions`
/// partitions applies its share, rounded up (so that every partition may
/// run a kind that may run at all).
fn kind_limits_arg(kinds: &KindLimits, partitions: usize) -> String {
    let share = |limit: u64| limit.div_ceil(partitions as u64);
    kinds
        .iter()
        .map(|(kind, limit)| {
            let most = limit.max_running.map_or(-1, |most| share(most) as i64);
            let rate = limit
                .max_per_second
                .map_or(0, |rate| share(u64::from(rate)));
            format!("{kind} {most} {rate}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::KindLimit;

    #[test]
    fn each_partition_applies_its_share_of_a_kinds_limits_rounded_up() {
        let kind = |name: &str| TaskKind::parse(name).unwrap();
        let limit = |max_running, max_per_second| KindLimit {
            max_running,
            max_per_second,
        };
        let kinds: KindLimits = [
            (kind("paused"), limit(Some(0), None)),
            (kind("sleep"), limit(Some(24), Some(5))),
            (kind("webhook"), limit(None, Some(12))),
        ]
        .into();

        assert_eq!(
            kind_limits_arg(&kinds, 1),
            "paused 0 0 sleep 24 5 webhook -1 12"
        );
        assert_eq!(
            kind_limits_arg(&kinds, 12),
            "paused 0 0 sleep 2 1 webhook -1 1"
        );
    }
}
