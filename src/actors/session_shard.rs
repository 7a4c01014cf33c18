//! One shard of the sessions: an actor owning what its shard does on a
//! timer. With sessions in memory it sweeps its table (which the session
//! manager reads and writes under the table's lock). With sessions in Redis
//! it writes the uses this replica served from its shard's copies, drops
//! copies that lapsed, and — one shard per replica — sweeps Redis.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::{Actor, ActorFutureExt as _, AsyncContext, Context, Supervised, WrapFuture as _};

use crate::clock::Clock;
use crate::domain::SessionTable;
use crate::storage::{RedisSessions, SESSION_FLUSH_INTERVAL};
use crate::telemetry::Metrics;

/// What a shard tends.
pub enum ShardWork {
    /// A table of its own: one node.
    Local(Arc<Mutex<SessionTable>>),
    /// Its share of this replica's copies of the sessions in Redis; the one
    /// marked `sweeps` also sweeps Redis.
    Shared {
        sessions: Arc<RedisSessions>,
        shard: usize,
        sweeps: bool,
    },
}

pub struct SessionShard {
    work: ShardWork,
    clock: Clock,
    sweep_interval: Duration,
    /// A write of uses to Redis is under way.
    flushing: bool,
    /// A sweep of Redis is under way.
    sweeping: bool,
    metrics: Metrics,
}

impl SessionShard {
    pub fn new(work: ShardWork, sweep_interval: Duration, clock: Clock, metrics: Metrics) -> Self {
        Self {
            work,
            clock,
            sweep_interval,
            flushing: false,
            sweeping: false,
            metrics,
        }
    }

    /// Writes the uses served from this shard's copies to Redis.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let ShardWork::Shared {
            sessions, shard, ..
        } = &self.work
        else {
            return;
        };
        if self.flushing {
            return;
        }
        self.flushing = true;
        let (sessions, shard, now_ms) = (sessions.clone(), *shard, self.clock.now_millis());
        let flush = async move { sessions.flush(shard, now_ms).await }
            .into_actor(self)
            .map(|flushed, shard_actor, _| {
                shard_actor.flushing = false;
                if let Err(err) = flushed {
                    tracing::debug!(error = %err, "could not write session uses yet");
                }
            });
        ctx.spawn(flush);
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let now_ms = self.clock.now_millis();
        match &self.work {
            ShardWork::Local(table) => {
                let mut table = table.lock().unwrap_or_else(PoisonError::into_inner);
                let swept = table.sweep(now_ms);
                self.metrics.sessions_expired(swept);
                if swept > 0 {
                    tracing::debug!(swept, remaining = table.len(), "swept expired sessions");
                }
            }
            ShardWork::Shared {
                sessions,
                shard,
                sweeps,
            } => {
                sessions.sweep_copies(*shard, now_ms);
                if !*sweeps || self.sweeping {
                    return;
                }
                self.sweeping = true;
                let sessions = sessions.clone();
                let sweep = async move {
                    // Uses not yet written may have kept a session alive.
                    sessions.flush_all(now_ms).await?;
                    let swept = sessions.sweep(now_ms).await?;
                    Ok::<_, crate::storage::StoreError>((swept, sessions.count().await?))
                };
                let sweep = sweep.into_actor(self).map(|swept, shard, _| {
                    shard.sweeping = false;
                    match swept {
                        Ok((swept, held)) => {
                            shard.metrics.sessions_expired(swept);
                            // Whatever replicas opened them: one that
                            // stopped took its own count with it.
                            shard.metrics.sessions_counted(held);
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "could not sweep the session store");
                        }
                    }
                });
                ctx.spawn(sweep);
            }
        }
    }
}

impl Actor for SessionShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.sweep_interval, |shard, ctx| shard.sweep(ctx));
        if matches!(self.work, ShardWork::Shared { .. }) {
            ctx.run_interval(SESSION_FLUSH_INTERVAL, |shard, ctx| shard.flush(ctx));
        }
    }
}

/// A restart keeps the table and the copies: the `Supervisor` reuses this
/// same value, and `started` runs again to set the timers up anew.
impl Supervised for SessionShard {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(actor = "SessionShard", "restarting");
        self.flushing = false;
        self.sweeping = false;
        self.metrics.actor_restarted("SessionShard");
    }
}
