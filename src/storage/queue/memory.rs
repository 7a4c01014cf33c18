//! Tasks in process memory: the embedded default. Lost on exit. Every
//! operation takes one lock and never awaits while holding it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    LEASE_LAPSED, LIST_SCAN, LOAD_LOOK, Moment, NEWCOMER_LOOKS, PAGE_BYTES, PROMOTE_BATCH,
    QueuePolicy, QueueStore,
};
use crate::domain::{
    Backlog, Bulk, Cancelled, CancelledTask, Enqueued, Fence, Finished, Idempotency, KindLimit,
    KindLimits, KindLoad, Lease, LeaseCall, LeasedTask, Limits, NewTask, Outcome, Page, QueueStats,
    Retried, Settled, Task, TaskCounts, TaskFilter, TaskId, TaskKind, TaskStatus, UserId, UserLoad,
    Wanted,
};
use crate::storage::StoreError;
use crate::storage::redis::SLICE;

pub struct MemoryQueueStore {
    state: Mutex<State>,
    policy: QueuePolicy,
}

impl MemoryQueueStore {
    /// Calls `change` on every unexpired task `filter` matches, oldest
    /// first, a slice per lock as the Redis store takes a slice per
    /// script; it answers whether it changed the task.
    fn each_matching(
        &self,
        filter: &TaskFilter,
        now_ms: i64,
        mut change: impl FnMut(&mut State, TaskId, TaskStatus) -> Option<()>,
    ) -> Result<Bulk, StoreError> {
        let mut bulk = Bulk::default();
        let mut after: Option<TaskId> = None;
        loop {
            let mut state = self.state();
            let index = match filter.user {
                Some(user) => state.users.get(&user).map(|u| &u.all),
                None => Some(&state.all),
            };
            let from = after.map_or(Bound::Unbounded, Bound::Excluded);
            let slice: Vec<TaskId> = index.map_or_else(Vec::new, |index| {
                index
                    .range((from, Bound::Unbounded))
                    .take(SLICE)
                    .copied()
                    .collect()
            });
            for &id in &slice {
                let task = &state.tasks[&id].task;
                let status = task.status;
                if task.is_live(now_ms) && filter.matches(task.user_id, &task.kind, status) {
                    bulk.matched += 1;
                    if change(&mut state, id, status).is_some() {
                        bulk.changed += 1;
                    }
                }
            }
            if slice.len() < SLICE {
                return Ok(bulk);
            }
            after = slice.last().copied();
        }
    }

    pub fn new(policy: QueuePolicy) -> Self {
        Self {
            state: Mutex::default(),
            policy,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Each operation checks before it writes, and no write can panic
        // half way, so the state behind a poisoned lock is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Invariants: every id in a user's indexes, `delayed`, `leases` and
/// `expiry` is a key of `tasks`; a task is in exactly one status index of
/// its user, the one its status names; a user's `ready` and the `parked`
/// tasks of theirs together hold exactly their waiting tasks that are due; `ring` and `tickets` mirror each other; a
/// user entry exists only while it indexes a task.
#[derive(Default)]
struct State {
    tasks: HashMap<TaskId, Entry>,
    users: HashMap<UserId, UserTasks>,
    /// The dispatch ring: users with ready work and room to run, by ticket.
    ring: BTreeMap<u64, UserId>,
    tickets: HashMap<UserId, u64>,
    /// Users with ready work kept out of the ring by `max_running`.
    held: HashSet<UserId>,
    /// Users an operator paused: kept out of the ring until resumed.
    paused: HashSet<UserId>,
    /// Every task, by id (creation order), for looks across users.
    all: BTreeSet<TaskId>,
    /// Users that joined the ring with nothing running, by the ticket they
    /// joined with, for the newcomers' workers; mirrored by `fresh_tickets`.
    /// An entry stays until taken, and is skipped if its user has started
    /// something meanwhile.
    fresh: BTreeMap<u64, UserId>,
    fresh_tickets: HashMap<UserId, u64>,
    last_ticket: u64,
    last_fence: u64,
    /// Waiting tasks not yet due, by `run_at`.
    delayed: BTreeSet<(i64, TaskId)>,
    /// Every user's ready tasks, by `run_at`.
    due: BTreeSet<(i64, TaskId)>,
    /// Running tasks by lease deadline.
    leases: BTreeSet<(i64, TaskId)>,
    /// Finished tasks by `expires_at`.
    expiry: BTreeSet<(i64, TaskId)>,
    idempotency: HashMap<(UserId, String), Remembered>,
    idempotency_expiry: BTreeSet<(i64, UserId, String)>,
    /// What each recent lease call leased (round robin, and for
    /// newcomers), until its leases' deadline.
    lease_calls: HashMap<LeaseCall, (i64, [Vec<Lease>; 2])>,
    /// Running tasks by kind.
    kind_running: HashMap<TaskKind, u64>,
    /// By kind, when its tasks started in the last second, oldest first
    /// (for its `max_per_second`).
    kind_starts: HashMap<TaskKind, VecDeque<i64>>,
    /// Ready tasks set aside while their kind has no room under its
    /// limits, by kind, oldest first.
    parked: BTreeMap<TaskKind, BTreeSet<TaskId>>,
}

struct Entry {
    task: Task,
    /// The current lease's fencing token; 0 before the first lease.
    fence: u64,
    /// The current lease's deadline, while running.
    deadline_ms: i64,
    /// The lease whose outcome was recorded last, and what it made the task.
    recorded: Option<(u64, TaskStatus)>,
    /// The payload's length as JSON, counted while the task waits.
    payload_bytes: u64,
    /// Its user was deleted: no operator's retry may queue it again.
    owner_gone: bool,
}

impl Entry {
    /// Whether an operator may queue the task again.
    fn retriable(&self) -> bool {
        self.task.status.is_retriable() && !self.owner_gone
    }
}

#[derive(Default)]
struct UserTasks {
    /// Ready task ids in the order they run.
    ready: VecDeque<TaskId>,
    all: BTreeSet<TaskId>,
    by_status: HashMap<TaskStatus, BTreeSet<TaskId>>,
    /// Bytes of payload in the user's waiting tasks.
    waiting_bytes: u64,
}

impl UserTasks {
    fn count(&self, status: TaskStatus) -> u64 {
        self.by_status
            .get(&status)
            .map_or(0, |ids| ids.len() as u64)
    }
}

struct Remembered {
    task: TaskId,
    fingerprint: String,
    expires_ms: i64,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl State {
    fn user(&mut self, id: UserId) -> &mut UserTasks {
        self.users.entry(id).or_default()
    }

    fn running(&self, user: UserId) -> u64 {
        self.users
            .get(&user)
            .map_or(0, |u| u.count(TaskStatus::Running))
    }

    /// Puts `user` at the back of the ring if it has ready work and room;
    /// a user with ready work and no room is held until it has.
    fn activate(&mut self, user: UserId, limits: Limits) {
        let has_ready = self.users.get(&user).is_some_and(|u| !u.ready.is_empty());
        if self.tickets.contains_key(&user) || self.paused.contains(&user) {
            return;
        }
        if has_ready && !limits.may_run(self.running(user)) {
            self.held.insert(user);
            return;
        }
        self.held.remove(&user);
        if !has_ready {
            return;
        }
        self.last_ticket += 1;
        self.ring.insert(self.last_ticket, user);
        self.tickets.insert(user, self.last_ticket);
        if self.running(user) == 0 && !self.fresh_tickets.contains_key(&user) {
            self.fresh.insert(self.last_ticket, user);
            self.fresh_tickets.insert(user, self.last_ticket);
        }
    }

    /// The user that joined the ring with nothing running longest ago and
    /// still has nothing running, if one is found within `looks` entries.
    fn next_newcomer(&mut self, mut looks: usize) -> Option<UserId> {
        while looks > 0 {
            let (_, user) = self.fresh.pop_first()?;
            self.fresh_tickets.remove(&user);
            if self.tickets.contains_key(&user) && self.running(user) == 0 {
                return Some(user);
            }
            looks -= 1;
        }
        None
    }

    /// Users held by a `max_running` since lifted go back in the ring; with
    /// a bound, each is let back as its tasks finish.
    fn release_held(&mut self, limits: Limits) {
        if limits.max_running == 0 {
            for user in std::mem::take(&mut self.held) {
                self.activate(user, limits);
            }
        }
    }

    fn deactivate(&mut self, user: UserId) {
        if let Some(ticket) = self.tickets.remove(&user) {
            self.ring.remove(&ticket);
        }
    }

    /// Adds a task behind its user's ready tasks.
    fn push_back(&mut self, id: TaskId) {
        let (user, run_at) = self.user_and_run_at(id);
        self.user(user).ready.push_back(id);
        self.mark_due(user, run_at, id);
    }

    /// Puts a task before all of its user's ready tasks.
    fn push_front(&mut self, id: TaskId) {
        let (user, run_at) = self.user_and_run_at(id);
        self.user(user).ready.push_front(id);
        self.mark_due(user, run_at, id);
    }

    /// Counts a ready task as due, unless its user is paused: a paused
    /// user's tasks are not overdue.
    fn mark_due(&mut self, user: UserId, run_at: i64, id: TaskId) {
        if !self.paused.contains(&user) {
            self.due.insert((run_at, id));
        }
    }

    /// `user`'s ready tasks with their `run_at`, in order.
    fn ready_of(&self, user: UserId) -> Vec<(i64, TaskId)> {
        let ready = self.users.get(&user).map(|u| u.ready.iter());
        ready
            .into_iter()
            .flatten()
            .map(|&id| (self.user_and_run_at(id).1, id))
            .collect()
    }

    /// Takes the first of `user`'s ready tasks.
    fn pop_ready(&mut self, user: UserId) -> Option<TaskId> {
        let id = self.users.get_mut(&user)?.ready.pop_front()?;
        let (_, run_at) = self.user_and_run_at(id);
        self.due.remove(&(run_at, id));
        Some(id)
    }

    /// Takes a task out of its user's ready tasks, wherever it stands, or
    /// out of its kind's parked tasks.
    fn unready(&mut self, id: TaskId) {
        let (user, run_at) = self.user_and_run_at(id);
        self.user(user).ready.retain(|ready| *ready != id);
        self.due.remove(&(run_at, id));
        let kind = &self.tasks[&id].task.kind;
        if let Some(parked) = self.parked.get_mut(kind) {
            parked.remove(&id);
            if parked.is_empty() {
                self.parked.remove(kind);
            }
        }
    }

    /// Whether one more task of `kind` may start now under `kinds`; if
    /// it is rate-bound, this start is counted against the rate.
    fn take_room(&mut self, kind: &TaskKind, kinds: &KindLimits, now_ms: i64) -> bool {
        let Some(limit) = kinds.get(kind) else {
            return true;
        };
        if self.room_of(kind, limit, now_ms) == 0 {
            return false;
        }
        if limit.max_per_second.is_some() {
            self.kind_starts
                .entry(kind.clone())
                .or_default()
                .push_back(now_ms);
        }
        true
    }

    /// How many more tasks of `kind` may start now under `limit`.
    fn room_of(&mut self, kind: &TaskKind, limit: &KindLimit, now_ms: i64) -> u64 {
        let mut room = u64::MAX;
        if let Some(most) = limit.max_running {
            let running = self.kind_running.get(kind).copied().unwrap_or(0);
            room = room.min(most.saturating_sub(running));
        }
        if let Some(rate) = limit.max_per_second {
            let starts = self.kind_starts.entry(kind.clone()).or_default();
            while starts.front().is_some_and(|at| *at <= now_ms - 1000) {
                starts.pop_front();
            }
            room = room.min(u64::from(rate).saturating_sub(starts.len() as u64));
        }
        room
    }

    /// Starts `id` if its kind has room; else sets it aside, its place
    /// kept, and answers `None`.
    fn start_or_park(
        &mut self,
        id: TaskId,
        kinds: &KindLimits,
        now: &Moment,
    ) -> Option<LeasedTask> {
        let kind = self.tasks[&id].task.kind.clone();
        if self.take_room(&kind, kinds, now.now_ms) {
            return Some(self.start(id, now.now_ms, now.lease_deadline_ms));
        }
        self.parked.entry(kind).or_default().insert(id);
        None
    }

    /// Parked tasks whose kind has room again (or no limits any more) go
    /// back to the front of their users' queues, oldest first.
    fn unpark(&mut self, kinds: &KindLimits, now_ms: i64, limits: Limits) {
        let parked_kinds: Vec<TaskKind> = self.parked.keys().cloned().collect();
        for kind in parked_kinds {
            let room = match kinds.get(&kind) {
                Some(limit) => self.room_of(&kind, limit, now_ms),
                None => u64::MAX,
            }
            .min(PROMOTE_BATCH as u64);
            let Some(parked) = self.parked.get_mut(&kind) else {
                continue;
            };
            let back: Vec<TaskId> = (0..room).map_while(|_| parked.pop_first()).collect();
            if parked.is_empty() {
                self.parked.remove(&kind);
            }
            // Newest first, so that each user's end up in their order.
            for &id in back.iter().rev() {
                self.push_front(id);
            }
            for id in back {
                self.activate(self.tasks[&id].task.user_id, limits);
            }
        }
    }

    fn user_and_run_at(&self, id: TaskId) -> (UserId, i64) {
        let task = &self.tasks[&id].task;
        (task.user_id, task.run_at.timestamp_millis())
    }

    /// Makes waiting tasks due by `now_ms` ready, in `run_at` order.
    fn promote(&mut self, now_ms: i64, limits: Limits) {
        for _ in 0..PROMOTE_BATCH {
            let Some(&(run_at, id)) = self.delayed.first() else {
                return;
            };
            if run_at > now_ms {
                return;
            }
            self.delayed.remove(&(run_at, id));
            self.push_back(id);
            self.activate(self.tasks[&id].task.user_id, limits);
        }
    }

    /// Moves a task to `to`, in its record and in its user's indexes.
    fn set_status(&mut self, id: TaskId, to: TaskStatus) {
        let Some(entry) = self.tasks.get_mut(&id) else {
            return;
        };
        let (user, from, bytes) = (entry.task.user_id, entry.task.status, entry.payload_bytes);
        entry.task.status = to;
        let running = (from == TaskStatus::Running, to == TaskStatus::Running);
        if running.0 != running.1 {
            let count = self
                .kind_running
                .entry(entry.task.kind.clone())
                .or_default();
            *count = if running.1 {
                *count + 1
            } else {
                count.saturating_sub(1)
            };
        }
        let indexes = self.user(user);
        if let Some(ids) = indexes.by_status.get_mut(&from) {
            ids.remove(&id);
        }
        indexes.by_status.entry(to).or_default().insert(id);
        match (from.is_waiting(), to.is_waiting()) {
            (true, false) => indexes.waiting_bytes -= bytes,
            (false, true) => indexes.waiting_bytes += bytes,
            _ => {}
        }
    }

    /// Takes a waiting task out of its user's ready tasks and the delayed
    /// ones, and ends it cancelled.
    fn cancel(&mut self, id: TaskId, now_ms: i64, expires_ms: i64) {
        let (_, run_at) = self.user_and_run_at(id);
        self.delayed.remove(&(run_at, id));
        self.unready(id);
        self.finalize(id, TaskStatus::Cancelled, now_ms, expires_ms);
    }

    /// Queues a dead or cancelled task again, due `now_ms`, its attempts
    /// and outcome reset, behind its user's ready tasks.
    fn requeue(&mut self, id: TaskId, now_ms: i64, limits: Limits) {
        let entry = self.tasks.get_mut(&id).expect("a stored task");
        if let Some(expires) = entry.task.expires_at.take() {
            self.expiry.remove(&(expires.timestamp_millis(), id));
        }
        let task = &mut entry.task;
        (task.attempts, task.run_at) = (0, at(now_ms));
        (task.finished_at, task.started_at) = (None, None);
        (task.error, task.result) = (None, None);
        let user = task.user_id;
        self.set_status(id, TaskStatus::Queued);
        self.push_back(id);
        self.activate(user, limits);
    }

    /// The tasks `filter` matches, newest first, older than `before`:
    /// up to `most`, looking at no more than [`LIST_SCAN`] when the filter
    /// narrows more than its index (as the Redis store does). Answers them
    /// and, if the look stopped short, the last id looked at.
    fn matching(
        &self,
        filter: &TaskFilter,
        before: Option<TaskId>,
        most: usize,
    ) -> (Vec<TaskId>, Option<TaskId>) {
        let empty = BTreeSet::new();
        let index = match (filter.user, filter.status) {
            (Some(user), Some(status)) => self
                .users
                .get(&user)
                .and_then(|u| u.by_status.get(&status))
                .unwrap_or(&empty),
            (Some(user), None) => self.users.get(&user).map_or(&empty, |u| &u.all),
            (None, _) => &self.all,
        };
        let narrowed = filter.kind.is_some() || (filter.user.is_none() && filter.status.is_some());
        let older = match before {
            Some(before) => index.range(..before),
            None => index.range(..),
        };
        let (mut found, mut looked) = (Vec::new(), 0);
        for &id in older.rev() {
            let task = &self.tasks[&id].task;
            if filter.matches(task.user_id, &task.kind, task.status) {
                found.push(id);
                if found.len() == most {
                    return (found, None);
                }
            }
            looked += 1;
            if narrowed && looked == LIST_SCAN {
                return (found, Some(id));
            }
        }
        (found, None)
    }

    /// Ends a task in a final state, kept until `expires_ms`.
    fn finalize(&mut self, id: TaskId, to: TaskStatus, now_ms: i64, expires_ms: i64) {
        self.set_status(id, to);
        if let Some(entry) = self.tasks.get_mut(&id) {
            entry.task.finished_at = Some(at(now_ms));
            entry.task.expires_at = Some(at(expires_ms));
        }
        self.expiry.insert((expires_ms, id));
    }

    /// Ends the current lease of a running task.
    fn end_lease(&mut self, id: TaskId) {
        if let Some(entry) = self.tasks.get(&id) {
            self.leases.remove(&(entry.deadline_ms, id));
        }
    }

    /// The task if `lease` is its current one.
    fn leased(&self, lease: Lease) -> Option<&Task> {
        self.tasks
            .get(&lease.task)
            .filter(|e| e.task.status == TaskStatus::Running && e.fence == lease.fence.0)
            .map(|e| &e.task)
    }

    /// Sends running tasks back to the front of their queues, newest lease
    /// first, so that they end up in the order they ran; `back` ends each
    /// lease and sets what the task becomes.
    fn send_back(
        &mut self,
        mut leases: Vec<Lease>,
        limits: Limits,
        mut back: impl FnMut(&mut Self, TaskId),
    ) {
        leases.sort_by_key(|lease| std::cmp::Reverse(lease.fence));
        for Lease { task: id, .. } in leases {
            back(self, id);
            if self.tasks[&id].task.status.is_waiting() {
                self.push_front(id);
            }
            self.activate(self.tasks[&id].task.user_id, limits);
        }
    }

    /// A task of `user`'s that has not expired.
    fn visible(&self, user: UserId, id: TaskId, now_ms: i64) -> Option<&Task> {
        self.tasks
            .get(&id)
            .map(|e| &e.task)
            .filter(|t| t.user_id == user)
            .filter(|t| t.is_live(now_ms))
    }

    fn remember(&mut self, user: UserId, idempotency: Idempotency, task: TaskId, expires_ms: i64) {
        let key = idempotency.key.as_str().to_owned();
        if let Some(old) = self.idempotency.remove(&(user, key.clone())) {
            self.idempotency_expiry
                .remove(&(old.expires_ms, user, key.clone()));
        }
        self.idempotency_expiry
            .insert((expires_ms, user, key.clone()));
        self.idempotency.insert(
            (user, key),
            Remembered {
                task,
                fingerprint: idempotency.fingerprint,
                expires_ms,
            },
        );
    }

    /// Stores one task, as [`QueueStore::enqueue_many`] says.
    fn enqueue(&mut self, new: NewTask, idempotency: Option<Idempotency>, now: Moment) -> Enqueued {
        let (now_ms, limits) = (now.now_ms, now.limits);
        let user = new.user_id;
        if let Some(idem) = &idempotency {
            let key = (user, idem.key.as_str().to_owned());
            if let Some(seen) = self.idempotency.get(&key).filter(|r| r.expires_ms > now_ms) {
                if seen.fingerprint != idem.fingerprint {
                    return Enqueued::KeyReused;
                }
                if let Some(entry) = self.tasks.get(&seen.task) {
                    return Enqueued::Replayed(entry.task.clone());
                }
            }
        }
        if let Some(entry) = self.tasks.get(&new.id) {
            return Enqueued::Created(entry.task.clone());
        }
        // Room for this task's outcome: the oldest finished tasks go first.
        let (finished, stuck) = self.keep_finished_below(user, limits.max_finished);
        if stuck {
            return Enqueued::FullFinished { finished };
        }
        let (pending, bytes) = self.users.get(&user).map_or((0, 0), |u| {
            let pending = u.count(TaskStatus::Queued) + u.count(TaskStatus::Failed);
            (pending, u.waiting_bytes)
        });
        if pending >= limits.max_pending {
            return Enqueued::Full { pending };
        }
        // Measured as the Redis store measures it: the payload as JSON.
        let payload_bytes = new.request.payload.to_string().len() as u64;
        if bytes + payload_bytes > limits.max_pending_bytes {
            return Enqueued::FullBytes { bytes };
        }

        // Tasks already due go first: they have the earlier run_at.
        self.promote(now_ms, limits);
        let task = new.into_task();
        let (id, run_at_ms) = (task.id, task.run_at.timestamp_millis());
        self.tasks.insert(
            id,
            Entry {
                task: task.clone(),
                fence: 0,
                deadline_ms: 0,
                recorded: None,
                payload_bytes,
                owner_gone: false,
            },
        );
        self.all.insert(id);
        let indexes = self.user(user);
        indexes.all.insert(id);
        indexes.waiting_bytes += payload_bytes;
        indexes
            .by_status
            .entry(TaskStatus::Queued)
            .or_default()
            .insert(id);
        if run_at_ms <= now_ms {
            self.push_back(id);
            self.activate(user, limits);
        } else {
            self.delayed.insert((run_at_ms, id));
        }
        if let Some(idem) = idempotency {
            self.remember(user, idem, id, now.key_expires_ms);
        }
        Enqueued::Created(task)
    }

    /// Leases what `wanted` asks for, as [`QueueStore::settle`] says.
    fn lease(
        &mut self,
        call: LeaseCall,
        wanted: Wanted,
        now: Moment,
        kinds: &KindLimits,
    ) -> [Vec<LeasedTask>; 2] {
        let (now_ms, limits) = (now.now_ms, now.limits);
        if let Some((_, made)) = self.lease_calls.get(&call) {
            return made.clone().map(|leases| {
                leases
                    .into_iter()
                    .filter_map(|lease| {
                        let task = self.leased(lease)?.clone();
                        Some(LeasedTask {
                            task,
                            fence: lease.fence,
                        })
                    })
                    .collect()
            });
        }
        self.promote(now_ms, limits);
        self.release_held(limits);
        self.unpark(kinds, now_ms, limits);

        // Parking is bounded by a call's promotions, like them.
        let mut parked = 0;
        let mut any = Vec::new();
        while any.len() < wanted.any && parked < PROMOTE_BATCH {
            let Some((_, &user)) = self.ring.first_key_value() else {
                break;
            };
            self.deactivate(user);
            let ready = match limits.may_run(self.running(user)) {
                true => self.pop_ready(user),
                false => None,
            };
            if let Some(id) = ready {
                match self.start_or_park(id, kinds, &now) {
                    Some(task) => any.push(task),
                    None => parked += 1,
                }
            }
            self.activate(user, limits);
        }
        let mut newcomers = Vec::new();
        while newcomers.len() < wanted.newcomers && parked < PROMOTE_BATCH {
            let Some(user) = self.next_newcomer(NEWCOMER_LOOKS) else {
                break;
            };
            let id = self
                .pop_ready(user)
                .expect("users in the ring have ready tasks");
            let Some(task) = self.start_or_park(id, kinds, &now) else {
                parked += 1;
                // Still a newcomer: its next task may have room.
                match self.users.get(&user).is_some_and(|u| !u.ready.is_empty()) {
                    true => {
                        let ticket = self.tickets[&user];
                        self.fresh.insert(ticket, user);
                        self.fresh_tickets.insert(user, ticket);
                    }
                    false => self.deactivate(user),
                }
                continue;
            };
            newcomers.push(task);
            // The user keeps its place in the ring while it has more to
            // run and room to run it.
            let has_ready = self.users.get(&user).is_some_and(|u| !u.ready.is_empty());
            if !has_ready || !limits.may_run(self.running(user)) {
                self.deactivate(user);
                self.activate(user, limits);
            }
        }
        let made = [&any, &newcomers].map(|tasks| tasks.iter().map(LeasedTask::lease).collect());
        if !any.is_empty() || !newcomers.is_empty() {
            self.lease_calls.insert(call, (now.lease_deadline_ms, made));
        }
        [any, newcomers]
    }

    /// Starts a ready task under a new lease.
    fn start(&mut self, id: TaskId, now_ms: i64, deadline_ms: i64) -> LeasedTask {
        self.last_fence += 1;
        let fence = self.last_fence;
        self.set_status(id, TaskStatus::Running);
        let entry = self.tasks.get_mut(&id).expect("ready ids are stored");
        entry.fence = fence;
        entry.deadline_ms = deadline_ms;
        entry.task.attempts += 1;
        entry.task.started_at = Some(at(now_ms));
        let task = entry.task.clone();
        self.leases.insert((deadline_ms, id));
        LeasedTask {
            task,
            fence: Fence(fence),
        }
    }

    /// Records one attempt's outcome, as [`QueueStore::settle`] says.
    fn finish(&mut self, lease: Lease, outcome: Outcome, now: Moment) -> Finished {
        let (id, fence) = (lease.task, lease.fence);
        let Some(task) = self.leased(lease) else {
            // This lease's outcome, recorded already (a call sent again).
            let recorded = self.tasks.get(&id).and_then(|e| e.recorded);
            return match recorded {
                Some((by, status)) if by == fence.0 => Finished::Recorded(status),
                _ => Finished::Stale,
            };
        };
        let (user, attempts_left) = (task.user_id, task.attempts < task.max_attempts);
        self.end_lease(id);
        let task = &mut self.tasks.get_mut(&id).expect("leased").task;
        let status = match outcome {
            Outcome::Succeeded(result) => {
                task.result = Some(result);
                task.error = None;
                TaskStatus::Succeeded
            }
            Outcome::Failed { error, retry_at } if attempts_left => {
                task.error = Some(error);
                task.run_at = retry_at;
                TaskStatus::Failed
            }
            Outcome::Failed { error, .. } | Outcome::Rejected { error } => {
                task.error = Some(error);
                TaskStatus::Dead
            }
        };
        if status == TaskStatus::Failed {
            let run_at = task.run_at.timestamp_millis();
            self.set_status(id, status);
            self.delayed.insert((run_at, id));
        } else {
            self.finalize(id, status, now.now_ms, now.result_expires_ms);
        }
        self.tasks.get_mut(&id).expect("leased").recorded = Some((fence.0, status));
        self.activate(user, now.limits);
        Finished::Recorded(status)
    }

    /// Drops a user's entry once it indexes nothing, so memory follows the
    /// users with tasks, not every user ever seen.
    /// Forgets `user`'s oldest finished tasks until fewer than `most` are
    /// kept, looking at no more than [`SLICE`] of their oldest tasks, as
    /// the Redis store does (so a user far past the bound gets there over
    /// several calls). Answers how many finished tasks are kept, and
    /// whether that is too many with none forgotten.
    fn keep_finished_below(&mut self, user: UserId, most: u64) -> (u64, bool) {
        let Some(indexes) = self.users.get(&user) else {
            return (0, false);
        };
        let mut kept: u64 = [
            TaskStatus::Succeeded,
            TaskStatus::Dead,
            TaskStatus::Cancelled,
        ]
        .into_iter()
        .map(|status| indexes.count(status))
        .sum();
        if kept < most {
            return (kept, false);
        }
        let oldest: Vec<TaskId> = indexes
            .all
            .iter()
            .take(SLICE)
            .filter(|id| self.tasks[id].task.status.is_final())
            .copied()
            .collect();
        let mut forgot = false;
        for id in oldest {
            self.forget(id);
            (kept, forgot) = (kept - 1, true);
            if kept < most {
                break;
            }
        }
        (kept, kept >= most && !forgot)
    }

    /// Forgets a finished task: its record, its expiry and its indexes.
    fn forget(&mut self, id: TaskId) {
        let Some(entry) = self.tasks.remove(&id) else {
            return;
        };
        if let Some(expires) = entry.task.expires_at {
            self.expiry.remove(&(expires.timestamp_millis(), id));
        }
        self.all.remove(&id);
        let indexes = self.user(entry.task.user_id);
        indexes.all.remove(&id);
        if let Some(ids) = indexes.by_status.get_mut(&entry.task.status) {
            ids.remove(&id);
        }
    }

    fn forget_if_empty(&mut self, user: UserId) {
        if self
            .users
            .get(&user)
            .is_some_and(|u| u.all.is_empty() && u.ready.is_empty())
        {
            self.users.remove(&user);
            self.deactivate(user);
            if let Some(ticket) = self.fresh_tickets.remove(&user) {
                self.fresh.remove(&ticket);
            }
        }
    }
}

#[async_trait]
impl QueueStore for MemoryQueueStore {
    async fn enqueue_many(
        &self,
        tasks: Vec<(NewTask, Option<Idempotency>)>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let now = self.policy.now();
        let mut state = self.state();
        Ok(tasks
            .into_iter()
            .map(|(new, idempotency)| state.enqueue(new, idempotency, now))
            .collect())
    }

    async fn get(&self, user: UserId, id: TaskId) -> Result<Option<Task>, StoreError> {
        let now_ms = self.policy.clock.now_millis();
        Ok(self.state().visible(user, id, now_ms).cloned())
    }

    async fn scan(
        &self,
        filter: &TaskFilter,
        before: Option<TaskId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let now_ms = self.policy.clock.now_millis();
        let state = self.state();
        let (mut page, stopped) = state.matching(filter, before, limit + 1);
        // Past `PAGE_BYTES` of payloads and results the page ends early, as
        // the Redis store's does, with its last task as the cursor.
        let mut bytes = 0;
        let full = page.iter().position(|id| {
            let entry = &state.tasks[id];
            let task = &entry.task;
            bytes += entry.payload_bytes as usize
                + task.result.as_ref().map_or(0, |r| r.to_string().len())
                + task.error.as_ref().map_or(0, String::len);
            bytes > PAGE_BYTES
        });
        let next = match full {
            Some(last) if last < limit => {
                page.truncate(last + 1);
                Some(page[last])
            }
            _ if page.len() > limit => Some(page[limit - 1]),
            _ => stopped,
        };
        let items = page
            .iter()
            .take(limit)
            .map(|id| &state.tasks[id].task)
            .filter(|task| task.is_live(now_ms))
            .cloned()
            .collect();
        Ok(Page { items, next })
    }

    async fn retry(&self, id: TaskId) -> Result<Retried, StoreError> {
        let now = self.policy.now();
        let mut state = self.state();
        let Some(entry) = state.tasks.get(&id).filter(|e| e.task.is_live(now.now_ms)) else {
            return Ok(Retried::NotFound);
        };
        if !entry.retriable() {
            return Ok(Retried::NotRetriable(entry.task.clone()));
        }
        state.requeue(id, now.now_ms, now.limits);
        Ok(Retried::Retried(state.tasks[&id].task.clone()))
    }

    async fn retry_matching(&self, filter: &TaskFilter) -> Result<Bulk, StoreError> {
        let now = self.policy.now();
        self.each_matching(filter, now.now_ms, |state, id, _| {
            state.tasks[&id]
                .retriable()
                .then(|| state.requeue(id, now.now_ms, now.limits))
        })
    }

    async fn cancel_matching(
        &self,
        filter: &TaskFilter,
    ) -> Result<(Bulk, Vec<CancelledTask>), StoreError> {
        let now = self.policy.now();
        let mut cancelled = Vec::new();
        let bulk = self.each_matching(filter, now.now_ms, |state, id, status| {
            status.is_waiting().then(|| {
                state.cancel(id, now.now_ms, now.result_expires_ms);
                let task = &state.tasks[&id].task;
                cancelled.push(CancelledTask {
                    id,
                    user: task.user_id,
                    kind: task.kind.clone(),
                    attempts: task.attempts,
                });
            })
        })?;
        Ok((bulk, cancelled))
    }

    async fn pause(&self, user: UserId) -> Result<bool, StoreError> {
        let mut state = self.state();
        if !state.paused.insert(user) {
            return Ok(false);
        }
        state.deactivate(user);
        state.held.remove(&user);
        if let Some(ticket) = state.fresh_tickets.remove(&user) {
            state.fresh.remove(&ticket);
        }
        for due in state.ready_of(user) {
            state.due.remove(&due);
        }
        Ok(true)
    }

    async fn busiest(&self, most: usize) -> Result<Vec<UserLoad>, StoreError> {
        let state = self.state();
        let mut loads: Vec<UserLoad> = state
            .users
            .iter()
            .map(|(&user, tasks)| UserLoad {
                user,
                waiting: tasks.count(TaskStatus::Queued) + tasks.count(TaskStatus::Failed),
                running: tasks.count(TaskStatus::Running),
            })
            .filter(|load| load.waiting > 0)
            .take(LOAD_LOOK)
            .collect();
        loads.sort_unstable_by_key(|load| (std::cmp::Reverse(load.waiting), load.user));
        loads.truncate(most);
        Ok(loads)
    }

    async fn is_paused(&self, user: UserId) -> Result<bool, StoreError> {
        Ok(self.state().paused.contains(&user))
    }

    async fn resume(&self, user: UserId) -> Result<bool, StoreError> {
        let limits = self.policy.limits.get();
        let mut state = self.state();
        if !state.paused.remove(&user) {
            return Ok(false);
        }
        let ready = state.ready_of(user);
        state.due.extend(ready);
        state.activate(user, limits);
        Ok(true)
    }

    async fn counts(&self, user: UserId) -> Result<TaskCounts, StoreError> {
        let state = self.state();
        let mut counts = TaskCounts::default();
        if let Some(indexes) = state.users.get(&user) {
            for status in TaskStatus::ALL {
                counts.add(status, indexes.count(status));
            }
        }
        Ok(counts)
    }

    async fn cancel(&self, user: UserId, id: TaskId) -> Result<Cancelled, StoreError> {
        let now = self.policy.now();
        let (now_ms, expires_ms) = (now.now_ms, now.result_expires_ms);
        let mut state = self.state();
        let Some(task) = state.visible(user, id, now_ms).cloned() else {
            return Ok(Cancelled::NotFound);
        };
        if task.status == TaskStatus::Cancelled {
            return Ok(Cancelled::Cancelled(task));
        }
        if !task.status.is_waiting() {
            return Ok(Cancelled::NotWaiting(task));
        }
        state.cancel(id, now_ms, expires_ms);
        Ok(Cancelled::Cancelled(state.tasks[&id].task.clone()))
    }

    async fn cancel_all(&self, user: UserId) -> Result<u64, StoreError> {
        let now = self.policy.now();
        let (now_ms, expires_ms) = (now.now_ms, now.result_expires_ms);
        let mut state = self.state();
        let Some(indexes) = state.users.get(&user) else {
            return Ok(0);
        };
        // The user is going: none of their tasks may be queued again.
        let all: Vec<TaskId> = indexes.all.iter().copied().collect();
        let waiting: Vec<TaskId> = [TaskStatus::Queued, TaskStatus::Failed]
            .iter()
            .filter_map(|status| indexes.by_status.get(status))
            .flatten()
            .copied()
            .collect();
        for id in &all {
            if let Some(entry) = state.tasks.get_mut(id) {
                entry.owner_gone = true;
            }
        }
        for id in &waiting {
            state.cancel(*id, now_ms, expires_ms);
        }
        Ok(waiting.len() as u64)
    }

    async fn renew(&self, leases: &[Lease]) -> Result<Vec<bool>, StoreError> {
        let deadline_ms = self.policy.now().lease_deadline_ms;
        let mut state = self.state();
        let renewed = leases
            .iter()
            .map(|&lease| {
                let id = lease.task;
                if state.leased(lease).is_none() {
                    return false;
                }
                state.end_lease(id);
                state.leases.insert((deadline_ms, id));
                state.tasks.get_mut(&id).expect("leased").deadline_ms = deadline_ms;
                true
            })
            .collect();
        Ok(renewed)
    }

    async fn settle(
        &self,
        ended: &[(Lease, Outcome)],
        call: LeaseCall,
        wanted: Wanted,
    ) -> Result<Settled, StoreError> {
        let now = self.policy.now();
        let mut state = self.state();
        let finished = ended
            .iter()
            .map(|(lease, outcome)| state.finish(*lease, outcome.clone(), now))
            .collect();
        let [leased, newcomers] = match wanted.is_none() {
            true => Default::default(),
            false => state.lease(call, wanted, now, &self.policy.limits.kinds()),
        };
        Ok(Settled {
            finished,
            leased,
            newcomers,
            left: Backlog {
                users: state.ring.len() as u64,
                newcomers: state.fresh.len() as u64,
                parked_kinds: state.parked.values().filter(|p| !p.is_empty()).count() as u64,
                next_due_ms: state.delayed.first().map(|&(run_at, _)| run_at),
            },
        })
    }

    async fn release(&self, leases: &[Lease]) -> Result<u64, StoreError> {
        let limits = self.policy.limits.get();
        let mut state = self.state();
        let current: Vec<Lease> = leases
            .iter()
            .copied()
            .filter(|&lease| state.leased(lease).is_some())
            .collect();
        let released = current.len() as u64;
        state.send_back(current, limits, |state, id| {
            state.end_lease(id);
            let task = &mut state.tasks.get_mut(&id).expect("leased").task;
            task.attempts -= 1;
            task.started_at = None;
            state.set_status(id, TaskStatus::Queued);
        });
        Ok(released)
    }

    async fn reclaim(&self) -> Result<u64, StoreError> {
        let now = self.policy.now();
        let (now_ms, expires_ms, limits) = (now.now_ms, now.result_expires_ms, now.limits);
        let mut state = self.state();
        let lapsed: Vec<(i64, TaskId)> = state
            .leases
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .copied()
            .collect();
        let running = lapsed
            .iter()
            .map(|&(_, id)| Lease {
                task: id,
                user: state.tasks[&id].task.user_id,
                fence: Fence(state.tasks[&id].fence),
            })
            .collect();
        state.send_back(running, limits, |state, id| {
            state.end_lease(id);
            let task = &mut state.tasks.get_mut(&id).expect("leased").task;
            task.error = Some(LEASE_LAPSED.to_owned());
            if task.attempts < task.max_attempts {
                task.run_at = at(now_ms);
                state.set_status(id, TaskStatus::Failed);
            } else {
                state.finalize(id, TaskStatus::Dead, now_ms, expires_ms);
            }
        });
        Ok(lapsed.len() as u64)
    }

    async fn purge(&self) -> Result<u64, StoreError> {
        let now_ms = self.policy.clock.now_millis();
        let mut state = self.state();
        let expired: Vec<(i64, TaskId)> = state
            .expiry
            .iter()
            .take_while(|(expires, _)| *expires <= now_ms)
            .copied()
            .collect();
        for &(expires, id) in &expired {
            state.expiry.remove(&(expires, id));
            let Some(user) = state.tasks.get(&id).map(|entry| entry.task.user_id) else {
                continue;
            };
            state.forget(id);
            state.forget_if_empty(user);
        }
        while let Some(first) = state.idempotency_expiry.first().cloned() {
            if first.0 > now_ms {
                break;
            }
            state.idempotency_expiry.remove(&first);
            let (_, user, key) = first;
            state.idempotency.remove(&(user, key));
        }
        state
            .lease_calls
            .retain(|_, (deadline, _)| *deadline > now_ms);
        Ok(expired.len() as u64)
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        let state = self.state();
        let waiting = |u: &UserTasks| u.count(TaskStatus::Queued) + u.count(TaskStatus::Failed);
        let kinds = self.policy.limits.kinds();
        let kinds = kinds
            .keys()
            .map(|kind| KindLoad {
                kind: kind.clone(),
                running: state.kind_running.get(kind).copied().unwrap_or(0),
                parked: state.parked.get(kind).map_or(0, |ids| ids.len() as u64),
            })
            .collect();
        Ok(QueueStats {
            waiting: state.users.values().map(waiting).sum(),
            users_waiting: state.users.values().filter(|u| waiting(u) > 0).count() as u64,
            oldest_due_ms: state.due.first().map(|(run_at, _)| *run_at),
            kinds,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
