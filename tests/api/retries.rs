//! Failed attempts through a real webhook receiver: retries with backoff,
//! the dead-letter state, and answers that end a task at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    PATIENCE, TestApp, TestUser, millis, serve_on_loopback, spare_port, spawn_app_with,
};

/// One call the receiver answered.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    idempotency_key: String,
    attempt: String,
    body: Value,
}

/// A webhook receiver on a random loopback port. `/flaky` answers with
/// the scripted statuses in turn, then 200; `/slow` never answers; `/gone`
/// always answers 410.
struct Receiver {
    address: String,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Receiver {
    async fn start(flaky: Vec<u16>) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let script = web::Data::new(Mutex::new(flaky.into_iter()));
        let log = web::Data::new(calls.clone());
        let address = serve_on_loopback(move |app| {
            app.app_data(script.clone())
                .app_data(log.clone())
                .default_service(web::to(answer));
        });
        Self { address, calls }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

async fn answer(
    req: HttpRequest,
    body: web::Bytes,
    script: web::Data<Mutex<std::vec::IntoIter<u16>>>,
    log: web::Data<Arc<Mutex<Vec<Call>>>>,
) -> HttpResponse {
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    log.lock().unwrap().push(Call {
        path: req.path().to_owned(),
        idempotency_key: header("idempotency-key"),
        attempt: header("x-tollgate-attempt"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let status = match req.path() {
        "/flaky" => script.lock().unwrap().next().unwrap_or(200),
        // Never answers: only the caller's timeout ends the call.
        "/slow" => std::future::pending().await,
        _ => 410,
    };
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

async fn app_calling_loopback() -> TestApp {
    spawn_app_with(|s| {
        s.queue.webhook_allowed_hosts = vec!["127.0.0.1".parse().unwrap()];
        s.queue.backoff_base_ms = 1000;
        s.queue.backoff_max_ms = 60_000;
    })
    .await
}

async fn webhook(app: &TestApp, user: &TestUser, url: String) -> String {
    let body = json!({
        "kind": "webhook",
        "payload": { "url": url, "body": { "hello": "world" } },
        "max_attempts": 3,
    });
    app.enqueued(&user.token, &body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[actix_web::test]
async fn a_failing_webhook_backs_off_between_attempts_and_ends_dead() {
    let receiver = Receiver::start(vec![500; 3]).await;
    let app = app_calling_loopback().await;
    let user = app.new_user("hooked").await;
    let id = webhook(&app, &user, format!("{}/flaky", receiver.address)).await;

    for (attempt, backoff_ms) in [(1, 1000), (2, 2000)] {
        let failed = app
            .task_where(&user.token, &id, PATIENCE, |t| {
                t["status"] == "failed" && t["attempts"] == attempt
            })
            .await;
        assert_eq!(
            failed["error"],
            "the webhook answered 500 Internal Server Error"
        );
        // Half the nominal backoff, plus up to as much again of jitter.
        let wait = millis(&failed, "run_at") - app.clock.now_millis();
        assert!(
            (backoff_ms / 2..=backoff_ms).contains(&wait),
            "attempt {attempt} retries in {wait} ms"
        );
        app.clock.advance(Duration::from_millis(backoff_ms as u64));
    }
    let dead = app.finished_task(&user.token, &id, PATIENCE).await;

    assert_eq!(
        (dead["status"].as_str(), dead["attempts"].as_u64()),
        (Some("dead"), Some(3))
    );
    assert_eq!(
        dead["error"],
        "the webhook answered 500 Internal Server Error"
    );
    let calls = receiver.calls();
    let attempts: Vec<&str> = calls.iter().map(|c| c.attempt.as_str()).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(calls.iter().all(|c| c.idempotency_key == id), "{calls:?}");
    assert!(calls.iter().all(|c| c.body == json!({ "hello": "world" })));
    assert_eq!(app.queue_counts(&user.token).await["dead"], 1);
}

#[actix_web::test]
async fn a_webhook_that_recovers_succeeds_on_its_next_attempt() {
    let receiver = Receiver::start(vec![503]).await;
    let app = app_calling_loopback().await;
    let user = app.new_user("hopeful").await;
    let id = webhook(&app, &user, format!("{}/flaky", receiver.address)).await;

    app.task_where(&user.token, &id, PATIENCE, |t| t["status"] == "failed")
        .await;
    app.clock.advance(Duration::from_secs(1));
    let done = app.finished_task(&user.token, &id, PATIENCE).await;

    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["result"], json!({ "status": 200 }));
    assert!(done.get("error").is_none(), "{done}");
}

#[actix_web::test]
async fn a_client_error_from_the_webhook_ends_the_task_at_once() {
    let receiver = Receiver::start(Vec::new()).await;
    let app = app_calling_loopback().await;
    let user = app.new_user("rebuffed").await;

    let id = webhook(&app, &user, format!("{}/gone", receiver.address)).await;
    let dead = app.finished_task(&user.token, &id, PATIENCE).await;

    assert_eq!(
        (dead["status"].as_str(), dead["attempts"].as_u64()),
        (Some("dead"), Some(1))
    );
    assert_eq!(dead["error"], "the webhook answered 410 Gone");
    assert_eq!(receiver.calls().len(), 1);
    assert_eq!(receiver.calls()[0].path, "/gone");
}

#[actix_web::test]
async fn an_unreachable_webhook_is_retried() {
    // A port nothing listens on: bound, then released.
    let port = spare_port();
    let app = app_calling_loopback().await;
    let user = app.new_user("unheard").await;

    let id = webhook(&app, &user, format!("http://127.0.0.1:{port}/")).await;
    let failed = app
        .task_where(&user.token, &id, PATIENCE, |t| t["status"] == "failed")
        .await;

    assert_eq!(failed["error"], "the webhook call could not connect");
    let queue = app.queue_counts(&user.token).await;
    assert_eq!(
        (queue["failed"].as_u64(), queue["pending"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        app.task(&user.token, &id).await.status(),
        StatusCode::OK,
        "a failed task stays readable"
    );
}

#[actix_web::test]
async fn a_webhook_slower_than_webhook_timeout_secs_is_a_failed_attempt_retried() {
    let receiver = Receiver::start(Vec::new()).await;
    let app = spawn_app_with(|s| {
        s.queue.webhook_allowed_hosts = vec!["127.0.0.1".parse().unwrap()];
        s.queue.webhook_timeout_secs = 1;
    })
    .await;
    let user = app.new_user("impatient").await;

    let id = webhook(&app, &user, format!("{}/slow", receiver.address)).await;
    let failed = app
        .task_where(&user.token, &id, PATIENCE, |t| t["status"] == "failed")
        .await;
    assert_eq!(failed["error"], "the webhook call timed out");
    assert_eq!(failed["attempts"], 1);
    app.clock.advance(Duration::from_secs(1));
    let again = app
        .task_where(&user.token, &id, PATIENCE, |t| {
            t["status"] == "failed" && t["attempts"] == 2
        })
        .await;

    assert_eq!(again["error"], "the webhook call timed out");
    let calls = receiver.calls();
    let attempts: Vec<&str> = calls.iter().map(|c| c.attempt.as_str()).collect();
    assert_eq!(attempts, ["1", "2"]);
    assert!(calls.iter().all(|c| c.path == "/slow"), "{calls:?}");
}
