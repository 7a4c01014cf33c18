//! The session manager: the one door to the session shards. It routes each
//! session to its shard by id and fans user-wide revocations out to all.
//!
//! It is a cheap handle rather than an actor of its own: routing is a pure
//! function of the session id, so a mailbox in front of the shards would add
//! a hop and a single queue every authenticated request had to pass through.

use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Arbiter, MailboxError, Supervisor};
use futures_util::future::try_join_all;

use super::session_shard::{Count, Open, Revoke, RevokeUser, SessionShard, Touch};
use crate::clock::Clock;
use crate::config::SessionSettings;
use crate::domain::{Session, SessionId, Touch as TouchOutcome, UserId};

#[derive(Clone)]
pub struct SessionManager {
    shards: Arc<[Addr<SessionShard>]>,
    clock: Clock,
    /// Absolute lifetime of a session (the token's `exp`).
    max_lifetime: Duration,
}

impl SessionManager {
    /// Starts `settings.shards` supervised shards, each on an arbiter (thread)
    /// of its own. The arbiters are returned so the caller can stop them.
    pub fn start(
        settings: &SessionSettings,
        max_lifetime: Duration,
        clock: Clock,
    ) -> (Self, Vec<Arbiter>) {
        let (idle_ttl, sweep_interval) = (settings.idle_ttl(), settings.sweep_interval());
        let arbiters: Vec<Arbiter> = (0..settings.shards).map(|_| Arbiter::new()).collect();
        let shards = arbiters
            .iter()
            .map(|arbiter| {
                let clock = clock.clone();
                Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                    SessionShard::new(idle_ttl, sweep_interval, clock)
                })
            })
            .collect();
        (
            Self {
                shards,
                clock,
                max_lifetime,
            },
            arbiters,
        )
    }

    fn shard(&self, id: SessionId) -> &Addr<SessionShard> {
        // Session ids are random, so their low bits spread sessions evenly.
        let index = (id.0.as_u128() % self.shards.len() as u128) as usize;
        &self.shards[index]
    }

    /// Opens a session for `user_id`, ending at most `max_lifetime` from now.
    pub async fn open(&self, user_id: UserId) -> Result<Session, MailboxError> {
        let id = SessionId::random();
        let lifetime = i64::try_from(self.max_lifetime.as_millis()).unwrap_or(i64::MAX);
        let absolute_ms = self.clock.now_millis().saturating_add(lifetime);
        self.shard(id)
            .send(Open {
                id,
                user_id,
                absolute_ms,
            })
            .await
    }

    /// Uses a session, reinflating it if it is live.
    pub async fn touch(
        &self,
        id: SessionId,
        user_id: UserId,
    ) -> Result<TouchOutcome, MailboxError> {
        self.shard(id).send(Touch { id, user_id }).await
    }

    /// Ends one session at once. Returns whether it existed.
    pub async fn revoke(&self, id: SessionId) -> Result<bool, MailboxError> {
        self.shard(id).send(Revoke(id)).await
    }

    /// Ends every session of `user_id` except `keep`, on every shard.
    pub async fn revoke_user(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
    ) -> Result<usize, MailboxError> {
        let ended = try_join_all(
            self.shards
                .iter()
                .map(|s| s.send(RevokeUser { user_id, keep })),
        );
        Ok(ended.await?.into_iter().sum())
    }

    /// Sessions held across all shards, including lapsed ones not yet swept.
    pub async fn count(&self) -> Result<usize, MailboxError> {
        let counts = try_join_all(self.shards.iter().map(|s| s.send(Count)));
        Ok(counts.await?.into_iter().sum())
    }
}
