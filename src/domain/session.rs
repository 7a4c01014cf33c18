//! Sessions and the table that holds one shard's share of them. Pure data:
//! the `SessionShard` actor owns a table and supplies the time.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::UserId;

/// A session's identifier, the `sid` claim of its token. Random (UUID v4),
/// so it can neither be guessed nor enumerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct SessionId(pub Uuid);

impl SessionId {
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// Which of `shards` shards holds this session. Ids are random, so
    /// their low bits spread sessions evenly.
    pub fn shard(&self, shards: usize) -> usize {
        (self.0.as_u128() % shards.max(1) as u128) as usize
    }
}

/// A snapshot of one session, as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// When the session lapses unless used again: the idle deadline, capped
    /// by `absolute_expires_at`.
    pub expires_at: DateTime<Utc>,
    /// The token's `exp`; no use extends a session past it.
    pub absolute_expires_at: DateTime<Utc>,
    /// How many times the session has been reinflated by use.
    pub refresh_count: u32,
}

/// What a use of a session found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TouchOutcome {
    /// The session was live and is now reinflated.
    Live(Session),
    /// No such session for this user: never existed, revoked or swept.
    Unknown,
    /// The session had lapsed; it is removed now.
    Expired,
}

/// One stored session, kept small: at a million idle sessions every byte
/// here costs a megabyte. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct StoredSession {
    pub user_id: UserId,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    pub absolute_ms: i64,
    pub refresh_count: u32,
}

impl StoredSession {
    /// When it lapses unless used again: the idle deadline, capped by the
    /// absolute expiry.
    pub fn expires_ms(&self, idle_ttl_ms: i64) -> i64 {
        self.last_seen_ms
            .saturating_add(idle_ttl_ms)
            .min(self.absolute_ms)
    }

    pub fn snapshot(&self, id: SessionId, idle_ttl_ms: i64) -> Session {
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
        Session {
            id,
            user_id: self.user_id,
            created_at: at(self.created_ms),
            last_seen_at: at(self.last_seen_ms),
            expires_at: at(self.expires_ms(idle_ttl_ms)),
            absolute_expires_at: at(self.absolute_ms),
            refresh_count: self.refresh_count,
        }
    }
}

/// Sessions by id, with the idle rule applied on every use and by [`sweep`].
///
/// Invariant: a session is live while `now < min(last_seen + idle_ttl,
/// absolute)`; a lapsed one is never reported live, whether or not the sweep
/// has reached it yet.
///
/// [`sweep`]: SessionTable::sweep
#[derive(Debug)]
pub struct SessionTable {
    idle_ttl_ms: i64,
    entries: HashMap<SessionId, StoredSession>,
}

impl SessionTable {
    /// When the map is this many times larger than its contents after a
    /// sweep, it is shrunk, so memory held by swept sessions goes back.
    const SHRINK_FACTOR: usize = 4;
    /// Below this capacity shrinking is not worth a reallocation.
    const SHRINK_FLOOR: usize = 1024;

    pub fn new(idle_ttl: std::time::Duration) -> Self {
        Self {
            idle_ttl_ms: i64::try_from(idle_ttl.as_millis()).unwrap_or(i64::MAX),
            entries: HashMap::new(),
        }
    }

    /// Records a new session, last seen at `now`.
    pub fn open(
        &mut self,
        id: SessionId,
        user_id: UserId,
        now_ms: i64,
        absolute_ms: i64,
    ) -> Session {
        let entry = StoredSession {
            user_id,
            created_ms: now_ms,
            last_seen_ms: now_ms,
            absolute_ms,
            refresh_count: 0,
        };
        self.entries.insert(id, entry);
        entry.snapshot(id, self.idle_ttl_ms)
    }

    /// Uses a session: if it is live and belongs to `user_id`, it is
    /// reinflated (seen now, count up). A lapsed session is removed.
    pub fn touch(&mut self, id: SessionId, user_id: UserId, now_ms: i64) -> TouchOutcome {
        let Some(entry) = self.entries.get_mut(&id) else {
            return TouchOutcome::Unknown;
        };
        if entry.user_id != user_id {
            return TouchOutcome::Unknown;
        }
        if now_ms >= entry.expires_ms(self.idle_ttl_ms) {
            self.entries.remove(&id);
            return TouchOutcome::Expired;
        }
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
        entry.refresh_count = entry.refresh_count.saturating_add(1);
        TouchOutcome::Live(entry.snapshot(id, self.idle_ttl_ms))
    }

    /// Ends one session. Returns whether it existed.
    pub fn revoke(&mut self, id: SessionId) -> bool {
        self.entries.remove(&id).is_some()
    }

    /// Ends every session of `user_id` except `keep`. Returns how many ended.
    pub fn revoke_user(&mut self, user_id: UserId, keep: Option<SessionId>) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|id, entry| entry.user_id != user_id || Some(*id) == keep);
        before - self.entries.len()
    }

    /// Adds to `counts` how many sessions each of `users` holds here, in
    /// one pass over the table.
    pub fn count_of(&self, users: &[UserId], counts: &mut [usize]) {
        let index: HashMap<UserId, usize> = users
            .iter()
            .enumerate()
            .map(|(at, user)| (*user, at))
            .collect();
        for entry in self.entries.values() {
            if let Some(&at) = index.get(&entry.user_id) {
                counts[at] += 1;
            }
        }
    }

    /// `user`'s sessions live at `now_ms`, newest first, in one pass over
    /// the table.
    pub fn sessions_of(&self, user: UserId, now_ms: i64) -> Vec<Session> {
        let mut live: Vec<Session> = self
            .entries
            .iter()
            .filter(|(_, entry)| {
                entry.user_id == user && now_ms < entry.expires_ms(self.idle_ttl_ms)
            })
            .map(|(id, entry)| entry.snapshot(*id, self.idle_ttl_ms))
            .collect();
        live.sort_unstable_by_key(|session| std::cmp::Reverse(session.created_at));
        live
    }

    /// Drops every lapsed session and gives back memory the map no longer
    /// needs. Returns how many were dropped.
    pub fn sweep(&mut self, now_ms: i64) -> usize {
        let idle_ttl_ms = self.idle_ttl_ms;
        let before = self.entries.len();
        self.entries
            .retain(|_, entry| now_ms < entry.expires_ms(idle_ttl_ms));
        let capacity = self.entries.capacity();
        if capacity > Self::SHRINK_FLOOR && capacity > self.entries.len() * Self::SHRINK_FACTOR {
            self.entries.shrink_to_fit();
        }
        before - self.entries.len()
    }

    /// Sessions held, live or lapsed but not yet swept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Slots allocated: what the table costs in memory, not what it holds.
    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TTL: Duration = Duration::from_secs(30);
    const HOUR_MS: i64 = 3_600_000;

    fn table_with_one(now: i64) -> (SessionTable, SessionId, UserId) {
        let mut table = SessionTable::new(TTL);
        let (id, user) = (SessionId::random(), UserId::new());
        table.open(id, user, now, now + HOUR_MS);
        (table, id, user)
    }

    #[test]
    fn each_use_pushes_the_idle_deadline_back_and_counts() {
        let (mut table, id, user) = table_with_one(0);
        for (i, at) in [20_000, 40_000, 60_000].into_iter().enumerate() {
            let TouchOutcome::Live(session) = table.touch(id, user, at) else {
                panic!("lapsed at {at}")
            };
            assert_eq!(session.refresh_count, i as u32 + 1);
            assert_eq!(session.expires_at.timestamp_millis(), at + 30_000);
        }
    }

    #[test]
    fn a_session_idle_for_the_ttl_has_lapsed_and_is_removed() {
        let (mut table, id, user) = table_with_one(0);
        assert_eq!(table.touch(id, user, 30_000), TouchOutcome::Expired);
        assert_eq!(table.touch(id, user, 30_001), TouchOutcome::Unknown);
        assert!(table.is_empty());
    }

    #[test]
    fn no_use_extends_a_session_past_its_absolute_expiry() {
        let mut table = SessionTable::new(TTL);
        let (id, user) = (SessionId::random(), UserId::new());
        table.open(id, user, 0, 45_000);
        let TouchOutcome::Live(session) = table.touch(id, user, 25_000) else {
            panic!()
        };
        assert_eq!(session.expires_at.timestamp_millis(), 45_000);
        assert_eq!(table.touch(id, user, 45_000), TouchOutcome::Expired);
    }

    #[test]
    fn another_users_token_cannot_use_the_session() {
        let (mut table, id, _) = table_with_one(0);
        assert_eq!(table.touch(id, UserId::new(), 1), TouchOutcome::Unknown);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn revoking_a_user_keeps_the_named_session_and_other_users() {
        let mut table = SessionTable::new(TTL);
        let (alice, bob) = (UserId::new(), UserId::new());
        let kept = SessionId::random();
        table.open(kept, alice, 0, HOUR_MS);
        for _ in 0..3 {
            table.open(SessionId::random(), alice, 0, HOUR_MS);
        }
        let bobs = SessionId::random();
        table.open(bobs, bob, 0, HOUR_MS);
        assert_eq!(table.revoke_user(alice, Some(kept)), 3);
        assert!(matches!(table.touch(kept, alice, 1), TouchOutcome::Live(_)));
        assert!(matches!(table.touch(bobs, bob, 1), TouchOutcome::Live(_)));
        assert!(table.revoke(kept));
        assert!(!table.revoke(kept));
    }

    #[test]
    fn sessions_are_counted_per_user_asked_for() {
        let mut table = SessionTable::new(TTL);
        let (alice, bob, carol) = (UserId::new(), UserId::new(), UserId::new());
        for user in [alice, alice, bob, alice] {
            table.open(SessionId::random(), user, 0, HOUR_MS);
        }
        let mut counts = vec![0; 3];
        table.count_of(&[carol, alice, bob], &mut counts);
        assert_eq!(counts, [0, 3, 1]);
    }

    #[test]
    fn a_users_live_sessions_are_listed_newest_first() {
        let mut table = SessionTable::new(TTL);
        let (alice, bob) = (UserId::new(), UserId::new());
        let (old, new, lapsed) = (
            SessionId::random(),
            SessionId::random(),
            SessionId::random(),
        );
        table.open(lapsed, alice, 0, HOUR_MS);
        table.open(old, alice, 10_000, HOUR_MS);
        table.open(new, alice, 20_000, HOUR_MS);
        table.open(SessionId::random(), bob, 20_000, HOUR_MS);

        let listed: Vec<SessionId> = table
            .sessions_of(alice, 30_000)
            .iter()
            .map(|s| s.id)
            .collect();

        assert_eq!(listed, [new, old]);
    }

    #[test]
    fn sweep_drops_lapsed_sessions_and_returns_their_memory() {
        let mut table = SessionTable::new(TTL);
        let user = UserId::new();
        for _ in 0..10_000 {
            table.open(SessionId::random(), user, 0, HOUR_MS);
        }
        let survivor = SessionId::random();
        table.open(survivor, user, 20_000, HOUR_MS);
        let grown = table.capacity();

        assert_eq!(table.sweep(29_999), 0);
        assert_eq!(table.sweep(30_000), 10_000);
        assert_eq!(table.len(), 1);
        assert!(
            table.capacity() < grown / 8,
            "{} of {grown}",
            table.capacity()
        );
        assert!(matches!(
            table.touch(survivor, user, 30_000),
            TouchOutcome::Live(_)
        ));
    }
}
