//! `DELETE /api/v1/users/me`: an account is deleted only with its password,
//! and then its sessions end and its waiting tasks are cancelled. A
//! password change or a deletion cut off from Redis half way leaves no
//! session but the caller's, and sending it again finishes it.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tollgate::domain::{TaskId, TaskStatus, UserId};

use tollgate::config::SessionStoreKind;

use crate::helpers::{
    PASSWORD, PATIENCE, PrivateRedis, TestApp, eventually, problem, refused_as_invalid_token,
    spawn_app, spawn_app_with,
};

async fn delete_account(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    app.client
        .delete(app.url("/api/v1/users/me"))
        .bearer_auth(token)
        .json(&json!({ "password": password }))
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn deleting_an_account_ends_its_sessions_and_cancels_its_waiting_tasks() {
    let app = spawn_app().await;
    let user = app.new_user("leaving").await;
    let other_session = app.new_token(&user).await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let task = app
            .enqueued(&user.token, &json!({ "kind": "echo", "delay_ms": 60_000 }))
            .await;
        waiting.push(TaskId::parse(task["id"].as_str().unwrap()).unwrap());
    }
    let bystander = app.new_user("staying").await;
    let theirs = app
        .enqueued(
            &bystander.token,
            &json!({ "kind": "echo", "delay_ms": 60_000 }),
        )
        .await;

    let deleted = delete_account(&app, &user.token, PASSWORD).await;

    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    refused_as_invalid_token(app.me(&user.token).await).await;
    refused_as_invalid_token(app.me(&other_session).await).await;
    let signin = app.sign_in("leaving", PASSWORD).await;
    problem(signin, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(app.schema.count("users").await, 1);
    let store = app.queue.store();
    let user_id = UserId(user.id.parse().unwrap());
    for id in waiting {
        let task = store.get(user_id, id).await.unwrap();
        assert_eq!(task.unwrap().status, TaskStatus::Cancelled);
    }
    let theirs: Value = app
        .task(&bystander.token, theirs["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["status"], "queued");
    // The username is free again.
    assert_eq!(
        app.sign_up("leaving", PASSWORD).await.status(),
        StatusCode::CREATED
    );
}

#[actix_web::test]
async fn an_account_is_not_deleted_without_its_password() {
    let app = spawn_app().await;
    let user = app.new_user("careful").await;

    let wrong = delete_account(&app, &user.token, "not the password at all").await;
    let malformed = delete_account(&app, &user.token, "short").await;

    problem(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    problem(malformed, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    assert_eq!(app.me(&user.token).await.status(), StatusCode::OK);
    assert_eq!(app.schema.count("users").await, 1);
}

/// An app with its sessions in a Redis of its own, which the test stops.
async fn app_on_private_redis(redis: &PrivateRedis) -> TestApp {
    spawn_app_with(|s| {
        s.session.store = SessionStoreKind::Redis;
        s.redis = Some(redis.settings("cut-off"));
    })
    .await
}

/// Runs `call` while the user's row is locked, stops `redis` once the call
/// waits on that lock (so between the steps before the user store and
/// those after), then lets it go on; answers what `call` answered.
async fn cut_off_at_the_user_store(
    app: &TestApp,
    redis: &mut PrivateRedis,
    username: &str,
    call: reqwest::RequestBuilder,
) -> reqwest::Response {
    let db = app.schema.connect().await;
    db.batch_execute("BEGIN").await.unwrap();
    db.execute(
        "SELECT 1 FROM users WHERE username = $1 FOR UPDATE",
        &[&username],
    )
    .await
    .unwrap();
    let answer = actix_web::rt::spawn(call.send());
    let waiting = eventually(PATIENCE, || async {
        let row = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) > 0
    })
    .await;
    assert!(waiting, "the call never reached the user store");
    redis.stop();
    db.batch_execute("COMMIT").await.unwrap();
    let answer = answer.await.unwrap().unwrap();
    redis.resume().await;
    answer
}

/// Whether `token` is refused, once Redis answers again.
async fn refused_once_redis_is_back(app: &TestApp, token: &str) -> bool {
    eventually(PATIENCE, || async {
        app.session(token).await.status() == StatusCode::UNAUTHORIZED
    })
    .await
}

/// Sends `call` cut off from Redis half way, as above, and checks that it
/// failed with 503, that the user's `other` session is gone, and that the
/// call sent again finishes (204).
async fn cut_off_then_sent_again(
    app: &TestApp,
    redis: &mut PrivateRedis,
    (username, other): (&str, &str),
    call: impl Fn() -> reqwest::RequestBuilder,
) {
    let cut_off = cut_off_at_the_user_store(app, redis, username, call()).await;
    problem(
        cut_off,
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
    )
    .await;

    assert!(
        refused_once_redis_is_back(app, other).await,
        "the other session survived"
    );
    let finished = eventually(PATIENCE, || async {
        call().send().await.unwrap().status() == StatusCode::NO_CONTENT
    })
    .await;
    assert!(finished, "sent again, the call did not finish");
}

#[actix_web::test]
async fn a_password_change_cut_off_from_redis_leaves_no_other_session_and_a_retry_finishes_it() {
    let mut redis = PrivateRedis::start().await;
    let app = app_on_private_redis(&redis).await;
    let user = app.new_user("careful").await;
    let other = app.new_token(&user).await;
    let body = json!({ "current_password": PASSWORD, "new_password": "a brand new passphrase" });
    let change = || {
        app.post("/api/v1/auth/password")
            .bearer_auth(&user.token)
            .json(&body)
    };

    cut_off_then_sent_again(&app, &mut redis, ("careful", &other), change).await;

    assert_eq!(app.session(&user.token).await.status(), StatusCode::OK);
    assert_eq!(
        app.sign_in("careful", "a brand new passphrase")
            .await
            .status(),
        StatusCode::OK
    );
}

#[actix_web::test]
async fn a_deletion_cut_off_from_redis_leaves_no_other_session_and_a_retry_finishes_it() {
    let mut redis = PrivateRedis::start().await;
    let app = app_on_private_redis(&redis).await;
    let user = app.new_user("departing").await;
    let other = app.new_token(&user).await;
    let delete = || {
        app.client
            .delete(app.url("/api/v1/users/me"))
            .bearer_auth(&user.token)
            .json(&json!({ "password": PASSWORD }))
    };

    cut_off_then_sent_again(&app, &mut redis, ("departing", &other), delete).await;

    assert!(refused_once_redis_is_back(&app, &user.token).await);
    let gone = app.sign_in("departing", PASSWORD).await;
    problem(gone, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}
