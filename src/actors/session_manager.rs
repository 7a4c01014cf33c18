//! The session manager: the one door to the session shards. It routes each
//! session to its shard by id and fans user-wide revocations out to all
//! (with the shared store, where every shard sees every session, to one).
//!
//! It is a cheap handle rather than an actor of its own: routing is a pure
//! function of the session id, so a mailbox in front of the shards would add
//! a hop and a single queue every authenticated request had to pass through.

use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Arbiter, ArbiterHandle, MailboxError, Supervisor};
use futures_util::future::try_join_all;

use super::session_shard::{Count, Open, Revoke, RevokeUser, SessionShard, ShardStore, Touch};
use crate::clock::Clock;
use crate::config::SessionSettings;
use crate::domain::{Session, SessionId, SessionTable, TouchOutcome, UserId};
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

/// Flattens what a shard answered.
fn answered<T>(answer: Result<Result<T, StoreError>, MailboxError>) -> Result<T, SessionError> {
    Ok(answer??)
}

#[derive(Clone)]
pub struct SessionManager {
    shards: Arc<Shards>,
    clock: Clock,
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
        let arbiters: Vec<ArbiterHandle> = (0..settings.shards)
            .map(|_| Arbiter::new().handle())
            .collect();
        let addrs = arbiters
            .iter()
            .enumerate()
            .map(|(i, arbiter)| {
                let store = match &shared {
                    Some(sessions) => ShardStore::Shared {
                        sessions: sessions.clone(),
                        sweeps: i == 0,
                    },
                    None => ShardStore::Local(SessionTable::new(idle_ttl)),
                };
                let (clock, metrics) = (clock.clone(), metrics.clone());
                Supervisor::start_in_arbiter(arbiter, move |_| {
                    SessionShard::new(store, sweep_interval, clock, metrics)
                })
            })
            .collect();
        let shards = Arc::new(Shards {
            addrs,
            arbiters,
            shared: shared.is_some(),
        });
        Self {
            shards,
            clock,
            max_lifetime,
        }
    }

    fn shard(&self, id: SessionId) -> &Addr<SessionShard> {
        // Session ids are random, so their low bits spread sessions evenly.
        let addrs = &self.shards.addrs;
        &addrs[(id.0.as_u128() % addrs.len() as u128) as usize]
    }

    /// The shards a question about every session goes to: all of them, or
    /// one when each sees every session.
    fn every_session(&self) -> &[Addr<SessionShard>] {
        let addrs = &self.shards.addrs;
        if self.shards.shared {
            &addrs[..1]
        } else {
            addrs
        }
    }

    /// Opens a session for `user_id`, ending at most `max_lifetime` from now.
    pub async fn open(&self, user_id: UserId) -> Result<Session, SessionError> {
        let id = SessionId::random();
        let lifetime = i64::try_from(self.max_lifetime.as_millis()).unwrap_or(i64::MAX);
        let now_ms = self.clock.now_millis();
        // Whole seconds, as the token's `exp` has them: a session must not
        // promise a moment the token no longer verifies.
        let absolute_ms = now_ms.saturating_add(lifetime);
        let absolute_ms = absolute_ms - absolute_ms.rem_euclid(1000);
        let opened = self.shard(id).send(Open {
            id,
            user_id,
            now_ms,
            absolute_ms,
        });
        answered(opened.await)
    }

    /// Uses a session, reinflating it if it is live.
    pub async fn touch(
        &self,
        id: SessionId,
        user_id: UserId,
    ) -> Result<TouchOutcome, SessionError> {
        answered(self.shard(id).send(Touch { id, user_id }).await)
    }

    /// Ends one session at once. Returns whether it existed.
    pub async fn revoke(&self, id: SessionId) -> Result<bool, SessionError> {
        answered(self.shard(id).send(Revoke(id)).await)
    }

    /// Ends every session of `user_id` except `keep`, on every shard.
    pub async fn revoke_user(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
    ) -> Result<usize, SessionError> {
        let ended = try_join_all(
            self.every_session()
                .iter()
                .map(|s| async move { answered(s.send(RevokeUser { user_id, keep }).await) }),
        );
        Ok(ended.await?.into_iter().sum())
    }

    /// Checks that the shards (and the shared store) answer; names the store.
    pub async fn ping(&self) -> Result<&'static str, SessionError> {
        self.count().await?;
        Ok(if self.shards.shared {
            "redis"
        } else {
            "memory"
        })
    }

    /// Sessions held across all shards (with the shared store, across all
    /// replicas), including lapsed ones not yet swept.
    pub async fn count(&self) -> Result<usize, SessionError> {
        let counts = try_join_all(
            self.every_session()
                .iter()
                .map(|s| async move { answered(s.send(Count).await) }),
        );
        Ok(counts.await?.into_iter().sum())
    }
}

/// The shards and the threads they run on.
struct Shards {
    addrs: Vec<Addr<SessionShard>>,
    arbiters: Vec<ArbiterHandle>,
    /// Every shard sees every session: they live in the shared store.
    shared: bool,
}

impl Drop for Shards {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}
