//! Hostile input: injection strings, NUL bytes, invalid UTF-8, huge
//! strings and deeply nested JSON, in every field that takes text. Each is
//! refused with a problem body or stored and returned verbatim; none is a
//! 500, and the service keeps serving.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, PATIENCE, TestApp, problem, spawn_app};

const INJECTIONS: [&str; 6] = [
    "'; DROP TABLE users; --",
    "\" OR 1=1 --",
    "<script>alert(1)</script>",
    "{{7*7}} ${7*7} %s%n",
    "nul\0byte",
    "redis.call('FLUSHALL') -- ]]",
];

/// `depth` nested arrays around a number: `[[[...1...]]]`.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

async fn still_serving(app: &TestApp) {
    let live = app.get("/health/live").send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
}

#[actix_web::test]
async fn task_payloads_of_any_text_come_back_verbatim() {
    let app = spawn_app().await;
    let user = app.new_user("payloads").await;

    for text in INJECTIONS {
        let payload = json!({ "text": text, "list": [text], text: "as a key" });
        let task = app
            .enqueued(&user.token, &json!({ "kind": "echo", "payload": payload }))
            .await;
        let id = task["id"].as_str().unwrap();
        let finished = app.finished_task(&user.token, id, PATIENCE).await;
        assert_eq!(finished["status"], "succeeded");
        assert_eq!(finished["payload"], payload, "{text:?}");
        assert_eq!(finished["result"], payload, "{text:?}");
    }
    // Nested as deep as the JSON reader allows: stored and echoed too.
    let deep: Value = serde_json::from_str(&nested(100)).unwrap();
    let task = app
        .enqueued(&user.token, &json!({ "kind": "echo", "payload": deep }))
        .await;
    let finished = app
        .finished_task(&user.token, task["id"].as_str().unwrap(), PATIENCE)
        .await;
    assert_eq!(finished["result"], deep);
}

#[actix_web::test]
async fn json_nested_past_the_readers_limit_is_a_400() {
    let app = spawn_app().await;
    let user = app.new_user("deep").await;
    // Two thousand bytes, well under the body limit, but 1,000 levels deep.
    let body = format!(r#"{{"kind": "echo", "payload": {}}}"#, nested(1_000));

    let enqueue = app
        .post("/api/v1/tasks")
        .bearer_auth(&user.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    problem(enqueue, StatusCode::BAD_REQUEST, "malformed_json").await;
    still_serving(&app).await;
}

#[actix_web::test]
async fn invalid_utf8_is_malformed_json_wherever_it_is_sent() {
    let app = spawn_app().await;
    let user = app.new_user("bytes").await;
    // A key that is not UTF-8, first thing in the body.
    let mut body = b"{\"".to_vec();
    body.extend([0xff, 0xfe]);
    body.extend(b"\": 1}");

    for path in [
        "/api/v1/auth/signup",
        "/api/v1/auth/signin",
        "/api/v1/tasks",
    ] {
        let response = app
            .post(path)
            .bearer_auth(&user.token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::BAD_REQUEST, "malformed_json").await;
    }
    still_serving(&app).await;
}

#[actix_web::test]
async fn hostile_passwords_and_emails_are_refused_or_work_verbatim() {
    let app = spawn_app().await;

    // A NUL byte cannot be hashed by bcrypt faithfully: refused, not cut.
    let nul = app.sign_up("nul-password", "pass\0word-long-enough").await;
    problem(nul, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;

    // Any other text is a password like another, and only it signs in.
    let odd = "'; DROP TABLE users; -- <script>";
    let created = app.sign_up("odd-password", odd).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(
        app.sign_in("odd-password", odd).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.sign_in("odd-password", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Printable addresses are kept exactly as sent (an apostrophe is legal
    // in an address, and nothing here renders HTML); a NUL byte is refused.
    for (n, (email, kept)) in [
        ("a'--@example.com", true),
        ("<script>@example.com", true),
        ("a\0b@example.com", false),
    ]
    .into_iter()
    .enumerate()
    {
        let body =
            json!({ "username": format!("emailer-{n}"), "password": PASSWORD, "email": email });
        let signup = app.post_json("/api/v1/auth/signup", &body).await;
        if kept {
            assert_eq!(signup.status(), StatusCode::CREATED, "{email:?}");
            let body: Value = signup.json().await.unwrap();
            assert_eq!(body["user"]["email"], email);
        } else {
            problem(signup, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
        }
    }
    let huge = app
        .post_json(
            "/api/v1/auth/signin",
            &json!({ "username": "x".repeat(1 << 20), "password": PASSWORD }),
        )
        .await;
    problem(huge, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(
        app.schema.count("users").await,
        3,
        "nothing refused was stored"
    );
}

#[actix_web::test]
async fn hostile_idempotency_keys_work_verbatim_or_are_refused_and_ids_are_not_found() {
    let app = spawn_app().await;
    let user = app.new_user("keys").await;
    let enqueue = |key: reqwest::header::HeaderValue| {
        app.post("/api/v1/tasks")
            .bearer_auth(&user.token)
            .header("Idempotency-Key", key)
            .json(&json!({ "kind": "echo" }))
            .send()
    };

    // Printable keys are keys like any other: the second send replays.
    for key in [
        "' OR 1=1 --",
        "redis.call('FLUSHALL') ]]",
        "{tollgate}:ring",
    ] {
        let header = reqwest::header::HeaderValue::from_str(key).unwrap();
        let first: Value = enqueue(header.clone()).await.unwrap().json().await.unwrap();
        let again = enqueue(header).await.unwrap();
        assert_eq!(again.status(), StatusCode::ACCEPTED);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["id"], first["id"], "{key:?}");
    }
    // Too long, or not ASCII: refused.
    let long = reqwest::header::HeaderValue::from_str(&"k".repeat(256)).unwrap();
    let bytes = reqwest::header::HeaderValue::from_bytes(b"key-\xff\xfe").unwrap();
    for header in [long, bytes] {
        let refused = enqueue(header).await.unwrap();
        problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    }
    for id in [
        "'%20OR%201=1",
        "%3Cscript%3E",
        "..%2F..%2Fetc%2Fpasswd",
        "%00",
    ] {
        let got = app
            .get(&format!("/api/v1/tasks/{id}"))
            .bearer_auth(&user.token)
            .send()
            .await
            .unwrap();
        problem(got, StatusCode::NOT_FOUND, "not_found").await;
    }
    still_serving(&app).await;
}
