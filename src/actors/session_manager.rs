//! The session manager: the one door to the sessions. In memory it keeps
//! each user's sessions in one shard, chosen by user id, so that listing or
//! revoking them reads one row of one table.
//!
//! It is a cheap handle rather than an actor of its own, and a use reaches
//! its shard's table through the shard's lock (a few hundred nanoseconds)
//! rather than its mailbox: an authenticated request then costs no hop to
//! another thread, which on a busy machine costs more than the whole rest
//! of the check. The `SessionShard` actors own what runs on a timer: the
//! sweep of their tables and, with sessions in Redis, the writing of the
//! uses this replica served and the sweep of the shared store.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix::{Addr, Arbiter, ArbiterHandle, MailboxError, Supervisor};

use super::session_shard::{SessionShard, ShardWork};
use crate::clock::Clock;
use crate::config::SessionSettings;
use crate::domain::{
    ListedSession, Origin, Profile, Session, SessionId, SessionTable, TouchOutcome, UserId,
};
use crate::storage::{RedisSessions, StoreError};
use crate::telemetry::Metrics;

/// Why a session operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A shard did not answer: stopping, or its mailbox is full.
    #[error("a session shard is not answering")]
    Shard(#[from] MailboxError),
    /// The shared session store did not answer, or answered wrongly.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SessionError {
    /// Whether a retry may succeed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Shard(_) => true,
            Self::Store(err) => err.is_unavailable(),
        }
    }
}

/// Where the sessions are.
enum Store {
    /// In these tables, one per shard: one node.
    Local(Vec<Arc<Mutex<SessionTable>>>),
    /// In Redis, shared by every replica, with this replica's copies.
    Shared(Arc<RedisSessions>),
}

#[derive(Clone)]
pub struct SessionManager {
    shards: Arc<Shards>,
    clock: Clock,
    metrics: Metrics,
    /// Absolute lifetime of a session (the token's `exp`).
    max_lifetime: Duration,
}

impl SessionManager {
    /// Starts `settings.shards` supervised shards, each on an arbiter (thread)
    /// of its own, keeping sessions in `shared` if given, else in memory.
    /// The threads stop when the last clone of the manager drops.
    pub fn start(
        settings: &SessionSettings,
        max_lifetime: Duration,
        clock: Clock,
        metrics: Metrics,
        shared: Option<Arc<RedisSessions>>,
    ) -> Self {
        let (idle_ttl, sweep_interval) = (settings.idle_ttl(), settings.sweep_interval());
        let store = match shared {
            Some(sessions) => Store::Shared(sessions),
            None => Store::Local(
                (0..settings.shards)
                    .map(|_| {
                        let table = SessionTable::new(idle_ttl, settings.max_per_user);
                        Arc::new(Mutex::new(table))
                    })
                    .collect(),
            ),
        };
        let arbiters: Vec<ArbiterHandle> = (0..settings.shards)
            .map(|_| Arbiter::new().handle())
            .collect();
        let addrs = arbiters
            .iter()
            .enumerate()
            .map(|(shard, arbiter)| {
                let work = match &store {
                    Store::Local(tables) => ShardWork::Local(tables[shard].clone()),
                    Store::Shared(sessions) => ShardWork::Shared {
                        sessions: sessions.clone(),
                        shard,
                        sweeps: shard == 0,
                    },
                };
                let (clock, metrics) = (clock.clone(), metrics.clone());
                Supervisor::start_in_arbiter(arbiter, move |_| {
                    SessionShard::new(work, sweep_interval, clock, metrics)
                })
            })
            .collect();
        let shards = Arc::new(Shards {
            store,
            _addrs: addrs,
            arbiters,
        });
        Self {
            shards,
            clock,
            metrics,
            max_lifetime,
        }
    }

    /// The table that holds `user`'s sessions.
    fn table(tables: &[Arc<Mutex<SessionTable>>], user: UserId) -> MutexGuard<'_, SessionTable> {
        // Every change to a table is one step: a panic cannot leave it half
        // made, so a poisoned lock is still sound.
        tables[user.shard(tables.len())]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a session for `user`, ending at most `max_lifetime` from now.
    /// If they hold `session.max_per_user` already, a lapsed one or the one
    /// used longest ago ends; those that ended are answered too.
    pub async fn open(
        &self,
        user: &Profile,
        origin: &Origin,
    ) -> Result<(Session, Vec<SessionId>), SessionError> {
        let id = SessionId::random();
        let lifetime = i64::try_from(self.max_lifetime.as_millis()).unwrap_or(i64::MAX);
        let now_ms = self.clock.now_millis();
        // Whole seconds, as the token's `exp` has them: a session must not
        // promise a moment the token no longer verifies.
        let absolute_ms = now_ms.saturating_add(lifetime);
        let absolute_ms = absolute_ms - absolute_ms.rem_euclid(1000);
        let (session, ended) = match &self.shards.store {
            Store::Local(tables) => {
                Self::table(tables, user.id).open(id, user.id, origin, now_ms, absolute_ms)
            }
            Store::Shared(sessions) => sessions.open(id, user, origin, now_ms, absolute_ms).await?,
        };
        self.metrics.session_opened();
        self.metrics.sessions_ended(ended.len());
        Ok((session, ended))
    }

    /// Uses a session, reinflating it if it is live.
    pub async fn touch(
        &self,
        id: SessionId,
        user_id: UserId,
    ) -> Result<TouchOutcome, SessionError> {
        let now_ms = self.clock.now_millis();
        let outcome = match &self.shards.store {
            Store::Local(tables) => Self::table(tables, user_id).touch(id, user_id, now_ms),
            Store::Shared(sessions) => sessions.touch(id, user_id, now_ms).await?,
        };
        match outcome {
            TouchOutcome::Live(_) => self.metrics.session_reinflated(),
            TouchOutcome::Expired => self.metrics.sessions_expired(1),
            TouchOutcome::Unknown => {}
        }
        Ok(outcome)
    }

    /// The profile of the user a live session belongs to, where it is kept
    /// with the session (sessions in Redis); `None` means ask the users.
    pub fn profile(&self, id: SessionId) -> Option<Arc<Profile>> {
        match &self.shards.store {
            Store::Local(_) => None,
            Store::Shared(sessions) => sessions.profile(id),
        }
    }

    /// Ends `user_id`'s session `id` at once. Returns whether it existed
    /// and was theirs.
    pub async fn revoke(&self, id: SessionId, user_id: UserId) -> Result<bool, SessionError> {
        let revoked = match &self.shards.store {
            Store::Local(tables) => Self::table(tables, user_id).revoke(id, user_id),
            Store::Shared(sessions) => sessions.revoke(id, user_id).await?,
        };
        self.metrics.sessions_ended(usize::from(revoked));
        Ok(revoked)
    }

    /// Ends every session of `user_id` except `keep`.
    pub async fn revoke_user(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
    ) -> Result<usize, SessionError> {
        let ended = match &self.shards.store {
            Store::Local(tables) => Self::table(tables, user_id).revoke_user(user_id, keep),
            Store::Shared(sessions) => sessions.revoke_user(user_id, keep).await?,
        };
        self.metrics.sessions_ended(ended);
        Ok(ended)
    }

    /// `user`'s live sessions and where each was opened, newest first.
    pub async fn sessions_of(&self, user: UserId) -> Result<Vec<ListedSession>, SessionError> {
        let now_ms = self.clock.now_millis();
        Ok(match &self.shards.store {
            Store::Local(tables) => Self::table(tables, user).sessions_of(user, now_ms),
            Store::Shared(sessions) => sessions.sessions_of(user, now_ms).await?,
        })
    }

    /// How many sessions each of `users` holds (lapsed ones not yet swept
    /// included), in their order.
    pub async fn count_of(&self, users: &[UserId]) -> Result<Vec<usize>, SessionError> {
        Ok(match &self.shards.store {
            Store::Local(tables) => users
                .iter()
                .map(|user| Self::table(tables, *user).count_of(*user))
                .collect(),
            Store::Shared(sessions) => sessions.count_of(users).await?,
        })
    }

    /// Checks that the shared store answers, if any; names where sessions
    /// are kept.
    pub async fn ping(&self) -> Result<&'static str, SessionError> {
        self.count().await?;
        Ok(match &self.shards.store {
            Store::Local(_) => "memory",
            Store::Shared(_) => "redis",
        })
    }

    /// Sessions held across all shards (with the shared store, across all
    /// replicas), including lapsed ones not yet swept.
    pub async fn count(&self) -> Result<usize, SessionError> {
        Ok(match &self.shards.store {
            Store::Local(tables) => tables
                .iter()
                .map(|table| table.lock().unwrap_or_else(PoisonError::into_inner).len())
                .sum(),
            Store::Shared(sessions) => sessions.count().await?,
        })
    }
}

/// The shards, the threads their actors run on, and where sessions are.
struct Shards {
    store: Store,
    /// Kept so that the actors live as long as the manager.
    _addrs: Vec<Addr<SessionShard>>,
    arbiters: Vec<ArbiterHandle>,
}

impl Drop for Shards {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}
