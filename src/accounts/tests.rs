//! The account rules on the memory stores, with real hasher threads (at
//! bcrypt's cheapest cost), session shards and queue.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::config::Settings;
use crate::domain::{
    Enqueued, Login, Origin, TaskCounts, TaskKind, TaskRequest, TouchOutcome, Username,
};
use crate::storage::{MemoryAttempts, MemoryQueueStore, MemoryUserStore, QueuePolicy};
use crate::tasks::TaskHandlers;

const PASSWORD: &str = "correct horse battery";
const COST: u32 = 4;

/// Accounts over fresh memory stores, and what the tests look into.
struct Fixture {
    accounts: Arc<Accounts>,
    users: Arc<dyn UserStore>,
    sessions: SessionManager,
    queue: Queue,
}

async fn fixture(cost: u32, users: Arc<dyn UserStore>) -> Fixture {
    let settings = Settings::embedded_default();
    let (clock, metrics) = (Clock::system(), Metrics::noop());
    let events = Events::disabled(clock.clone(), metrics.clone());
    let hasher = Arc::new(HasherPool::start(1, cost, metrics.clone()));
    let dummy = Password::parse("nobody-has-this", "password").unwrap();
    let dummy_hash = hasher
        .addr()
        .send(HashPassword(dummy))
        .await
        .unwrap()
        .unwrap();
    let sessions = SessionManager::start(
        &settings.session,
        settings.auth.token_max_lifetime(),
        clock.clone(),
        metrics.clone(),
        None,
    );
    let policy = QueuePolicy::new(&settings.queue, clock.clone());
    let limits = policy.limits.clone();
    let queue = Queue::start(
        Arc::new(MemoryQueueStore::new(policy)),
        limits,
        Arc::new(TaskHandlers::empty()),
        &settings.queue,
        clock.clone(),
        metrics.clone(),
        events.clone(),
    );
    let accounts = Accounts::new(
        users.clone(),
        hasher,
        sessions.clone(),
        queue.clone(),
        AccountsConfig {
            dummy_hash,
            cost,
            hasher_timeout: Duration::from_secs(10),
            limits: Arc::new(AbuseLimits::new(
                &settings.rate_limit,
                Arc::new(MemoryAttempts::default()),
                clock.clone(),
            )),
            clock,
            metrics,
            events,
        },
    );
    Fixture {
        accounts: Arc::new(accounts),
        users,
        sessions,
        queue,
    }
}

async fn accounts() -> Fixture {
    fixture(COST, Arc::new(MemoryUserStore::new())).await
}

fn registration(name: &str, email: Option<&str>) -> Registration {
    Registration::parse(name, PASSWORD, email).unwrap()
}

fn credentials(login: &str, password: &str) -> Credentials {
    Credentials::parse(Some(login), None, password).unwrap()
}

impl Fixture {
    async fn sign_in(&self, login: &str, password: &str) -> Result<Grant, AccountError> {
        self.accounts
            .clone()
            .sign_in(credentials(login, password), Origin::default())
            .await
    }

    async fn is_live(&self, session: &Session) -> bool {
        let touched = self.sessions.touch(session.id, session.user_id).await;
        matches!(touched.unwrap(), TouchOutcome::Live(_))
    }
}

#[actix_web::test]
async fn a_sign_up_signs_in_and_the_user_signs_in_again_by_name_or_address_in_any_case() {
    let fixture = accounts().await;

    let (user, first) = fixture
        .accounts
        .sign_up(
            registration("Ada", Some("ada@example.com")),
            &Origin::default(),
        )
        .await
        .unwrap();

    assert!(fixture.is_live(&first).await);
    for login in ["ada", "ADA", "Ada@Example.com"] {
        let (again, session) = fixture.sign_in(login, PASSWORD).await.unwrap();
        assert_eq!(again.id, user.id, "{login}");
        assert_ne!(session.id, first.id, "each sign-in opens its own session");
    }
}

#[actix_web::test]
async fn a_wrong_password_and_an_unknown_user_are_one_and_the_same_refusal() {
    let fixture = accounts().await;
    fixture
        .accounts
        .register(registration("grace", None))
        .await
        .unwrap();

    let wrong = fixture.sign_in("grace", "not the password").await;
    let unknown = fixture.sign_in("nobody", PASSWORD).await;

    assert!(matches!(wrong, Err(AccountError::InvalidCredentials)));
    assert!(matches!(unknown, Err(AccountError::InvalidCredentials)));
    assert_eq!(fixture.sessions.count().await.unwrap(), 0);
}

#[actix_web::test]
async fn a_name_or_address_someone_has_in_any_case_is_taken() {
    let fixture = accounts().await;
    let accounts = &fixture.accounts;
    accounts
        .register(registration("linus", Some("linus@example.com")))
        .await
        .unwrap();

    let name = accounts.register(registration("LINUS", None)).await;
    let address = accounts
        .register(registration("other", Some("LINUS@example.com")))
        .await;

    assert!(matches!(name, Err(AccountError::Taken(Taken::Username))));
    assert!(matches!(address, Err(AccountError::Taken(Taken::Email))));
}

#[actix_web::test]
async fn a_password_change_keeps_this_session_and_ends_the_others() {
    let fixture = accounts().await;
    let (user, kept) = fixture
        .accounts
        .sign_up(registration("barbara", None), &Origin::default())
        .await
        .unwrap();
    let (_, other) = fixture.sign_in("barbara", PASSWORD).await.unwrap();
    let change = PasswordChange::parse(PASSWORD, "a brand new password").unwrap();

    fixture
        .accounts
        .change_password(user.id, kept.id, change)
        .await
        .unwrap();

    assert!(fixture.is_live(&kept).await);
    assert!(!fixture.is_live(&other).await);
    assert!(fixture.sign_in("barbara", PASSWORD).await.is_err());
    assert!(
        fixture
            .sign_in("barbara", "a brand new password")
            .await
            .is_ok()
    );
}

#[actix_web::test]
async fn a_wrong_current_password_changes_nothing() {
    let fixture = accounts().await;
    let (user, kept) = fixture
        .accounts
        .sign_up(registration("edsger", None), &Origin::default())
        .await
        .unwrap();
    let (_, other) = fixture.sign_in("edsger", PASSWORD).await.unwrap();
    let change = PasswordChange::parse("not the password", "a brand new password").unwrap();

    let refused = fixture
        .accounts
        .change_password(user.id, kept.id, change)
        .await;

    assert!(matches!(refused, Err(AccountError::InvalidCredentials)));
    assert!(fixture.is_live(&other).await);
    assert!(fixture.sign_in("edsger", PASSWORD).await.is_ok());
}

#[actix_web::test]
async fn deleting_an_account_cancels_its_waiting_tasks_ends_its_sessions_and_forgets_it() {
    let fixture = accounts().await;
    let (user, session) = fixture
        .accounts
        .sign_up(registration("alan", None), &Origin::default())
        .await
        .unwrap();
    let later = TaskRequest {
        kind: TaskKind::parse("echo").unwrap(),
        payload: Value::Null,
        max_attempts: 1,
        delay: Duration::from_secs(3600),
        trace_parent: None,
    };
    let queued = fixture.queue.enqueue(user.id, later, None).await.unwrap();
    assert!(matches!(queued, Enqueued::Created(_)));
    let password = Password::parse(PASSWORD, "password").unwrap();

    fixture
        .accounts
        .delete_account(user.id, session.id, password)
        .await
        .unwrap();

    let counts = fixture.queue.counts(user.id).await.unwrap();
    assert_eq!(
        counts,
        TaskCounts {
            cancelled: 1,
            ..TaskCounts::default()
        }
    );
    assert!(!fixture.is_live(&session).await);
    assert!(matches!(
        fixture.accounts.existing(user.id).await,
        Err(AccountError::UnknownUser)
    ));
}

#[actix_web::test]
async fn a_hash_made_at_another_cost_is_redone_after_the_next_sign_in() {
    let users: Arc<dyn UserStore> = Arc::new(MemoryUserStore::new());
    let before = fixture(COST, users.clone()).await;
    before
        .accounts
        .register(registration("margaret", None))
        .await
        .unwrap();
    let after = fixture(COST + 1, users).await;

    after.sign_in("margaret", PASSWORD).await.unwrap();

    let login = Login::Username(Username::parse("margaret").unwrap());
    let mut rehashed = false;
    for _ in 0..200 {
        let user = after.users.find_by_login(&login).await.unwrap().unwrap();
        if !password::needs_rehash(&user.password_hash, COST + 1) {
            rehashed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rehashed, "the hash is at the new cost");
    assert!(after.sign_in("margaret", PASSWORD).await.is_ok());
}
