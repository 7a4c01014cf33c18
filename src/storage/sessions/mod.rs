//! Sessions in Redis, shared by every replica: any of them validates,
//! reinflates and revokes a session another one opened. Each change is one
//! Lua script (in `lua/`), so a use reads and extends a session in one
//! atomic step.
//!
//! Each replica keeps a copy of the sessions it serves (`cache.rs`), so a
//! use costs no round trip: it is counted in the copy and written to Redis
//! in a batch within [`SESSION_FLUSH_INTERVAL`]. A copy vouches only for what it
//! saw: a session it holds as lapsed, or another user's, goes to Redis.
//! Revoking deletes the session and publishes its id; every replica drops
//! its copy as the message arrives, the revoking one before it answers.
//! A replica that loses its subscription drops every copy and serves from
//! Redis until it has subscribed again, so no copy outlives a lost
//! connection.
//!
//! Keys, for prefix `p`:
//! - `{p}:session:<id>`: a hash per session, the fields of
//!   [`StoredSession`] (`user`, `created`, `seen`, `absolute`, `refreshes`)
//!   and the user's profile (`name`, `email`, `joined`).
//! - `{p}:user-sessions:<user>`: the ids of a user's sessions.
//! - `{p}:session-expiry`: `<user>:<id>` by when each session lapses, read
//!   by the sweep.
//! - `{p}:sessions-revoked`: the channel revoked ids are published on.
//!
//! With `session.partitions` above one, users are spread over that many
//! partitions, and `{p}` above stands for each partition's own hash tag
//! (`{prefix.<i>}`, see [`Keyspace::partitions`]): a user's sessions are
//! all in theirs, so every script still touches one slot.
//!
//! Times come from the caller's clock, so replicas' clocks should agree
//! (as NTP keeps them) to well within the idle timeout.

mod cache;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use chrono::DateTime;
use fred::prelude::{ClientLike, EventInterface, PubsubInterface, SortedSetsInterface, Value};
use fred::types::scripts::Script;
use tokio::sync::broadcast::error::RecvError;

use self::cache::SessionCache;
use crate::domain::{
    LISTED_SESSIONS, ListedSession, Origin, Profile, Session, SessionId, StoredSession,
    TouchOutcome, UserId,
};
use crate::lua_script;
use crate::shutdown::Shutdown;
use crate::storage::StoreError;
use crate::storage::redis::{Keyspace, Redis, SLICE, count};

/// Longest a use served from a replica's copy waits to be written to Redis.
pub const SESSION_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Sessions written in one flush call.
const FLUSH_BATCH: usize = 500;

struct Scripts {
    open: Script,
    touch: Script,
    flush: Script,
    revoke: Script,
    revoke_user: Script,
    sweep: Script,
    count_of: Script,
    sessions_of: Script,
}

pub struct RedisSessions {
    redis: Arc<Redis>,
    /// The partitions sessions are kept in, by user (`session.partitions`).
    spaces: Vec<Keyspace>,
    idle_ttl_ms: i64,
    max_per_user: usize,
    scripts: Scripts,
    /// This replica's copies, sharded like the session actors.
    copies: Vec<Mutex<SessionCache>>,
    /// Whether the copies may be used: only while subscribed to revocations.
    subscribed: AtomicBool,
}

impl RedisSessions {
    /// Sessions under `redis`'s prefix, lapsing `idle_ttl` after their last
    /// use, at most `max_per_user` for each user, with this replica's
    /// copies in `shards` shards. Users are spread over one partition
    /// (see [`RedisSessions::partitioned`]).
    pub fn new(redis: Arc<Redis>, idle_ttl: Duration, max_per_user: usize, shards: usize) -> Self {
        Self {
            spaces: redis.partitions(1),
            redis,
            idle_ttl_ms: millis(idle_ttl),
            max_per_user: max_per_user.max(1),
            scripts: Scripts {
                open: lua_script!("open.lua"),
                touch: lua_script!("touch.lua"),
                flush: lua_script!("flush.lua"),
                revoke: lua_script!("revoke.lua"),
                revoke_user: lua_script!("revoke_user.lua"),
                sweep: lua_script!("sweep.lua"),
                count_of: lua_script!("count_of.lua"),
                sessions_of: lua_script!("sessions_of.lua"),
            },
            copies: (0..shards.max(1)).map(|_| Mutex::default()).collect(),
            subscribed: AtomicBool::new(false),
        }
    }

    /// The same, with users spread over `partitions` partitions, each under
    /// its own hash tag. A user's sessions are all in theirs, so every
    /// script still touches one slot.
    pub fn partitioned(mut self, partitions: usize) -> Self {
        self.spaces = self.redis.partitions(partitions);
        self
    }

    /// The partition that keeps `user`'s sessions.
    fn space_of(&self, user: UserId) -> &Keyspace {
        &self.spaces[user.shard(self.spaces.len())]
    }

    /// How long Redis keeps a session's keys past its lapse: long enough
    /// that the sweep, not Redis, normally removes it (and counts it).
    fn grace_ms(&self) -> i64 {
        self.idle_ttl_ms
    }

    fn copies(&self, id: SessionId) -> MutexGuard<'_, SessionCache> {
        self.shard(id.shard(self.copies.len()))
    }

    fn shard(&self, shard: usize) -> MutexGuard<'_, SessionCache> {
        // Every change to a copy is one step: a panic cannot leave one
        // half made, so a poisoned lock is still sound.
        self.copies[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The copies' eviction count now, if they may be used at all.
    fn usable_epoch(&self, id: SessionId) -> Option<u64> {
        let epoch = self.copies(id).epoch();
        self.subscribed.load(Ordering::SeqCst).then_some(epoch)
    }

    /// Records a new session of `profile`'s user opened from `origin`, last
    /// seen at `now_ms`, ending the sessions the user used longest ago if
    /// they hold `max_per_user` already. Returns the session and those that
    /// ended.
    pub async fn open(
        &self,
        id: SessionId,
        profile: &Profile,
        origin: &Origin,
        now_ms: i64,
        absolute_ms: i64,
    ) -> Result<(Session, Vec<SessionId>), StoreError> {
        let epoch = self.usable_epoch(id);
        let args = vec![
            id.0.to_string(),
            profile.id.to_string(),
            now_ms.to_string(),
            absolute_ms.to_string(),
            self.idle_ttl_ms.to_string(),
            self.grace_ms().to_string(),
            profile.username.clone(),
            profile.email.clone().unwrap_or_default(),
            profile.created_at.timestamp_millis().to_string(),
            origin.user_agent.as_deref().unwrap_or_default().to_owned(),
            origin.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            self.max_per_user.to_string(),
        ];
        let space = self.space_of(profile.id);
        let ended: Vec<String> = self
            .redis
            .run_in(space, &self.scripts.open, args)
            .await?
            .convert()?;
        self.evict_ids(ended.iter().map(String::as_str));
        let stored = StoredSession {
            user_id: profile.id,
            created_ms: now_ms,
            last_seen_ms: now_ms,
            absolute_ms,
            refresh_count: 0,
        };
        if let Some(epoch) = epoch {
            self.copies(id)
                .fill(id, stored, Arc::new(profile.clone()), epoch);
        }
        let ended = ended
            .iter()
            .filter_map(|id| id.parse().ok().map(SessionId))
            .collect();
        Ok((stored.snapshot(id, self.idle_ttl_ms), ended))
    }

    /// Uses a session: if it is live and belongs to `user_id`, it is
    /// reinflated (seen now, count up). A lapsed session is removed.
    pub async fn touch(
        &self,
        id: SessionId,
        user_id: UserId,
        now_ms: i64,
    ) -> Result<TouchOutcome, StoreError> {
        let epoch = match self.usable_epoch(id) {
            Some(_) => {
                let mut copies = self.copies(id);
                if let Some(session) = copies.touch(id, user_id, now_ms, self.idle_ttl_ms) {
                    return Ok(TouchOutcome::Live(session));
                }
                Some(copies.epoch())
            }
            None => None,
        };
        let args = vec![
            id.0.to_string(),
            user_id.to_string(),
            now_ms.to_string(),
            self.idle_ttl_ms.to_string(),
            self.grace_ms().to_string(),
        ];
        let space = self.space_of(user_id);
        let answer = self.redis.run_in(space, &self.scripts.touch, args).await?;
        let touched = touched(answer, user_id).map_err(StoreError::Failed)?;
        Ok(match touched {
            Touched::Live(stored, profile) => {
                // A session opened by an older version has no profile: it
                // is served from Redis, and the profile from the users.
                if let (Some(epoch), Some(profile)) = (epoch, profile) {
                    self.copies(id).fill(id, stored, Arc::new(profile), epoch);
                }
                TouchOutcome::Live(stored.snapshot(id, self.idle_ttl_ms))
            }
            Touched::Expired => {
                self.copies(id).evict(id);
                TouchOutcome::Expired
            }
            Touched::Unknown => TouchOutcome::Unknown,
        })
    }

    /// The profile kept with a session this replica holds a copy of.
    pub fn profile(&self, id: SessionId) -> Option<Arc<Profile>> {
        self.copies(id).profile(id)
    }

    /// Ends `user_id`'s session `id`, here at once and on every replica as
    /// soon as the revocation reaches it. Returns whether it existed and
    /// was theirs.
    pub async fn revoke(&self, id: SessionId, user_id: UserId) -> Result<bool, StoreError> {
        let args = vec![id.0.to_string(), user_id.to_string()];
        let space = self.space_of(user_id);
        let answer = self.redis.run_in(space, &self.scripts.revoke, args).await;
        // Dropped whatever Redis answered: a copy must not outlive a
        // revocation that may have happened.
        self.copies(id).evict(id);
        Ok(count(answer?)? > 0)
    }

    /// Ends every session of `user_id` except `keep`. Returns how many ended.
    pub async fn revoke_user(
        &self,
        user_id: UserId,
        keep: Option<SessionId>,
    ) -> Result<usize, StoreError> {
        let kept = keep.map(|id| id.0.to_string()).unwrap_or_default();
        let args = vec![user_id.to_string(), kept];
        let space = self.space_of(user_id);
        let answer = self
            .redis
            .run_in(space, &self.scripts.revoke_user, args)
            .await?;
        let ended: Vec<String> = answer.convert()?;
        self.evict_ids(ended.iter().map(String::as_str));
        Ok(ended.len())
    }

    /// Writes the uses shard `shard`'s copies served to Redis, a batch
    /// per partition at a time. If a batch fails, its uses and those not
    /// yet sent wait for the next flush.
    pub async fn flush(&self, shard: usize, now_ms: i64) -> Result<(), StoreError> {
        let mut pending = self.shard(shard).take_dirty();
        pending.sort_by_key(|sent| sent.user.shard(self.spaces.len()));
        let batches = pending
            .chunk_by(|a, b| a.user.shard(self.spaces.len()) == b.user.shard(self.spaces.len()));
        let batches: Vec<_> = batches.flat_map(|part| part.chunks(FLUSH_BATCH)).collect();
        for (n, batch) in batches.iter().enumerate() {
            let mut args = vec![
                now_ms.to_string(),
                self.idle_ttl_ms.to_string(),
                self.grace_ms().to_string(),
            ];
            for sent in *batch {
                args.extend([
                    sent.id.0.to_string(),
                    sent.user.to_string(),
                    sent.seen_ms.to_string(),
                    sent.uses.to_string(),
                ]);
            }
            let space = self.space_of(batch[0].user);
            let answers = match self.redis.run_in(space, &self.scripts.flush, args).await {
                Ok(answer) => answer.into_array(),
                Err(err) => {
                    let mut copies = self.shard(shard);
                    batches[n..]
                        .iter()
                        .flat_map(|batch| batch.iter())
                        .for_each(|sent| copies.unflushed(*sent));
                    return Err(err);
                }
            };
            let mut copies = self.shard(shard);
            for (sent, answer) in batch.iter().zip(answers) {
                copies.flushed(*sent, flushed(answer));
            }
        }
        Ok(())
    }

    /// Writes every shard's pending uses.
    pub async fn flush_all(&self, now_ms: i64) -> Result<(), StoreError> {
        for shard in 0..self.copies.len() {
            self.flush(shard, now_ms).await?;
        }
        Ok(())
    }

    /// Drops shard `shard`'s copies of sessions lapsed by this replica's
    /// uses that have nothing left to write. Returns how many.
    pub fn sweep_copies(&self, shard: usize, now_ms: i64) -> usize {
        self.shard(shard).sweep(now_ms, self.idle_ttl_ms)
    }

    /// Removes every session lapsed by `now_ms` from Redis, a batch a call.
    /// Returns how many were removed. Flush first: a replica's unwritten
    /// uses may have kept a session alive.
    pub async fn sweep(&self, now_ms: i64) -> Result<usize, StoreError> {
        let args = || vec![now_ms.to_string(), SLICE.to_string()];
        // A partition that cannot be swept now holds up none of the others.
        let (mut swept, mut failed) = (0, None);
        for space in &self.spaces {
            match self
                .redis
                .run_in_slices(space, &self.scripts.sweep, args)
                .await
            {
                Ok(count) => swept += count,
                Err(err) => failed = failed.or(Some(err)),
            }
        }
        match failed {
            Some(err) => Err(err),
            None => Ok(swept as usize),
        }
    }

    /// Sessions held, live or lapsed but not yet swept, on every replica.
    pub async fn count(&self) -> Result<usize, StoreError> {
        let mut held = 0;
        for space in &self.spaces {
            let key = format!("{}:session-expiry", space.tag());
            held += self.redis.client().zcard::<usize, _>(key).await?;
        }
        Ok(held)
    }

    /// How many sessions each of `users` holds, lapsed ones not yet swept
    /// included, in their order.
    pub async fn count_of(&self, users: &[UserId]) -> Result<Vec<usize>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut counts = vec![0; users.len()];
        for (part, space) in self.spaces.iter().enumerate() {
            let mine: Vec<usize> = (0..users.len())
                .filter(|&i| users[i].shard(self.spaces.len()) == part)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let args = mine.iter().map(|&i| users[i].to_string()).collect();
            let answer = self
                .redis
                .run_in(space, &self.scripts.count_of, args)
                .await?;
            let answer: Vec<usize> = answer.convert()?;
            for (i, held) in mine.into_iter().zip(answer) {
                counts[i] = held;
            }
        }
        Ok(counts)
    }

    /// `user`'s sessions live at `now_ms` (up to [`LISTED_SESSIONS`] of
    /// them), newest first, with this replica's unwritten uses counted. A
    /// use served from another replica's copy in the last
    /// [`SESSION_FLUSH_INTERVAL`] may not show yet.
    pub async fn sessions_of(
        &self,
        user: UserId,
        now_ms: i64,
    ) -> Result<Vec<ListedSession>, StoreError> {
        let args = vec![
            user.to_string(),
            now_ms.to_string(),
            self.idle_ttl_ms.to_string(),
            LISTED_SESSIONS.to_string(),
        ];
        let rows: Vec<Vec<String>> = self
            .redis
            .run_in(self.space_of(user), &self.scripts.sessions_of, args)
            .await?
            .convert()?;
        let number = |text: &str| {
            text.parse::<i64>()
                .map_err(|err| StoreError::Failed(anyhow!("session field {text:?}: {err}")))
        };
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let [id, created, seen, absolute, refreshes, agent, ip] = row.as_slice() else {
                return Err(StoreError::Failed(anyhow!("sessions_of answered {row:?}")));
            };
            let id = SessionId(
                id.parse()
                    .map_err(|err| StoreError::Failed(anyhow!("session id {id}: {err}")))?,
            );
            let mut stored = StoredSession {
                user_id: user,
                created_ms: number(created)?,
                last_seen_ms: number(seen)?,
                absolute_ms: number(absolute)?,
                refresh_count: u32::try_from(number(refreshes)?).unwrap_or(u32::MAX),
            };
            if let Some((seen_ms, uses)) = self.copies(id).unwritten(id) {
                stored.last_seen_ms = stored.last_seen_ms.max(seen_ms);
                stored.refresh_count = stored.refresh_count.saturating_add(uses);
            }
            // Written by this service: an address that does not read back
            // is one an older version never wrote.
            let origin = Origin::new(Some(agent), ip.parse().ok());
            sessions.push(ListedSession {
                session: stored.snapshot(id, self.idle_ttl_ms),
                origin: Arc::new(origin),
            });
        }
        sessions.sort_unstable_by_key(|listed| std::cmp::Reverse(listed.session.created_at));
        Ok(sessions)
    }

    /// Whether uses are served from this replica's copies: only while it
    /// is subscribed to revocations.
    pub fn copying(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst)
    }

    /// Copies this replica holds, over every shard.
    pub fn copies_held(&self) -> usize {
        (0..self.copies.len()).map(|s| self.shard(s).len()).sum()
    }

    /// Listens for revocations until the stop signal, dropping the copies
    /// they name; while not subscribed (at start, and from a lost
    /// connection until it is back) no copy is used or kept.
    pub async fn listen(self: Arc<Self>, shutdown: Shutdown) {
        let client = self.redis.client().clone_new();
        let channels: Vec<String> = self
            .spaces
            .iter()
            .map(|space| format!("{}:sessions-revoked", space.tag()))
            .collect();
        let (mut messages, mut errors, mut reconnects) = (
            client.message_rx(),
            client.error_rx(),
            client.reconnect_rx(),
        );
        drop(client.connect());
        let subscribe = || async {
            self.forget_copies();
            match client.subscribe(channels.clone()).await {
                Ok(()) => self.subscribed.store(true, Ordering::SeqCst),
                Err(err) => tracing::warn!(error = %err, "could not subscribe to revocations"),
            }
        };
        if client.wait_for_connect().await.is_ok() {
            subscribe().await;
        }
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Ok(message) => {
                        let ids: String = message.value.convert().unwrap_or_default();
                        self.evict_ids(ids.split(','));
                    }
                    // Messages were missed: none of the copies can be trusted.
                    Err(RecvError::Lagged(_)) => self.forget_copies(),
                    Err(RecvError::Closed) => break,
                },
                error = errors.recv() => match error {
                    Ok(_) | Err(RecvError::Lagged(_)) => self.forget_copies(),
                    Err(RecvError::Closed) => break,
                },
                reconnected = reconnects.recv() => match reconnected {
                    Ok(_) | Err(RecvError::Lagged(_)) => subscribe().await,
                    Err(RecvError::Closed) => break,
                },
                () = shutdown.stopping() => break,
            }
        }
        self.forget_copies();
        let _ = client.quit().await;
    }

    /// Stops using the copies and drops them all.
    fn forget_copies(&self) {
        self.subscribed.store(false, Ordering::SeqCst);
        for shard in 0..self.copies.len() {
            self.shard(shard).clear();
        }
    }

    fn evict_ids<'a>(&self, ids: impl Iterator<Item = &'a str>) {
        for id in ids.filter_map(|id| id.parse().ok().map(SessionId)) {
            self.copies(id).evict(id);
        }
    }
}

/// What `touch.lua` answered.
enum Touched {
    Live(StoredSession, Option<Profile>),
    Expired,
    Unknown,
}

/// Reads what `touch.lua` answered.
fn touched(answer: Value, user_id: UserId) -> anyhow::Result<Touched> {
    let fields: Vec<String> = answer.convert()?;
    let number = |text: &str| {
        text.parse::<i64>()
            .with_context(|| format!("session field {text:?} is not a number"))
    };
    Ok(match fields.as_slice() {
        [tag] if tag == "unknown" => Touched::Unknown,
        [tag] if tag == "expired" => Touched::Expired,
        [tag, created, seen, absolute, refreshes, name, email, joined] if tag == "live" => {
            let stored = StoredSession {
                user_id,
                created_ms: number(created)?,
                last_seen_ms: number(seen)?,
                absolute_ms: number(absolute)?,
                refresh_count: u32::try_from(number(refreshes)?).unwrap_or(u32::MAX),
            };
            let profile = (!name.is_empty()).then(|| -> anyhow::Result<Profile> {
                Ok(Profile {
                    id: user_id,
                    username: name.clone(),
                    email: (!email.is_empty()).then(|| email.clone()),
                    created_at: DateTime::from_timestamp_millis(number(joined)?)
                        .unwrap_or_default(),
                })
            });
            Touched::Live(stored, profile.transpose()?)
        }
        _ => return Err(anyhow!("touch answered {fields:?}")),
    })
}

/// Reads one of `flush.lua`'s answers: `(seen, refreshes)`, or `None` for a
/// session gone from Redis.
fn flushed(answer: Value) -> Option<(i64, u32)> {
    let fields: Vec<String> = answer.convert().ok()?;
    match fields.as_slice() {
        [seen, refreshes] => Some((seen.parse().ok()?, refreshes.parse().ok()?)),
        _ => None,
    }
}

/// Milliseconds in `duration`, saturating.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
