//! A queue spread over partitions (`queue.partitions`). A user's tasks all
//! live in one partition, picked by their id, and each partition is a whole
//! queue of its own (its ring, indexes, counters and fences) under its own
//! hash tag, so that a Redis Cluster spreads the partitions over its
//! masters and no script touches two of them. What concerns one user goes
//! to their partition; a look across users asks every partition and merges
//! the answers.
//!
//! Leasing is fair over the whole queue, not only within each partition: a
//! call leases from the partition whose ready users have had the fewest
//! turns so far (stride scheduling: a partition's `pass` grows by the tasks
//! it gave over the users it had ready), at most a turn for each of its
//! users while other partitions have work too, and goes on to the next
//! until it has what it asked for or every partition with work has been
//! asked. Within a round every ready user thus gets a turn, though not in
//! the order users arrived across partitions (each partition keeps that
//! order among its own). This replica learns what each partition has left
//! from every answer and from its own writes; a partition that had nothing
//! is asked again once a delayed task of its falls due, at every call while
//! it has tasks parked by their kind's limits (one finishing anywhere may
//! make room), after a change of limits (held tasks may run), or after
//! [`RECHECK_MS`] for work other replicas queued there.
//!
//! A call sent again (its answer lost) makes the same asks, each with its
//! own call id, and no more: each partition answers what that ask leased,
//! and an ask that leased nothing asks for nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::anyhow;
use async_trait::async_trait;
use futures_util::future::try_join_all;
use uuid::Uuid;

use super::{QueuePolicy, QueueStore, SharedLimits};
use crate::clock::Clock;
use crate::domain::{
    Backlog, Bulk, Cancelled, CancelledTask, Enqueued, Finished, Idempotency, KindLimits, KindLoad,
    Lease, LeaseCall, LeasedTask, Limits, NewTask, Outcome, Page, QueueStats, Retried, Settled,
    Task, TaskCounts, TaskFilter, TaskId, UserId, UserLoad, Wanted,
};
use crate::storage::StoreError;

/// How long a partition with nothing to lease, as this replica last heard,
/// goes unasked: other replicas may have queued work there since.
const RECHECK_MS: i64 = 250;

/// How many turns (tasks per ready user) ahead of the partition furthest
/// behind one with outcomes to record may be and still be leased from: the
/// call that records them then leases too, one call instead of two, at a
/// bounded cost to fairness.
const SLACK: f64 = 1.0;

/// Lease calls remembered, with the asks each made, so that one sent again
/// is made again alike (the pool sends only its latest again).
const REMEMBERED_CALLS: usize = 64;

/// How long a partition with tasks parked by their kind's limits goes
/// unasked when nothing of it finished meanwhile: a kind's rate frees room
/// with time alone.
const PARKED_RECHECK_MS: i64 = 50;

pub struct PartitionedQueue {
    parts: Vec<Arc<dyn QueueStore>>,
    clock: Clock,
    limits: Arc<SharedLimits>,
    planner: Mutex<Planner>,
}

impl PartitionedQueue {
    /// A queue over `parts`, at least one, all applying `policy`.
    pub fn new(parts: Vec<Arc<dyn QueueStore>>, policy: &QueuePolicy) -> Self {
        assert!(!parts.is_empty(), "a queue has at least one partition");
        let planner = Planner {
            standings: vec![Standing::default(); parts.len()],
            calls: VecDeque::new(),
            limits: None,
        };
        Self {
            parts,
            clock: policy.clock.clone(),
            limits: policy.limits.clone(),
            planner: Mutex::new(planner),
        }
    }

    /// The partition that holds `user`'s tasks.
    fn part_of(&self, user: UserId) -> usize {
        user.shard(self.parts.len())
    }

    fn store_of(&self, user: UserId) -> &dyn QueueStore {
        &*self.parts[self.part_of(user)]
    }

    fn planner(&self) -> MutexGuard<'_, Planner> {
        // Every change to the planner is one step: sound after a panic.
        self.planner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The partitions `filter` may match tasks in.
    fn parts_for(&self, filter: &TaskFilter) -> Vec<&dyn QueueStore> {
        match filter.user {
            Some(user) => vec![self.store_of(user)],
            None => self.parts.iter().map(|part| &**part).collect(),
        }
    }

    /// Sorts `items` into one group per partition by `user_of`, keeping
    /// their order, with each item's place in `items`.
    fn by_part<T: Clone>(&self, items: &[T], user_of: impl Fn(&T) -> UserId) -> Grouped<T> {
        let mut groups = vec![(Vec::new(), Vec::new()); self.parts.len()];
        for (place, item) in items.iter().enumerate() {
            let (group, places) = &mut groups[self.part_of(user_of(item))];
            group.push(item.clone());
            places.push(place);
        }
        groups
    }
}

/// Items grouped by partition, each group with the items' places in the
/// list they came from.
type Grouped<T> = Vec<(Vec<T>, Vec<usize>)>;

/// The earlier of two times, if either is set.
fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Puts each partition's answers back in the places their questions came
/// from.
fn in_places<T>(
    places: &[usize],
    answers: Vec<T>,
    into: &mut [Option<T>],
) -> Result<(), StoreError> {
    if answers.len() != places.len() {
        return Err(StoreError::Failed(anyhow!(
            "a partition answered {} of {}",
            answers.len(),
            places.len()
        )));
    }
    for (&place, answer) in places.iter().zip(answers) {
        into[place] = Some(answer);
    }
    Ok(())
}

fn all_placed<T>(answers: Vec<Option<T>>) -> Result<Vec<T>, StoreError> {
    answers
        .into_iter()
        .collect::<Option<Vec<T>>>()
        .ok_or_else(|| StoreError::Failed(anyhow!("a partition left a question unanswered")))
}

/// Where leasing stands in each partition, as this replica saw it.
struct Planner {
    standings: Vec<Standing>,
    /// The asks of the latest calls, oldest first.
    calls: VecDeque<(LeaseCall, Vec<Ask>)>,
    /// The limits the standings were heard under.
    limits: Option<(Limits, Arc<KindLimits>)>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Standing {
    /// What the partition had left at its last answer.
    left: Backlog,
    /// Turns given: the tasks of each lease over the users then ready.
    pass: f64,
    /// When that answer came (ms); never, at first.
    heard_ms: Option<i64>,
    /// Work this replica gave it, counted: an answer to a call sent before
    /// the latest may not have seen it.
    announced: u64,
    /// Whether outcomes were recorded in it since it was last asked for
    /// leases: a task of a parked kind may have made room.
    finished_since_lease: bool,
}

impl Standing {
    /// Whether the partition may have some of `wanted` at `now_ms`.
    fn worth_asking(&self, wanted: Wanted, now_ms: i64) -> bool {
        let Some(heard_ms) = self.heard_ms else {
            return true;
        };
        let parked_may_start = self.left.parked_kinds > 0
            && (self.finished_since_lease || now_ms - heard_ms >= PARKED_RECHECK_MS);
        (wanted.any > 0 && self.left.users > 0)
            || (wanted.newcomers > 0 && self.left.newcomers > 0)
            || parked_may_start
            || self.left.next_due_ms.is_some_and(|due| due <= now_ms)
            || now_ms - heard_ms >= RECHECK_MS
    }
}

/// One partition asked for leases in a call.
#[derive(Debug, Clone, Copy)]
struct Ask {
    part: usize,
    wanted: Wanted,
    /// How many it leased; unknown while its answer has not come.
    got: Option<usize>,
}

/// A partition's answer, as the planner takes it in.
struct Answer {
    /// What it was asked for (none: outcomes only).
    asked: Wanted,
    got: usize,
    recorded: bool,
    left: Backlog,
    /// The partition's announcements when the call was sent.
    announced: u64,
}

impl Planner {
    /// Forgets what it heard if the limits changed since: a lifted bound
    /// may let held or parked tasks run in any partition.
    fn under(&mut self, limits: Limits, kinds: Arc<KindLimits>) {
        let same = self
            .limits
            .as_ref()
            .is_some_and(|(was, was_kinds)| *was == limits && Arc::ptr_eq(was_kinds, &kinds));
        if !same {
            self.standings.iter_mut().for_each(|s| s.heard_ms = None);
            self.limits = Some((limits, kinds));
        }
    }

    /// The partition to ask next for `wanted`, among those not `done`
    /// (answered short in this call): the one whose users have had the
    /// fewest turns, or one `recording` outcomes within [`SLACK`] of it.
    /// While another partition is worth asking too, it is asked for a
    /// turn per user it has ready at most.
    fn next(&self, wanted: Wanted, done: &[bool], recording: &[bool], now_ms: i64) -> Option<Ask> {
        if wanted.is_none() {
            return None;
        }
        let by_pass =
            |a: &(usize, &Standing), b: &(usize, &Standing)| a.1.pass.total_cmp(&b.1.pass);
        let candidates = self
            .standings
            .iter()
            .enumerate()
            .filter(|&(part, standing)| !done[part] && standing.worth_asking(wanted, now_ms));
        let (behind, furthest) = candidates.clone().min_by(by_pass)?;
        let others = candidates.clone().count() > 1;
        let part = candidates
            .filter(|&(part, standing)| recording[part] && standing.pass <= furthest.pass + SLACK)
            .min_by(by_pass)
            .map_or(behind, |(part, _)| part);
        let turns = self.standings[part].left.users.max(1) as usize;
        let wanted = match others {
            true => Wanted {
                any: wanted.any.min(turns),
                newcomers: wanted.newcomers.min(turns),
            },
            false => wanted,
        };
        Some(Ask {
            part,
            wanted,
            got: None,
        })
    }

    /// The fewest turns among partitions with users ready: where one that
    /// had none starts from when it has some again, so that it neither
    /// makes up for turns it had no use for nor waits for the others.
    fn floor(&self) -> f64 {
        self.standings
            .iter()
            .filter(|standing| standing.left.users > 0)
            .map(|standing| standing.pass)
            .min_by(f64::total_cmp)
            .unwrap_or(0.0)
    }

    /// Takes in partition `part`'s answer. Its turns are counted over the
    /// users it had ready before the lease (or after, if more).
    fn heard(&mut self, part: usize, answer: Answer, now_ms: i64) {
        self.rejoin(part);
        let standing = &mut self.standings[part];
        let ready = standing.left.users.max(answer.left.users).max(1);
        standing.pass += answer.got as f64 / ready as f64;
        standing.left = answer.left;
        standing.heard_ms = Some(now_ms);
        match answer.asked.is_none() {
            true => standing.finished_since_lease |= answer.recorded,
            false => standing.finished_since_lease = false,
        }
        if standing.announced != answer.announced {
            standing.left.users = standing.left.users.max(1);
            standing.left.newcomers = standing.left.newcomers.max(1);
        }
    }

    /// Notes work this replica gave partition `part`: it is worth asking.
    fn announce(&mut self, part: usize) {
        self.rejoin(part);
        let standing = &mut self.standings[part];
        standing.announced += 1;
        standing.left.users = standing.left.users.max(1);
        standing.left.newcomers = standing.left.newcomers.max(1);
    }

    /// Brings a partition that had no users ready up to the floor.
    fn rejoin(&mut self, part: usize) {
        if self.standings[part].left.users == 0 {
            let floor = self.floor();
            let pass = &mut self.standings[part].pass;
            *pass = pass.max(floor);
        }
    }

    /// The asks `call` made, if it was made before.
    fn made_before(&mut self, call: LeaseCall) -> Option<VecDeque<Ask>> {
        let found = self.calls.iter().position(|(made, _)| *made == call)?;
        self.calls.remove(found).map(|(_, asks)| asks.into())
    }

    fn remember(&mut self, call: LeaseCall, asks: Vec<Ask>) {
        if self.calls.len() == REMEMBERED_CALLS {
            self.calls.pop_front();
        }
        self.calls.push_back((call, asks));
    }

    /// What every partition had left at its last answer.
    fn left(&self) -> Backlog {
        self.standings
            .iter()
            .fold(Backlog::default(), |sum, standing| Backlog {
                users: sum.users + standing.left.users,
                newcomers: sum.newcomers + standing.left.newcomers,
                parked_kinds: sum.parked_kinds.max(standing.left.parked_kinds),
                next_due_ms: earliest(sum.next_due_ms, standing.left.next_due_ms),
            })
    }
}

/// What one settling call gathers from the partitions it asks.
struct Gathered {
    finished: Vec<Option<Finished>>,
    leased: Vec<LeasedTask>,
    newcomers: Vec<LeasedTask>,
    /// The asks made, in order, to be made again alike if the answer is lost.
    asks: Vec<Ask>,
}

impl PartitionedQueue {
    /// Asks partitions in turn for what `wanted` still lacks (or, for a
    /// call made before, makes its asks again and no more), recording each
    /// partition's outcomes in the first call to it: alongside the first
    /// ask for partitions not asked, and at the end for any left.
    async fn gather(
        &self,
        gathered: &mut Gathered,
        mut outcomes: Grouped<(Lease, Outcome)>,
        call: LeaseCall,
        wanted: Wanted,
        replay: Option<VecDeque<Ask>>,
    ) -> Result<(), StoreError> {
        let replaying = replay.is_some();
        let mut replay = replay.unwrap_or_default();
        let parts = self.parts.len();
        // Partitions that answered short in this call: asked no more.
        let mut done = vec![false; parts];
        let mut remaining = wanted;
        let mut first = true;
        loop {
            let now_ms = self.clock.now_millis();
            let recording: Vec<bool> = outcomes.iter().map(|(o, _)| !o.is_empty()).collect();
            let ask = match replaying {
                true => replay.pop_front(),
                false => self.planner().next(remaining, &done, &recording, now_ms),
            };
            let mut calls = Vec::new();
            if let Some(ask) = ask {
                gathered.asks.push(Ask { got: None, ..ask });
                // An ask that leased nothing the first time asks for
                // nothing again: what it would lease now was not wanted.
                let wanted = match ask.got {
                    Some(0) => Wanted::default(),
                    _ => ask.wanted,
                };
                calls.push((ask.part, wanted));
            }
            // Outcomes go with the first call to their partition; at the
            // first ask (or, with none, now) every partition not asked
            // records its own alongside.
            if first || ask.is_none() {
                let others = (0..parts).filter(|&p| Some(p) != ask.map(|a| a.part));
                calls.extend(
                    others
                        .filter(|&p| !outcomes[p].0.is_empty())
                        .map(|p| (p, Wanted::default())),
                );
            }
            first = false;
            let sent: Vec<_> = calls
                .iter()
                .map(|&(part, _)| std::mem::take(&mut outcomes[part]))
                .collect();
            let announced: Vec<u64> = {
                let planner = self.planner();
                let at = |part: usize| planner.standings[part].announced;
                calls.iter().map(|&(part, _)| at(part)).collect()
            };
            // Each ask has its own call id (the first the call's own), so
            // that a partition asked twice leases twice, and the asks of a
            // call made again answer what they leased the first time.
            let ask_call = LeaseCall(Uuid::from_u128(
                call.0.as_u128() ^ gathered.asks.len().saturating_sub(1) as u128,
            ));
            let answers = try_join_all(calls.iter().zip(&sent).map(
                |(&(part, wanted), (ended, _))| self.parts[part].settle(ended, ask_call, wanted),
            ))
            .await?;
            let now_ms = self.clock.now_millis();
            let answered = calls.iter().zip(&sent).zip(announced).zip(answers);
            for (((&(part, asked), (ended, places)), announced), settled) in answered {
                in_places(places, settled.finished, &mut gathered.finished)?;
                let got = settled.leased.len() + settled.newcomers.len();
                done[part] |=
                    settled.leased.len() < asked.any || settled.newcomers.len() < asked.newcomers;
                if ask.is_some_and(|ask| ask.part == part)
                    && let Some(made) = gathered.asks.last_mut()
                {
                    made.got = Some(got);
                }
                let answer = Answer {
                    asked,
                    got,
                    recorded: !ended.is_empty(),
                    left: settled.left,
                    announced,
                };
                self.planner().heard(part, answer, now_ms);
                remaining.any = remaining.any.saturating_sub(settled.leased.len());
                remaining.newcomers = remaining.newcomers.saturating_sub(settled.newcomers.len());
                gathered.leased.extend(settled.leased);
                gathered.newcomers.extend(settled.newcomers);
            }
            if ask.is_none() {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl QueueStore for PartitionedQueue {
    async fn enqueue_many(
        &self,
        tasks: Vec<(NewTask, Option<Idempotency>)>,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let count = tasks.len();
        let groups = self.by_part(&tasks, |(new, _)| new.user_id);
        let asked = groups
            .into_iter()
            .enumerate()
            .filter(|(_, (group, _))| !group.is_empty())
            .map(|(part, (group, places))| async move {
                let answers = self.parts[part].enqueue_many(group).await?;
                self.planner().announce(part);
                Ok::<_, StoreError>((places, answers))
            });
        let mut enqueued = std::iter::repeat_with(|| None)
            .take(count)
            .collect::<Vec<_>>();
        for (places, answers) in try_join_all(asked).await? {
            in_places(&places, answers, &mut enqueued)?;
        }
        all_placed(enqueued)
    }

    async fn get(&self, user: UserId, id: TaskId) -> Result<Option<Task>, StoreError> {
        self.store_of(user).get(user, id).await
    }

    /// Every partition's page, merged newest first. A partition that
    /// stopped short of the others (a full page, or its bound of looks)
    /// may hold older tasks not yet seen: the page ends where the first of
    /// them stopped, and goes on from there.
    async fn scan(
        &self,
        filter: &TaskFilter,
        before: Option<TaskId>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let parts = self.parts_for(filter);
        let pages = try_join_all(parts.iter().map(|part| part.scan(filter, before, limit))).await?;
        let stop = pages.iter().filter_map(|page| page.next).max();
        let mut items: Vec<Task> = pages
            .into_iter()
            .flat_map(|page| page.items)
            .filter(|task| stop.is_none_or(|stop| task.id >= stop))
            .collect();
        items.sort_unstable_by_key(|task| std::cmp::Reverse(task.id));
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|task| task.id)
        } else {
            stop
        };
        Ok(Page { items, next })
    }

    async fn retry(&self, id: TaskId) -> Result<Retried, StoreError> {
        for (part, store) in self.parts.iter().enumerate() {
            match store.retry(id).await? {
                Retried::NotFound => continue,
                found => {
                    self.planner().announce(part);
                    return Ok(found);
                }
            }
        }
        Ok(Retried::NotFound)
    }

    async fn retry_matching(&self, filter: &TaskFilter) -> Result<Bulk, StoreError> {
        let mut total = Bulk::default();
        for part in 0..self.parts.len() {
            if filter.user.is_some_and(|user| self.part_of(user) != part) {
                continue;
            }
            let bulk = self.parts[part].retry_matching(filter).await?;
            if bulk.changed > 0 {
                self.planner().announce(part);
            }
            total.matched += bulk.matched;
            total.changed += bulk.changed;
        }
        Ok(total)
    }

    async fn cancel_matching(
        &self,
        filter: &TaskFilter,
    ) -> Result<(Bulk, Vec<CancelledTask>), StoreError> {
        let (mut total, mut cancelled) = (Bulk::default(), Vec::new());
        for part in self.parts_for(filter) {
            let (bulk, tasks) = part.cancel_matching(filter).await?;
            total.matched += bulk.matched;
            total.changed += bulk.changed;
            cancelled.extend(tasks);
        }
        Ok((total, cancelled))
    }

    async fn pause(&self, user: UserId) -> Result<bool, StoreError> {
        self.store_of(user).pause(user).await
    }

    async fn resume(&self, user: UserId) -> Result<bool, StoreError> {
        let resumed = self.store_of(user).resume(user).await?;
        if resumed {
            self.planner().announce(self.part_of(user));
        }
        Ok(resumed)
    }

    async fn is_paused(&self, user: UserId) -> Result<bool, StoreError> {
        self.store_of(user).is_paused(user).await
    }

    async fn busiest(&self, most: usize) -> Result<Vec<UserLoad>, StoreError> {
        let loads = try_join_all(self.parts.iter().map(|part| part.busiest(most))).await?;
        let mut loads: Vec<UserLoad> = loads.into_iter().flatten().collect();
        loads.sort_by_key(|load| std::cmp::Reverse(load.waiting));
        loads.truncate(most);
        Ok(loads)
    }

    async fn counts(&self, user: UserId) -> Result<TaskCounts, StoreError> {
        self.store_of(user).counts(user).await
    }

    async fn cancel(&self, user: UserId, id: TaskId) -> Result<Cancelled, StoreError> {
        self.store_of(user).cancel(user, id).await
    }

    async fn cancel_all(&self, user: UserId) -> Result<u64, StoreError> {
        self.store_of(user).cancel_all(user).await
    }

    async fn settle(
        &self,
        ended: &[(Lease, Outcome)],
        call: LeaseCall,
        wanted: Wanted,
    ) -> Result<Settled, StoreError> {
        let outcomes = self.by_part(ended, |(lease, _)| lease.user);
        let replay = {
            let mut planner = self.planner();
            planner.under(self.limits.get(), self.limits.kinds());
            planner.made_before(call)
        };
        let mut gathered = Gathered {
            finished: vec![None; ended.len()],
            leased: Vec::new(),
            newcomers: Vec::new(),
            asks: Vec::new(),
        };
        let first_time = replay.clone();
        let answered = self
            .gather(&mut gathered, outcomes, call, wanted, replay)
            .await;
        // Sent again, a call is remembered with all its asks, each with
        // what it leased this time if it was answered.
        let asks = match first_time {
            Some(asks) => {
                let mut asks = Vec::from(asks);
                for (made, again) in asks.iter_mut().zip(&gathered.asks) {
                    made.got = again.got.or(made.got);
                }
                asks
            }
            None => gathered.asks,
        };
        if !asks.is_empty() {
            self.planner().remember(call, asks);
        }
        answered?;
        Ok(Settled {
            finished: all_placed(gathered.finished)?,
            leased: gathered.leased,
            newcomers: gathered.newcomers,
            left: self.planner().left(),
        })
    }

    async fn renew(&self, leases: &[Lease]) -> Result<Vec<bool>, StoreError> {
        let groups = self.by_part(leases, |lease| lease.user);
        let asked = groups
            .iter()
            .enumerate()
            .filter(|(_, (group, _))| !group.is_empty())
            .map(|(part, (group, places))| async move {
                Ok::<_, StoreError>((places, self.parts[part].renew(group).await?))
            });
        let mut renewed = vec![None; leases.len()];
        for (places, answers) in try_join_all(asked).await? {
            in_places(places, answers, &mut renewed)?;
        }
        all_placed(renewed)
    }

    async fn release(&self, leases: &[Lease]) -> Result<u64, StoreError> {
        let groups = self.by_part(leases, |lease| lease.user);
        let released = try_join_all(
            groups
                .iter()
                .enumerate()
                .filter(|(_, (group, _))| !group.is_empty())
                .map(|(part, (group, _))| self.parts[part].release(group)),
        )
        .await?;
        for (part, (group, _)) in groups.iter().enumerate() {
            if !group.is_empty() {
                self.planner().announce(part);
            }
        }
        Ok(released.into_iter().sum())
    }

    async fn reclaim(&self) -> Result<u64, StoreError> {
        let reclaimed = try_join_all(self.parts.iter().map(|part| part.reclaim())).await?;
        for (part, &count) in reclaimed.iter().enumerate() {
            if count > 0 {
                self.planner().announce(part);
            }
        }
        Ok(reclaimed.into_iter().sum())
    }

    async fn purge(&self) -> Result<u64, StoreError> {
        let purged = try_join_all(self.parts.iter().map(|part| part.purge())).await?;
        Ok(purged.into_iter().sum())
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        let stats = try_join_all(self.parts.iter().map(|part| part.stats())).await?;
        stats
            .into_iter()
            .reduce(|sum, part| QueueStats {
                waiting: sum.waiting + part.waiting,
                users_waiting: sum.users_waiting + part.users_waiting,
                oldest_due_ms: earliest(sum.oldest_due_ms, part.oldest_due_ms),
                kinds: sum
                    .kinds
                    .into_iter()
                    .zip(part.kinds)
                    .map(|(sum, part)| KindLoad {
                        running: sum.running + part.running,
                        parked: sum.parked + part.parked,
                        ..sum
                    })
                    .collect(),
            })
            .ok_or_else(|| StoreError::Failed(anyhow!("a queue without partitions")))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.parts[0].ping().await
    }

    fn name(&self) -> &'static str {
        self.parts[0].name()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use serde_json::json;

    use super::*;
    use crate::config::Settings;
    use crate::domain::{TaskKind, TaskRequest};
    use crate::storage::MemoryQueueStore;

    /// A memory partition whose next lease call, once `lose` is set, runs
    /// but loses its answer, as a dropped connection would.
    struct Lossy {
        inner: MemoryQueueStore,
        lose: AtomicBool,
    }

    crate::storage::queue_store_settling_with!(Lossy, inner, settle_lossily);

    impl Lossy {
        async fn settle_lossily(
            &self,
            ended: &[(Lease, Outcome)],
            call: LeaseCall,
            wanted: Wanted,
        ) -> Result<Settled, StoreError> {
            let settled = self.inner.settle(ended, call, wanted).await?;
            if !wanted.is_none() && self.lose.swap(false, Ordering::SeqCst) {
                return Err(StoreError::Unavailable(anyhow!("connection reset")));
            }
            Ok(settled)
        }
    }

    fn new_task(user: UserId) -> (NewTask, Option<Idempotency>) {
        let request = TaskRequest {
            kind: TaskKind::parse("echo").unwrap(),
            payload: json!({}),
            max_attempts: 3,
            delay: std::time::Duration::ZERO,
            trace_parent: None,
        };
        let new = NewTask {
            id: TaskId::new(),
            user_id: user,
            created_at: chrono::Utc::now(),
            request,
        };
        (new, None)
    }

    /// A user whose tasks `parts` partitions keep in `part`.
    fn user_in(part: usize, parts: usize) -> UserId {
        std::iter::repeat_with(UserId::new)
            .find(|user| user.shard(parts) == part)
            .unwrap()
    }

    #[actix_web::test]
    async fn a_call_sent_again_after_lost_answers_leases_what_it_leased_and_no_more() {
        let policy = QueuePolicy::new(&Settings::embedded_default().queue, Clock::system());
        let lossy: Vec<Arc<Lossy>> = (0..4)
            .map(|_| {
                Arc::new(Lossy {
                    inner: MemoryQueueStore::new(policy.clone()),
                    lose: AtomicBool::new(false),
                })
            })
            .collect();
        let parts = lossy.iter().map(|p| p.clone() as Arc<dyn QueueStore>);
        let queue = PartitionedQueue::new(parts.collect(), &policy);
        // Work in partitions 1, 2 and 3; none in 0, asked first.
        let users: Vec<UserId> = (0..4).map(|part| user_in(part, 4)).collect();
        for user in &users[1..] {
            queue.enqueue_many(vec![new_task(*user)]).await.unwrap();
        }
        let call = LeaseCall::new();

        // The ask to partition 3 leases, and its answer is lost; asked
        // again, partition 2's answer is lost too.
        lossy[3].lose.store(true, Ordering::SeqCst);
        assert!(queue.settle(&[], call, Wanted::any(3)).await.is_err());
        lossy[2].lose.store(true, Ordering::SeqCst);
        assert!(queue.settle(&[], call, Wanted::any(3)).await.is_err());
        // Partition 0, which had nothing, has work when the call comes again.
        queue.enqueue_many(vec![new_task(users[0])]).await.unwrap();
        let settled = queue.settle(&[], call, Wanted::any(3)).await.unwrap();

        let mut owners: Vec<UserId> = settled.leased.iter().map(|l| l.task.user_id).collect();
        owners.sort();
        let mut with_work = users[1..].to_vec();
        with_work.sort();
        assert_eq!(owners, with_work, "each leased once, and nothing new");
        for (part, user) in users.iter().enumerate() {
            let counts = queue.counts(*user).await.unwrap();
            assert_eq!(counts.running, u64::from(part > 0), "partition {part}");
            assert_eq!(counts.queued, u64::from(part == 0), "partition {part}");
        }
    }
}
