//! The user-store contract: PostgreSQL and memory behave the same. Each
//! check runs against both stores.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tollgate::config::DatabaseSettings;
use tollgate::domain::{Email, Login, NewUser, Taken, UserCursor, UserId, UserQuery, Username};
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

async fn disabling_keeps_the_first_time_and_enabling_clears_it(store: Arc<dyn UserStore>) {
    let user = store.insert(new_user("ada", None)).await.unwrap().unwrap();
    let (first, later) = (
        DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
        DateTime::from_timestamp_millis(1_700_000_060_000).unwrap(),
    );

    let disabled = store.set_disabled(user.id, Some(first)).await.unwrap();
    let again = store.set_disabled(user.id, Some(later)).await.unwrap();
    let found = store.find_by_login(&by_name("ada")).await.unwrap();
    let enabled = store.set_disabled(user.id, None).await.unwrap();

    assert_eq!(disabled.unwrap().disabled_at, Some(first));
    assert_eq!(again.unwrap().disabled_at, Some(first));
    assert_eq!(found.unwrap().disabled_at, Some(first));
    assert_eq!(enabled.unwrap().disabled_at, None);
    assert_eq!(
        store
            .find_by_id(user.id)
            .await
            .unwrap()
            .unwrap()
            .disabled_at,
        None
    );
    assert!(
        store
            .set_disabled(UserId::new(), Some(first))
            .await
            .unwrap()
            .is_none()
    );
}

async fn users_are_listed_newest_first_by_part_of_a_name_in_pages(store: Arc<dyn UserStore>) {
    let base = Utc::now().timestamp_millis();
    let mut names = Vec::new();
    // Two share a creation time: the id breaks the tie.
    for (i, (name, email)) in [
        ("alpha", Some("first@example.com")),
        ("beta_1", None),
        ("Gamma", Some("BETA@example.com")),
        ("delta", None),
        ("epsilon", Some("beta%2@example.com")),
    ]
    .into_iter()
    .enumerate()
    {
        let mut user = new_user(name, email);
        user.created_at = DateTime::from_timestamp_millis(base + (i as i64).min(3)).unwrap();
        names.push(store.insert(user).await.unwrap().unwrap());
    }
    let newest_first: Vec<&str> = {
        let mut users: Vec<_> = names.iter().collect();
        users.sort_by_key(|user| std::cmp::Reverse((user.created_at, user.id)));
        users.iter().map(|user| user.username.as_str()).collect()
    };
    let list = |contains: Option<&str>, after: Option<UserCursor>, limit: usize| {
        let store = store.clone();
        let query = UserQuery {
            contains: contains.map(str::to_owned),
            after,
            limit,
        };
        async move { store.list(&query).await.unwrap() }
    };
    let names_of = |users: &[tollgate::domain::User]| -> Vec<String> {
        users.iter().map(|user| user.username.clone()).collect()
    };

    let all = list(None, None, 10).await;
    let first_page = list(None, None, 2).await;
    let second_page = list(None, Some(UserCursor::of(&first_page[1])), 2).await;
    let third_page = list(None, Some(UserCursor::of(&second_page[1])), 2).await;
    // The name or the e-mail address, in any case; LIKE's own characters
    // are matched as themselves.
    let beta = list(Some("BeTa"), None, 10).await;
    let underscore = list(Some("_"), None, 10).await;
    let percent = list(Some("%"), None, 10).await;

    assert_eq!(names_of(&all), newest_first);
    let paged = [first_page, second_page, third_page].concat();
    assert_eq!(names_of(&paged), newest_first);
    let mut beta = names_of(&beta);
    beta.sort();
    assert_eq!(beta, ["Gamma", "beta_1", "epsilon"]);
    assert_eq!(names_of(&underscore), ["beta_1"]);
    assert_eq!(names_of(&percent), ["epsilon"]);
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
        2,
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
    disabling_keeps_the_first_time_and_enabling_clears_it,
    users_are_listed_newest_first_by_part_of_a_name_in_pages,
    ping_answers,
);

#[actix_web::test]
async fn replicas_migrating_at_once_apply_each_migration_once() {
    let schema = TestSchema::create().await;
    let settings = database_settings(&schema);

    let (first, second) = tokio::join!(storage::migrate(&settings), storage::migrate(&settings));

    assert_eq!(first.unwrap() + second.unwrap(), 2);
    assert_eq!(schema.count("users").await, 0);
}
