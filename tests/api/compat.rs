//! The routes of the services Tollgate replaces, driven with exactly the
//! requests their clients send.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, TcpProxy, TestApp, TestSchema, problem, spawn_app, spawn_app_on, spawn_app_with,
};

const SERVICE_SECRET: &str = "a-service-credential-for-introspection";

/// `POST /login {username, password}`, answered 200; returns the body.
async fn login(app: &TestApp, credentials: Value) -> Value {
    let response = app.post_json("/login", &credentials).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[actix_web::test]
async fn register_answers_201_with_the_id_and_username_and_opens_no_session() {
    let app = spawn_app().await;

    let response = app
        .post_json(
            "/register",
            &json!({ "username": "legacy", "password": PASSWORD }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "username"]);
    assert_eq!(body["username"], "legacy");
    assert_eq!(app.schema.count("users").await, 1);
    // Its answer holds no token, so a session would only linger unused.
    assert_eq!(app.sessions.count().await.unwrap(), 0);
}

#[actix_web::test]
async fn login_answers_a_token_that_works_everywhere() {
    let app = spawn_app().await;
    let signup = json!({ "username": "old", "password": PASSWORD, "email": "old@example.com" });
    assert_eq!(
        app.post_json("/api/v1/auth/signup", &signup).await.status(),
        StatusCode::CREATED
    );

    let by_name = login(&app, json!({ "username": "old", "password": PASSWORD })).await;
    let by_email = login(
        &app,
        json!({ "email": "old@example.com", "password": PASSWORD }),
    )
    .await;
    let wrong = app
        .post_json(
            "/login",
            &json!({ "username": "old", "password": "not the password" }),
        )
        .await;

    for body in [&by_name, &by_email] {
        let token = body["token"].as_str().unwrap();
        assert_eq!(body["access_token"], token);
        assert_eq!(app.me(token).await.status(), StatusCode::OK);
    }
    problem(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

#[actix_web::test]
async fn enqueue_queues_the_task_as_the_default_kind() {
    let app = spawn_app().await;
    let user = app.new_user("queuer").await;

    let response = app
        .post("/enqueue")
        .bearer_auth(&user.token)
        .json(&json!({ "task": { "resize": "photo-17.jpg" } }))
        .send()
        .await
        .unwrap();
    let anonymous = app.post_json("/enqueue", &json!({ "task": "x" })).await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let task: Value = response.json().await.unwrap();
    assert_eq!(task["kind"], "echo");
    let done = app
        .finished_task(
            &user.token,
            task["id"].as_str().unwrap(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(done["result"], json!({ "resize": "photo-17.jpg" }));
    problem(anonymous, StatusCode::UNAUTHORIZED, "missing_credentials").await;
}

#[actix_web::test]
async fn protected_route_needs_a_live_token() {
    let app = spawn_app().await;
    let user = app.new_user("guarded").await;

    let allowed = app
        .get("/protected-route")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    let refused = app.get("/protected-route").send().await.unwrap();

    assert_eq!(allowed.status(), StatusCode::OK);
    let body: Value = allowed.json().await.unwrap();
    assert_eq!(body["user_id"], user.id.as_str());
    problem(refused, StatusCode::UNAUTHORIZED, "missing_credentials").await;
}

#[actix_web::test]
async fn data_takes_the_raw_token_header_and_reinflates_the_session() {
    let app = spawn_app().await;
    let user = app.new_user("business").await;

    let raw = app
        .get("/data")
        .header("token", &user.token)
        .send()
        .await
        .unwrap();
    let bearer = app
        .get("/data")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    let none = app.get("/data").send().await.unwrap();
    let forged = app
        .get("/data")
        .header("token", "not-a-token")
        .send()
        .await
        .unwrap();

    assert_eq!(raw.status(), StatusCode::OK);
    let raw: Value = raw.json().await.unwrap();
    assert_eq!(raw["data"]["user"]["username"], "business");
    assert_eq!(raw["data"]["session"]["refresh_count"], 1);
    let bearer: Value = bearer.json().await.unwrap();
    assert_eq!(bearer["data"]["session"]["refresh_count"], 2);
    problem(none, StatusCode::UNAUTHORIZED, "missing_credentials").await;
    problem(forged, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[actix_web::test]
async fn validate_token_answers_authenticated_under_the_introspection_rule() {
    let app = spawn_app_with(|s| s.auth.introspection_secret = Some(SERVICE_SECRET.into())).await;
    let user = app.new_user("validated").await;
    let validate = |token: &str| {
        app.post("/validateToken")
            .bearer_auth(SERVICE_SECRET)
            .json(&json!({ "token": token }))
            .send()
    };

    let valid = validate(&user.token).await.unwrap();
    let invalid = validate("not-a-token").await.unwrap();
    let no_credential = app
        .post_json("/validateToken", &json!({ "token": user.token }))
        .await;

    assert_eq!(
        valid.json::<Value>().await.unwrap(),
        json!({ "authenticated": true })
    );
    assert_eq!(
        invalid.json::<Value>().await.unwrap(),
        json!({ "authenticated": false })
    );
    problem(
        no_credential,
        StatusCode::UNAUTHORIZED,
        "missing_credentials",
    )
    .await;
    let session: Value = app.session(&user.token).await.json().await.unwrap();
    assert_eq!(
        session["refresh_count"], 2,
        "validation reinflated the session"
    );
}

#[actix_web::test]
async fn profile_is_the_callers_profile() {
    let app = spawn_app().await;
    let user = app.new_user("profiled").await;

    let profile = app
        .get("/profile")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();

    assert_eq!(profile.status(), StatusCode::OK);
    let profile: Value = profile.json().await.unwrap();
    let me: Value = app.me(&user.token).await.json().await.unwrap();
    assert_eq!(profile, me);
}

#[actix_web::test]
async fn auth_health_pings_the_database() {
    let proxy = TcpProxy::to_database().await;
    let schema = TestSchema::create().await;
    let app = spawn_app_on(schema, |s| s.url_via(proxy.address), |_| {}).await;

    let up = app.get("/auth/health").send().await.unwrap();
    proxy.cut();
    let down = app.get("/auth/health").send().await.unwrap();

    assert_eq!(up.status(), StatusCode::OK);
    assert_eq!(
        up.json::<Value>().await.unwrap(),
        json!({ "status": "ok", "database": "postgres" })
    );
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
}
