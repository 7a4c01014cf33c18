//! Reinflating sessions: idle expiry, refresh counts, revocation and the
//! sweep. Time is moved by hand, so no test waits out a 30-second timeout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use tollgate::config::SessionStoreKind;

use crate::helpers::{
    PASSWORD, TestApp, TestUser, claims_of, eventually, problem, refused_as_invalid_token,
    spawn_app, spawn_app_with,
};

const SECOND: Duration = Duration::from_secs(1);

async fn session_body(app: &TestApp, token: &str) -> Value {
    let response = app.session(token).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn assert_refused(app: &TestApp, token: &str) {
    refused_as_invalid_token(app.session(token).await).await;
}

#[actix_web::test]
async fn a_token_used_every_20_seconds_outlives_60_seconds_and_counts_its_refreshes() {
    let app = spawn_app().await;
    let user = app.new_user("steady").await;

    for expected_refreshes in 1..=4 {
        app.clock.advance(20 * SECOND);
        let session = session_body(&app, &user.token).await;
        assert_eq!(session["refresh_count"], expected_refreshes);
    }
    // 80 seconds after sign-in, 20 after the last use: still live.
    let me = app.me(&user.token).await;
    assert_eq!(me.status(), StatusCode::OK);
}

#[actix_web::test]
async fn every_use_moves_expiry_to_30_seconds_after_it() {
    let app = spawn_app().await;
    let user = app.new_user("precise").await;

    app.clock.advance(12 * SECOND);
    let session = session_body(&app, &user.token).await;

    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(session[field].as_str().unwrap()).unwrap()
    };
    assert_eq!(
        at("expires_at") - at("last_seen_at"),
        chrono::TimeDelta::seconds(30)
    );
    assert_eq!(
        at("last_seen_at").timestamp_millis(),
        app.clock.now_millis()
    );
}

#[actix_web::test]
async fn a_token_idle_for_31_seconds_is_refused() {
    let app = spawn_app().await;
    let user = app.new_user("idle").await;
    app.clock.advance(20 * SECOND);
    session_body(&app, &user.token).await;

    app.clock.advance(31 * SECOND);

    assert_refused(&app, &user.token).await;
    // Once lapsed, it stays lapsed.
    assert_refused(&app, &user.token).await;
}

#[actix_web::test]
async fn a_session_lapses_exactly_at_the_idle_deadline() {
    let app = spawn_app().await;
    let user = app.new_user("edge").await;

    app.clock.advance(Duration::from_millis(29_999));
    session_body(&app, &user.token).await;
    app.clock.advance(30 * SECOND);

    assert_refused(&app, &user.token).await;
}

#[actix_web::test]
async fn no_use_extends_a_session_past_the_tokens_expiry() {
    let app = spawn_app_with(|s| s.auth.token_max_lifetime_secs = 50).await;
    let user = app.new_user("bounded").await;

    app.clock.advance(25 * SECOND);
    let session = session_body(&app, &user.token).await;
    assert_eq!(session["expires_at"], session["absolute_expires_at"]);
    // The session ends exactly when the token does, to the second.
    let absolute =
        chrono::DateTime::parse_from_rfc3339(session["absolute_expires_at"].as_str().unwrap());
    assert_eq!(
        absolute.unwrap().timestamp_millis(),
        claims_of(&user.token)["exp"].as_i64().unwrap() * 1000
    );
    app.clock.advance(25 * SECOND);

    assert_refused(&app, &user.token).await;
}

#[actix_web::test]
async fn signout_revokes_the_token_at_once() {
    let app = spawn_app().await;
    let user = app.new_user("leaver").await;

    let response = app
        .post("/api/v1/auth/signout")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_refused(&app, &user.token).await;
}

#[actix_web::test]
async fn signout_all_revokes_every_session_of_the_user_only() {
    let app = spawn_app().await;
    let user = app.new_user("everywhere").await;
    let second = app.new_token(&user).await;
    let bystander = app.new_user("bystander").await;

    let response = app
        .post("/api/v1/auth/signout-all")
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_refused(&app, &user.token).await;
    assert_refused(&app, &second).await;
    assert_eq!(app.session(&bystander.token).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn changing_the_password_revokes_the_other_sessions_and_keeps_this_one() {
    let app = spawn_app().await;
    let user = app.new_user("rotator").await;
    let other = app.new_token(&user).await;
    let new_password = "a brand new passphrase";

    let response = app
        .post("/api/v1/auth/password")
        .bearer_auth(&user.token)
        .json(&json!({ "current_password": PASSWORD, "new_password": new_password }))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_refused(&app, &other).await;
    assert_eq!(app.session(&user.token).await.status(), StatusCode::OK);
    let old = app.sign_in("rotator", PASSWORD).await;
    problem(old, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(
        app.sign_in("rotator", new_password).await.status(),
        StatusCode::OK
    );
}

#[actix_web::test]
async fn no_signin_with_the_old_password_outlives_a_password_change() {
    // One slow hasher thread: sign-ins with the old password are checked
    // while the change is in progress, the race a change must win.
    let app = spawn_app_with(|s| {
        s.auth.bcrypt_cost = 10;
        s.auth.hasher_threads = 1;
    })
    .await;
    let user = app.new_user("targeted").await;
    let stop = Arc::new(AtomicBool::new(false));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let loops: Vec<_> = (0..3)
        .map(|_| {
            let (stop, tokens) = (stop.clone(), tokens.clone());
            let (client, url) = (app.client.clone(), app.url("/api/v1/auth/signin"));
            actix_web::rt::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let body = json!({ "username": "targeted", "password": PASSWORD });
                    let response = client.post(&url).json(&body).send().await.unwrap();
                    if response.status() == StatusCode::OK {
                        let grant: Value = response.json().await.unwrap();
                        tokens
                            .lock()
                            .unwrap()
                            .push(grant["access_token"].as_str().unwrap().to_owned());
                    }
                }
            })
        })
        .collect();
    let signing_in = eventually(30 * SECOND, || async { !tokens.lock().unwrap().is_empty() }).await;
    assert!(signing_in);

    let change = app
        .post("/api/v1/auth/password")
        .bearer_auth(&user.token)
        .json(&json!({ "current_password": PASSWORD, "new_password": "a brand new passphrase" }))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status(), StatusCode::NO_CONTENT);
    stop.store(true, Ordering::SeqCst);
    for signin in loops {
        signin.await.unwrap();
    }

    let tokens = tokens.lock().unwrap().clone();
    for token in &tokens {
        assert_refused(&app, token).await;
    }
    assert_eq!(app.session(&user.token).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn changing_the_password_needs_the_current_one() {
    let app = spawn_app().await;
    let user = app.new_user("careful").await;
    let other = app.new_token(&user).await;

    let response = app
        .post("/api/v1/auth/password")
        .bearer_auth(&user.token)
        .json(&json!({ "current_password": "not the password", "new_password": "whatever else" }))
        .send()
        .await
        .unwrap();

    problem(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(app.session(&other).await.status(), StatusCode::OK);
    assert_eq!(
        app.sign_in("careful", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[actix_web::test]
async fn the_sweep_removes_expired_sessions_from_memory() {
    let app = spawn_app().await;
    let user = app.new_user("sweepme").await;
    for _ in 0..4 {
        app.new_token(&user).await;
    }
    assert_eq!(app.sessions.count().await.unwrap(), 5);

    app.clock.advance(31 * SECOND);

    // No request touches these sessions: only the sweep can remove them.
    let swept = eventually(10 * SECOND, || async {
        app.sessions.count().await.unwrap() == 0
    })
    .await;
    assert!(
        swept,
        "{} sessions left",
        app.sessions.count().await.unwrap()
    );
}

#[actix_web::test]
async fn the_sweep_spares_live_sessions() {
    let app = spawn_app().await;
    let stale = app.new_user("stale").await;
    app.clock.advance(20 * SECOND);
    let fresh = app.new_user("fresh").await;
    app.clock.advance(15 * SECOND);

    let swept = eventually(10 * SECOND, || async {
        app.sessions.count().await.unwrap() == 1
    })
    .await;

    assert!(swept);
    assert_eq!(app.session(&fresh.token).await.status(), StatusCode::OK);
    assert_refused(&app, &stale.token).await;
}

mod introspection {
    use super::*;

    const SERVICE_SECRET: &str = "business-service-credential";

    async fn guarded_app() -> TestApp {
        spawn_app_with(|s| s.auth.introspection_secret = Some(SERVICE_SECRET.into())).await
    }

    #[actix_web::test]
    async fn introspection_is_closed_until_a_credential_is_configured() {
        let app = spawn_app().await;
        let user = app.new_user("unwatched").await;

        let anyone = app.introspect(None, &user.token).await;
        let guessing = app.introspect(Some("anything-at-all"), &user.token).await;

        problem(anyone, StatusCode::UNAUTHORIZED, "introspection_disabled").await;
        problem(guessing, StatusCode::UNAUTHORIZED, "introspection_disabled").await;
        assert_eq!(session_body(&app, &user.token).await["refresh_count"], 1);
    }

    #[actix_web::test]
    async fn introspection_needs_the_service_credential_when_one_is_set() {
        let app = guarded_app().await;
        let user = app.new_user("watched").await;

        let without = app.introspect(None, &user.token).await;
        let wrong = app
            .introspect(Some("not-the-credential"), &user.token)
            .await;

        problem(without, StatusCode::UNAUTHORIZED, "missing_credentials").await;
        problem(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        // Neither attempt counted as a use of the session.
        assert_eq!(session_body(&app, &user.token).await["refresh_count"], 1);
    }

    #[actix_web::test]
    async fn an_active_token_is_described_and_reinflated() {
        let app = guarded_app().await;
        let user = app.new_user("described").await;
        app.clock.advance(25 * SECOND);

        let response = app.introspect(Some(SERVICE_SECRET), &user.token).await;

        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["active"], true);
        assert_eq!(body["sub"], user.id.as_str());
        assert_eq!(body["username"], "described");
        assert_eq!(body["refresh_count"], 1);
        // Introspection kept the session alive past its first 30 seconds.
        app.clock.advance(25 * SECOND);
        assert_eq!(session_body(&app, &user.token).await["refresh_count"], 2);
    }

    #[actix_web::test]
    async fn revoked_expired_and_garbage_tokens_are_inactive() {
        let app = guarded_app().await;
        let revoked = app.new_user("revoked").await;
        app.post("/api/v1/auth/signout")
            .bearer_auth(&revoked.token)
            .send()
            .await
            .unwrap();
        let idle = app.new_user("idle").await;
        app.clock.advance(31 * SECOND);

        for token in [revoked.token.as_str(), idle.token.as_str(), "garbage"] {
            let body: Value = app
                .introspect(Some(SERVICE_SECRET), token)
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(body, json!({ "active": false }));
        }
    }

    /// What an RFC 7662 client sends: a form body and HTTP Basic
    /// credentials, the service secret as the password.
    async fn introspect_as_rfc_7662(app: &TestApp, password: &str, token: &str) -> Response {
        app.post("/api/v1/auth/introspect")
            .basic_auth("billing-service", Some(password))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .unwrap()
    }

    #[actix_web::test]
    async fn a_form_body_with_basic_credentials_is_answered_as_the_json_form_is() {
        let app = guarded_app().await;
        let user = app.new_user("formal").await;

        let as_form = introspect_as_rfc_7662(&app, SERVICE_SECRET, &user.token).await;
        assert_eq!(as_form.status(), StatusCode::OK);
        let as_form: Value = as_form.json().await.unwrap();
        let as_json: Value = app
            .introspect(Some(SERVICE_SECRET), &user.token)
            .await
            .json()
            .await
            .unwrap();

        assert_eq!(as_form["active"], true);
        assert_eq!(as_form["username"], "formal");
        // The same answer but for the use it counted.
        assert_eq!(as_form["refresh_count"], 1);
        assert_eq!(as_json["refresh_count"], 2);
        let without_count = |mut body: Value| {
            body.as_object_mut().unwrap().remove("refresh_count");
            body
        };
        assert_eq!(without_count(as_form), without_count(as_json));

        let inactive: Value = introspect_as_rfc_7662(&app, SERVICE_SECRET, "garbage")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(inactive, json!({ "active": false }));
    }

    #[actix_web::test]
    async fn basic_credentials_with_the_wrong_secret_or_a_form_without_a_token_are_refused() {
        let app = guarded_app().await;
        let user = app.new_user("guarded").await;

        let wrong = introspect_as_rfc_7662(&app, "not-the-credential", &user.token).await;
        problem(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        let no_token = app
            .post("/api/v1/auth/introspect")
            .basic_auth("billing-service", Some(SERVICE_SECRET))
            .form(&[("token_type_hint", "access_token")])
            .send()
            .await
            .unwrap();
        problem(no_token, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
        assert_eq!(session_body(&app, &user.token).await["refresh_count"], 1);
    }
}

/// Signs `user` in from a client calling itself `agent`; answers the token.
async fn sign_in_as(app: &TestApp, user: &TestUser, agent: &str) -> String {
    let response = app
        .post("/api/v1/auth/signin")
        .header("user-agent", agent)
        .json(&json!({ "username": user.username, "password": user.password }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn own_sessions(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app
        .get("/api/v1/auth/sessions")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

async fn end_session(app: &TestApp, token: &str, id: &str) -> Response {
    app.client
        .delete(app.url(&format!("/api/v1/auth/sessions/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn a_user_sees_their_devices_and_signs_one_out(store: SessionStoreKind) {
    let app = spawn_app_with(|s| s.session.store = store).await;
    let user = app.new_user("travelling").await;
    app.clock.advance(SECOND);
    let phone = sign_in_as(&app, &user, "Phone/1.0").await;
    app.clock.advance(SECOND);
    let laptop = sign_in_as(&app, &user, &format!("Laptop/2.0 {}", "x".repeat(300))).await;
    let stranger = app.new_user("stranger").await;

    let listed = own_sessions(&app, &laptop).await;

    let agents: Vec<&str> = listed
        .iter()
        .map(|s| s["user_agent"].as_str().unwrap_or("(none)"))
        .collect();
    assert_eq!(agents.len(), 3, "{listed:?}");
    assert!(agents[0].starts_with("Laptop/2.0 x") && agents[0].len() == 256);
    assert_eq!(agents[1..], ["Phone/1.0", "(none)"]);
    let current: Vec<bool> = listed.iter().map(|s| s["current"] == true).collect();
    assert_eq!(current, [true, false, false]);
    assert!(listed.iter().all(|s| s["ip"] == "127.0.0.1"), "{listed:?}");
    let phone_id = claims_of(&phone)["sid"].as_str().unwrap().to_owned();
    assert_eq!(listed[1]["id"], phone_id.as_str());
    for field in [
        "created_at",
        "last_seen_at",
        "expires_at",
        "absolute_expires_at",
        "refresh_count",
    ] {
        assert!(!listed[1][field].is_null(), "{field} in {:?}", listed[1]);
    }

    // Another user can neither end it nor learn that it exists.
    let foreign = end_session(&app, &stranger.token, &phone_id).await;
    problem(foreign, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.session(&phone).await.status(), StatusCode::OK);

    let ended = end_session(&app, &laptop, &phone_id).await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_refused(&app, &phone).await;
    assert_eq!(own_sessions(&app, &laptop).await.len(), 2);
    let again = end_session(&app, &laptop, &phone_id).await;
    problem(again, StatusCode::NOT_FOUND, "not_found").await;
    let garbled = end_session(&app, &laptop, "not-a-session").await;
    problem(garbled, StatusCode::NOT_FOUND, "not_found").await;
    let anonymous = app.get("/api/v1/auth/sessions").send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn a_user_sees_their_devices_and_signs_one_out_with_sessions_in_redis() {
    a_user_sees_their_devices_and_signs_one_out(SessionStoreKind::Redis).await;
}

#[actix_web::test]
async fn a_user_sees_their_devices_and_signs_one_out_with_sessions_in_memory() {
    a_user_sees_their_devices_and_signs_one_out(SessionStoreKind::Memory).await;
}
