//! `/health/*`, and what clients see while PostgreSQL or Redis is out of
//! reach.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, PrivatePostgres, PrivateRedis, TcpProxy, TestApp, TestSchema, TestUser, eventually,
    problem, spawn_app, spawn_app_on, spawn_app_with,
};

#[actix_web::test]
async fn liveness_and_readiness_answer_when_all_is_well() {
    let app = spawn_app().await;

    let live = app.get("/health/live").send().await.unwrap();
    let ready = app.get("/health/ready").send().await.unwrap();

    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "status": "ready",
            "checks": {
                "users": { "store": "postgres", "status": "up" },
                "sessions": { "store": "memory", "status": "up" },
                "tasks": { "store": "redis", "status": "up" },
            }
        })
    );
}

#[actix_web::test]
async fn with_postgres_unreachable_signin_is_a_503_sessions_live_on_and_all_recovers() {
    let proxy = TcpProxy::to_database().await;
    let schema = TestSchema::create().await;
    let app = spawn_app_on(schema, |s| s.url_via(proxy.address), |_| {}).await;
    let user = app.new_user("resilient").await;

    proxy.cut();

    users_are_out_of_reach(&app, &user).await;

    proxy.restore();

    users_recover(&app, &user).await;
}

#[actix_web::test]
async fn with_redis_stopped_enqueue_is_a_503_nothing_is_half_written_and_all_recovers() {
    let mut redis = PrivateRedis::start().await;
    let app = spawn_app_with(|s| s.redis = Some(redis.settings("outage"))).await;
    let user = app.new_user("unfazed").await;
    let before = app
        .enqueued(&user.token, &json!({ "kind": "echo", "delay_ms": 60_000 }))
        .await;

    redis.stop();

    let refused = app.enqueue(&user.token, &json!({ "kind": "echo" })).await;
    problem(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "queue_unavailable",
    )
    .await;
    let counts = app
        .get("/api/v1/queue")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    problem(counts, StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable").await;
    let ready = app.get("/health/ready").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let checks = ready.json::<Value>().await.unwrap()["checks"].clone();
    assert_eq!(checks["tasks"]["status"], "down");
    assert_eq!(checks["users"]["status"], "up");
    assert_eq!(
        app.me(&user.token).await.status(),
        StatusCode::OK,
        "auth carries on"
    );

    redis.resume().await;

    let recovered = eventually(Duration::from_secs(15), || async {
        app.get("/health/ready").send().await.unwrap().status() == StatusCode::OK
    })
    .await;
    assert!(recovered, "readiness did not come back");
    let after = app
        .enqueued(&user.token, &json!({ "kind": "echo", "payload": "back" }))
        .await;
    let done = app
        .finished_task(
            &user.token,
            after["id"].as_str().unwrap(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(done["result"], "back", "the workers recovered too");
    let listed = app.tasks(&user.token, "").await;
    let ids: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert_eq!(
        ids,
        [&after["id"], &before["id"]],
        "the refused task left no trace"
    );
}

#[actix_web::test]
async fn with_the_session_store_stopped_introspection_is_a_503_never_an_inactive_token() {
    const SERVICE_SECRET: &str = "resource-server-credential";
    let mut redis = PrivateRedis::start().await;
    let app = spawn_app_with(|s| {
        s.auth.introspection_secret = Some(SERVICE_SECRET.into());
        s.session.store = tollgate::config::SessionStoreKind::Redis;
        s.redis = Some(redis.settings("introspection-outage"));
    })
    .await;
    let user = app.new_user("vouched").await;
    let introspect = || app.introspect(Some(SERVICE_SECRET), &user.token);
    let active = |answer: Value| answer["active"].clone();
    assert_eq!(active(introspect().await.json().await.unwrap()), true);

    redis.stop();

    // Tollgate cannot look, which says nothing about the token: a resource
    // server told "inactive" would sign its user out.
    let answer = introspect().await;
    problem(
        answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
    )
    .await;

    redis.resume().await;
    let back = eventually(Duration::from_secs(15), || async {
        let answer = introspect().await;
        answer.status() == StatusCode::OK && active(answer.json().await.unwrap()) == true
    })
    .await;
    assert!(back, "introspection did not recover");
}

#[actix_web::test]
async fn a_sign_up_whose_session_cannot_open_leaves_no_user_and_its_retry_succeeds() {
    let mut redis = PrivateRedis::start().await;
    let app = spawn_app_with(|s| {
        s.session.store = tollgate::config::SessionStoreKind::Redis;
        s.redis = Some(redis.settings("signup-outage"));
    })
    .await;
    redis.stop();

    let refused = app.sign_up("persistent", PASSWORD).await;
    problem(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
    )
    .await;

    redis.resume().await;
    let created = eventually(Duration::from_secs(15), || async {
        let retried = app.sign_up("persistent", PASSWORD).await;
        assert_ne!(
            retried.status(),
            StatusCode::CONFLICT,
            "the name was left taken"
        );
        retried.status() == StatusCode::CREATED
    })
    .await;
    assert!(created, "the retried sign-up never succeeded");
}

#[actix_web::test]
async fn with_its_postgres_stopped_sign_in_is_a_503_and_all_recovers_when_it_starts_again() {
    let postgres = PrivatePostgres::start().await;
    let app = spawn_app_with(|s| {
        let database = s.database.as_mut().unwrap();
        database.url = postgres.url().parse().unwrap();
        database.timeout_secs = 2;
    })
    .await;
    let user = app.new_user("steadfast").await;
    let before = users_in(&postgres).await;

    postgres.stop();

    users_are_out_of_reach(&app, &user).await;

    postgres.resume();

    users_recover(&app, &user).await;
    assert_eq!(users_in(&postgres).await, before + 1);
}

/// Users stored in `postgres`, asked directly.
async fn users_in(postgres: &PrivatePostgres) -> i64 {
    let (client, connection) = tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap();
    row.get(0)
}

/// With PostgreSQL out of reach: sign-in and sign-up answer 503
/// `storage_unavailable`, `user`'s session lives on (sessions are the
/// session actors'), and readiness says the users are down.
async fn users_are_out_of_reach(app: &TestApp, user: &TestUser) {
    let signin = app.sign_in(&user.username, PASSWORD).await;
    problem(
        signin,
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
    )
    .await;
    let signup = app.sign_up("newcomer", PASSWORD).await;
    problem(
        signup,
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
    )
    .await;
    assert_eq!(app.session(&user.token).await.status(), StatusCode::OK);
    let ready = app.get("/health/ready").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["checks"]["users"]["status"],
        "down"
    );
}

/// Once PostgreSQL is back, without a restart: `user` signs in, readiness
/// is 200 and a new user can sign up.
async fn users_recover(app: &TestApp, user: &TestUser) {
    let recovered = eventually(Duration::from_secs(30), || async {
        app.sign_in(&user.username, PASSWORD).await.status() == StatusCode::OK
    })
    .await;
    assert!(
        recovered,
        "sign-in did not recover after PostgreSQL came back"
    );
    let ready = app.get("/health/ready").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let created = app.sign_up("newcomer", PASSWORD).await;
    assert_eq!(created.status(), StatusCode::CREATED);
}
