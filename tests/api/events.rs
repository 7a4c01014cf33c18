//! Domain events on the Redis stream, read back the way another service
//! would: with `redis-cli XREAD`.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tollgate::config::EventSettings;

use crate::helpers::{
    PrivateRedis, Server, TempDir, TestApp, TestRedis, admin_settings, eventually, spawn_app_with,
};

const PATIENCE: Duration = Duration::from_secs(10);

/// An event as read from the stream: its fields, with `data` parsed.
#[derive(Debug)]
struct Event {
    kind: String,
    data: Value,
    fields: HashMap<String, String>,
}

fn events(app: &TestApp) -> Vec<Event> {
    app.redis
        .xread("events")
        .into_iter()
        .map(|fields| {
            let fields: HashMap<String, String> = fields.into_iter().collect();
            Event {
                kind: fields["type"].clone(),
                data: serde_json::from_str(&fields["data"]).unwrap(),
                fields,
            }
        })
        .collect()
}

async fn with_events() -> TestApp {
    spawn_app_with(|s| {
        s.events = Some(EventSettings {
            stream: "events".parse().unwrap(),
            max_len: 1000,
        })
    })
    .await
}

#[actix_web::test]
async fn a_sign_up_a_sign_in_a_sign_out_and_a_finished_task_reach_the_stream_in_order() {
    let app = with_events().await;
    let user = app.new_user("eventful").await;
    let signed_up_session = app.session(&user.token).await;
    let signed_up_session: Value = signed_up_session.json().await.unwrap();
    let second = app.new_token(&user).await;
    let second_session: Value = app.session(&second).await.json().await.unwrap();
    let signed_out = app
        .post("/api/v1/auth/signout")
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::NO_CONTENT);
    let task = app
        .enqueued(
            &user.token,
            &json!({ "kind": "echo", "payload": { "n": 1 } }),
        )
        .await;
    let task_id = task["id"].as_str().unwrap();
    app.finished_task(&user.token, task_id, PATIENCE).await;

    let all_there = eventually(PATIENCE, || async { events(&app).len() >= 5 }).await;

    assert!(all_there, "{:?}", events(&app));
    let events = events(&app);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "user.signed_up",
            "user.signed_in",
            "user.signed_in",
            "session.revoked",
            "task.finished"
        ]
    );
    assert_eq!(
        events[0].data,
        json!({ "user_id": user.id, "username": "eventful" })
    );
    assert_eq!(
        events[1].data,
        json!({ "user_id": user.id, "session_id": signed_up_session["id"] })
    );
    assert_eq!(
        events[2].data,
        json!({ "user_id": user.id, "session_id": second_session["id"] })
    );
    assert_eq!(
        events[3].data,
        json!({
            "user_id": user.id,
            "session_id": second_session["id"],
            "sessions": 1,
            "reason": "sign_out",
        })
    );
    assert_eq!(
        events[4].data,
        json!({
            "task_id": task_id,
            "user_id": user.id,
            "kind": "echo",
            "status": "succeeded",
            "attempts": 1,
        })
    );
    for event in &events {
        let at = chrono::DateTime::parse_from_rfc3339(&event.fields["at"]);
        assert!(at.is_ok(), "{event:?}");
        assert!(
            uuid::Uuid::parse_str(&event.fields["id"]).is_ok(),
            "{event:?}"
        );
    }
}

#[actix_web::test]
async fn a_sign_in_past_the_session_limit_tells_which_session_it_ended() {
    let app = spawn_app_with(|s| {
        s.events = Some(EventSettings {
            stream: "events".parse().unwrap(),
            max_len: 1000,
        });
        s.session.max_per_user = 2;
    })
    .await;
    let user = app.new_user("busy").await;
    app.clock.advance(Duration::from_secs(1));
    let second = app.new_token(&user).await;
    app.clock.advance(Duration::from_secs(1));
    app.new_token(&user).await;

    let ended = || async {
        events(&app)
            .into_iter()
            .find(|event| event.data["reason"] == "session_limit")
    };
    let told = eventually(PATIENCE, || async { ended().await.is_some() }).await;

    assert!(told, "{:?}", events(&app));
    let first_sid = crate::helpers::claims_of(&user.token)["sid"].clone();
    let event = ended().await.unwrap();
    assert_eq!(event.kind, "session.revoked");
    assert_eq!(
        event.data,
        json!({
            "user_id": user.id,
            "session_id": first_sid,
            "sessions": 1,
            "reason": "session_limit",
        })
    );
    assert_eq!(app.me(&second).await.status(), StatusCode::OK);
    crate::helpers::refused_as_invalid_token(app.me(&user.token).await).await;
}

#[actix_web::test]
async fn ending_one_of_your_sessions_is_an_event_naming_it() {
    let app = with_events().await;
    let user = app.new_user("tidy-device").await;
    let other = app.new_token(&user).await;
    let other_sid = crate::helpers::claims_of(&other)["sid"].clone();

    let ended = app
        .client
        .delete(app.url(&format!(
            "/api/v1/auth/sessions/{}",
            other_sid.as_str().unwrap()
        )))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let revoked = || async {
        events(&app)
            .into_iter()
            .find(|event| event.kind == "session.revoked")
    };
    let told = eventually(PATIENCE, || async { revoked().await.is_some() }).await;

    assert!(told, "{:?}", events(&app));
    assert_eq!(
        revoked().await.unwrap().data,
        json!({
            "user_id": user.id,
            "session_id": other_sid,
            "sessions": 1,
            "reason": "sign_out",
        })
    );
}

#[actix_web::test]
async fn the_older_register_route_is_a_sign_up_without_a_sign_in() {
    let app = with_events().await;
    let credentials = json!({ "username": "legacy", "password": crate::helpers::PASSWORD });
    let registered = app.post_json("/register", &credentials).await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let user: Value = registered.json().await.unwrap();
    // A later event marks the end: everything before it is on the stream.
    app.post_json(
        "/api/v1/auth/signup",
        &json!({ "username": "later", "password": crate::helpers::PASSWORD }),
    )
    .await;

    let both_there = eventually(PATIENCE, || async { events(&app).len() >= 2 }).await;

    assert!(both_there, "{:?}", events(&app));
    let events = events(&app);
    assert_eq!(events[0].kind, "user.signed_up");
    assert_eq!(
        events[0].data,
        json!({ "user_id": user["id"], "username": "legacy" })
    );
    assert_eq!(events[1].kind, "user.signed_up", "{events:?}");
    assert_eq!(events[1].data["username"], "later");
}

#[actix_web::test]
async fn revoking_every_session_and_cancelling_a_task_are_events_too() {
    let app = with_events().await;
    let user = app.new_user("tidy").await;
    app.new_token(&user).await;
    let later = json!({ "kind": "echo", "delay_ms": 3_600_000 });
    let task = app.enqueued(&user.token, &later).await;
    let task_id = task["id"].as_str().unwrap();
    let cancelled = app
        .client
        .delete(app.url(&format!("/api/v1/tasks/{task_id}")))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);
    let signed_out = app
        .post("/api/v1/auth/signout-all")
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::NO_CONTENT);

    let all_there = eventually(PATIENCE, || async { events(&app).len() >= 5 }).await;

    assert!(all_there, "{:?}", events(&app));
    let events = events(&app);
    assert_eq!(
        events[3].data,
        json!({
            "task_id": task_id,
            "user_id": user.id,
            "kind": "echo",
            "status": "cancelled",
            "attempts": 0,
        })
    );
    assert_eq!(
        events[4].data,
        json!({
            "user_id": user.id,
            "session_id": null,
            "sessions": 2,
            "reason": "sign_out_all",
        })
    );
}

#[actix_web::test]
async fn tasks_an_operator_cancels_in_bulk_are_events_as_one_cancelled_alone() {
    let dir = TempDir::new("events-admin");
    let app = spawn_app_with(|s| {
        s.events = Some(EventSettings {
            stream: "events".parse().unwrap(),
            max_len: 1000,
        });
        s.admin = Some(admin_settings(&dir));
    })
    .await;
    let user = app.new_user("bulky").await;
    let later = json!({ "kind": "echo", "delay_ms": 3_600_000 });
    let mut ids = Vec::new();
    for _ in 0..2 {
        let task = app.enqueued(&user.token, &later).await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }

    let cancelled = app
        .admin(reqwest::Method::POST, "/admin/api/v1/tasks/cancel")
        .json(&json!({ "user": user.id }))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);
    let finished = || {
        events(&app)
            .into_iter()
            .filter(|event| event.kind == "task.finished")
            .map(|event| event.data)
            .collect::<Vec<Value>>()
    };
    let both = eventually(PATIENCE, || async { finished().len() == 2 }).await;

    assert!(both, "{:?}", events(&app));
    let mut finished = finished();
    finished.sort_by_key(|data| data["task_id"].as_str().unwrap().to_owned());
    ids.sort();
    for (data, id) in finished.iter().zip(&ids) {
        let expected = json!({
            "task_id": id,
            "user_id": user.id,
            "kind": "echo",
            "status": "cancelled",
            "attempts": 0,
        });
        assert_eq!(data, &expected);
    }
}

#[actix_web::test]
async fn events_published_before_sigterm_reach_the_stream_before_the_process_exits() {
    let redis = PrivateRedis::start().await;
    let stream = TestRedis::on(redis.url());
    let (url, prefix) = (redis.url(), stream.prefix().to_owned());
    let env = [
        ("TOLLGATE__REDIS__URL", url.as_str()),
        ("TOLLGATE__REDIS__KEY_PREFIX", prefix.as_str()),
        ("TOLLGATE__EVENTS__STREAM", "events"),
    ];
    let mut server = Server::start(&["serve"], &env).await;
    // Redis holds every command for a while: the sign-up's event is
    // published, but its append waits until after SIGTERM has come.
    let paused = std::process::Command::new("redis-cli")
        .args(["-u", &url, "CLIENT", "PAUSE", "1500", "ALL"])
        .output()
        .unwrap();
    assert!(paused.status.success(), "{paused:?}");

    server.sign_up("last-words").await;
    server.terminate();
    let status = server.exit_status(PATIENCE).await;

    assert!(status.success(), "{status}");
    let written = stream.xread("events");
    let signed_up = written.iter().find(|fields| {
        fields.contains(&("type".into(), "user.signed_up".into()))
            && fields
                .iter()
                .any(|(name, value)| name == "data" && value.contains("last-words"))
    });
    assert!(signed_up.is_some(), "{written:?}");
}
