//! `/api/v1/tasks` and `/api/v1/queue` against the real service on Redis:
//! ordering, fairness, retries, fencing, limits and the task life cycle.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tollgate::clock::Clock;
use tollgate::domain::{Task, TaskKind};
use tollgate::tasks::{Echo, Sleep, TaskError, TaskHandler, TaskHandlers};

use crate::helpers::{
    PATIENCE, TestApp, TestUser, eventually, fields_at_fault, millis, problem, spawn_app_with,
    spawn_app_with_handlers,
};

const SECOND: Duration = Duration::from_secs(1);

/// What recorded handlers saw, in order: `"<user id> <payload n>"`.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: String) {
        self.0.lock().unwrap().push(entry);
    }

    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Does what `inner` does, noting each attempt when it starts or ends.
struct Recorded<H> {
    inner: H,
    log: Log,
    at_end: bool,
}

#[async_trait]
impl<H: TaskHandler> TaskHandler for Recorded<H> {
    fn validate(&self, payload: &Value) -> Result<(), tollgate::domain::InvalidInput> {
        self.inner.validate(payload)
    }

    async fn run(&self, task: &Task) -> Result<Value, TaskError> {
        let entry = format!("{} {}", task.user_id, task.payload["n"]);
        if !self.at_end {
            self.log.push(entry.clone());
        }
        let result = self.inner.run(task).await;
        if self.at_end {
            self.log.push(entry);
        }
        result
    }
}

/// Panics on every attempt.
struct Panics;

#[async_trait]
impl TaskHandler for Panics {
    async fn run(&self, _: &Task) -> Result<Value, TaskError> {
        panic!("this handler always panics")
    }
}

async fn counts(app: &TestApp, user: &TestUser) -> Value {
    app.queue_counts(&user.token).await
}

fn id_of(task: &Value) -> String {
    task["id"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn a_thousand_echo_tasks_from_ten_users_all_succeed_starting_in_each_users_order() {
    let log = Log::default();
    let recorded = Recorded {
        inner: Echo,
        log: log.clone(),
        at_end: false,
    };
    let app =
        spawn_app_with_handlers(|_| Ok(TaskHandlers::empty().with("echo", recorded)), |_| {}).await;
    let mut users = Vec::new();
    for i in 0..10 {
        users.push(app.new_user(&format!("user{i}")).await);
    }

    // Each user submits its hundred tasks one after another; the ten
    // users submit at the same time.
    let submitted = futures_util::future::join_all(users.iter().map(|user| async {
        let mut ids = Vec::new();
        for n in 0..100 {
            let body = json!({ "kind": "echo", "payload": { "n": n, "from": user.username } });
            ids.push(id_of(&app.enqueued(&user.token, &body).await));
        }
        ids
    }))
    .await;

    for user in &users {
        let all_done = eventually(PATIENCE, || async {
            counts(&app, user).await["succeeded"] == 100
        })
        .await;
        assert!(all_done, "{}: {}", user.username, counts(&app, user).await);
    }
    for (user, ids) in users.iter().zip(&submitted) {
        for (n, id) in ids.iter().enumerate() {
            let task = app.read_task(&user.token, id).await;
            assert_eq!(task["status"], "succeeded");
            assert_eq!(task["attempts"], 1);
            assert_eq!(task["result"], json!({ "n": n, "from": user.username }));
        }
        let started: Vec<String> = log
            .entries()
            .into_iter()
            .filter(|entry| entry.starts_with(&user.id))
            .collect();
        let expected: Vec<String> = (0..100).map(|n| format!("{} {n}", user.id)).collect();
        assert_eq!(started, expected, "{} started out of order", user.username);
    }
}

/// An app with `workers` workers whose `sleep` tasks log each user's id as
/// they end, and the log.
async fn logged_sleepers(workers: usize) -> (TestApp, Log) {
    let log = Log::default();
    let recorded = Recorded {
        inner: Sleep,
        log: log.clone(),
        at_end: true,
    };
    let app = spawn_app_with_handlers(
        |_| Ok(TaskHandlers::empty().with("sleep", recorded)),
        |s| {
            s.queue.workers = workers;
            s.queue.default_kind = TaskKind::parse("sleep").unwrap();
        },
    )
    .await;
    (app, log)
}

#[actix_web::test]
async fn one_users_ten_thousand_tasks_do_not_hold_up_anothers_single_task() {
    const WORKERS: usize = 4;
    let (app, log) = logged_sleepers(WORKERS).await;
    let (flood, single) = (app.new_user("flood").await, app.new_user("single").await);
    let body = json!({ "kind": "sleep", "payload": { "ms": 100 } });

    // As a careful client would: each task with a key of its own, resent
    // with the same key while the service answers 503 under the load.
    let submit = |n: usize| {
        let (app, token, body) = (&app, &flood.token, &body);
        async move {
            for _ in 0..10 {
                let response = app
                    .post("/api/v1/tasks")
                    .bearer_auth(token)
                    .header("idempotency-key", format!("flood-{n}"))
                    .json(body)
                    .send()
                    .await
                    .unwrap();
                if response.status() != StatusCode::SERVICE_UNAVAILABLE {
                    return response.status();
                }
            }
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    let refused: Vec<StatusCode> = stream::iter(0..10_000)
        .map(submit)
        .buffer_unordered(16)
        .filter(|status| std::future::ready(*status != StatusCode::ACCEPTED))
        .collect()
        .await;
    assert!(refused.is_empty(), "{refused:?}");
    let backlog = counts(&app, &flood).await["pending"].as_u64().unwrap();
    log.push("single enqueued".into());
    let task = app.enqueued(&single.token, &body).await;
    let done = app
        .finished_task(&single.token, &id_of(&task), PATIENCE)
        .await;

    assert_eq!(done["status"], "succeeded");
    let entries = log.entries();
    let since_enqueue = entries
        .iter()
        .skip_while(|entry| *entry != "single enqueued")
        .take_while(|entry| !entry.starts_with(&single.id))
        .filter(|entry| entry.starts_with(&flood.id))
        .count();
    assert!(
        since_enqueue <= 3 * WORKERS,
        "{since_enqueue} of the flood's tasks finished before the single task did"
    );
    // In first-come order the single task would have waited for all of these.
    assert!(
        backlog >= 1000,
        "only {backlog} of the flood's tasks were waiting"
    );
}

#[actix_web::test]
async fn with_every_worker_busy_on_one_user_a_newcomer_starts_at_once_by_default() {
    // One worker for everyone, and the default kept for newcomers.
    let (app, log) = logged_sleepers(1).await;
    let (heavy, newcomer) = (app.new_user("heavy").await, app.new_user("newcomer").await);
    let long = json!({ "kind": "sleep", "payload": { "ms": 1500 } });
    let first = app.enqueued(&heavy.token, &long).await;
    for _ in 0..3 {
        app.enqueued(&heavy.token, &long).await;
    }
    app.task_where(&heavy.token, &id_of(&first), PATIENCE, |t| {
        t["status"] == "running"
    })
    .await;

    let short = json!({ "kind": "sleep", "payload": { "ms": 1 } });
    let task = app.enqueued(&newcomer.token, &short).await;
    let done = app
        .finished_task(&newcomer.token, &id_of(&task), PATIENCE)
        .await;

    assert_eq!(done["status"], "succeeded");
    let entries = log.entries();
    let before = entries
        .iter()
        .take_while(|entry| !entry.starts_with(&newcomer.id))
        .count();
    assert_eq!(
        before, 0,
        "the heavy user's tasks finished first: {entries:?}"
    );
    let heavy_counts = counts(&app, &heavy).await;
    assert!(
        heavy_counts["running"].as_u64() >= Some(1),
        "{heavy_counts}"
    );
}

#[actix_web::test]
async fn a_task_is_accepted_with_its_location_and_read_back() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.new_user("reader").await;

    let response = app
        .enqueue(
            &user.token,
            &json!({ "kind": "sha256", "payload": { "data": "abc" } }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/tasks/{}", accepted["id"].as_str().unwrap())
    );
    assert_eq!(accepted["status"], "queued");
    // UUID v7: ids sort by creation time.
    let id = uuid::Uuid::parse_str(&id_of(&accepted)).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(accepted["attempts"], 0);
    assert_eq!(accepted["max_attempts"], 5, "queue.max_attempts");
    assert_eq!(accepted["created_at"], accepted["run_at"]);
    let done = app
        .finished_task(&user.token, &id_of(&accepted), PATIENCE)
        .await;
    assert_eq!(
        done["result"]["digest"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    assert!(done["expires_at"].is_string());
}

#[actix_web::test]
async fn bad_task_requests_name_every_field_at_fault() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.new_user("careless").await;

    let unknown = app
        .enqueue(&user.token, &json!({ "kind": "mine-bitcoin" }))
        .await;
    let several = app
        .enqueue(
            &user.token,
            &json!({ "kind": "sleep", "payload": { "ms": 600_000 }, "max_attempts": 0, "delay_ms": 700_000_000u64 }),
        )
        .await;
    let misspelt = app
        .enqueue(&user.token, &json!({ "kind": "echo", "delay": 5 }))
        .await;
    let bad_key = app
        .post("/api/v1/tasks")
        .bearer_auth(&user.token)
        .header("idempotency-key", "é")
        .json(&json!({ "kind": "echo" }))
        .send()
        .await
        .unwrap();
    let not_allowed = app
        .enqueue(
            &user.token,
            &json!({ "kind": "webhook", "payload": { "url": "http://169.254.169.254/" } }),
        )
        .await;

    let body = problem(unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    assert_eq!(body["errors"][0]["field"], "kind");
    let body = problem(several, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    assert_eq!(
        fields_at_fault(&body),
        ["payload", "max_attempts", "delay_ms"]
    );
    let body = problem(misspelt, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    assert!(body["detail"].as_str().unwrap().contains("delay"), "{body}");
    let body = problem(bad_key, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    assert_eq!(body["errors"][0]["field"], "Idempotency-Key");
    let body = problem(
        not_allowed,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_input",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("allowed"),
        "{body}"
    );
    assert_eq!(counts(&app, &user).await["queued"], 0, "nothing was stored");
}

#[actix_web::test]
async fn a_payload_over_the_limit_is_refused_with_413() {
    let app = spawn_app_with(|s| s.queue.max_payload_bytes = 1024).await;
    let user = app.new_user("hoarder").await;

    let big = app
        .enqueue(
            &user.token,
            &json!({ "kind": "echo", "payload": "x".repeat(1100) }),
        )
        .await;
    let huge = app
        .enqueue(
            &user.token,
            &json!({ "kind": "echo", "payload": "x".repeat(100_000) }),
        )
        .await;
    let fits = app
        .enqueue(
            &user.token,
            &json!({ "kind": "echo", "payload": "x".repeat(1000) }),
        )
        .await;

    let body = problem(big, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert!(body["detail"].as_str().unwrap().contains("1024"), "{body}");
    problem(huge, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(fits.status(), StatusCode::ACCEPTED);
}

#[actix_web::test]
async fn a_full_queue_answers_429_until_a_task_leaves_it() {
    let app = spawn_app_with(|s| s.queue.max_pending_per_user = 2).await;
    let user = app.new_user("busy").await;
    let later = json!({ "kind": "echo", "delay_ms": 60_000 });
    let first = app.enqueued(&user.token, &later).await;
    app.enqueued(&user.token, &later).await;

    let third = app.enqueue(&user.token, &later).await;

    let body = problem(third, StatusCode::TOO_MANY_REQUESTS, "queue_full").await;
    assert!(body["detail"].as_str().unwrap().contains('2'), "{body}");
    let queue = counts(&app, &user).await;
    assert_eq!(
        (queue["pending"].as_u64(), queue["limit"].as_u64()),
        (Some(2), Some(2))
    );
    let cancel = app.cancel(&user.token, &id_of(&first)).await;
    assert_eq!(cancel.status(), StatusCode::OK);
    assert_eq!(
        app.enqueue(&user.token, &later).await.status(),
        StatusCode::ACCEPTED
    );
}

#[actix_web::test]
async fn an_idempotency_key_returns_the_original_task() {
    let app = spawn_app_with(|_| {}).await;
    let (user, other) = (
        app.new_user("retrier").await,
        app.new_user("bystander").await,
    );
    let send = |token: &str, body: Value| {
        app.post("/api/v1/tasks")
            .bearer_auth(token)
            .header("idempotency-key", "order-42")
            .json(&body)
            .send()
    };
    let body = json!({ "kind": "echo", "payload": { "order": 42 }, "delay_ms": 60_000 });

    let first = send(&user.token, body.clone()).await.unwrap();
    let again = send(&user.token, body.clone()).await.unwrap();
    let changed = send(
        &user.token,
        json!({ "kind": "echo", "payload": { "order": 43 } }),
    )
    .await
    .unwrap();
    let elsewhere = send(&other.token, body).await.unwrap();

    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let (first, again): (Value, Value) = (first.json().await.unwrap(), again.json().await.unwrap());
    assert_eq!(first, again);
    problem(
        changed,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    let elsewhere: Value = elsewhere.json().await.unwrap();
    assert_ne!(elsewhere["id"], first["id"], "keys are per user");
    assert_eq!(counts(&app, &user).await["queued"], 1);
}

#[actix_web::test]
async fn an_idempotency_key_is_remembered_for_idempotency_ttl_secs_and_no_longer() {
    let app = spawn_app_with(|s| s.queue.idempotency_ttl_secs = 60).await;
    let user = app.new_user("forgetful").await;
    // Sessions lapse after 30 idle seconds: a new one after each wait.
    let send = async |token: &str, body: &Value| {
        app.post("/api/v1/tasks")
            .bearer_auth(token)
            .header("idempotency-key", "nightly")
            .json(body)
            .send()
            .await
            .unwrap()
    };
    let monday = json!({ "kind": "echo", "payload": { "day": "monday" }, "delay_ms": 600_000 });
    let tuesday = json!({ "kind": "echo", "payload": { "day": "tuesday" }, "delay_ms": 600_000 });

    let first: Value = send(&user.token, &monday).await.json().await.unwrap();
    app.clock.advance(Duration::from_secs(59));
    let token = app.new_token(&user).await;
    let within = send(&token, &monday).await;
    let reused = send(&token, &tuesday).await;
    app.clock.advance(Duration::from_secs(2));
    let after = send(&token, &tuesday).await;

    assert_eq!(within.headers()["idempotent-replayed"], "true");
    let within: Value = within.json().await.unwrap();
    assert_eq!(within["id"], first["id"]);
    problem(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert_eq!(after.status(), StatusCode::ACCEPTED);
    assert!(after.headers().get("idempotent-replayed").is_none());
    let after: Value = after.json().await.unwrap();
    assert_ne!(after["id"], first["id"]);
    assert_eq!(after["payload"]["day"], "tuesday");
    assert_eq!(app.queue_counts(&token).await["queued"], 2);
}

#[actix_web::test]
async fn a_delayed_task_waits_for_its_time() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.new_user("patient").await;
    let delayed = app
        .enqueued(
            &user.token,
            &json!({ "kind": "echo", "payload": 1, "delay_ms": 5_000 }),
        )
        .await;

    assert_eq!(
        millis(&delayed, "run_at") - millis(&delayed, "created_at"),
        5_000
    );
    // A task enqueued after it runs first, and the delayed one stays put.
    let now = app
        .enqueued(&user.token, &json!({ "kind": "echo", "payload": 2 }))
        .await;
    app.finished_task(&user.token, &id_of(&now), PATIENCE).await;
    let waiting = app.read_task(&user.token, &id_of(&delayed)).await;
    assert_eq!(
        (waiting["status"].as_str(), waiting["attempts"].as_u64()),
        (Some("queued"), Some(0))
    );

    app.clock.advance(5 * SECOND);

    let done = app
        .finished_task(&user.token, &id_of(&delayed), PATIENCE)
        .await;
    assert_eq!(done["status"], "succeeded");
}

#[actix_web::test]
async fn a_finished_task_is_kept_for_the_result_ttl_then_forgotten() {
    let app = spawn_app_with(|s| {
        s.queue.result_ttl_secs = 60;
        // The session must outlive the wait.
        s.session.idle_ttl_secs = 120;
    })
    .await;
    let user = app.new_user("forgetful").await;
    let task = app.enqueued(&user.token, &json!({ "kind": "echo" })).await;
    let done = app
        .finished_task(&user.token, &id_of(&task), PATIENCE)
        .await;
    assert_eq!(
        millis(&done, "expires_at") - millis(&done, "finished_at"),
        60_000
    );

    app.clock.advance(59 * SECOND);
    assert_eq!(
        app.task(&user.token, &id_of(&task)).await.status(),
        StatusCode::OK
    );
    app.clock.advance(SECOND);

    problem(
        app.task(&user.token, &id_of(&task)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let purged = eventually(PATIENCE, || async {
        counts(&app, &user).await["succeeded"] == 0
    })
    .await;
    assert!(purged, "{}", counts(&app, &user).await);
}

#[actix_web::test]
async fn a_queued_task_can_be_cancelled_and_never_runs() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.new_user("fickle").await;
    let task = app
        .enqueued(&user.token, &json!({ "kind": "echo", "delay_ms": 5_000 }))
        .await;

    let cancelled = app.cancel(&user.token, &id_of(&task)).await;
    let again = app.cancel(&user.token, &id_of(&task)).await;

    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(again.status(), StatusCode::OK, "DELETE is idempotent");
    assert_eq!(again.json::<Value>().await.unwrap(), cancelled);
    app.clock.advance(5 * SECOND);
    let after = app.enqueued(&user.token, &json!({ "kind": "echo" })).await;
    app.finished_task(&user.token, &id_of(&after), PATIENCE)
        .await;
    let still = app.read_task(&user.token, &id_of(&task)).await;
    assert_eq!(
        (still["status"].as_str(), still["attempts"].as_u64()),
        (Some("cancelled"), Some(0))
    );
    let finished = app.cancel(&user.token, &id_of(&after)).await;
    let body = problem(finished, StatusCode::CONFLICT, "task_not_cancellable").await;
    assert!(
        body["detail"].as_str().unwrap().contains("succeeded"),
        "{body}"
    );
}

#[actix_web::test]
async fn another_users_task_does_not_exist_for_you() {
    let app = spawn_app_with(|_| {}).await;
    let (owner, stranger) = (app.new_user("owner").await, app.new_user("stranger").await);
    let task = app
        .enqueued(&owner.token, &json!({ "kind": "echo", "delay_ms": 5_000 }))
        .await;

    let read = app.task(&stranger.token, &id_of(&task)).await;
    let cancel = app.cancel(&stranger.token, &id_of(&task)).await;
    let listed = app.tasks(&stranger.token, "").await;
    let no_such = app.task(&owner.token, "not-a-task-id").await;

    problem(read, StatusCode::NOT_FOUND, "not_found").await;
    problem(cancel, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(listed, json!({ "items": [], "next_cursor": null }));
    problem(no_such, StatusCode::NOT_FOUND, "not_found").await;
    let mine = app.read_task(&owner.token, &id_of(&task)).await;
    assert_eq!(
        mine["status"], "queued",
        "the stranger's cancel changed nothing"
    );
}

#[actix_web::test]
async fn the_task_list_pages_newest_first_and_filters_by_status() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.new_user("lister").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(id_of(
            &app.enqueued(
                &user.token,
                &json!({ "kind": "echo", "payload": n, "delay_ms": 60_000 }),
            )
            .await,
        ));
    }
    let first = app.tasks(&user.token, "?limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second = app
        .tasks(&user.token, &format!("?limit=2&cursor={cursor}"))
        .await;
    let queued = app.tasks(&user.token, "?status=queued&limit=100").await;
    let dead = app.tasks(&user.token, "?status=dead").await;

    let listed = |page: &Value| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(id_of)
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(&first), [ids[4].clone(), ids[3].clone()]);
    assert_eq!(listed(&second), [ids[2].clone(), ids[1].clone()]);
    assert_eq!(listed(&queued).len(), 5);
    assert!(queued["next_cursor"].is_null());
    assert_eq!(listed(&dead).len(), 0);
    for bad in [
        "?status=done",
        "?limit=0",
        "?limit=101",
        "?limit=ten",
        "?cursor=page-2",
    ] {
        let refused = app.list_tasks(&user.token, bad).await;
        problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    }
}

#[actix_web::test]
async fn the_queue_counts_each_state_and_shows_the_limits() {
    let app = spawn_app_with(|s| s.queue.max_running_per_user = 3).await;
    let user = app.new_user("counter").await;
    app.enqueued(&user.token, &json!({ "kind": "echo", "delay_ms": 60_000 }))
        .await;
    let done = app.enqueued(&user.token, &json!({ "kind": "echo" })).await;
    app.finished_task(&user.token, &id_of(&done), PATIENCE)
        .await;

    let queue = counts(&app, &user).await;

    assert_eq!(
        queue,
        json!({
            "pending": 1, "queued": 1, "running": 0, "succeeded": 1, "failed": 0, "dead": 0,
            "cancelled": 0, "limit": 100_000, "max_running": 3,
        })
    );
}

#[actix_web::test]
async fn several_sessions_of_one_user_share_one_queue_and_its_limits() {
    let app = spawn_app_with(|s| s.queue.max_running_per_user = 1).await;
    let user = app.new_user("many-faces").await;
    let tokens = [
        user.token.clone(),
        app.new_token(&user).await,
        app.new_token(&user).await,
    ];
    // Long enough to be running still when the test has looked.
    let long = json!({ "kind": "sleep", "payload": { "ms": 30_000 } });
    for token in &tokens {
        app.enqueued(token, &long).await;
    }

    let one_running = eventually(PATIENCE, || async {
        app.queue_counts(&tokens[0]).await["running"] == 1
    })
    .await;

    assert!(one_running, "{}", app.queue_counts(&tokens[0]).await);
    // Workers are free, but the user is one user whichever session sent
    // the tasks: one runs, two wait, and every session sees the same.
    for token in &tokens {
        let queue = app.queue_counts(token).await;
        assert_eq!(
            (&queue["running"], &queue["queued"]),
            (&json!(1), &json!(2))
        );
    }
}

#[actix_web::test]
async fn a_panicking_handler_fails_the_attempt_and_its_worker_is_restarted() {
    let app = spawn_app_with_handlers(
        |settings| Ok(TaskHandlers::builtin(settings)?.with("panic", Panics)),
        |s| s.queue.workers = 1,
    )
    .await;
    let user = app.new_user("brave").await;

    let task = app
        .enqueued(&user.token, &json!({ "kind": "panic", "max_attempts": 2 }))
        .await;
    let failed = app
        .task_where(&user.token, &id_of(&task), PATIENCE, |t| {
            t["status"] == "failed"
        })
        .await;
    app.clock.advance(10 * SECOND);
    let dead = app
        .finished_task(&user.token, &id_of(&task), PATIENCE)
        .await;

    assert_eq!(failed["attempts"], 1);
    assert_eq!(
        failed["error"],
        "the handler panicked: this handler always panics"
    );
    assert_eq!(
        (dead["status"].as_str(), dead["attempts"].as_u64()),
        (Some("dead"), Some(2))
    );
    let echo = app
        .enqueued(
            &user.token,
            &json!({ "kind": "echo", "payload": "still here" }),
        )
        .await;
    let echoed = app
        .finished_task(&user.token, &id_of(&echo), PATIENCE)
        .await;
    assert_eq!(echoed["result"], "still here", "the one worker serves on");
    let restarts = app
        .metrics()
        .await
        .value("tollgate_actors_restarts_total", &[("actor", "TaskWorker")]);
    assert_eq!(restarts, Some(2.0));
}

#[actix_web::test]
async fn a_worker_whose_lease_was_taken_back_cannot_record_its_outcome() {
    let app = spawn_app_with(|s| s.queue.workers = 2).await;
    let user = app.new_user("fenced").await;
    let task = app
        .enqueued(
            &user.token,
            &json!({ "kind": "sleep", "payload": { "ms": 1500 } }),
        )
        .await;
    let id = id_of(&task);
    app.task_where(&user.token, &id, PATIENCE, |t| t["status"] == "running")
        .await;

    // As a replica would whose clock says this lease lapsed an hour ago.
    let ahead = Clock::manual(app.clock.now() + chrono::TimeDelta::hours(1));
    let store = app.redis.queue_store(ahead).await;
    let reclaimed = store.reclaim().await.unwrap();
    assert_eq!(reclaimed, 1);

    let done = app.finished_task(&user.token, &id, PATIENCE).await;
    assert_eq!(
        (done["status"].as_str(), done["attempts"].as_u64()),
        (Some("succeeded"), Some(2))
    );
    let refused = || async {
        let metrics = app.metrics().await;
        metrics.value(
            "tollgate_tasks_fencing_rejections_total",
            &[("operation", "finish")],
        )
    };
    let counted = eventually(PATIENCE, || async { refused().await == Some(1.0) }).await;
    assert!(counted, "{:?}", refused().await);
    let after = app.read_task(&user.token, &id).await;
    assert_eq!(after, done, "the refused outcome changed nothing");
}

#[actix_web::test]
async fn idle_queue_managers_stop_and_memory_follows_active_users() {
    let app = spawn_app_with(|s| s.queue.manager_idle_secs = 1).await;
    for name in ["first", "second", "third"] {
        let user = app.new_user(name).await;
        app.enqueued(&user.token, &json!({ "kind": "echo" })).await;
    }

    assert_eq!(app.queue.live_managers().await.unwrap(), 3);
    let all_stopped = eventually(10 * SECOND, || async {
        app.queue.live_managers().await.unwrap() == 0
    })
    .await;
    assert!(
        all_stopped,
        "{} managers still live",
        app.queue.live_managers().await.unwrap()
    );
}

/// Redis's `used_memory` of the server at `url`, in bytes.
fn used_memory(url: &str) -> u64 {
    let info = std::process::Command::new("redis-cli")
        .args(["-u", url, "INFO", "memory"])
        .output()
        .expect("redis-cli runs (`make test` installs Redis)");
    String::from_utf8_lossy(&info.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:")?.trim().parse().ok())
        .expect("INFO memory names used_memory")
}

#[actix_web::test]
async fn a_user_filling_the_queue_with_large_payloads_is_held_to_the_byte_quota() {
    const QUOTA: u64 = 4 * 1024 * 1024;
    // A Redis of this test's own, so that what it measures is this user's.
    let redis = crate::helpers::PrivateRedis::start().await;
    let app = spawn_app_with(|s| {
        s.redis = Some(redis.settings("byte-quota"));
        s.queue.max_pending_bytes_per_user = QUOTA;
    })
    .await;
    let user = app.new_user("hoarder").await;
    // One small task first, so that the queue's scripts are loaded and its
    // keys made before the measure starts.
    let small = json!({ "kind": "echo", "payload": {}, "delay_ms": 3_600_000 });
    assert_eq!(
        app.enqueue(&user.token, &small).await.status(),
        StatusCode::ACCEPTED
    );
    let before = used_memory(&redis.url());
    // 60 KiB of payload each, an hour in the future so none of them runs.
    let payload = json!({ "blob": "x".repeat(60 * 1024 - 12) });
    let body = json!({ "kind": "echo", "payload": payload, "delay_ms": 3_600_000 });

    let mut accepted = 0u64;
    let refused = loop {
        let response = app.enqueue(&user.token, &body).await;
        if response.status() != StatusCode::ACCEPTED {
            break response;
        }
        accepted += 1;
        assert!(accepted < 1_000, "never refused");
    };
    let refusal = problem(refused, StatusCode::TOO_MANY_REQUESTS, "queue_full").await;
    assert!(
        refusal["detail"].as_str().unwrap().contains("bytes"),
        "{refusal}"
    );

    let size = payload.to_string().len() as u64;
    // The small task's `{}` took 2 bytes of the quota.
    assert_eq!(
        accepted,
        (QUOTA - 2) / size,
        "every task that fits, and no more"
    );
    // Redis trims the connections' query buffers, which held the last
    // large commands, once they are idle: what stays is the tasks.
    let bound = QUOTA + QUOTA / 10;
    let grown = || used_memory(&redis.url()).saturating_sub(before);
    let settled = eventually(PATIENCE, || async { grown() <= bound }).await;
    eprintln!(
        "Redis grew by {} bytes for {accepted} tasks of {size} bytes",
        grown()
    );
    assert!(
        settled,
        "Redis grew by {} bytes for a quota of {QUOTA}",
        grown()
    );
}
