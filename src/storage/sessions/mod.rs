//! Sessions in Redis, shared by every replica: any of them validates,
//! reinflates and revokes a session another one opened. Each operation is
//! one Lua script (in `lua/`), so a use reads and extends a session in one
//! atomic step, and two replicas using one session at once both count.
//!
//! Keys, for prefix `p`:
//! - `{p}:session:<id>`: a hash per session, the fields of
//!   [`StoredSession`] (`user`, `created`, `seen`, `absolute`, `refreshes`).
//! - `{p}:user-sessions:<user>`: the ids of a user's sessions.
//! - `{p}:session-expiry`: `<user>:<id>` by when each session lapses, read
//!   by the sweep.
//!
//! Times come from the caller's clock, so replicas' clocks should agree
//! (as NTP keeps them) to well within the idle timeout.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use fred::prelude::{SortedSetsInterface, Value};
use fred::types::scripts::Script;

use crate::domain::{Session, SessionId, StoredSession, TouchOutcome, UserId};
use crate::lua_script;
use crate::storage::StoreError;
use crate::storage::redis::{Redis, SLICE, count};

struct Scripts {
    open: Script,
    touch: Script,
    revoke: Script,
    revoke_user: Script,
    sweep: Script,
}

pub struct RedisSessions {
    redis: Arc<Redis>,
    idle_ttl_ms: i64,
    scripts: Scripts,
}

impl RedisSessions {
    pub fn new(redis: Arc<Redis>, idle_ttl: Duration) -> Self {
        Self {
            redis,
            idle_ttl_ms: millis(idle_ttl),
            scripts: Scripts {
                open: lua_script!("open.lua"),
                touch: lua_script!("touch.lua"),
                revoke: lua_script!("revoke.lua"),
                revoke_user: lua_script!("revoke_user.lua"),
                sweep: lua_script!("sweep.lua"),
            },
        }
    }

    /// How long Redis keeps a session's keys past its lapse: long enough
    /// that the sweep, not Redis, normally removes it (and counts it).
    fn grace_ms(&self) -> i64 {
        self.idle_ttl_ms
    }

    /// Records a new session, last seen at `now_ms`.
    pub async fn open(
        &self,
        id: SessionId,
        user_id: UserId,
        now_ms: i64,
        absolute_ms: i64,
    ) -> Result<Session, StoreError> {
        let args = vec![
            id.0.to_string(),
            user_id.to_string(),
            now_ms.to_string(),
            absolute_ms.to_string(),
            self.idle_ttl_ms.to_string(),
            self.grace_ms().to_string(),
        ];
        self.redis.run(&self.scripts.open, args).await?;
        let stored = StoredSession {
            user_id,
            created_ms: now_ms,
            last_seen_ms: now_ms,
            absolute_ms,
            refresh_count: 0,
        };
        Ok(stored.snapshot(id, self.idle_ttl_ms))
    }

    /// Uses a session: if it is live and belongs to `user_id`, it is
    /// reinflated (seen now, count up). A lapsed session is removed.
    pub async fn touch(
        &self,
        id: SessionId,
        user_id: UserId,
        now_ms: i64,
    ) -> Result<TouchOutcome, StoreError> {
        let args = vec![
            id.0.to_string(),
            user_id.to_string(),
            now_ms.to_string(),
            self.idle_ttl_ms.to_string(),
            self.grace_ms().to_string(),
        ];
        let answer = self.redis.run(&self.scripts.touch, args).await?;
        touch_outcome(answer, id, user_id, self.idle_ttl_ms).map_err(StoreError::Failed)
    }

    /// Ends one session. Returns whether it existed.
    pub async fn revoke(&self, id: SessionId) -> Result<bool, StoreError> {
        let answer = self
            .redis
            .run(&self.scripts.revoke, vec![id.0.to_string()])
            .await?;
        Ok(count(answer)? > 0)
    }

    /// Ends every session of `user_id` except `keep`. Returns how many ended.
    pub async fn revoke_user(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
    ) -> Result<usize, StoreError> {
        let keep = keep.map(|id| id.0.to_string()).unwrap_or_default();
        let args = vec![user_id.to_string(), keep];
        Ok(count(self.redis.run(&self.scripts.revoke_user, args).await?)? as usize)
    }

    /// Removes every session lapsed by `now_ms`, a batch a call. Returns
    /// how many were removed.
    pub async fn sweep(&self, now_ms: i64) -> Result<usize, StoreError> {
        let args = || vec![now_ms.to_string(), SLICE.to_string()];
        let swept = self.redis.run_in_slices(&self.scripts.sweep, args).await?;
        Ok(swept as usize)
    }

    /// Sessions held, live or lapsed but not yet swept, on every replica.
    pub async fn count(&self) -> Result<usize, StoreError> {
        let key = format!("{}:session-expiry", self.redis.prefix());
        Ok(self.redis.client().zcard(key).await?)
    }
}

/// Reads what `touch.lua` answered.
fn touch_outcome(
    answer: Value,
    id: SessionId,
    user_id: UserId,
    idle_ttl_ms: i64,
) -> anyhow::Result<TouchOutcome> {
    let fields: Vec<String> = answer.convert()?;
    let number = |text: &str| {
        text.parse::<i64>()
            .with_context(|| format!("session field {text:?} is not a number"))
    };
    Ok(match fields.as_slice() {
        [tag] if tag == "unknown" => TouchOutcome::Unknown,
        [tag] if tag == "expired" => TouchOutcome::Expired,
        [tag, created, seen, absolute, refreshes] if tag == "live" => {
            let stored = StoredSession {
                user_id,
                created_ms: number(created)?,
                last_seen_ms: number(seen)?,
                absolute_ms: number(absolute)?,
                refresh_count: u32::try_from(number(refreshes)?).unwrap_or(u32::MAX),
            };
            TouchOutcome::Live(stored.snapshot(id, idle_ttl_ms))
        }
        _ => return Err(anyhow!("touch answered {fields:?}")),
    })
}

/// Milliseconds in `duration`, saturating.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
