//! The worker pool: it supervises `queue.workers` task workers, and
//! `queue.newcomer_workers` more kept for users with nothing running, and
//! keeps them fed. One call to the store at a time both records how the
//! attempts that ended since the last call went and leases tasks for the
//! workers idle now (the store picks them round robin between users, and
//! for the newcomers' workers among users that have nothing running), so a
//! task costs a share of one call, however many workers there are. A user
//! who arrives while one heavy user keeps every other worker busy thus
//! starts at once instead of after a task's length. The pool
//! also renews the leases of running tasks and of outcomes not yet
//! recorded, takes back leases that lapsed anywhere (a crashed replica's),
//! purges expired results, grows or shrinks when told, and at shutdown
//! stops leasing, records what ended, and hands back what is unfinished.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, MessageResult,
    ResponseActFuture, Supervised, Supervisor, WrapFuture,
};
use tokio::sync::oneshot;

use super::parts::QueueParts;
use super::worker::{Ended, Run, TaskWorker};
use crate::domain::{Finished, Lease, LeaseCall, LeasedTask, Outcome, QueueStats, Wanted};
use crate::storage::StoreError;
use crate::tasks::TaskHandlers;

/// How often lapsed leases are taken back and expired results purged.
const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// The pool's figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Workers asked for (not counting the newcomers').
    pub workers: usize,
    /// Those running now.
    pub live: usize,
    /// Workers of either kind running a task.
    pub busy: usize,
}

/// Which tasks a worker takes: any user's, round robin, or only those of
/// users with nothing running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Any,
    Newcomers,
}

/// How many workers of one lane the pool is asked for and how many run,
/// shared with whoever reports them.
#[derive(Debug, Default)]
pub struct LaneSize {
    pub target: AtomicUsize,
    /// Each worker counts itself in when it starts and out when it stops.
    pub live: Arc<AtomicUsize>,
}

/// The sizes of both lanes.
#[derive(Debug, Default)]
pub struct PoolSizes {
    pub any: LaneSize,
    pub newcomers: LaneSize,
}

impl PoolSizes {
    pub fn new(any: usize, newcomers: usize) -> Self {
        let lane = |target| LaneSize {
            target: AtomicUsize::new(target),
            live: Arc::default(),
        };
        Self {
            any: lane(any),
            newcomers: lane(newcomers),
        }
    }

    pub fn lane(&self, lane: Lane) -> &LaneSize {
        match lane {
            Lane::Any => &self.any,
            Lane::Newcomers => &self.newcomers,
        }
    }
}

pub struct WorkerPool {
    parts: Arc<QueueParts>,
    handlers: Arc<TaskHandlers>,
    sizes: Arc<PoolSizes>,
    /// One per worker; at most each lane's target of them once the surplus
    /// of a shrink has finished what it was running.
    slots: Vec<Slot>,
    /// The id the next slot gets.
    next_slot: u64,
    /// Attempts that ended and are not yet recorded, oldest first.
    ended: Vec<Recording>,
    /// A settling call is out; no second one starts meanwhile.
    settling: bool,
    /// A settling call whose answer did not arrive, to be made again as it
    /// was: the store then answers what it did instead of doing it again.
    unanswered: Option<SettleCall>,
    /// Work was announced or an attempt ended while a call was out:
    /// settle again after it.
    rewake: bool,
    /// A reclaim-and-purge round is out.
    reaping: bool,
    /// Whether the last call to the store failed, so an outage is logged
    /// when it starts and when it ends, not at every poll.
    store_down: bool,
    /// Set by `Drain`: no more leasing; told when nothing runs or waits to
    /// be recorded.
    draining: Option<Option<oneshot::Sender<()>>>,
}

/// A worker and the lease of the task it runs, if any. Dropping the slot
/// drops the only address of the worker, which then stops for good.
struct Slot {
    /// Stable while slots come and go, unlike a position.
    id: u64,
    lane: Lane,
    worker: Addr<TaskWorker>,
    lease: Option<Held>,
}

#[derive(Clone, Copy)]
struct Held {
    lease: Lease,
    /// A renewal was refused: the task was taken back and runs elsewhere.
    lost: bool,
}

/// An ended attempt waiting to be recorded, its lease still renewed.
struct Recording {
    ended: Ended,
    held: Held,
}

/// One settling call, kept to be made again if its answer is lost.
struct SettleCall {
    recording: Vec<Recording>,
    call: LeaseCall,
    wanted: Wanted,
}

impl WorkerPool {
    pub fn new(parts: Arc<QueueParts>, handlers: Arc<TaskHandlers>, sizes: Arc<PoolSizes>) -> Self {
        Self {
            parts,
            handlers,
            sizes,
            slots: Vec::new(),
            next_slot: 0,
            ended: Vec::new(),
            settling: false,
            unanswered: None,
            rewake: false,
            reaping: false,
            store_down: false,
            draining: None,
        }
    }

    fn busy(&self) -> usize {
        self.slots.iter().filter(|s| s.lease.is_some()).count()
    }

    fn idle(&self, lane: Lane) -> usize {
        let idle = |s: &&Slot| s.lane == lane && s.lease.is_none();
        self.slots.iter().filter(idle).count()
    }

    fn status(&self) -> PoolStatus {
        PoolStatus {
            workers: self.sizes.any.target.load(Ordering::SeqCst),
            live: self.sizes.any.live.load(Ordering::SeqCst),
            busy: self.busy(),
        }
    }

    /// Starts or retires workers until each lane has its target: idle ones
    /// retire at once, busy ones when their attempt ends, and none while a
    /// call is out (its leases were asked for the idle ones).
    fn resize(&mut self) {
        for lane in [Lane::Any, Lane::Newcomers] {
            let size = self.sizes.lane(lane);
            let target = size.target.load(Ordering::SeqCst);
            let mut count = self.slots.iter().filter(|s| s.lane == lane).count();
            while count < target {
                let (parts, handlers) = (self.parts.clone(), self.handlers.clone());
                let live = size.live.clone();
                let worker = Supervisor::start(move |_| TaskWorker::new(parts, handlers, live));
                self.next_slot += 1;
                self.slots.push(Slot {
                    id: self.next_slot,
                    lane,
                    worker,
                    lease: None,
                });
                count += 1;
            }
            if self.settling {
                continue;
            }
            let mut surplus = count.saturating_sub(target);
            self.slots.retain(|slot| {
                let retire = surplus > 0 && slot.lane == lane && slot.lease.is_none();
                surplus -= usize::from(retire);
                !retire
            });
        }
    }

    fn store_answered(&mut self, outcome: Result<(), &StoreError>) {
        match (outcome, self.store_down) {
            (Ok(()), true) => {
                tracing::info!("the queue store answers again");
                self.store_down = false;
            }
            (Err(err), false) => {
                tracing::warn!(error = %err, "the queue store is not answering; retrying");
                self.store_down = true;
            }
            _ => {}
        }
    }

    /// Tells a waiting `Drain` that nothing runs, waits to be recorded, or
    /// is out in a call.
    fn notify_if_drained(&mut self) {
        if self.settling || self.busy() > 0 || !self.ended.is_empty() || self.unanswered.is_some() {
            return;
        }
        if let Some(drained) = self.draining.as_mut().and_then(Option::take) {
            let _ = drained.send(());
        }
    }

    /// Records the attempts that ended and leases tasks for every idle
    /// worker, in one call, unless a call is out.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        if self.settling {
            self.rewake = true;
            return;
        }
        // A call whose answer was lost is made again as it was, whatever
        // the pool's size now: what it leased must come back to a holder.
        let next = self.unanswered.take().or_else(|| {
            let wanted = match self.draining {
                Some(_) => Wanted::default(),
                None => Wanted {
                    any: self.idle(Lane::Any),
                    newcomers: self.idle(Lane::Newcomers),
                },
            };
            (!wanted.is_none() || !self.ended.is_empty()).then(|| SettleCall {
                recording: std::mem::take(&mut self.ended),
                call: LeaseCall::new(),
                wanted,
            })
        });
        let Some(settle) = next else {
            self.notify_if_drained();
            return;
        };
        self.settling = true;
        self.rewake = false;
        let parts = self.parts.clone();
        let outcomes: Vec<(Lease, Outcome)> = settle
            .recording
            .iter()
            .map(|r| (r.held.lease, r.ended.outcome.clone()))
            .collect();
        let (call, wanted) = (settle.call, settle.wanted);
        let answer = async move { parts.store.settle(&outcomes, call, wanted).await };
        ctx.spawn(answer.into_actor(self).map(move |settled, pool, ctx| {
            pool.store_answered(settled.as_ref().map(drop));
            let settled = match settled {
                Ok(settled) => settled,
                Err(_) => {
                    pool.unanswered = Some(settle);
                    pool.settle_over(false, ctx);
                    return;
                }
            };
            for (recording, finished) in settle.recording.into_iter().zip(settled.finished) {
                pool.recorded(recording.ended, finished);
            }
            // A lane that got all it asked for may find more waiting.
            let filled = |got: usize, asked: usize| asked > 0 && got == asked;
            let more = filled(settled.leased.len(), wanted.any)
                || filled(settled.newcomers.len(), wanted.newcomers)
                || pool.rewake
                || !pool.ended.is_empty();
            // Leased as the pool began to stop, or more than the workers
            // idle now (it shrank meanwhile): those go straight back.
            let mut surplus: Vec<Lease> = Vec::new();
            let leased = settled.leased.into_iter().map(|task| (task, Lane::Any));
            let newcomers = settled.newcomers.into_iter().map(|t| (t, Lane::Newcomers));
            for (task, lane) in leased.chain(newcomers) {
                let undispatched = match pool.draining {
                    Some(_) => Some(task),
                    None => pool.dispatch(task, lane, ctx),
                };
                surplus.extend(undispatched.as_ref().map(LeasedTask::lease));
            }
            let more = more && surplus.is_empty();
            pool.hand_back(surplus, ctx, move |pool, ctx| pool.settle_over(more, ctx));
        }));
    }

    /// What the store did with one attempt's outcome: counted, and told to
    /// other services if it is final.
    fn recorded(&mut self, ended: Ended, finished: Finished) {
        let metrics = &self.parts.metrics;
        match finished {
            Finished::Recorded(status) => {
                metrics.task_finished(ended.task.kind.as_str(), status, ended.took);
                if status.is_final() {
                    self.parts.task_finished(&ended.task, status);
                }
            }
            Finished::Stale => {
                metrics.fencing_rejected("finish");
                tracing::warn!(
                    task_id = %ended.task.id,
                    "the lease was taken back before this attempt ended; its outcome is refused"
                );
            }
        }
    }

    /// A settling call has ended: a shrink held back meanwhile can happen
    /// now, a drain waiting for it can end, and the next call can start.
    fn settle_over(&mut self, more: bool, ctx: &mut Context<Self>) {
        self.settling = false;
        self.resize();
        self.notify_if_drained();
        if more {
            self.settle(ctx);
        }
    }

    /// Returns leases to the store unfinished and uncounted (when there are
    /// any), then calls `then`.
    fn hand_back(
        &self,
        leases: Vec<Lease>,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
    ) {
        if leases.is_empty() {
            ctx.spawn(actix::fut::ready(()).map(move |(), pool, ctx| then(pool, ctx)));
            return;
        }
        let parts = self.parts.clone();
        let release = async move {
            if let Err(err) = parts.store.release(&leases).await {
                tracing::warn!(error = %err, "could not hand leases back; they will lapse");
            }
        };
        ctx.spawn(
            release
                .into_actor(self)
                .map(move |(), pool, ctx| then(pool, ctx)),
        );
    }

    /// Hands a leased task to an idle worker of `lane`; gives it back if
    /// none is idle.
    fn dispatch(
        &mut self,
        leased: LeasedTask,
        lane: Lane,
        ctx: &mut Context<Self>,
    ) -> Option<LeasedTask> {
        let idle = |s: &&mut Slot| s.lane == lane && s.lease.is_none();
        let Some(slot) = self.slots.iter_mut().find(idle) else {
            return Some(leased);
        };
        let held = Held {
            lease: leased.lease(),
            lost: false,
        };
        slot.lease = Some(held);
        let (slot_id, run) = (slot.id, slot.worker.send(Run(leased)));
        self.parts.metrics.workers_busy(self.busy());
        ctx.spawn(run.into_actor(self).map(move |ran, pool, ctx| {
            let held = pool
                .slots
                .iter_mut()
                .find(|s| s.id == slot_id)
                .and_then(|slot| slot.lease.take())
                .unwrap_or(held);
            match ran {
                Ok(ended) => pool.ended.push(Recording { ended, held }),
                // The worker is gone with the task: its lease will lapse
                // and the task run again.
                Err(err) => tracing::warn!(error = %err, "a task worker did not answer"),
            }
            // The surplus of a shrink retires as its attempts end.
            pool.resize();
            pool.parts.metrics.workers_busy(pool.busy());
            pool.settle(ctx);
        }));
        None
    }

    /// Extends the lease of every running task, and of every outcome not
    /// yet recorded, whose lease is still held.
    fn renew(&mut self, ctx: &mut Context<Self>) {
        let in_call = self.unanswered.iter().flat_map(|call| &call.recording);
        let held: Vec<Lease> = self
            .slots
            .iter()
            .filter_map(|s| s.lease)
            .chain(self.ended.iter().chain(in_call).map(|r| r.held))
            .filter(|held| !held.lost)
            .map(|held| held.lease)
            .collect();
        if held.is_empty() {
            return;
        }
        let parts = self.parts.clone();
        let renew = async move {
            let renewed = parts.store.renew(&held).await;
            renewed.map(|renewed| (held, renewed))
        };
        ctx.spawn(renew.into_actor(self).map(|outcome, pool, _| {
            pool.store_answered(outcome.as_ref().map(drop));
            let Ok((held, renewed)) = outcome else { return };
            for (lease, renewed) in held.into_iter().zip(renewed) {
                if !renewed {
                    pool.lost(lease);
                }
            }
        }));
    }

    /// A renewal of `lease` was refused: the task was taken back and runs
    /// elsewhere, unless it merely finished while the renewal was out.
    fn lost(&mut self, lease: Lease) {
        let running = self.slots.iter_mut().filter_map(|s| s.lease.as_mut());
        let in_call = self
            .unanswered
            .iter_mut()
            .flat_map(|call| &mut call.recording);
        let recording = self.ended.iter_mut().chain(in_call).map(|r| &mut r.held);
        let Some(held) = running
            .chain(recording)
            .find(|h| h.lease == lease && !h.lost)
        else {
            return;
        };
        held.lost = true;
        self.parts.metrics.fencing_rejected("renew");
        tracing::warn!(
            task_id = %lease.task,
            "lease lost: the task was taken back to run elsewhere; this attempt's outcome will \
             be refused"
        );
    }

    /// Takes back lapsed leases (of any replica), purges expired results,
    /// and records the queue's figures.
    fn reap(&mut self, ctx: &mut Context<Self>) {
        if self.reaping {
            return;
        }
        self.reaping = true;
        let parts = self.parts.clone();
        let reap = async move {
            let reclaimed = parts.store.reclaim().await?;
            let purged = parts.store.purge().await?;
            let QueueStats {
                waiting,
                users_waiting,
                oldest_due_ms,
                kinds,
            } = parts.store.stats().await?;
            parts.metrics.kind_loads(&kinds);
            let now = parts.clock.now_millis();
            let oldest_wait = oldest_due_ms.map_or(0.0, |due| (now - due).max(0) as f64 / 1e3);
            parts
                .metrics
                .queue_depth(waiting, users_waiting, oldest_wait);
            Ok::<_, StoreError>((reclaimed, purged))
        };
        self.parts.metrics.workers_busy(self.busy());
        ctx.spawn(reap.into_actor(self).map(|outcome, pool, ctx| {
            pool.reaping = false;
            pool.store_answered(outcome.as_ref().map(drop));
            if let Ok((reclaimed, purged)) = outcome {
                if purged > 0 {
                    tracing::debug!(purged, "purged expired tasks");
                }
                if reclaimed > 0 {
                    tracing::info!(reclaimed, "took back lapsed leases; those tasks run again");
                    pool.settle(ctx);
                }
            }
        }));
    }
}

impl Actor for WorkerPool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // A restart keeps the workers: they are actors of their own.
        if self.slots.is_empty() {
            self.resize();
        }
        let config = &self.parts.config;
        ctx.run_interval(config.poll_interval, |pool, ctx| pool.settle(ctx));
        // Three renewals per lease period: a lease survives two lost ones.
        ctx.run_interval(config.lease_for / 3, |pool, ctx| pool.renew(ctx));
        ctx.run_interval(REAP_INTERVAL, |pool, ctx| pool.reap(ctx));
        self.parts.metrics.workers_busy(0);
        // The queue's figures from the start, not a reap interval later.
        self.reap(ctx);
        self.settle(ctx);
    }
}

impl Supervised for WorkerPool {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(actor = "WorkerPool", "restarting");
        self.parts.metrics.actor_restarted("WorkerPool");
        // The old context's futures are gone, and with them the answers
        // from the workers; their tasks' leases lapse and are taken back.
        for slot in &mut self.slots {
            slot.lease = None;
        }
        self.settling = false;
        self.reaping = false;
    }
}

/// New work was enqueued: lease it if a worker is idle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

impl Handler<Wake> for WorkerPool {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.settle(ctx);
    }
}

/// Grow or shrink to this many workers, and this many for newcomers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resize {
    pub any: usize,
    pub newcomers: usize,
}

impl Handler<Resize> for WorkerPool {
    type Result = ();

    fn handle(&mut self, msg: Resize, ctx: &mut Context<Self>) {
        let sizes = &self.sizes;
        sizes.any.target.store(msg.any, Ordering::SeqCst);
        sizes
            .newcomers
            .target
            .store(msg.newcomers, Ordering::SeqCst);
        self.resize();
        self.settle(ctx);
    }
}

/// Report the pool's figures.
#[derive(Message)]
#[rtype(result = "PoolStatus")]
pub struct Status;

impl Handler<Status> for WorkerPool {
    type Result = MessageResult<Status>;

    fn handle(&mut self, _: Status, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}

/// Stop leasing, wait up to `timeout` for running tasks to end and be
/// recorded, then hand back the leases of those still running. Replies how
/// many were handed back.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Drain {
    pub timeout: Duration,
}

impl Handler<Drain> for WorkerPool {
    type Result = ResponseActFuture<Self, u64>;

    fn handle(&mut self, msg: Drain, ctx: &mut Context<Self>) -> Self::Result {
        let (drained, idle) = oneshot::channel();
        self.draining = Some(Some(drained));
        self.settle(ctx);
        let wait = async move {
            let _ = tokio::time::timeout(msg.timeout, idle).await;
        };
        Box::pin(wait.into_actor(self).then(|(), pool, _| {
            let mut unfinished: Vec<Lease> = Vec::new();
            for held in pool.slots.iter_mut().filter_map(|s| s.lease.as_mut()) {
                if !held.lost {
                    unfinished.push(held.lease);
                    // Handed back: no more renewals for it.
                    held.lost = true;
                }
            }
            let parts = pool.parts.clone();
            async move {
                match parts.store.release(&unfinished).await {
                    Ok(released) => released,
                    Err(err) => {
                        tracing::warn!(
                            error = %err,
                            "could not hand back unfinished leases; they will lapse instead"
                        );
                        0
                    }
                }
            }
            .into_actor(pool)
        }))
    }
}
