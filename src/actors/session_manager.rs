//! The session manager: the one door to the session shards. It routes each
//! session to its shard by id and fans user-wide revocations out to all.
//!
//! It is a cheap handle rather than an actor of its own: routing is a pure
//! function of the session id, so a mailbox in front of the shards would add
//! a hop and a single queue every authenticated request had to pass through.

use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, Arbiter, ArbiterHandle, MailboxError, Supervisor};
use futures_util::future::try_join_all;

use super::session_shard::{Count, Open, Revoke, RevokeUser, SessionShard, Touch};
use crate::clock::Clock;
use crate::config::SessionSettings;
use crate::domain::{Session, SessionId, TouchOutcome, UserId};

#[derive(Clone)]
pub struct SessionManager {
    shards: Arc<Shards>,
    clock: Clock,
    /// Absolute lifetime of a session (the token's `exp`).
    max_lifetime: Duration,
}

impl SessionManager {
    /// Starts `settings.shards` supervised shards, each on an arbiter (thread)
    /// of its own. The threads stop when the last clone of the manager drops.
    pub fn start(settings: &SessionSettings, max_lifetime: Duration, clock: Clock) -> Self {
        let (idle_ttl, sweep_interval) = (settings.idle_ttl(), settings.sweep_interval());
        let arbiters: Vec<ArbiterHandle> = (0..settings.shards)
            .map(|_| Arbiter::new().handle())
            .collect();
        let addrs = arbiters
            .iter()
            .map(|arbiter| {
                let clock = clock.clone();
                Supervisor::start_in_arbiter(arbiter, move |_| {
                    SessionShard::new(idle_ttl, sweep_interval, clock)
                })
            })
            .collect();
        let shards = Arc::new(Shards { addrs, arbiters });
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

    /// Opens a session for `user_id`, ending at most `max_lifetime` from now.
    pub async fn open(&self, user_id: UserId) -> Result<Session, MailboxError> {
        let id = SessionId::random();
        let lifetime = i64::try_from(self.max_lifetime.as_millis()).unwrap_or(i64::MAX);
        let now_ms = self.clock.now_millis();
        // Whole seconds, as the token's `exp` has them: a session must not
        // promise a moment the token no longer verifies.
        let absolute_ms = now_ms.saturating_add(lifetime);
        let absolute_ms = absolute_ms - absolute_ms.rem_euclid(1000);
        self.shard(id)
            .send(Open {
                id,
                user_id,
                now_ms,
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
                .addrs
                .iter()
                .map(|s| s.send(RevokeUser { user_id, keep })),
        );
        Ok(ended.await?.into_iter().sum())
    }

    /// Sessions held across all shards, including lapsed ones not yet swept.
    pub async fn count(&self) -> Result<usize, MailboxError> {
        let counts = try_join_all(self.shards.addrs.iter().map(|s| s.send(Count)));
        Ok(counts.await?.into_iter().sum())
    }
}

/// The shards and the threads they run on.
struct Shards {
    addrs: Vec<Addr<SessionShard>>,
    arbiters: Vec<ArbiterHandle>,
}

impl Drop for Shards {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}
