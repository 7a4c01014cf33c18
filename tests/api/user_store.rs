//! The user-store contract: PostgreSQL and memory behave the same. Each
//! check runs against both stores.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tollgate::config::DatabaseSettings;
use tollgate::domain::{Email, Login, NewUser, Taken, UserId, Username};
use tollgate::storage::{self, MemoryUserStore, PostgresUserStore, UserStore};

use crate::helpers::TestSchema;

fn new_user(username: &str, email: Option<&str>) -> NewUser {
    NewUser {
        id: UserId::new(),
        username: Username::parse(username).unwrap(),
        email: email.map(|e| Email::parse(e).unwrap()),
        password_hash: format!("hash-of-{username}"),
        created_at: DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap(),
    }
}

fn by_name(name: &str) -> Login {
    Login::Username(Username::parse(name).unwrap())
}

fn by_email(email: &str) -> Login {
    Login::Email(Email::parse(email).unwrap())
}

async fn finds_a_stored_user_by_id_name_and_email_in_any_case(store: Arc<dyn UserStore>) {
    let stored = store
        .insert(new_user("Ada", Some("Ada@Example.com")))
        .await
        .unwrap()
        .unwrap();

    assert_eq!(
        store.find_by_id(stored.id).await.unwrap().as_ref(),
        Some(&stored)
    );
    assert_eq!(
        store.find_by_login(&by_name("aDA")).await.unwrap().as_ref(),
        Some(&stored)
    );
    assert_eq!(
        store
            .find_by_login(&by_email("ada@example.COM"))
            .await
            .unwrap()
            .as_ref(),
        Some(&stored)
    );
    assert_eq!(stored.username, "Ada", "stored as typed");
}

async fn misses_are_none_not_errors(store: Arc<dyn UserStore>) {
    assert!(store.find_by_id(UserId::new()).await.unwrap().is_none());
    assert!(
        store
            .find_by_login(&by_name("nobody"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .find_by_login(&by_email("nobody@example.com"))
            .await
            .unwrap()
            .is_none()
    );
}

async fn usernames_and_emails_are_unique_regardless_of_case(store: Arc<dyn UserStore>) {
    store
        .insert(new_user("grace", Some("grace@example.com")))
        .await
        .unwrap()
        .unwrap();

    let same_name = store.insert(new_user("GRACE", None)).await;
    let same_email = store
        .insert(new_user("other", Some("GRACE@example.com")))
        .await;

    assert!(
        matches!(same_name, Ok(Err(Taken::Username))),
        "{same_name:?}"
    );
    assert!(
        matches!(same_email, Ok(Err(Taken::Email))),
        "{same_email:?}"
    );
    // Users without an e-mail address do not collide with each other.
    store
        .insert(new_user("no-email-1", None))
        .await
        .unwrap()
        .unwrap();
    store
        .insert(new_user("no-email-2", None))
        .await
        .unwrap()
        .unwrap();
}

async fn a_password_hash_is_replaced_only_while_it_is_current(store: Arc<dyn UserStore>) {
    let user = store
        .insert(new_user("rotate", None))
        .await
        .unwrap()
        .unwrap();
    let original = user.password_hash.clone();

    assert!(
        store
            .replace_password_hash(user.id, &original, "second")
            .await
            .unwrap()
    );
    // A writer still holding the original hash loses: it is no longer current.
    assert!(
        !store
            .replace_password_hash(user.id, &original, "stale")
            .await
            .unwrap()
    );
    assert!(
        !store
            .replace_password_hash(UserId::new(), "second", "x")
            .await
            .unwrap()
    );

    assert_eq!(
        store
            .find_by_id(user.id)
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "second"
    );
}

async fn ping_answers(store: Arc<dyn UserStore>) {
    store.ping().await.unwrap();
}

fn database_settings(schema: &TestSchema) -> DatabaseSettings {
    DatabaseSettings {
        url: schema.url().parse().unwrap(),
        pool_size: 2,
        timeout_secs: 5,
        tls_ca_file: None,
    }
}

async fn memory_store() -> (Arc<dyn UserStore>, Option<TestSchema>) {
    (Arc::new(MemoryUserStore::new()), None)
}

async fn postgres_store() -> (Arc<dyn UserStore>, Option<TestSchema>) {
    let schema = TestSchema::create().await;
    let settings = database_settings(&schema);
    assert_eq!(
        storage::migrate(&settings).await.unwrap(),
        1,
        "a new schema gets every migration"
    );
    assert_eq!(
        storage::migrate(&settings).await.unwrap(),
        0,
        "migrations apply once"
    );
    (
        Arc::new(PostgresUserStore::new(&settings).unwrap()),
        Some(schema),
    )
}

for_each_store!(
    Arc<dyn UserStore>: memory => memory_store, postgres => postgres_store;
    finds_a_stored_user_by_id_name_and_email_in_any_case,
    misses_are_none_not_errors,
    usernames_and_emails_are_unique_regardless_of_case,
    a_password_hash_is_replaced_only_while_it_is_current,
    ping_answers,
);

#[actix_web::test]
async fn replicas_migrating_at_once_apply_each_migration_once() {
    let schema = TestSchema::create().await;
    let settings = database_settings(&schema);

    let (first, second) = tokio::join!(storage::migrate(&settings), storage::migrate(&settings));

    assert_eq!(first.unwrap() + second.unwrap(), 1);
    assert_eq!(schema.count("users").await, 0);
}
