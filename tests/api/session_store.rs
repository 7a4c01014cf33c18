//! The session contract: sessions kept by the shard actors themselves and
//! sessions shared through Redis behave the same. Each check drives the
//! real `SessionManager` and its shards, on a clock the test moves.

use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use futures_util::future::join_all;
use tollgate::actors::SessionManager;
use tollgate::clock::Clock;
use tollgate::config::{SessionSettings, SessionStoreKind};
use tollgate::domain::{Origin, Profile, Session, SessionId, TouchOutcome, UserId};
use tollgate::shutdown::Shutdown;
use tollgate::storage::RedisSessions;
use tollgate::telemetry::Metrics;

use crate::helpers::{TestRedis, eventually};

/// "Now" at the start of every check: a whole second, as token expiries are.
const T0: i64 = 1_700_000_000_000;
const SECOND: Duration = Duration::from_secs(1);
const IDLE_TTL: Duration = Duration::from_secs(30);
const LIFETIME: Duration = Duration::from_secs(3600);
/// Sessions one user may hold in these checks.
const MAX_PER_USER: usize = 5;

/// The session manager under test, with the clock it reads.
pub struct Sessions {
    manager: SessionManager,
    clock: Clock,
    /// The Redis store, or none for sessions kept in the shards.
    shared: Option<Arc<RedisSessions>>,
    /// Stops the store's listening for revocations when the check ends.
    listening: Shutdown,
}

impl Drop for Sessions {
    fn drop(&mut self) {
        self.listening.stop();
    }
}

impl Sessions {
    fn start(shared: Option<Arc<RedisSessions>>, lifetime: Duration) -> Self {
        Self::start_on(
            shared,
            lifetime,
            Clock::manual(DateTime::from_timestamp_millis(T0).unwrap()),
        )
    }

    /// A manager on `shared`, listening for revocations, reading `clock`.
    fn start_on(shared: Option<Arc<RedisSessions>>, lifetime: Duration, clock: Clock) -> Self {
        Self::start_sweeping(shared, lifetime, clock, SECOND)
    }

    /// Like [`Sessions::start_on`], sweeping lapsed sessions every `sweep`.
    fn start_sweeping(
        shared: Option<Arc<RedisSessions>>,
        lifetime: Duration,
        clock: Clock,
        sweep: Duration,
    ) -> Self {
        let listening = Shutdown::new();
        if let Some(shared) = &shared {
            listening.spawn(shared.clone().listen(listening.clone()));
        }
        let settings = SessionSettings {
            idle_ttl_secs: IDLE_TTL.as_secs(),
            shards: 4,
            sweep_interval_secs: sweep.as_secs(),
            store: SessionStoreKind::Memory,
            max_per_user: MAX_PER_USER,
            partitions: 1,
        };
        let manager = SessionManager::start(
            &settings,
            lifetime,
            clock.clone(),
            Metrics::noop(),
            shared.clone(),
        );
        Self {
            manager,
            clock,
            shared,
            listening,
        }
    }

    /// A new manager on the same store, issuing sessions of `lifetime`.
    fn with_lifetime(&self, lifetime: Duration) -> Self {
        Self::start(self.shared.clone(), lifetime)
    }

    /// Waits until uses may be served from this replica's copies.
    async fn copying(&self) {
        let shared = self.shared.as_ref().expect("sessions in Redis");
        let ready = eventually(10 * SECOND, || async { shared.copying() }).await;
        assert!(ready, "the store subscribed to revocations");
    }

    async fn open(&self, user: UserId) -> Session {
        self.open_from(user, &Origin::default()).await
    }

    async fn open_from(&self, user: UserId, origin: &Origin) -> Session {
        let profile = Profile {
            id: user,
            username: "someone".into(),
            email: None,
            created_at: self.clock.now(),
        };
        self.manager.open(&profile, origin).await.unwrap().0
    }

    async fn touch(&self, session: &Session) -> TouchOutcome {
        self.touch_as(session, session.user_id).await
    }

    async fn touch_as(&self, session: &Session, user: UserId) -> TouchOutcome {
        self.manager.touch(session.id, user).await.unwrap()
    }

    /// Writes this replica's unwritten uses to Redis, if sessions are
    /// there, so that what Redis decides on sees them.
    async fn write_uses(&self) {
        if let Some(shared) = &self.shared {
            shared.flush_all(self.clock.now_millis()).await.unwrap();
        }
    }

    async fn count(&self) -> usize {
        self.manager.count().await.unwrap()
    }
}

/// The live session a use answered, or a panic naming what it was.
fn live(outcome: TouchOutcome) -> Session {
    match outcome {
        TouchOutcome::Live(session) => session,
        other => panic!("expected a live session, got {other:?}"),
    }
}

/// Milliseconds from the start of the check to `time`.
fn at(time: chrono::DateTime<chrono::Utc>) -> i64 {
    time.timestamp_millis() - T0
}

async fn each_use_pushes_the_idle_deadline_back_and_counts(sessions: Sessions) {
    let session = sessions.open(UserId::new()).await;
    assert_eq!(
        (at(session.created_at), at(session.expires_at)),
        (0, 30_000)
    );
    for (i, seconds) in [20, 40, 60].into_iter().enumerate() {
        sessions.clock.advance(20 * SECOND);
        let used = live(sessions.touch(&session).await);
        assert_eq!(used.refresh_count, i as u32 + 1);
        assert_eq!(at(used.last_seen_at), seconds * 1000);
        assert_eq!(at(used.expires_at), seconds * 1000 + 30_000);
        assert_eq!(at(used.created_at), 0);
        assert_eq!(at(used.absolute_expires_at), 3_600_000);
    }
}

async fn a_session_idle_for_the_ttl_lapses_and_is_removed(sessions: Sessions) {
    let session = sessions.open(UserId::new()).await;
    sessions.clock.advance(IDLE_TTL);
    assert_eq!(sessions.touch(&session).await, TouchOutcome::Expired);
    assert_eq!(sessions.touch(&session).await, TouchOutcome::Unknown);
    assert_eq!(sessions.count().await, 0);
}

async fn no_use_extends_a_session_past_its_absolute_expiry(sessions: Sessions) {
    let sessions = sessions.with_lifetime(45 * SECOND);
    let session = sessions.open(UserId::new()).await;
    sessions.clock.advance(25 * SECOND);
    let used = live(sessions.touch(&session).await);
    assert_eq!(at(used.expires_at), 45_000);
    sessions.clock.advance(20 * SECOND);
    assert_eq!(sessions.touch(&session).await, TouchOutcome::Expired);
}

async fn another_users_token_cannot_use_the_session(sessions: Sessions) {
    let session = sessions.open(UserId::new()).await;
    assert_eq!(
        sessions.touch_as(&session, UserId::new()).await,
        TouchOutcome::Unknown
    );
    assert_eq!(live(sessions.touch(&session).await).refresh_count, 1);
}

async fn a_session_never_opened_is_unknown(sessions: Sessions) {
    let outcome = sessions
        .manager
        .touch(SessionId::random(), UserId::new())
        .await
        .unwrap();
    assert_eq!(outcome, TouchOutcome::Unknown);
    let revoked = sessions.manager.revoke(SessionId::random(), UserId::new());
    assert!(!revoked.await.unwrap());
}

async fn revoking_ends_a_session_at_once(sessions: Sessions) {
    let session = sessions.open(UserId::new()).await;
    let revoke = || sessions.manager.revoke(session.id, session.user_id);
    assert!(revoke().await.unwrap());
    assert_eq!(sessions.touch(&session).await, TouchOutcome::Unknown);
    assert!(!revoke().await.unwrap());
    assert_eq!(sessions.count().await, 0);
}

async fn revoking_a_user_keeps_the_named_session_and_other_users(sessions: Sessions) {
    let (alice, bob) = (UserId::new(), UserId::new());
    let kept = sessions.open(alice).await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(sessions.open(alice).await);
    }
    let bobs = sessions.open(bob).await;

    let ended = sessions.manager.revoke_user(alice, Some(kept.id)).await;

    assert_eq!(ended.unwrap(), 3);
    for other in &others {
        assert_eq!(sessions.touch(other).await, TouchOutcome::Unknown);
    }
    live(sessions.touch(&kept).await);
    live(sessions.touch(&bobs).await);
    assert_eq!(sessions.count().await, 2);
    assert_eq!(sessions.manager.revoke_user(alice, None).await.unwrap(), 1);
    assert_eq!(sessions.count().await, 1);
}

async fn the_sweep_removes_lapsed_sessions_and_spares_live_ones(sessions: Sessions) {
    let user = UserId::new();
    for _ in 0..5 {
        sessions.open(user).await;
    }
    sessions.clock.advance(20 * SECOND);
    let fresh = sessions.open(user).await;
    sessions.clock.advance(15 * SECOND);

    // Nothing touches the stale sessions: only the sweep can remove them.
    let swept = eventually(10 * SECOND, || async { sessions.count().await == 1 }).await;

    assert!(swept, "{} sessions left", sessions.count().await);
    assert_eq!(live(sessions.touch(&fresh).await).refresh_count, 1);
}

async fn only_its_own_user_revokes_a_session(sessions: Sessions) {
    let session = sessions.open(UserId::new()).await;
    let stranger = sessions.manager.revoke(session.id, UserId::new()).await;
    assert!(!stranger.unwrap());
    live(sessions.touch(&session).await);
}

async fn a_users_live_sessions_are_listed_with_their_origin_newest_first(sessions: Sessions) {
    let user = UserId::new();
    let phone = Origin::new(Some("Phone/1.0"), Some("2001:db8::7".parse().unwrap()));
    let laptop = Origin::new(Some("Laptop/2.0"), Some("192.0.2.9".parse().unwrap()));
    let lapsed = sessions.open(user).await;
    sessions.clock.advance(20 * SECOND);
    let older = sessions.open_from(user, &phone).await;
    sessions.clock.advance(SECOND);
    let newer = sessions.open_from(user, &laptop).await;
    sessions.open(UserId::new()).await;
    sessions.clock.advance(10 * SECOND);
    live(sessions.touch(&older).await);

    let listed = sessions.manager.sessions_of(user).await.unwrap();

    let seen: Vec<(SessionId, &Origin)> = listed
        .iter()
        .map(|listed| (listed.session.id, &*listed.origin))
        .collect();
    assert_eq!(
        seen,
        [(newer.id, &laptop), (older.id, &phone)],
        "not {lapsed:?}"
    );
    assert_eq!(listed[1].session.refresh_count, 1);
    assert_eq!(at(listed[1].session.last_seen_at), 31_000);
}

async fn a_user_past_the_limit_loses_the_session_used_longest_ago(sessions: Sessions) {
    let user = UserId::new();
    let mut held = Vec::new();
    for _ in 0..MAX_PER_USER {
        held.push(sessions.open(user).await);
        sessions.clock.advance(SECOND);
    }
    // Every session but the second is used again: that one is the stalest.
    for session in held.iter().filter(|session| session.id != held[1].id) {
        live(sessions.touch(session).await);
    }
    let other = sessions.open(UserId::new()).await;
    sessions.write_uses().await;

    let newest = sessions.open(user).await;

    assert_eq!(sessions.touch(&held[1]).await, TouchOutcome::Unknown);
    for session in held.iter().filter(|session| session.id != held[1].id) {
        live(sessions.touch(session).await);
    }
    live(sessions.touch(&newest).await);
    live(sessions.touch(&other).await);
    let listed = sessions.manager.sessions_of(user).await.unwrap();
    assert_eq!(listed.len(), MAX_PER_USER);
}

async fn uses_at_the_same_moment_all_count(sessions: Sessions) {
    let session = sessions.open(UserId::new()).await;
    sessions.clock.advance(SECOND);

    let uses = join_all((0..50).map(|_| sessions.touch(&session))).await;

    assert!(uses.into_iter().all(|u| matches!(u, TouchOutcome::Live(_))));
    sessions.clock.advance(SECOND);
    assert_eq!(live(sessions.touch(&session).await).refresh_count, 51);
}

async fn memory_sessions() -> (Sessions, ()) {
    (Sessions::start(None, LIFETIME), ())
}

async fn redis_sessions() -> (Sessions, TestRedis) {
    redis_sessions_at(TestRedis::new()).await
}

/// Sessions in seven partitions on one Redis.
async fn redis_sessions_in_7() -> (Sessions, TestRedis) {
    redis_sessions_at(TestRedis::new().partitioned(7)).await
}

/// Sessions under `redis`'s prefix, in its partitions, on whichever Redis
/// it names.
pub async fn redis_sessions_at(redis: TestRedis) -> (Sessions, TestRedis) {
    let shared = RedisSessions::new(redis.connect().await, IDLE_TTL, MAX_PER_USER, 4)
        .partitioned(redis.partitions);
    let sessions = Sessions::start(Some(Arc::new(shared)), LIFETIME);
    sessions.copying().await;
    (sessions, redis)
}

/// A replica's sessions on `redis`: its own copies, on the system clock.
async fn replica(redis: &TestRedis) -> Sessions {
    let shared = RedisSessions::new(redis.connect().await, IDLE_TTL, MAX_PER_USER, 4);
    let sessions = Sessions::start_on(Some(Arc::new(shared)), LIFETIME, Clock::system());
    sessions.copying().await;
    sessions
}

for_each_store!(
    Sessions: memory => memory_sessions, redis => redis_sessions,
        redis_in_7 => redis_sessions_in_7;
    each_use_pushes_the_idle_deadline_back_and_counts,
    a_session_idle_for_the_ttl_lapses_and_is_removed,
    no_use_extends_a_session_past_its_absolute_expiry,
    another_users_token_cannot_use_the_session,
    a_session_never_opened_is_unknown,
    revoking_ends_a_session_at_once,
    revoking_a_user_keeps_the_named_session_and_other_users,
    the_sweep_removes_lapsed_sessions_and_spares_live_ones,
    uses_at_the_same_moment_all_count,
    only_its_own_user_revokes_a_session,
    a_users_live_sessions_are_listed_with_their_origin_newest_first,
    a_user_past_the_limit_loses_the_session_used_longest_ago,
);

#[actix_web::test]
async fn redis_ends_a_lapsed_session_before_a_live_one_at_the_limit() {
    let redis = TestRedis::new();
    let shared = Arc::new(RedisSessions::new(
        redis.connect().await,
        IDLE_TTL,
        MAX_PER_USER,
        4,
    ));
    // Two managers on one store, one issuing sessions that end 45 s after
    // they open; no sweep runs, so only the opening can end a lapsed one.
    let unswept = |lifetime| {
        let clock = Clock::manual(DateTime::from_timestamp_millis(T0).unwrap());
        Sessions::start_sweeping(Some(shared.clone()), lifetime, clock, 3600 * SECOND)
    };
    let (sessions, short) = (unswept(LIFETIME), unswept(45 * SECOND));
    sessions.copying().await;
    let advance = |by: Duration| {
        sessions.clock.advance(by);
        short.clock.advance(by);
    };
    let user = UserId::new();
    let ending = short.open(user).await;
    advance(SECOND);
    let mut others = Vec::new();
    for _ in 1..MAX_PER_USER {
        others.push(sessions.open(user).await);
    }
    advance(20 * SECOND);
    for session in &others {
        live(sessions.touch(session).await);
    }
    advance(4 * SECOND);
    // Used last of all, but it ends at 45 s whatever its use.
    live(short.touch(&ending).await);
    sessions.write_uses().await;
    advance(21 * SECOND);

    let profile = Profile {
        id: user,
        username: "someone".into(),
        email: None,
        created_at: sessions.clock.now(),
    };
    let (_, ended) = sessions
        .manager
        .open(&profile, &Origin::default())
        .await
        .unwrap();

    assert_eq!(
        ended,
        [ending.id],
        "the lapsed one, not the one used longest ago"
    );
    for session in &others {
        live(sessions.touch(session).await);
    }
}

#[actix_web::test]
async fn sessions_in_redis_expire_there_too_and_leave_no_key_behind() {
    let (sessions, redis) = redis_sessions().await;
    let user = UserId::new();
    let (kept, revoked) = (sessions.open(user).await, sessions.open(user).await);
    let key = format!("{{{}}}:session:{}", redis.prefix(), kept.id.0);

    // Should no replica be left to sweep, Redis drops the session a grace
    // period (one idle timeout) after it lapses.
    let ttl = redis.ttl_ms(&key).await;
    let lapse = IDLE_TTL.as_millis() as i64;
    assert!(lapse < ttl && ttl <= 2 * lapse, "{ttl} ms");

    assert!(sessions.manager.revoke(revoked.id, user).await.unwrap());
    sessions.clock.advance(IDLE_TTL);
    let swept = eventually(10 * SECOND, || async { sessions.count().await == 0 }).await;

    assert!(swept);
    let left = redis.keys().await;
    assert!(left.is_empty(), "{left:?}");
}

#[actix_web::test]
async fn uses_served_from_one_replicas_copy_reach_redis_and_the_other_replicas() {
    let redis = TestRedis::new();
    let (one, two) = (replica(&redis).await, replica(&redis).await);
    let session = one.open(UserId::new()).await;
    for _ in 0..3 {
        live(one.touch(&session).await);
    }

    let key = format!("{{{}}}:session:{}", redis.prefix(), session.id.0);
    let written = eventually(10 * SECOND, || async {
        redis.hget(&key, "refreshes").await.as_deref() == Some("3")
    })
    .await;

    assert!(written, "one's three uses reach Redis");
    let there = live(two.touch(&session).await);
    assert_eq!(there.refresh_count, 4);
    assert!(there.last_seen_at >= session.last_seen_at);
}

#[actix_web::test]
async fn a_session_kept_without_a_profile_by_an_older_version_is_still_served() {
    let redis = TestRedis::new();
    let (one, two) = (replica(&redis).await, replica(&redis).await);
    let session = one.open(UserId::new()).await;
    let key = format!("{{{}}}:session:{}", redis.prefix(), session.id.0);
    redis.hdel(&key, &["name", "email", "joined"]).await;

    let used = live(two.touch(&session).await);

    assert_eq!(used.refresh_count, 1);
    let two_store = two.shared.as_ref().unwrap();
    assert!(
        two_store.profile(session.id).is_none(),
        "no made-up profile: the users have the real one"
    );
    assert_eq!(two_store.copies_held(), 0, "served from Redis each time");
}

#[actix_web::test]
async fn a_session_revoked_on_one_replica_is_refused_by_anothers_copy_within_10_ms() {
    let redis = TestRedis::new();
    let (one, two) = (replica(&redis).await, replica(&redis).await);
    let session = one.open(UserId::new()).await;
    // Two holds its own copy now: its next use costs no round trip.
    live(two.touch(&session).await);
    live(two.touch(&session).await);

    assert!(
        one.manager
            .revoke(session.id, session.user_id)
            .await
            .unwrap()
    );
    let revoked = std::time::Instant::now();

    assert_eq!(
        one.touch(&session).await,
        TouchOutcome::Unknown,
        "at once here"
    );
    while two.touch(&session).await != TouchOutcome::Unknown {
        assert!(
            revoked.elapsed() <= Duration::from_millis(10),
            "still accepted by the other replica after {:?}",
            revoked.elapsed()
        );
        tokio::task::yield_now().await;
    }
}
