//! `POST /api/v1/auth/signin`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, claims_of, eventually, millis, problem, spawn_app, spawn_app_with};

#[actix_web::test]
async fn signin_works_by_username_in_any_case_and_by_email() {
    let app = spawn_app().await;
    app.post_json(
        "/api/v1/auth/signup",
        &json!({ "username": "Grace", "password": PASSWORD, "email": "grace@example.com" }),
    )
    .await;

    for login in [
        json!({ "username": "grace", "password": PASSWORD }),
        json!({ "username": "GRACE", "password": PASSWORD }),
        json!({ "email": "Grace@Example.com", "password": PASSWORD }),
        json!({ "username": "grace@example.com", "password": PASSWORD }),
    ] {
        let response = app.post_json("/api/v1/auth/signin", &login).await;
        assert_eq!(response.status(), StatusCode::OK, "{login}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["user"]["username"], "Grace");
        assert_eq!(body["token_type"], "Bearer");
        let session = &body["session"];
        assert_eq!(session["refresh_count"], 0);
        let at = |field| millis(session, field);
        assert_eq!(at("expires_at"), at("last_seen_at") + 30_000);
        assert!(at("expires_at") < at("absolute_expires_at"));
    }
}

#[actix_web::test]
async fn each_signin_opens_a_separate_session() {
    let app = spawn_app().await;
    let user = app.new_user("hopper").await;

    let first = app.new_token(&user).await;
    let second = app.new_token(&user).await;

    let sid = |body: Value| body["id"].as_str().unwrap().to_owned();
    let first_sid = sid(app.session(&first).await.json().await.unwrap());
    let second_sid = sid(app.session(&second).await.json().await.unwrap());
    assert_ne!(first_sid, second_sid);

    // The token carries its session's id, and its own.
    let (a, b) = (claims_of(&first), claims_of(&second));
    let mut names: Vec<&String> = a.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["exp", "iat", "iss", "jti", "sid", "sub"]);
    assert_eq!(a["sid"], first_sid.as_str());
    assert_eq!(a["sub"], user.id.as_str());
    assert_eq!(a["iss"], "tollgate");
    assert_ne!(a["jti"], b["jti"]);
}

#[actix_web::test]
async fn unknown_user_and_wrong_password_get_the_same_answer() {
    let app = spawn_app().await;
    app.new_user("known").await;

    let wrong_password = app.sign_in("known", "not the password").await;
    let unknown_user = app.sign_in("unknown", "not the password").await;

    let a = problem(
        wrong_password,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let b = problem(
        unknown_user,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(a, b);
}

#[actix_web::test]
async fn signin_needs_exactly_one_of_username_and_email() {
    let app = spawn_app().await;
    for body in [
        json!({ "password": PASSWORD }),
        json!({ "username": "ada", "email": "ada@example.com", "password": PASSWORD }),
    ] {
        let response = app.post_json("/api/v1/auth/signin", &body).await;
        problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    }
}

#[actix_web::test]
async fn a_hash_made_at_another_cost_is_redone_at_the_next_signin() {
    let app = spawn_app_with(|s| s.auth.bcrypt_cost = 5).await;
    app.new_user_with_hash_cost("veteran", 4).await;
    let db = app.schema.connect().await;

    assert_eq!(
        app.sign_in("veteran", PASSWORD).await.status(),
        StatusCode::OK
    );

    let stored_hash = || async {
        let row = db
            .query_one(
                "SELECT password_hash FROM users WHERE username = 'veteran'",
                &[],
            )
            .await;
        row.unwrap().get::<_, String>(0)
    };
    let rehashed = eventually(Duration::from_secs(10), || async {
        stored_hash().await.starts_with("$2b$05$")
    })
    .await;
    assert!(rehashed, "still {}", stored_hash().await);
    assert_eq!(
        app.sign_in("veteran", PASSWORD).await.status(),
        StatusCode::OK
    );
    problem(
        app.sign_in("veteran", "not the password").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
}

/// Timed: run one at a time, after the rest (see the Makefile), so that
/// other tests' load does not decide the outcome.
mod timing {
    use super::*;

    #[actix_web::test]
    async fn unknown_user_costs_about_as_much_time_as_a_wrong_password() {
        // At cost 10 one bcrypt verification takes tens of milliseconds, far
        // above the rest of a request: skipping it for unknown users would make
        // them many times faster.
        let app = spawn_app_with(|s| s.auth.bcrypt_cost = 10).await;
        app.new_user("known").await;

        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for _ in 0..5 {
            for (name, times) in [("known", &mut known), ("unknown", &mut unknown)] {
                let started = Instant::now();
                assert_eq!(
                    app.sign_in(name, "not the password").await.status(),
                    StatusCode::UNAUTHORIZED
                );
                times.push(started.elapsed());
            }
        }

        let median = |times: &mut Vec<Duration>| {
            times.sort();
            times[times.len() / 2].as_secs_f64()
        };
        let ratio = median(&mut unknown) / median(&mut known);
        assert!(
            (0.5..2.0).contains(&ratio),
            "unknown/known sign-in time ratio {ratio:.2}"
        );
    }

    #[actix_web::test]
    async fn a_wrong_password_for_a_hash_of_a_lower_cost_takes_as_long_as_an_unknown_user() {
        let app = spawn_app_with(|s| {
            s.auth.bcrypt_cost = 12;
            s.rate_limit.signin_per_minute_per_user = 0;
        })
        .await;
        let veteran = app.new_user_with_hash_cost("veteran", 10).await;
        let timed = |name: &str| {
            let name = name.to_owned();
            let app = &app;
            async move {
                let started = Instant::now();
                let refused = app.sign_in(&name, "not the password").await;
                let took = started.elapsed();
                problem(refused, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
                took
            }
        };
        // The fastest of several: the work itself, whatever else the machine
        // was doing meanwhile.
        let (mut known, mut unknown) = (Duration::MAX, Duration::MAX);
        for _ in 0..5 {
            known = known.min(timed(&veteran).await);
            unknown = unknown.min(timed("nobody-by-that-name").await);
        }

        let ratio = known.as_secs_f64() / unknown.as_secs_f64();
        assert!(
            (0.9..=1.1).contains(&ratio),
            "a wrong password took {known:?} for a cost-10 hash, an unknown user {unknown:?}"
        );
    }
}
