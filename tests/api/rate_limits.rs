//! Sign-in rate limits: failed sign-ins per login and per client address
//! in a sliding minute, answered 429 `rate_limited` with `Retry-After`;
//! tries in flight count at once, successful ones are taken back; the
//! limits are re-read on SIGHUP.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::json;

use crate::helpers::{
    PASSWORD, Server, TempDir, TestApp, eventually, problem, spawn_app, spawn_app_with,
};

const WRONG: &str = "not the password at all";

/// Asserts a 429 `rate_limited` whose `Retry-After` is `seconds`.
async fn assert_limited(response: Response, seconds: u64) {
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    problem(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(retry_after, Some(seconds.to_string()));
}

async fn fail(app: &TestApp, name: &str) {
    let refused = app.sign_in(name, WRONG).await;
    problem(refused, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

#[actix_web::test]
async fn the_sixth_rapid_wrong_sign_in_for_one_username_is_a_429_until_a_minute_passes() {
    let app = spawn_app().await;
    app.new_user("target").await;
    app.new_user("bystander").await;
    for second in 0..5 {
        fail(&app, "target").await;
        app.clock.advance(Duration::from_secs(second + 1));
    }
    // Failures at 0, 1, 3, 6 and 10 s; now 15 s. The first ages out at 60 s.

    assert_limited(app.sign_in("target", WRONG).await, 45).await;
    // Even the right password waits: a guess that happens to be right must
    // not be told so.
    assert_limited(app.sign_in("target", PASSWORD).await, 45).await;
    assert_limited(app.sign_in("TARGET", PASSWORD).await, 45).await;
    assert_eq!(
        app.sign_in("bystander", PASSWORD).await.status(),
        StatusCode::OK
    );

    app.clock.advance(Duration::from_secs(45));
    assert_eq!(
        app.sign_in("target", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[actix_web::test]
async fn wrong_sign_ins_sent_all_at_once_get_no_more_tries_than_the_limit() {
    let app = spawn_app().await;
    app.new_user("rushed").await;

    let tries = (0..10).map(|_| async { app.sign_in("rushed", WRONG).await.status() });
    let answers = futures_util::future::join_all(tries).await;

    let count = |status| answers.iter().filter(|s| **s == status).count();
    assert_eq!(count(StatusCode::UNAUTHORIZED), 5, "{answers:?}");
    assert_eq!(count(StatusCode::TOO_MANY_REQUESTS), 5, "{answers:?}");
}

#[actix_web::test]
async fn successful_sign_ins_never_count() {
    let app = spawn_app_with(|s| s.rate_limit.signin_per_minute_per_user = 1).await;
    app.new_user("regular").await;

    for _ in 0..10 {
        let signed_in = app.sign_in("regular", PASSWORD).await;
        assert_eq!(signed_in.status(), StatusCode::OK);
    }
}

#[actix_web::test]
async fn one_address_failing_across_many_usernames_is_limited_too() {
    let app = spawn_app_with(|s| {
        s.rate_limit.signin_per_minute_per_ip = 3;
        s.rate_limit.signin_per_minute_per_user = 0;
    })
    .await;
    app.new_user("sprayed").await;
    for name in ["guess-a", "guess-b", "guess-c"] {
        fail(&app, name).await;
    }

    assert_limited(app.sign_in("sprayed", PASSWORD).await, 60).await;
    // The route the older clients used shares the limits.
    let old_login = app
        .post_json(
            "/login",
            &json!({ "username": "sprayed", "password": PASSWORD }),
        )
        .await;
    assert_limited(old_login, 60).await;
}

#[actix_web::test]
async fn sighup_rereads_the_limits() {
    let dir = TempDir::new("limits");
    let config = dir.join("tollgate.toml");
    let limit = |per_user: u32| {
        let toml = format!("[rate_limit]\nsignin_per_minute_per_user = {per_user}\n");
        std::fs::write(&config, toml).unwrap();
    };
    limit(1);
    let config_arg = config.display().to_string();
    let server = Server::start(&["--config", config_arg.as_str(), "serve"], &[]).await;
    server.sign_up("reloaded").await;
    let sign_in = |password: &'static str| {
        let credentials = json!({ "username": "reloaded", "password": password });
        let request = server.request(Method::POST, "/api/v1/auth/signin", None);
        async move { request.json(&credentials).send().await.unwrap().status() }
    };
    assert_eq!(sign_in(WRONG).await, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in(PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);

    limit(0);
    server.signal("HUP");
    let lifted = eventually(Duration::from_secs(30), || async {
        sign_in(PASSWORD).await == StatusCode::OK
    })
    .await;
    assert!(lifted, "the reloaded limit (none) did not apply");
}
