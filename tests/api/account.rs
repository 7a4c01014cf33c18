//! `DELETE /api/v1/users/me`: an account is deleted only with its password,
//! and then its sessions end and its waiting tasks are cancelled.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tollgate::domain::{TaskId, TaskStatus, UserId};

use crate::helpers::{PASSWORD, TestApp, problem, refused_as_invalid_token, spawn_app};

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
