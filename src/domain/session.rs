//! Sessions and the table that holds one shard's share of them. Pure data:
//! the `SessionShard` actor owns a table and supplies the time.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::UserId;

/// Most sessions of one user a listing answers, and so the most
/// `session.max_per_user` may be.
pub const LISTED_SESSIONS: usize = 200;

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

/// Where a session was opened from: the client's `User-Agent` (at most
/// [`Origin::MAX_USER_AGENT`] bytes) and its address, as the service saw
/// them. Shown to the session's user so they can tell their devices apart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    pub user_agent: Option<Box<str>>,
    pub ip: Option<IpAddr>,
}

impl Origin {
    /// Longest user agent kept; longer ones are cut at a character boundary.
    pub const MAX_USER_AGENT: usize = 256;

    pub fn new(user_agent: Option<&str>, ip: Option<IpAddr>) -> Self {
        let user_agent = user_agent.map(str::trim).filter(|agent| !agent.is_empty());
        Self {
            user_agent: user_agent.map(|agent| {
                let mut end = agent.len().min(Self::MAX_USER_AGENT);
                while !agent.is_char_boundary(end) {
                    end -= 1;
                }
                agent[..end].into()
            }),
            ip,
        }
    }
}

/// A live session as listed to its user or an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSession {
    pub session: Session,
    pub origin: Arc<Origin>,
}

/// One session in a user's row of the table. 56 bytes: at a million idle
/// sessions every byte here costs a megabyte.
#[derive(Debug, Clone)]
struct Held {
    id: SessionId,
    created_ms: i64,
    last_seen_ms: i64,
    absolute_ms: i64,
    refresh_count: u32,
    /// Shared with the table's [`Origins`] and every session opened from
    /// the same place; `None` when nothing is known of it.
    origin: Option<Arc<Origin>>,
}

impl Held {
    fn stored(&self, user_id: UserId) -> StoredSession {
        StoredSession {
            user_id,
            created_ms: self.created_ms,
            last_seen_ms: self.last_seen_ms,
            absolute_ms: self.absolute_ms,
            refresh_count: self.refresh_count,
        }
    }
}

/// Sessions by user, with the idle rule applied on every use and by
/// [`sweep`]. Keyed by user, so that a user's sessions are listed, counted
/// and revoked without reading anyone else's; a row is a boxed slice (two
/// words in the map) because most users hold one or two sessions.
///
/// Invariant: a session is live while `now < min(last_seen + idle_ttl,
/// absolute)`; a lapsed one is never reported live, whether or not the sweep
/// has reached it yet.
///
/// [`sweep`]: SessionTable::sweep
#[derive(Debug)]
pub struct SessionTable {
    idle_ttl_ms: i64,
    max_per_user: usize,
    users: HashMap<UserId, Box<[Held]>>,
    len: usize,
    origins: Origins,
}

impl SessionTable {
    /// When the map is this many times larger than its contents after a
    /// sweep, it is shrunk, so memory held by swept sessions goes back.
    const SHRINK_FACTOR: usize = 4;
    /// Below this capacity shrinking is not worth a reallocation.
    const SHRINK_FLOOR: usize = 1024;

    /// A table whose sessions lapse `idle_ttl` after their last use, and
    /// whose users hold at most `max_per_user` each.
    pub fn new(idle_ttl: std::time::Duration, max_per_user: usize) -> Self {
        Self {
            idle_ttl_ms: i64::try_from(idle_ttl.as_millis()).unwrap_or(i64::MAX),
            max_per_user: max_per_user.max(1),
            users: HashMap::new(),
            len: 0,
            origins: Origins::default(),
        }
    }

    /// Records a new session opened from `origin`, last seen at `now`. A
    /// user already holding `max_per_user` loses one that has lapsed, or
    /// else the one used longest ago. Returns the session and those that
    /// ended to make room.
    pub fn open(
        &mut self,
        id: SessionId,
        user_id: UserId,
        origin: &Origin,
        now_ms: i64,
        absolute_ms: i64,
    ) -> (Session, Vec<SessionId>) {
        let ended = match self.users.get(&user_id) {
            Some(row) if row.len() >= self.max_per_user => {
                let mut by_staleness: Vec<(i64, SessionId)> = row
                    .iter()
                    .map(|held| {
                        let lapsed = now_ms >= held.stored(user_id).expires_ms(self.idle_ttl_ms);
                        (if lapsed { i64::MIN } else { held.last_seen_ms }, held.id)
                    })
                    .collect();
                by_staleness.sort_unstable_by_key(|(staleness, _)| *staleness);
                let doomed: Vec<SessionId> = by_staleness[..=row.len() - self.max_per_user]
                    .iter()
                    .map(|(_, id)| *id)
                    .collect();
                self.remove(user_id, |held| doomed.contains(&held.id));
                doomed
            }
            _ => Vec::new(),
        };
        let held = Held {
            id,
            created_ms: now_ms,
            last_seen_ms: now_ms,
            absolute_ms,
            refresh_count: 0,
            origin: self.origins.take(origin),
        };
        let session = held.stored(user_id).snapshot(id, self.idle_ttl_ms);
        let row = self.users.entry(user_id).or_default();
        let mut grown = std::mem::take(row).into_vec();
        grown.push(held);
        *row = grown.into_boxed_slice();
        self.len += 1;
        (session, ended)
    }

    /// Uses a session: if it is live and belongs to `user_id`, it is
    /// reinflated (seen now, count up). A lapsed session is removed.
    pub fn touch(&mut self, id: SessionId, user_id: UserId, now_ms: i64) -> TouchOutcome {
        let Some(held) = self
            .users
            .get_mut(&user_id)
            .and_then(|row| row.iter_mut().find(|held| held.id == id))
        else {
            return TouchOutcome::Unknown;
        };
        let mut stored = held.stored(user_id);
        if now_ms >= stored.expires_ms(self.idle_ttl_ms) {
            self.remove(user_id, |held| held.id == id);
            return TouchOutcome::Expired;
        }
        held.last_seen_ms = held.last_seen_ms.max(now_ms);
        held.refresh_count = held.refresh_count.saturating_add(1);
        (stored.last_seen_ms, stored.refresh_count) = (held.last_seen_ms, held.refresh_count);
        TouchOutcome::Live(stored.snapshot(id, self.idle_ttl_ms))
    }

    /// Ends `user_id`'s session `id`. Returns whether it existed.
    pub fn revoke(&mut self, id: SessionId, user_id: UserId) -> bool {
        self.remove(user_id, |held| held.id == id) > 0
    }

    /// Ends every session of `user_id` except `keep`. Returns how many ended.
    pub fn revoke_user(&mut self, user_id: UserId, keep: Option<SessionId>) -> usize {
        self.remove(user_id, |held| Some(held.id) != keep)
    }

    /// Removes `user_id`'s sessions that `doomed` picks. Returns how many.
    fn remove(&mut self, user_id: UserId, doomed: impl Fn(&Held) -> bool) -> usize {
        let Some(row) = self.users.get_mut(&user_id) else {
            return 0;
        };
        let removed = Self::remove_from(row, &mut self.origins, doomed);
        if row.is_empty() {
            self.users.remove(&user_id);
        }
        self.len -= removed;
        removed
    }

    /// Removes the sessions `doomed` picks from one row, giving back their
    /// origins. Returns how many.
    fn remove_from(
        row: &mut Box<[Held]>,
        origins: &mut Origins,
        doomed: impl Fn(&Held) -> bool,
    ) -> usize {
        if !row.iter().any(&doomed) {
            return 0;
        }
        let before = row.len();
        let mut kept = std::mem::take(row).into_vec();
        kept.retain(|held| {
            let ends = doomed(held);
            if ends {
                origins.give_back(&held.origin);
            }
            !ends
        });
        *row = kept.into_boxed_slice();
        before - row.len()
    }

    /// How many sessions `user` holds, lapsed ones not yet swept included.
    pub fn count_of(&self, user: UserId) -> usize {
        self.users.get(&user).map_or(0, |row| row.len())
    }

    /// `user`'s sessions live at `now_ms`, newest first.
    pub fn sessions_of(&self, user: UserId, now_ms: i64) -> Vec<ListedSession> {
        let Some(row) = self.users.get(&user) else {
            return Vec::new();
        };
        let mut live: Vec<ListedSession> = row
            .iter()
            .filter(|held| now_ms < held.stored(user).expires_ms(self.idle_ttl_ms))
            .map(|held| ListedSession {
                session: held.stored(user).snapshot(held.id, self.idle_ttl_ms),
                // A copy: the table's own records must be held by its
                // sessions alone, so that the last one can let go of it.
                origin: Arc::new(held.origin.as_deref().cloned().unwrap_or_default()),
            })
            .collect();
        live.sort_unstable_by_key(|listed| std::cmp::Reverse(listed.session.created_at));
        live
    }

    /// Drops every lapsed session and gives back memory the map no longer
    /// needs. Returns how many were dropped.
    pub fn sweep(&mut self, now_ms: i64) -> usize {
        let idle_ttl_ms = self.idle_ttl_ms;
        let mut swept = 0;
        let origins = &mut self.origins;
        self.users.retain(|user, row| {
            swept += Self::remove_from(row, origins, |held| {
                now_ms >= held.stored(*user).expires_ms(idle_ttl_ms)
            });
            !row.is_empty()
        });
        self.len -= swept;
        let capacity = self.users.capacity();
        if capacity > Self::SHRINK_FLOOR && capacity > self.users.len() * Self::SHRINK_FACTOR {
            self.users.shrink_to_fit();
        }
        swept
    }

    /// Sessions held, live or lapsed but not yet swept.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Users' rows allocated: what the table costs in memory, not what it
    /// holds.
    pub fn capacity(&self) -> usize {
        self.users.capacity()
    }
}

/// The distinct origins a table's sessions were opened from, each kept
/// once however many sessions share it (a device signing in again, or a
/// flood from one client), and dropped with its last session.
#[derive(Debug, Default)]
struct Origins(HashSet<Arc<Origin>>);

impl Origins {
    /// The shared record of `origin` for one more session; `None` for an
    /// origin of which nothing is known.
    fn take(&mut self, origin: &Origin) -> Option<Arc<Origin>> {
        if *origin == Origin::default() {
            return None;
        }
        if let Some(shared) = self.0.get(origin) {
            return Some(shared.clone());
        }
        let shared = Arc::new(origin.clone());
        self.0.insert(shared.clone());
        Some(shared)
    }

    /// A session that held `origin` is ending: the record goes with the
    /// last one (then only this set and that session hold it).
    fn give_back(&mut self, origin: &Option<Arc<Origin>>) {
        if let Some(shared) = origin
            && Arc::strong_count(shared) == 2
        {
            self.0.remove(shared);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TTL: Duration = Duration::from_secs(30);
    const HOUR_MS: i64 = 3_600_000;

    fn table_with_one(now: i64) -> (SessionTable, SessionId, UserId) {
        let mut table = SessionTable::new(TTL, 100);
        let (id, user) = (SessionId::random(), UserId::new());
        table.open(id, user, &Origin::default(), now, now + HOUR_MS);
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
        let mut table = SessionTable::new(TTL, 100);
        let (id, user) = (SessionId::random(), UserId::new());
        table.open(id, user, &Origin::default(), 0, 45_000);
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
        let mut table = SessionTable::new(TTL, 100);
        let (alice, bob) = (UserId::new(), UserId::new());
        let kept = SessionId::random();
        table.open(kept, alice, &Origin::default(), 0, HOUR_MS);
        for _ in 0..3 {
            table.open(SessionId::random(), alice, &Origin::default(), 0, HOUR_MS);
        }
        let bobs = SessionId::random();
        table.open(bobs, bob, &Origin::default(), 0, HOUR_MS);
        assert_eq!(table.revoke_user(alice, Some(kept)), 3);
        assert!(matches!(table.touch(kept, alice, 1), TouchOutcome::Live(_)));
        assert!(matches!(table.touch(bobs, bob, 1), TouchOutcome::Live(_)));
        assert!(!table.revoke(kept, bob), "not bob's to end");
        assert!(table.revoke(kept, alice));
        assert!(!table.revoke(kept, alice));
    }

    #[test]
    fn sessions_are_counted_per_user_asked_for() {
        let mut table = SessionTable::new(TTL, 100);
        let (alice, bob, carol) = (UserId::new(), UserId::new(), UserId::new());
        for user in [alice, alice, bob, alice] {
            table.open(SessionId::random(), user, &Origin::default(), 0, HOUR_MS);
        }
        let counts = [carol, alice, bob].map(|user| table.count_of(user));
        assert_eq!(counts, [0, 3, 1]);
    }

    #[test]
    fn a_users_live_sessions_are_listed_newest_first() {
        let mut table = SessionTable::new(TTL, 100);
        let (alice, bob) = (UserId::new(), UserId::new());
        let (old, new, lapsed) = (
            SessionId::random(),
            SessionId::random(),
            SessionId::random(),
        );
        table.open(lapsed, alice, &Origin::default(), 0, HOUR_MS);
        table.open(old, alice, &Origin::default(), 10_000, HOUR_MS);
        table.open(new, alice, &Origin::default(), 20_000, HOUR_MS);
        table.open(
            SessionId::random(),
            bob,
            &Origin::default(),
            20_000,
            HOUR_MS,
        );

        let listed: Vec<SessionId> = table
            .sessions_of(alice, 30_000)
            .iter()
            .map(|listed| listed.session.id)
            .collect();

        assert_eq!(listed, [new, old]);
    }

    #[test]
    fn sessions_from_one_origin_share_it_until_the_last_one_ends() {
        let mut table = SessionTable::new(TTL, 100);
        let user = UserId::new();
        let phone = Origin::new(Some("Phone/1.0"), Some("192.0.2.7".parse().unwrap()));
        let laptop = Origin::new(Some("Laptop/2.0"), None);
        let ids: Vec<SessionId> = (0..3).map(|_| SessionId::random()).collect();
        table.open(ids[0], user, &phone, 0, HOUR_MS);
        table.open(ids[1], user, &phone, 1, HOUR_MS);
        table.open(ids[2], user, &laptop, 2, HOUR_MS);
        assert_eq!(table.origins.0.len(), 2);

        let listed = table.sessions_of(user, 3);
        let origins: Vec<&Origin> = listed.iter().map(|l| &*l.origin).collect();
        assert_eq!(origins, [&laptop, &phone, &phone]);

        assert!(table.revoke(ids[0], user));
        assert_eq!(table.origins.0.len(), 2, "one phone session is left");
        assert_eq!(table.revoke_user(user, None), 2);
        assert!(table.origins.0.is_empty());
        table.open(SessionId::random(), user, &laptop, 4, HOUR_MS);
        assert_eq!(table.origins.0.len(), 1);
        // Lapsed and swept, the last session takes its origin with it.
        table.sweep(HOUR_MS);
        assert!(table.origins.0.is_empty());
    }

    #[test]
    fn a_user_at_the_limit_loses_the_session_used_longest_ago() {
        let mut table = SessionTable::new(TTL, 2);
        let user = UserId::new();
        let (first, second, third) = (
            SessionId::random(),
            SessionId::random(),
            SessionId::random(),
        );
        table.open(first, user, &Origin::default(), 0, HOUR_MS);
        table.open(second, user, &Origin::default(), 1, HOUR_MS);
        table.touch(first, user, 2);

        let (_, ended) = table.open(third, user, &Origin::default(), 3, HOUR_MS);

        assert_eq!(ended, [second]);
        assert_eq!(table.touch(second, user, 4), TouchOutcome::Unknown);
        assert!(matches!(table.touch(first, user, 4), TouchOutcome::Live(_)));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_user_at_the_limit_loses_a_lapsed_session_before_a_live_one() {
        let mut table = SessionTable::new(TTL, 2);
        let user = UserId::new();
        let (ending, idle) = (SessionId::random(), SessionId::random());
        // Used last, but past its absolute expiry.
        table.open(ending, user, &Origin::default(), 0, 20_000);
        table.open(idle, user, &Origin::default(), 1_000, HOUR_MS);
        table.touch(ending, user, 19_000);

        table.open(
            SessionId::random(),
            user,
            &Origin::default(),
            25_000,
            HOUR_MS,
        );

        assert!(matches!(
            table.touch(idle, user, 25_001),
            TouchOutcome::Live(_)
        ));
        assert_eq!(table.touch(ending, user, 25_001), TouchOutcome::Unknown);
    }

    #[test]
    fn a_long_user_agent_is_cut_at_a_character_boundary() {
        let agent = "é".repeat(200);
        let cut = Origin::new(Some(&agent), None).user_agent.unwrap();
        assert_eq!(cut.len(), Origin::MAX_USER_AGENT);
        assert_eq!(Origin::new(Some("  "), None), Origin::default());
    }

    #[test]
    fn sweep_drops_lapsed_sessions_and_returns_their_memory() {
        let mut table = SessionTable::new(TTL, 100);
        for _ in 0..10_000 {
            table.open(
                SessionId::random(),
                UserId::new(),
                &Origin::default(),
                0,
                HOUR_MS,
            );
        }
        let user = UserId::new();
        let survivor = SessionId::random();
        table.open(survivor, user, &Origin::default(), 20_000, HOUR_MS);
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
