//! `POST /api/v1/auth/signup` and the input rules of every body.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, fields_at_fault, problem, spawn_app};

#[actix_web::test]
async fn signup_stores_the_user_and_returns_a_working_token() {
    let app = spawn_app().await;

    let response = app
        .post_json(
            "/api/v1/auth/signup",
            &json!({ "username": "Ada", "password": PASSWORD, "email": "ada@example.com" }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], "/api/v1/users/me");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["user"]["username"], "Ada");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert!(body["user"].get("password_hash").is_none(), "{body}");
    assert_eq!(body["session"]["refresh_count"], 0);

    let me: Value = app
        .me(body["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], body["user"]["id"]);
    assert_eq!(me["username"], "Ada");
}

#[actix_web::test]
async fn the_same_username_in_another_case_is_a_conflict() {
    let app = spawn_app().await;
    app.new_user("grace").await;

    let response = app.sign_up("GRACE", PASSWORD).await;

    problem(response, StatusCode::CONFLICT, "username_taken").await;
}

#[actix_web::test]
async fn the_same_email_in_another_case_is_a_conflict() {
    let app = spawn_app().await;
    let signup = |username: &str, email: &str| {
        app.post("/api/v1/auth/signup")
            .json(&json!({ "username": username, "password": PASSWORD, "email": email }))
            .send()
    };
    assert_eq!(
        signup("first", "Ada@Example.com").await.unwrap().status(),
        StatusCode::CREATED
    );

    let response = signup("second", "ada@example.COM").await.unwrap();

    problem(response, StatusCode::CONFLICT, "email_taken").await;
}

#[actix_web::test]
async fn a_73_byte_password_is_refused_not_truncated() {
    let app = spawn_app().await;

    let response = app.sign_up("longpass", &"p".repeat(73)).await;

    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    assert_eq!(body["errors"][0]["field"], "password");
    // 72 bytes is the limit and is accepted, and only the whole password
    // signs in: bcrypt would otherwise ignore everything past byte 72.
    assert_eq!(
        app.sign_up("longpass", &"p".repeat(72)).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.sign_in("longpass", &"p".repeat(72)).await.status(),
        StatusCode::OK
    );
}

#[actix_web::test]
async fn every_invalid_field_is_named_in_one_answer() {
    let app = spawn_app().await;

    let response = app
        .post_json(
            "/api/v1/auth/signup",
            &json!({ "username": "a b", "password": "short", "email": "nope" }),
        )
        .await;

    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    assert_eq!(fields_at_fault(&body), ["username", "password", "email"]);
}

#[actix_web::test]
async fn hostile_usernames_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    for username in [
        "'; DROP TABLE users; --",
        "<script>alert(1)</script>",
        "nul\0byte",
    ] {
        let response = app.sign_up(username, PASSWORD).await;
        problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    }
    let huge = app.sign_up(&"x".repeat(1 << 20), PASSWORD).await;
    problem(huge, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // The table is still there, and nothing was written to it.
    assert_eq!(app.schema.count("users").await, 0);
    app.new_user("survivor").await;
    assert_eq!(app.schema.count("users").await, 1);
}

#[actix_web::test]
async fn malformed_json_is_a_400() {
    let app = spawn_app().await;

    let response = app
        .post("/api/v1/auth/signup")
        .header("content-type", "application/json")
        .body(r#"{"username": "ada", "#)
        .send()
        .await
        .unwrap();

    problem(response, StatusCode::BAD_REQUEST, "malformed_json").await;
}

#[actix_web::test]
async fn a_missing_field_or_wrong_type_is_a_422() {
    let app = spawn_app().await;
    for body in [
        json!({ "username": "ada" }),
        json!({ "username": 7, "password": PASSWORD }),
    ] {
        let response = app.post_json("/api/v1/auth/signup", &body).await;
        problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    }
}

#[actix_web::test]
async fn a_body_that_is_not_json_is_a_415() {
    let app = spawn_app().await;

    let response = app
        .post("/api/v1/auth/signup")
        .header("content-type", "text/plain")
        .body(format!(r#"{{"username":"ada","password":"{PASSWORD}"}}"#))
        .send()
        .await
        .unwrap();

    problem(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[actix_web::test]
async fn a_body_over_the_limit_is_a_413() {
    let app = spawn_app().await;
    let huge = json!({ "username": "ada", "password": PASSWORD, "email": "x".repeat(70_000) });

    let response = app.post_json("/api/v1/auth/signup", &huge).await;

    problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[actix_web::test]
async fn unknown_routes_and_methods_get_problem_bodies() {
    let app = spawn_app().await;

    problem(
        app.get("/api/v1/nowhere").send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let wrong_method = app.get("/api/v1/auth/signup").send().await.unwrap();
    problem(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

#[actix_web::test]
async fn every_response_carries_a_request_id_and_echoes_the_clients() {
    let app = spawn_app().await;

    let generated = app.get("/health/live").send().await.unwrap();
    let echoed = app
        .get("/nowhere")
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    let too_long = app
        .get("/health/live")
        .header("x-request-id", "x".repeat(200))
        .send()
        .await
        .unwrap();

    let generated = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");
    assert_ne!(
        too_long.headers()["x-request-id"].to_str().unwrap(),
        "x".repeat(200)
    );
}
