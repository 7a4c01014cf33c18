//! One shard of a replica's copy of the sessions it has seen in Redis, so
//! that a use costs no round trip. A use served here counts in the copy
//! and is written to Redis later, in a batch; an entry is dropped when
//! Redis says its session was revoked anywhere, and every entry when the
//! replica cannot be sure it hears that (its subscription was lost).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::domain::{Profile, Session, SessionId, StoredSession, UserId};

/// A session as this replica last knew it.
#[derive(Debug, Clone)]
pub(super) struct Cached {
    /// The latest this replica knows: Redis's figures, plus its own uses.
    pub stored: StoredSession,
    /// Uses counted here that Redis has not been told of yet.
    pub unflushed: u32,
    pub profile: Arc<Profile>,
}

/// Uses of one session to write to Redis.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    pub id: SessionId,
    pub user: UserId,
    pub seen_ms: i64,
    pub uses: u32,
}

#[derive(Debug, Default)]
pub(super) struct SessionCache {
    entries: HashMap<SessionId, Cached>,
    /// Entries with uses Redis has not been told of.
    dirty: HashSet<SessionId>,
    /// Grows with every eviction, so that a copy read from Redis before an
    /// eviction is not kept after it.
    epoch: u64,
}

impl SessionCache {
    /// Serves a use from the copy, if it holds the session, the session is
    /// `user`'s and is live by the copy: seen now, counted, and marked for
    /// Redis. Anything else is Redis's to answer.
    pub fn touch(
        &mut self,
        id: SessionId,
        user: UserId,
        now_ms: i64,
        idle_ttl_ms: i64,
    ) -> Option<Session> {
        let entry = self
            .entries
            .get_mut(&id)
            .filter(|e| e.stored.user_id == user)?;
        if now_ms >= entry.stored.expires_ms(idle_ttl_ms) {
            // Lapsed by this copy, but another replica may have used it
            // since: only Redis knows.
            return None;
        }
        entry.stored.last_seen_ms = entry.stored.last_seen_ms.max(now_ms);
        entry.stored.refresh_count = entry.stored.refresh_count.saturating_add(1);
        entry.unflushed = entry.unflushed.saturating_add(1);
        self.dirty.insert(id);
        Some(entry.stored.snapshot(id, idle_ttl_ms))
    }

    /// The eviction count now, to hand to [`fill`](Self::fill) after a read.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Keeps Redis's answer, unless something was evicted since `epoch`:
    /// the answer may predate a revocation.
    pub fn fill(
        &mut self,
        id: SessionId,
        stored: StoredSession,
        profile: Arc<Profile>,
        epoch: u64,
    ) {
        if self.epoch != epoch {
            return;
        }
        let unflushed = self.entries.get(&id).map_or(0, |e| e.unflushed);
        self.entries.insert(
            id,
            Cached {
                stored,
                unflushed,
                profile,
            },
        );
    }

    pub fn profile(&self, id: SessionId) -> Option<Arc<Profile>> {
        self.entries.get(&id).map(|e| e.profile.clone())
    }

    /// The latest use of `id` seen here and how many uses Redis has not
    /// been told of, if this copy holds it.
    pub fn unwritten(&self, id: SessionId) -> Option<(i64, u32)> {
        let entry = self.entries.get(&id)?;
        Some((entry.stored.last_seen_ms, entry.unflushed))
    }

    /// Drops one session.
    pub fn evict(&mut self, id: SessionId) {
        self.epoch += 1;
        self.entries.remove(&id);
        self.dirty.remove(&id);
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.epoch += 1;
        self.entries = HashMap::new();
        self.dirty = HashSet::new();
    }

    /// The uses to write to Redis, taken off the list: [`flushed`] or
    /// [`unflushed`] must follow for each.
    ///
    /// [`flushed`]: Self::flushed
    /// [`unflushed`]: Self::unflushed
    pub fn take_dirty(&mut self) -> Vec<Pending> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|id| {
                let entry = self.entries.get(&id)?;
                Some(Pending {
                    id,
                    user: entry.stored.user_id,
                    seen_ms: entry.stored.last_seen_ms,
                    uses: entry.unflushed,
                })
            })
            .collect()
    }

    /// Redis took `sent`'s uses and now holds `seen_ms` and
    /// `refresh_count` for it; `None` when the session is gone there.
    pub fn flushed(&mut self, sent: Pending, redis: Option<(i64, u32)>) {
        let Some((seen_ms, refresh_count)) = redis else {
            self.evict(sent.id);
            return;
        };
        let Some(entry) = self.entries.get_mut(&sent.id) else {
            return;
        };
        entry.unflushed = entry.unflushed.saturating_sub(sent.uses);
        entry.stored.last_seen_ms = entry.stored.last_seen_ms.max(seen_ms);
        // Redis's count (every replica's uses) and those made here since.
        entry.stored.refresh_count = refresh_count.saturating_add(entry.unflushed);
    }

    /// Redis did not take `sent`'s uses: they stay to be written.
    pub fn unflushed(&mut self, sent: Pending) {
        if self.entries.contains_key(&sent.id) {
            self.dirty.insert(sent.id);
        }
    }

    /// Drops the copies that have lapsed by this replica's uses and have
    /// nothing left to write. Returns how many.
    pub fn sweep(&mut self, now_ms: i64, idle_ttl_ms: i64) -> usize {
        let before = self.entries.len();
        let dirty = &self.dirty;
        self.entries
            .retain(|id, e| dirty.contains(id) || now_ms < e.stored.expires_ms(idle_ttl_ms));
        if self.entries.capacity() > 1024 && self.entries.capacity() > 4 * self.entries.len() {
            self.entries.shrink_to_fit();
        }
        before - self.entries.len()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    const IDLE: i64 = 30_000;

    fn cached(cache: &mut SessionCache, user: UserId) -> SessionId {
        let id = SessionId::random();
        let stored = StoredSession {
            user_id: user,
            created_ms: 0,
            last_seen_ms: 0,
            absolute_ms: 3_600_000,
            refresh_count: 0,
        };
        let profile = Arc::new(Profile {
            id: user,
            username: "ada".into(),
            email: None,
            created_at: DateTime::from_timestamp_millis(0).unwrap(),
        });
        let epoch = cache.epoch();
        cache.fill(id, stored, profile, epoch);
        id
    }

    #[test]
    fn a_use_within_the_copy_is_served_and_counted_for_redis() {
        let (mut cache, user) = (SessionCache::default(), UserId::new());
        let id = cached(&mut cache, user);

        let used = cache.touch(id, user, 10_000, IDLE).unwrap();

        assert_eq!(used.refresh_count, 1);
        let pending = cache.take_dirty();
        assert_eq!(
            (pending.len(), pending[0].uses, pending[0].seen_ms),
            (1, 1, 10_000)
        );
        // Meanwhile another replica used it three times.
        cache.touch(id, user, 11_000, IDLE).unwrap();
        cache.flushed(pending[0], Some((10_500, 4)));
        assert_eq!(
            cache.touch(id, user, 12_000, IDLE).unwrap().refresh_count,
            6
        );
    }

    #[test]
    fn what_the_copy_cannot_vouch_for_is_left_to_redis() {
        let (mut cache, user) = (SessionCache::default(), UserId::new());
        let id = cached(&mut cache, user);
        assert!(
            cache.touch(id, UserId::new(), 1, IDLE).is_none(),
            "another user"
        );
        assert!(
            cache.touch(id, user, IDLE, IDLE).is_none(),
            "lapsed by the copy"
        );
        assert!(
            cache.touch(SessionId::random(), user, 1, IDLE).is_none(),
            "unknown"
        );
    }

    #[test]
    fn an_answer_read_before_an_eviction_is_not_kept() {
        let (mut cache, user) = (SessionCache::default(), UserId::new());
        let id = cached(&mut cache, user);
        let before_read = cache.epoch();
        cache.evict(SessionId::random());

        let stored = StoredSession {
            user_id: user,
            created_ms: 0,
            last_seen_ms: 0,
            absolute_ms: 3_600_000,
            refresh_count: 0,
        };
        let profile = cache.profile(id).unwrap();
        let late = SessionId::random();
        cache.fill(late, stored, profile, before_read);

        assert!(cache.touch(late, user, 1, IDLE).is_none());
    }

    #[test]
    fn uses_not_yet_written_are_kept_through_a_sweep_and_a_failed_write() {
        let (mut cache, user) = (SessionCache::default(), UserId::new());
        let id = cached(&mut cache, user);
        cache.touch(id, user, 1_000, IDLE).unwrap();

        assert_eq!(cache.sweep(IDLE + 1_000, IDLE), 0, "dirty: kept");
        let pending = cache.take_dirty();
        cache.unflushed(pending[0]);
        assert_eq!(cache.take_dirty()[0].uses, 1, "still to be written");
        assert_eq!(cache.sweep(IDLE + 1_000, IDLE), 1);
    }
}
