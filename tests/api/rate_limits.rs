//! The abuse limits: failed sign-ins per account and per client address,
//! sign-ups per address and wrong current passwords per user, in a sliding
//! minute, answered 429 `rate_limited` with `Retry-After`; tries in flight
//! count at once, successful ones are taken back; replicas sharing Redis
//! share the counts; IPv6 clients count per /64, and `X-Forwarded-For`
//! counts only from trusted proxies; the limits are re-read on SIGHUP.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::json;

use crate::helpers::{
    JWT_SECRET, PASSWORD, Server, TempDir, TestApp, TestRedis, TestSchema, eventually, problem,
    spawn_app, spawn_app_with,
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

/// Signs up `name` with an e-mail address too.
async fn sign_up_with_email(app: &TestApp, name: &str) -> String {
    let email = format!("{name}@example.com");
    let body = json!({ "username": name, "email": email, "password": PASSWORD });
    let response = app.post_json("/api/v1/auth/signup", &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    email
}

async fn sign_in_by_email(app: &TestApp, email: &str, password: &str) -> Response {
    let body = json!({ "email": email, "password": password });
    app.post_json("/api/v1/auth/signin", &body).await
}

#[actix_web::test]
async fn wrong_sign_ins_by_username_and_by_email_count_as_one_account() {
    let app = spawn_app().await;
    let email = sign_up_with_email(&app, "twofaced").await;
    for _ in 0..3 {
        fail(&app, "twofaced").await;
    }
    for _ in 0..2 {
        let refused = sign_in_by_email(&app, &email, WRONG).await;
        problem(refused, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }

    assert_limited(sign_in_by_email(&app, &email, WRONG).await, 60).await;
    assert_limited(app.sign_in("twofaced", PASSWORD).await, 60).await;
}

#[actix_web::test]
async fn replicas_sharing_redis_share_the_count() {
    let (schema, redis) = (TestSchema::create().await, TestRedis::new());
    let env = [
        ("TOLLGATE__DATABASE__URL", schema.url()),
        ("TOLLGATE__AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
        ("TOLLGATE__SESSION__STORE", "redis".to_owned()),
        ("TOLLGATE__REDIS__URL", crate::helpers::redis_url()),
        ("TOLLGATE__REDIS__KEY_PREFIX", redis.prefix().to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = Server::start(&["serve"], &env).await;
    let second = Server::start(&["serve"], &env).await;
    let email = "shared@example.com";
    let body = json!({ "username": "shared", "email": email, "password": PASSWORD });
    let signed_up = first.request(Method::POST, "/api/v1/auth/signup", None);
    assert_eq!(
        signed_up.json(&body).send().await.unwrap().status(),
        StatusCode::CREATED
    );
    let sign_in = |server: &Server, login: serde_json::Value| {
        let request = server.request(Method::POST, "/api/v1/auth/signin", None);
        async move { request.json(&login).send().await.unwrap() }
    };
    for _ in 0..3 {
        let by_name = json!({ "username": "shared", "password": WRONG });
        assert_eq!(
            sign_in(&first, by_name).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    for _ in 0..2 {
        let by_email = json!({ "email": email, "password": WRONG });
        assert_eq!(
            sign_in(&second, by_email).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    let sixth = sign_in(&first, json!({ "email": email, "password": WRONG })).await;
    problem(sixth, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let right = sign_in(
        &second,
        json!({ "username": "shared", "password": PASSWORD }),
    )
    .await;
    problem(right, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

/// A wrong sign-in for nobody, forwarded for `client`.
async fn fail_for(app: &TestApp, client: &str) -> StatusCode {
    let body = json!({ "username": "nobody-at-all", "password": WRONG });
    let request = app
        .post("/api/v1/auth/signin")
        .header("x-forwarded-for", client);
    request.json(&body).send().await.unwrap().status()
}

#[actix_web::test]
async fn behind_a_trusted_proxy_clients_count_by_forwarded_address_and_ipv6_by_its_64() {
    let app = spawn_app_with(|s| {
        s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.rate_limit.signin_per_minute_per_ip = 2;
        s.rate_limit.signin_per_minute_per_user = 0;
    })
    .await;
    let (unauthorized, limited) = (StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(fail_for(&app, "2001:db8:1:2::1").await, unauthorized);
    assert_eq!(fail_for(&app, "2001:db8:1:2::ffff").await, unauthorized);
    // Anywhere in the same /64 is the same client; the next /64 is not.
    assert_eq!(fail_for(&app, "2001:db8:1:2:abcd::9").await, limited);
    assert_eq!(fail_for(&app, "2001:db8:1:3::1").await, unauthorized);

    // The hop a trusted proxy appended is the client; what the client
    // wrote left of it changes nothing.
    assert_eq!(fail_for(&app, "198.51.100.7").await, unauthorized);
    assert_eq!(fail_for(&app, "10.9.9.9, 198.51.100.7").await, unauthorized);
    assert_eq!(fail_for(&app, "10.8.8.8, 198.51.100.7").await, limited);
    assert_eq!(fail_for(&app, "198.51.100.8").await, unauthorized);
}

#[actix_web::test]
async fn from_an_untrusted_peer_forwarded_addresses_are_ignored() {
    let app = spawn_app_with(|s| {
        s.rate_limit.signin_per_minute_per_ip = 2;
        s.rate_limit.signin_per_minute_per_user = 0;
    })
    .await;
    assert_eq!(
        fail_for(&app, "198.51.100.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        fail_for(&app, "198.51.100.2").await,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        fail_for(&app, "198.51.100.3").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[actix_web::test]
async fn sign_ups_from_one_address_are_limited_whatever_their_outcome() {
    let app = spawn_app_with(|s| {
        s.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        s.rate_limit.signup_per_minute_per_ip = 2;
    })
    .await;
    let sign_up = |name: &str, client: &str| {
        let body = json!({ "username": name, "password": PASSWORD });
        let request = app
            .post("/api/v1/auth/signup")
            .header("x-forwarded-for", client);
        async move { request.json(&body).send().await.unwrap() }
    };
    let home = "203.0.113.5";
    assert_eq!(sign_up("first", home).await.status(), StatusCode::CREATED);
    let taken = sign_up("first", home).await;
    problem(taken, StatusCode::CONFLICT, "username_taken").await;

    assert_limited(sign_up("third", home).await, 60).await;
    let old_route = app
        .post("/register")
        .header("x-forwarded-for", home)
        .json(&json!({ "username": "fourth", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_limited(old_route, 60).await;
    assert_eq!(
        sign_up("elsewhere", "203.0.113.6").await.status(),
        StatusCode::CREATED
    );
    app.clock.advance(Duration::from_secs(60));
    assert_eq!(sign_up("later", home).await.status(), StatusCode::CREATED);
}

#[actix_web::test]
async fn a_stolen_token_gets_five_password_guesses_a_minute() {
    let app = spawn_app().await;
    let user = app.new_user("guarded").await;
    let change = |current: &str| {
        let body = json!({ "current_password": current, "new_password": "a brand new passphrase" });
        let request = app.post("/api/v1/auth/password").bearer_auth(&user.token);
        async move { request.json(&body).send().await.unwrap() }
    };
    for _ in 0..5 {
        let refused = change(WRONG).await;
        problem(refused, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }

    assert_limited(change(WRONG).await, 60).await;
    // The right password waits too, and so does deleting the account.
    assert_limited(change(PASSWORD).await, 60).await;
    let delete = app
        .client
        .delete(app.url("/api/v1/users/me"))
        .bearer_auth(&user.token)
        .json(&json!({ "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_limited(delete, 60).await;

    // A minute later, the session kept alive meanwhile, the guesses lapse.
    for _ in 0..3 {
        app.clock.advance(Duration::from_secs(20));
        assert_eq!(app.session(&user.token).await.status(), StatusCode::OK);
    }
    assert_eq!(change(PASSWORD).await.status(), StatusCode::NO_CONTENT);
}
