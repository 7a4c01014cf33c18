//! One shard of the session table: an actor owning its share of the
//! sessions, so no lock is shared between shards, and sweeping them on a
//! timer. With sessions in Redis the shard keeps none itself: it runs each
//! operation against the shared store and still records what happened, and
//! one shard per replica sweeps the store.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt as _, AsyncContext, Context, Handler, Message, Response, Supervised,
    WrapFuture as _,
};

use crate::clock::Clock;
use crate::domain::{Session, SessionId, SessionTable, TouchOutcome, UserId};
use crate::storage::{RedisSessions, StoreError};
use crate::telemetry::Metrics;

/// Where a shard's sessions live.
pub enum ShardStore {
    /// In the shard itself: one node.
    Local(SessionTable),
    /// In Redis, shared by every shard of every replica; the one shard
    /// marked `sweeps` removes lapsed sessions from it.
    Shared {
        sessions: Arc<RedisSessions>,
        sweeps: bool,
    },
}

pub struct SessionShard {
    store: ShardStore,
    clock: Clock,
    sweep_interval: Duration,
    /// A sweep of the shared store is under way.
    sweeping: bool,
    metrics: Metrics,
}

/// What a shard answers: a local table never fails, the shared store may.
pub type Reply<T> = Response<Result<T, StoreError>>;

impl SessionShard {
    pub fn new(
        store: ShardStore,
        sweep_interval: Duration,
        clock: Clock,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            clock,
            sweep_interval,
            sweeping: false,
            metrics,
        }
    }

    /// Runs `local` on the shard's own table, or `shared` against Redis,
    /// with the time now, and records the outcome with `record`.
    fn serve<T: 'static, F>(
        &mut self,
        local: impl FnOnce(&mut SessionTable, i64) -> T,
        shared: impl FnOnce(Arc<RedisSessions>, i64) -> F,
        record: fn(&Metrics, &T),
    ) -> Reply<T>
    where
        F: Future<Output = Result<T, StoreError>> + 'static,
    {
        let now_ms = self.clock.now_millis();
        let metrics = self.metrics.clone();
        match &mut self.store {
            ShardStore::Local(table) => {
                let answer = local(table, now_ms);
                record(&metrics, &answer);
                Response::reply(Ok(answer))
            }
            ShardStore::Shared { sessions, .. } => {
                let answer = shared(sessions.clone(), now_ms);
                Response::fut(async move {
                    let answer = answer.await?;
                    record(&metrics, &answer);
                    Ok(answer)
                })
            }
        }
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let now_ms = self.clock.now_millis();
        match &mut self.store {
            ShardStore::Local(table) => {
                let swept = table.sweep(now_ms);
                self.metrics.sessions_expired(swept);
                if swept > 0 {
                    tracing::debug!(swept, remaining = table.len(), "swept expired sessions");
                }
            }
            ShardStore::Shared { sessions, sweeps } if *sweeps && !self.sweeping => {
                self.sweeping = true;
                let sessions = sessions.clone();
                let sweep = async move { sessions.sweep(now_ms).await }
                    .into_actor(self)
                    .map(|swept, shard, _| {
                        shard.sweeping = false;
                        match swept {
                            Ok(swept) => shard.metrics.sessions_expired(swept),
                            Err(err) => {
                                tracing::warn!(error = %err, "could not sweep the session store");
                            }
                        }
                    });
                ctx.spawn(sweep);
            }
            ShardStore::Shared { .. } => {}
        }
    }
}

impl Actor for SessionShard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.sweep_interval, |shard, ctx| shard.sweep(ctx));
    }
}

/// A restart keeps the table: the `Supervisor` reuses this same value, and
/// `started` runs again to set the sweep timer up anew.
impl Supervised for SessionShard {
    fn restarting(&mut self, _: &mut Context<Self>) {
        let sessions = match &self.store {
            ShardStore::Local(table) => table.len(),
            ShardStore::Shared { .. } => 0,
        };
        tracing::warn!(actor = "SessionShard", sessions, "restarting");
        self.sweeping = false;
        self.metrics.actor_restarted("SessionShard");
    }
}

/// Start a session for a user; replies with it.
#[derive(Message)]
#[rtype(result = "Result<Session, StoreError>")]
pub struct Open {
    pub id: SessionId,
    pub user_id: UserId,
    /// When it opened, in milliseconds since the epoch.
    pub now_ms: i64,
    /// Milliseconds since the epoch after which no use can extend it.
    pub absolute_ms: i64,
}

/// Use a session: reinflate it if it is live.
#[derive(Message)]
#[rtype(result = "Result<TouchOutcome, StoreError>")]
pub struct Touch {
    pub id: SessionId,
    pub user_id: UserId,
}

/// End one session; replies whether it existed.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct Revoke(pub SessionId);

/// End a user's sessions, except one; replies how many ended.
#[derive(Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct RevokeUser {
    pub user_id: UserId,
    pub keep: Option<SessionId>,
}

/// How many sessions the shard holds (live or not yet swept); with the
/// shared store, how many every replica holds together.
#[derive(Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct Count;

impl Handler<Open> for SessionShard {
    type Result = Reply<Session>;

    fn handle(&mut self, msg: Open, _: &mut Context<Self>) -> Self::Result {
        let Open {
            id,
            user_id,
            now_ms,
            absolute_ms,
        } = msg;
        self.serve(
            |table, _| table.open(id, user_id, now_ms, absolute_ms),
            |shared, _| async move { shared.open(id, user_id, now_ms, absolute_ms).await },
            |metrics, _| metrics.session_opened(),
        )
    }
}

impl Handler<Touch> for SessionShard {
    type Result = Reply<TouchOutcome>;

    fn handle(&mut self, msg: Touch, _: &mut Context<Self>) -> Self::Result {
        let Touch { id, user_id } = msg;
        self.serve(
            |table, now_ms| table.touch(id, user_id, now_ms),
            |shared, now_ms| async move { shared.touch(id, user_id, now_ms).await },
            |metrics, outcome| match outcome {
                TouchOutcome::Live(_) => metrics.session_reinflated(),
                TouchOutcome::Expired => metrics.sessions_expired(1),
                TouchOutcome::Unknown => {}
            },
        )
    }
}

impl Handler<Revoke> for SessionShard {
    type Result = Reply<bool>;

    fn handle(&mut self, Revoke(id): Revoke, _: &mut Context<Self>) -> Self::Result {
        self.serve(
            |table, _| table.revoke(id),
            |shared, _| async move { shared.revoke(id).await },
            |metrics, revoked| metrics.sessions_ended(usize::from(*revoked)),
        )
    }
}

impl Handler<RevokeUser> for SessionShard {
    type Result = Reply<usize>;

    fn handle(&mut self, msg: RevokeUser, _: &mut Context<Self>) -> Self::Result {
        let RevokeUser { user_id, keep } = msg;
        self.serve(
            |table, _| table.revoke_user(user_id, keep),
            |shared, _| async move { shared.revoke_user(user_id, keep).await },
            |metrics, revoked| metrics.sessions_ended(*revoked),
        )
    }
}

impl Handler<Count> for SessionShard {
    type Result = Reply<usize>;

    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> Self::Result {
        self.serve(
            |table, _| table.len(),
            |shared, _| async move { shared.count().await },
            |_, _| {},
        )
    }
}
