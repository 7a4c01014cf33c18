//! Tasks outlive the process that runs them: the real `tollgate` binary on
//! PostgreSQL and Redis, killed outright mid-run or stopped with SIGTERM.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate::clock::Clock;
use tollgate::domain::{TaskId, TaskStatus, UserId};

use crate::helpers::{JWT_SECRET, Server, TestRedis, TestSchema, eventually};

const PATIENCE: Duration = Duration::from_secs(60);
const WORKERS: usize = 4;

/// Users in `schema`, tasks in Redis under `redis`'s prefix, four workers
/// and one-second leases, plus `extra`.
fn environment(
    schema: &TestSchema,
    redis: &TestRedis,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let base = [
        ("TOLLGATE__DATABASE__URL", schema.url()),
        ("TOLLGATE__AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
        ("TOLLGATE__QUEUE__BACKEND", "redis".to_owned()),
        ("TOLLGATE__REDIS__URL", crate::helpers::redis_url()),
        ("TOLLGATE__REDIS__KEY_PREFIX", redis.prefix().to_owned()),
        ("TOLLGATE__QUEUE__WORKERS", WORKERS.to_string()),
        ("TOLLGATE__QUEUE__VISIBILITY_TIMEOUT_SECS", "1".to_owned()),
    ];
    base.into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

async fn start(env: &[(String, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start(&["serve"], &env).await
}

async fn enqueue(server: &Server, token: &str, body: Value) -> String {
    let request = server.request(Method::POST, "/api/v1/tasks", Some(token));
    let response = request.json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let task: Value = response.json().await.unwrap();
    task["id"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn tasks_running_when_the_process_is_killed_run_again_and_none_is_lost() {
    let (schema, redis) = (TestSchema::create().await, TestRedis::new());
    let env = environment(&schema, &redis, &[]);
    let mut first = start(&env).await;
    first.sign_up("survivor").await;
    let (token, _) = first.sign_in("survivor").await;
    let task = json!({ "kind": "sleep", "payload": { "ms": 400 }, "max_attempts": 3 });
    for _ in 0..20 {
        enqueue(&first, &token, task.clone()).await;
    }
    let busy = eventually(PATIENCE, || async {
        first.get_json("/api/v1/queue", &token).await["running"].as_u64() == Some(WORKERS as u64)
    })
    .await;
    assert!(busy, "{}", &first.get_json("/api/v1/queue", &token).await);

    first.kill();
    let second = start(&env).await;
    let (token, _) = second.sign_in("survivor").await;

    let all_done = eventually(PATIENCE, || async {
        second.get_json("/api/v1/queue", &token).await["succeeded"] == 20
    })
    .await;
    assert!(
        all_done,
        "{}",
        &second.get_json("/api/v1/queue", &token).await
    );
    let listed = second.get_json("/api/v1/tasks?limit=100", &token).await;
    let tasks = listed["items"].as_array().unwrap();
    assert_eq!(tasks.len(), 20);
    assert!(tasks.iter().all(|t| t["status"] == "succeeded"));
    let reruns: u64 = tasks
        .iter()
        .map(|t| t["attempts"].as_u64().unwrap() - 1)
        .sum();
    assert!(
        (1..=WORKERS as u64).contains(&reruns),
        "{reruns} re-runs; {WORKERS} tasks were in flight when the process died"
    );
}

#[actix_web::test]
async fn sigterm_lets_running_tasks_finish_hands_back_the_rest_and_starts_nothing_new() {
    let (schema, redis) = (TestSchema::create().await, TestRedis::new());
    let env = environment(
        &schema,
        &redis,
        &[
            ("TOLLGATE__QUEUE__WORKERS", "2"),
            ("TOLLGATE__SERVER__SHUTDOWN_TIMEOUT_SECS", "2"),
        ],
    );
    let mut server = start(&env).await;
    server.sign_up("orderly").await;
    let (token, user_id) = server.sign_in("orderly").await;
    let short = enqueue(
        &server,
        &token,
        json!({ "kind": "sleep", "payload": { "ms": 1000 } }),
    )
    .await;
    let long = enqueue(
        &server,
        &token,
        json!({ "kind": "sleep", "payload": { "ms": 20000 } }),
    )
    .await;
    let waiting = enqueue(&server, &token, json!({ "kind": "echo" })).await;
    let both_running = eventually(PATIENCE, || async {
        server.get_json("/api/v1/queue", &token).await["running"] == 2
    })
    .await;
    assert!(
        both_running,
        "{}",
        &server.get_json("/api/v1/queue", &token).await
    );

    server.terminate();
    let status = server.exit_status(Duration::from_secs(10)).await;

    assert!(status.success(), "{status}");
    let store = redis.queue_store(Clock::system()).await;
    let user = UserId(user_id.parse().unwrap());
    let read = |id: &str| {
        let store = &store;
        let id = TaskId::parse(id).unwrap();
        async move { store.get(user, id).await.unwrap().unwrap() }
    };
    let short = read(&short).await;
    assert_eq!(
        short.status,
        TaskStatus::Succeeded,
        "finished within the timeout"
    );
    let long = read(&long).await;
    assert_eq!(
        (long.status, long.attempts),
        (TaskStatus::Queued, 0),
        "handed back, not counted"
    );
    let waiting = read(&waiting).await;
    assert_eq!(
        (waiting.status, waiting.attempts),
        (TaskStatus::Queued, 0),
        "never started"
    );
}

#[actix_web::test]
async fn a_second_sigterm_stops_at_once_without_waiting_for_running_tasks() {
    let (schema, redis) = (TestSchema::create().await, TestRedis::new());
    let env = environment(
        &schema,
        &redis,
        &[("TOLLGATE__SERVER__SHUTDOWN_TIMEOUT_SECS", "60")],
    );
    let mut server = start(&env).await;
    server.sign_up("impatient").await;
    let (token, _) = server.sign_in("impatient").await;
    enqueue(
        &server,
        &token,
        json!({ "kind": "sleep", "payload": { "ms": 60000 } }),
    )
    .await;
    let running = eventually(PATIENCE, || async {
        server.get_json("/api/v1/queue", &token).await["running"] == 1
    })
    .await;
    assert!(running);

    server.terminate();
    // Draining: the task may run for a minute more. A second signal ends it.
    let still_draining = tokio::time::timeout(
        Duration::from_millis(500),
        server.exit_status(Duration::from_secs(60)),
    )
    .await;
    assert!(still_draining.is_err(), "it waits for the running task");
    server.terminate();

    let status = server.exit_status(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}");
}

#[actix_web::test]
async fn a_task_running_longer_than_its_lease_keeps_it_by_renewing() {
    let (schema, redis) = (TestSchema::create().await, TestRedis::new());
    let server = start(&environment(&schema, &redis, &[])).await;
    server.sign_up("patient").await;
    let (token, _) = server.sign_in("patient").await;

    // Three one-second leases long: only renewal keeps it.
    let id = enqueue(
        &server,
        &token,
        json!({ "kind": "sleep", "payload": { "ms": 3000 }, "max_attempts": 3 }),
    )
    .await;
    let path = format!("/api/v1/tasks/{id}");
    let finished = eventually(PATIENCE, || async {
        server.get_json(&path, &token).await["status"] == "succeeded"
    })
    .await;
    let task = server.get_json(&path, &token).await;

    assert!(finished, "{task}");
    assert_eq!(task["attempts"], 1, "the lease was never taken back");
    let scrape = server.metrics().await;
    let refused = scrape.value("tollgate_tasks_fencing_rejections_total", &[]);
    assert_eq!(refused, Some(0.0));
}
