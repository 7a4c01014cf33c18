//! The admin API on its own listener: users listed, searched and paged,
//! disabled (every session ends, sign-in refused with 403) and enabled,
//! signed out everywhere, their queues paused and resumed; tasks found
//! across users and retried or cancelled, one or in bulk; every route
//! behind the admin token, none of them on the public listener; every
//! change counted; the `tollgate admin` command.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate::config::{KindSettings, SessionStoreKind};
use tollgate::domain::{Task, TaskKind};
use tollgate::http::ADMIN_ROUTES;
use tollgate::tasks::{TaskError, TaskHandler, TaskHandlers};

use crate::helpers::{
    ADMIN_TOKEN, PASSWORD, PATIENCE, TempDir, TestApp, TestUser, admin_settings, eventually,
    fields_at_fault, output_of, problem, refused_as_invalid_token, spawn_app_with,
    spawn_app_with_handlers,
};

async fn app_with_admin(
    dir: &TempDir,
    customize: impl FnOnce(&mut tollgate::config::Settings),
) -> TestApp {
    spawn_app_with(|s| {
        s.admin = Some(admin_settings(dir));
        customize(s);
    })
    .await
}

/// `tollgate admin --url <url> <args>`, run off this thread: the service's
/// Redis connections are driven by this thread's runtime, which must keep
/// running meanwhile.
async fn admin_command(
    url: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Output, String) {
    let args: Vec<String> = ["admin", "--url", url]
        .iter()
        .chain(args)
        .map(|arg| (*arg).to_owned())
        .collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        output_of(&args, &env)
    })
    .await
    .unwrap()
}

/// The routes behind the token: all but the document and the metrics.
fn guarded_routes() -> impl Iterator<Item = (&'static str, &'static str)> {
    ADMIN_ROUTES
        .iter()
        .copied()
        .filter(|(_, path)| path.starts_with("/admin/api/"))
}

#[actix_web::test]
async fn every_admin_route_needs_the_admin_token_and_only_the_admin_listener_serves_it() {
    let dir = TempDir::new("admin");
    let app = app_with_admin(&dir, |_| {}).await;
    let user = app.new_user("ada").await;
    let admin = app.admin_address.clone().unwrap();

    for (method, template) in guarded_routes() {
        let path = template.replace("{id}", &user.id);
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let send = |address: &str, token: Option<&str>| {
            let request = app
                .client
                .request(method.clone(), format!("{address}{path}"));
            match token {
                Some(token) => request.bearer_auth(token),
                None => request,
            }
            .send()
        };

        let missing = send(&admin, None).await.unwrap();
        assert_eq!(
            missing.headers()["www-authenticate"],
            "Bearer",
            "{method} {path}"
        );
        problem(missing, StatusCode::UNAUTHORIZED, "missing_credentials").await;
        let wrong = send(&admin, Some("not-the-admin-token-but-as-long-as-one")).await;
        problem(wrong.unwrap(), StatusCode::UNAUTHORIZED, "invalid_token").await;
        // A user's own token is no admin token.
        let users_token = send(&admin, Some(&user.token)).await;
        problem(
            users_token.unwrap(),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        )
        .await;
        let public = send(&app.address, Some(ADMIN_TOKEN)).await;
        problem(public.unwrap(), StatusCode::NOT_FOUND, "not_found").await;
    }
    // The user was never touched by any of it.
    assert_eq!(app.me(&user.token).await.status(), StatusCode::OK);
}

#[actix_web::test]
async fn a_disabled_user_is_signed_out_at_once_and_refused_sign_in_until_enabled() {
    let dir = TempDir::new("admin");
    let app = app_with_admin(&dir, |_| {}).await;
    let user = app.new_user("mallory").await;
    let second = app.new_token(&user).await;
    let bystander = app.new_user("bob").await;
    let path = format!("/admin/api/v1/users/{}", user.id);

    let disabled = app
        .admin(Method::POST, &format!("{path}/disable"))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), StatusCode::OK);
    let disabled: Value = disabled.json().await.unwrap();
    // Both live tokens are refused on their very next request.
    refused_as_invalid_token(app.me(&user.token).await).await;
    refused_as_invalid_token(app.me(&second).await).await;
    let right_password = app.sign_in(&user.username, PASSWORD).await;
    let wrong_password = app.sign_in(&user.username, "not-the-password").await;
    let detail = app.admin_json(&path).await;

    assert_eq!(disabled["sessions_ended"], 2);
    assert_eq!(disabled["user"]["disabled"], true);
    assert!(disabled["user"]["disabled_at"].is_string());
    problem(right_password, StatusCode::FORBIDDEN, "account_disabled").await;
    // Without the password nothing tells that the account is disabled.
    problem(
        wrong_password,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(detail["user"]["disabled"], true);
    assert_eq!(detail["user"]["sessions"], 0);
    assert_eq!(detail["sessions"], json!([]));
    assert_eq!(app.me(&bystander.token).await.status(), StatusCode::OK);

    let enabled = app
        .admin(Method::POST, &format!("{path}/enable"))
        .send()
        .await
        .unwrap();
    assert_eq!(enabled.status(), StatusCode::OK);
    let enabled: Value = enabled.json().await.unwrap();
    assert_eq!(enabled["disabled"], false);
    assert_eq!(enabled["disabled_at"], Value::Null);
    assert_eq!(
        app.sign_in(&user.username, PASSWORD).await.status(),
        StatusCode::OK
    );
    let counted = app.metrics().await;
    for action in ["user.disable", "user.enable"] {
        let labels = [("action", action)];
        assert_eq!(
            counted.value("tollgate_admin_actions_total", &labels),
            Some(1.0),
            "{action}"
        );
    }
}

#[actix_web::test]
async fn users_are_listed_newest_first_searched_paged_and_counted() {
    let dir = TempDir::new("admin");
    // Sessions in Redis: their counts come from there.
    let app = app_with_admin(&dir, |s| s.session.store = SessionStoreKind::Redis).await;
    let mut users = Vec::new();
    for name in ["ann", "bert", "bertha", "carl"] {
        users.push(app.new_user(name).await);
    }
    app.new_token(&users[1]).await;

    let everyone = app.admin_json("/admin/api/v1/users?limit=100").await;
    let first = app.admin_json("/admin/api/v1/users?limit=3").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = app
        .admin_json(&format!("/admin/api/v1/users?limit=3&cursor={cursor}"))
        .await;
    let berts = app.admin_json("/admin/api/v1/users?query=BERT").await;

    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|user| user["username"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&everyone), ["carl", "bertha", "bert", "ann"]);
    assert_eq!(everyone["next_cursor"], Value::Null);
    assert_eq!(names(&first), ["carl", "bertha", "bert"]);
    assert_eq!(names(&rest), ["ann"]);
    assert_eq!(rest["next_cursor"], Value::Null);
    assert_eq!(names(&berts), ["bertha", "bert"]);
    let sessions: Vec<&Value> = berts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| &user["sessions"])
        .collect();
    assert_eq!(sessions, [&json!(1), &json!(2)]);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=yesterday", "cursor"),
        (&*format!("query={}", "x".repeat(257)), "query"),
        ("query=a%00b", "query"),
    ] {
        let refused = app
            .admin(Method::GET, &format!("/admin/api/v1/users?{query}"))
            .send()
            .await
            .unwrap();
        let body = problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
        assert_eq!(body["errors"][0]["field"], field, "{query}");
    }
}

#[actix_web::test]
async fn signing_a_user_out_everywhere_ends_every_session_but_not_the_account() {
    let dir = TempDir::new("admin");
    let app = app_with_admin(&dir, |s| s.session.store = SessionStoreKind::Redis).await;
    let user = app.new_user("eve").await;
    let tokens = [
        user.token.clone(),
        app.new_token(&user).await,
        app.new_token(&user).await,
    ];
    let task = app
        .enqueued(
            &tokens[0],
            &json!({ "kind": "echo", "payload": { "n": 1 } }),
        )
        .await;
    app.finished_task(
        &tokens[0],
        task["id"].as_str().unwrap(),
        std::time::Duration::from_secs(10),
    )
    .await;
    let path = format!("/admin/api/v1/users/{}", user.id);

    let before = app.admin_json(&path).await;
    let signed_out = app
        .admin(Method::DELETE, &format!("{path}/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::OK);
    let signed_out: Value = signed_out.json().await.unwrap();

    assert_eq!(before["user"]["sessions"], 3);
    // Listed from Redis, newest first.
    let listed = before["sessions"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    let created: Vec<&str> = listed
        .iter()
        .map(|s| s["created_at"].as_str().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|pair| pair[0] >= pair[1]),
        "{created:?}"
    );
    assert_eq!(before["queue"]["succeeded"], 1);
    assert_eq!(signed_out["sessions_ended"], 3);
    for token in &tokens {
        refused_as_invalid_token(app.me(token).await).await;
    }
    assert_eq!(app.sign_in("eve", PASSWORD).await.status(), StatusCode::OK);
    let counted = app.metrics().await;
    let labels = [("action", "user.sign_out")];
    assert_eq!(
        counted.value("tollgate_admin_actions_total", &labels),
        Some(3.0)
    );
}

#[actix_web::test]
async fn an_unknown_or_malformed_user_id_is_not_found() {
    let dir = TempDir::new("admin");
    let app = app_with_admin(&dir, |_| {}).await;
    let unknown = uuid::Uuid::now_v7().to_string();

    for id in [unknown.as_str(), "not-a-uuid"] {
        for (method, suffix) in [
            (Method::GET, ""),
            (Method::POST, "/disable"),
            (Method::POST, "/enable"),
            (Method::DELETE, "/sessions"),
        ] {
            let path = format!("/admin/api/v1/users/{id}{suffix}");
            let answer = app.admin(method, &path).send().await.unwrap();
            problem(answer, StatusCode::NOT_FOUND, "not_found").await;
        }
    }
}

#[actix_web::test]
async fn the_admin_listener_serves_its_document_and_on_request_the_metrics() {
    let dir = TempDir::new("admin");
    let app = app_with_admin(&dir, |s| {
        s.admin.as_mut().unwrap().serve_metrics = true;
    })
    .await;
    let quiet_dir = TempDir::new("admin-quiet");
    let quiet = app_with_admin(&quiet_dir, |_| {}).await;

    let document = app.admin_json("/admin/openapi.json").await;
    let metrics = app.admin(Method::GET, "/metrics").send().await.unwrap();
    let no_metrics = quiet.admin(Method::GET, "/metrics").send().await.unwrap();

    let documented: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
    for (_, path) in ADMIN_ROUTES {
        assert!(
            documented.contains(&&(*path).to_owned()),
            "{path} undocumented"
        );
    }
    assert_eq!(
        document["paths"]["/admin/api/v1/users"]["get"]["security"],
        json!([{ "admin": [] }])
    );
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("tollgate_sessions_active")
    );
    problem(no_metrics, StatusCode::NOT_FOUND, "not_found").await;
}

#[actix_web::test]
async fn the_admin_command_lists_disables_and_enables_users_of_a_live_service() {
    let dir = TempDir::new("admin");
    let app = app_with_admin(&dir, |_| {}).await;
    let user = app.new_user("zed").await;
    app.new_user("zoe").await;
    let url = app.admin_address.clone().unwrap();
    let token_file = dir.join("admin-token").display().to_string();
    let by_env = [("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)];

    let (listed, listed_text) =
        admin_command(&url, &["--json", "users", "list", "--query", "z"], &by_env).await;
    let (table, table_text) =
        admin_command(&url, &["users", "list", "--limit", "1"], &by_env).await;
    let (disabled, disabled_text) = admin_command(
        &url,
        &[
            "--token-file",
            &token_file,
            "--json",
            "users",
            "disable",
            &user.id,
        ],
        &[],
    )
    .await;
    let refused_sign_in = app.sign_in("zed", PASSWORD).await;
    let (enabled, enabled_text) =
        admin_command(&url, &["--json", "users", "enable", &user.id], &by_env).await;
    let from_a_laptop = app
        .post("/api/v1/auth/signin")
        .header("user-agent", "Laptop/2.0")
        .json(&json!({ "username": "zed", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(from_a_laptop.status(), StatusCode::OK);
    let (shown, shown_text) = admin_command(&url, &["users", "show", &user.id], &by_env).await;
    let (wrong, wrong_text) = admin_command(
        &url,
        &["users", "show", &user.id],
        &[(
            "TOLLGATE_ADMIN_TOKEN",
            "not-the-admin-token-but-as-long-as-one",
        )],
    )
    .await;
    let (unknown, unknown_text) =
        admin_command(&url, &["users", "show", "no-such-user"], &by_env).await;
    // An id is one path segment, whatever it holds.
    let (sneaky, sneaky_text) =
        admin_command(&url, &["users", "show", "x/../../tasks/retry"], &by_env).await;

    assert!(listed.status.success(), "{listed_text}");
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["zoe", "zed"]);
    assert!(table.status.success(), "{table_text}");
    let lines: Vec<&str> = table_text.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("USERNAME  "),
        "{table_text}"
    );
    assert!(lines[1].contains("zoe"), "{table_text}");
    assert!(lines[2].starts_with("next cursor: "), "{table_text}");
    assert!(disabled.status.success(), "{disabled_text}");
    let disabled: Value = serde_json::from_slice(&disabled.stdout).unwrap();
    assert_eq!(disabled["sessions_ended"], 1);
    problem(refused_sign_in, StatusCode::FORBIDDEN, "account_disabled").await;
    assert!(enabled.status.success(), "{enabled_text}");
    let enabled: Value = serde_json::from_slice(&enabled.stdout).unwrap();
    assert_eq!(enabled["disabled"], false);
    assert!(shown.status.success(), "{shown_text}");
    let session_row = shown_text
        .lines()
        .find(|line| line.contains("Laptop/2.0"))
        .unwrap_or_else(|| panic!("no session row in\n{shown_text}"));
    assert!(session_row.contains("127.0.0.1"), "{shown_text}");
    assert!(!wrong.status.success());
    assert!(wrong_text.contains("401 invalid_token"), "{wrong_text}");
    assert!(!unknown.status.success());
    assert!(
        unknown_text.contains("404 not_found: no such user"),
        "{unknown_text}"
    );
    assert!(!sneaky.status.success());
    assert!(
        sneaky_text.contains("404 not_found: no such user"),
        "{sneaky_text}"
    );
}

/// The `job` kind: rejects every attempt while `broken`, and otherwise
/// notes `"<user id> <payload n>"` and succeeds.
#[derive(Clone, Default)]
pub struct Job {
    pub broken: Arc<AtomicBool>,
    ran: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl TaskHandler for Job {
    async fn run(&self, task: &Task) -> Result<Value, TaskError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(TaskError::Reject("the job is broken".into()));
        }
        let entry = format!("{} {}", task.user_id, task.payload["n"]);
        self.ran.lock().unwrap().push(entry);
        Ok(json!({}))
    }
}

impl Job {
    /// What ran for `user`, as the `n` of each task in the order run.
    fn ran_for(&self, user: &str) -> Vec<u64> {
        let ran = self.ran.lock().unwrap();
        ran.iter()
            .filter_map(|entry| entry.strip_prefix(&format!("{user} ")))
            .map(|n| n.parse().unwrap())
            .collect()
    }
}

/// An app whose only kind is `job`, with an admin listener.
pub async fn app_with_jobs(dir: &TempDir, job: &Job) -> TestApp {
    let job = job.clone();
    spawn_app_with_handlers(
        move |_| Ok(TaskHandlers::empty().with("job", job)),
        |s| {
            s.admin = Some(admin_settings(dir));
            s.queue.default_kind = TaskKind::parse("job").unwrap();
        },
    )
    .await
}

pub async fn enqueue_jobs(app: &TestApp, user: &TestUser, count: u64) {
    for n in 0..count {
        app.enqueued(
            &user.token,
            &json!({ "kind": "job", "payload": { "n": n } }),
        )
        .await;
    }
}

async fn post_admin(app: &TestApp, path: &str, body: &Value) -> Value {
    let answer = app
        .admin(Method::POST, path)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK, "POST {path}");
    answer.json().await.unwrap()
}

#[actix_web::test]
async fn a_thousand_dead_tasks_are_retried_in_one_call_and_all_run() {
    let dir = TempDir::new("admin");
    let job = Job::default();
    job.broken.store(true, Ordering::SeqCst);
    let app = app_with_jobs(&dir, &job).await;
    let users: Vec<TestUser> = futures_util::future::join_all((0..10).map(|i| {
        let app = &app;
        async move { app.new_user(&format!("worker{i}")).await }
    }))
    .await;
    futures_util::future::join_all(users.iter().map(|user| enqueue_jobs(&app, user, 100))).await;
    let all_dead = eventually(PATIENCE, || async {
        let dead = users.iter().map(|user| app.queue_counts(&user.token));
        let dead = futures_util::future::join_all(dead).await;
        dead.iter().all(|counts| counts["dead"] == 100)
    })
    .await;
    assert!(all_dead, "the broken job killed every task");

    job.broken.store(false, Ordering::SeqCst);
    let retried = post_admin(
        &app,
        "/admin/api/v1/tasks/retry",
        &json!({ "status": "dead" }),
    )
    .await;
    let all_ran = eventually(PATIENCE, || async {
        let counts = users.iter().map(|user| app.queue_counts(&user.token));
        let counts = futures_util::future::join_all(counts).await;
        counts.iter().all(|counts| counts["succeeded"] == 100)
    })
    .await;

    assert_eq!(retried, json!({ "matched": 1000, "changed": 1000 }));
    assert!(all_ran, "every retried task ran");
    for user in &users {
        let mut ran = job.ran_for(&user.id);
        ran.sort_unstable();
        assert_eq!(
            ran,
            (0..100).collect::<Vec<u64>>(),
            "{} ran each once",
            user.username
        );
    }
    let again = post_admin(
        &app,
        "/admin/api/v1/tasks/retry",
        &json!({ "status": "dead" }),
    )
    .await;
    assert_eq!(again, json!({ "matched": 0, "changed": 0 }));
    let counted = app.metrics().await;
    let labels = [("action", "task.retry")];
    assert_eq!(
        counted.value("tollgate_admin_actions_total", &labels),
        Some(1000.0)
    );
}

#[actix_web::test]
async fn the_queue_view_shows_each_kind_with_limits_and_what_it_holds_back() {
    let dir = TempDir::new("admin");
    let app = app_with_admin(&dir, |s| {
        let kind = |name: &str| TaskKind::parse(name).unwrap();
        let paused = KindSettings {
            max_running: Some(0),
            max_per_second: None,
        };
        let paced = KindSettings {
            max_running: None,
            max_per_second: Some(100),
        };
        s.queue.kinds = [(kind("sleep"), paused), (kind("echo"), paced)].into();
    })
    .await;
    let user = app.new_user("held").await;
    for _ in 0..2 {
        let sleep = json!({ "kind": "sleep", "payload": { "ms": 1 } });
        app.enqueued(&user.token, &sleep).await;
    }
    let echo = app.enqueued(&user.token, &json!({ "kind": "echo" })).await;
    app.finished_task(&user.token, echo["id"].as_str().unwrap(), PATIENCE)
        .await;

    let queues = app.admin_json("/admin/api/v1/queues").await;

    assert_eq!(
        queues["kinds"],
        json!([
            { "kind": "echo", "running": 0, "parked": 0, "max_running": null, "max_per_second": 100 },
            { "kind": "sleep", "running": 0, "parked": 2, "max_running": 0, "max_per_second": null },
        ]),
        "{queues}"
    );
}

#[actix_web::test]
async fn a_paused_users_tasks_wait_while_others_run_then_run_in_order() {
    let dir = TempDir::new("admin");
    let job = Job::default();
    let app = app_with_jobs(&dir, &job).await;
    let (paused, other) = (app.new_user("paused").await, app.new_user("other").await);
    let queue = format!("/admin/api/v1/users/{}/queue", paused.id);

    let pause = post_admin(&app, &format!("{queue}/pause"), &json!(null)).await;
    let again = post_admin(&app, &format!("{queue}/pause"), &json!(null)).await;
    enqueue_jobs(&app, &paused, 5).await;
    enqueue_jobs(&app, &other, 5).await;
    let others_ran = eventually(PATIENCE, || async {
        app.queue_counts(&other.token).await["succeeded"] == 5
    })
    .await;
    let waiting = app.queue_counts(&paused.token).await;
    let detail = app
        .admin_json(&format!("/admin/api/v1/users/{}", paused.id))
        .await;
    let ran_while_paused = job.ran_for(&paused.id);
    let queues = app.admin_json("/admin/api/v1/queues").await;
    let resume = post_admin(&app, &format!("{queue}/resume"), &json!(null)).await;
    let all_ran = eventually(PATIENCE, || async {
        app.queue_counts(&paused.token).await["succeeded"] == 5
    })
    .await;

    assert_eq!(pause, json!({ "paused": true, "changed": true }));
    assert_eq!(again, json!({ "paused": true, "changed": false }));
    assert!(others_ran);
    assert_eq!(waiting["queued"], 5, "{waiting}");
    assert_eq!(detail["queue"]["paused"], true);
    assert_eq!(queues["waiting"], 5, "{queues}");
    assert_eq!(
        queues["oldest_due_at"],
        Value::Null,
        "paused tasks are not overdue"
    );
    assert_eq!(
        queues["users"],
        json!([{ "user_id": paused.id, "waiting": 5, "running": 0 }])
    );
    assert_eq!(queues["pools"]["workers"]["target"], 4);
    assert_eq!(queues["pools"]["hashers"]["target"], 2);
    assert!(ran_while_paused.is_empty(), "{ran_while_paused:?}");
    assert_eq!(resume, json!({ "paused": false, "changed": true }));
    assert!(all_ran);
    assert_eq!(
        job.ran_for(&paused.id),
        [0, 1, 2, 3, 4],
        "first in, first out"
    );
}

#[actix_web::test]
async fn tasks_are_found_across_users_and_one_is_retried_only_if_dead_or_cancelled() {
    let dir = TempDir::new("admin");
    let job = Job::default();
    let app = app_with_jobs(&dir, &job).await;
    let (ann, bob) = (app.new_user("ann").await, app.new_user("bob").await);
    enqueue_jobs(&app, &ann, 2).await;
    let ran = eventually(PATIENCE, || async {
        app.queue_counts(&ann.token).await["succeeded"] == 2
    })
    .await;
    job.broken.store(true, Ordering::SeqCst);
    enqueue_jobs(&app, &bob, 1).await;
    let died = eventually(PATIENCE, || async {
        app.queue_counts(&bob.token).await["dead"] == 1
    })
    .await;
    assert!(ran && died);

    let everyone = app.admin_json("/admin/api/v1/tasks").await;
    let dead = app.admin_json("/admin/api/v1/tasks?status=dead").await;
    let anns = app
        .admin_json(&format!(
            "/admin/api/v1/tasks?user={}&kind=job&limit=1",
            ann.id
        ))
        .await;
    let dead_id = dead["items"][0]["id"].as_str().unwrap().to_owned();
    let succeeded_id = anns["items"][0]["id"].as_str().unwrap().to_owned();
    job.broken.store(false, Ordering::SeqCst);
    let retry = |id: &str| {
        app.admin(Method::POST, &format!("/admin/api/v1/tasks/{id}/retry"))
            .send()
    };
    let retried = retry(&dead_id).await.unwrap();
    let not_retriable = retry(&succeeded_id).await.unwrap();
    let unknown = retry(&uuid::Uuid::now_v7().to_string()).await.unwrap();
    let malformed = retry("nonsense").await.unwrap();

    assert_eq!(everyone["items"].as_array().unwrap().len(), 3);
    assert_eq!(dead["items"].as_array().unwrap().len(), 1);
    assert_eq!(dead["items"][0]["user_id"], bob.id);
    assert_eq!(anns["items"].as_array().unwrap().len(), 1);
    assert!(anns["next_cursor"].is_string());
    assert_eq!(retried.status(), StatusCode::OK);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(
        (retried["id"].as_str(), &retried["attempts"]),
        (Some(dead_id.as_str()), &json!(0))
    );
    problem(not_retriable, StatusCode::CONFLICT, "task_not_retriable").await;
    problem(unknown, StatusCode::NOT_FOUND, "not_found").await;
    problem(malformed, StatusCode::NOT_FOUND, "not_found").await;
    let ran = eventually(PATIENCE, || async {
        app.queue_counts(&bob.token).await["succeeded"] == 1
    })
    .await;
    assert!(ran, "the retried task ran");

    let bad = app
        .admin(
            Method::GET,
            "/admin/api/v1/tasks?status=asleep&user=nobody&kind=NO!",
        )
        .send()
        .await
        .unwrap();
    let body = problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    let mut fields = fields_at_fault(&body);
    fields.sort_unstable();
    assert_eq!(fields, ["kind", "status", "user"]);
    let bad_bulk = app
        .admin(Method::POST, "/admin/api/v1/tasks/cancel")
        .json(&json!({ "status": "asleep", "owner": "x" }))
        .send()
        .await
        .unwrap();
    problem(bad_bulk, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    // An empty filter means every task only when it says so.
    let unnamed = app
        .admin(Method::POST, "/admin/api/v1/tasks/cancel")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let body = problem(unnamed, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
    assert_eq!(fields_at_fault(&body), ["all"]);
    let everything = post_admin(&app, "/admin/api/v1/tasks/cancel", &json!({ "all": true })).await;
    assert_eq!(everything, json!({ "matched": 3, "changed": 0 }));
}

#[test]
fn an_admin_listener_off_loopback_needs_tls() {
    let dir = TempDir::new("admin");
    let token_file = admin_settings(&dir).token_file.display().to_string();
    let check = |bind: &str| {
        let env = [
            ("TOLLGATE__ADMIN__BIND", bind),
            ("TOLLGATE__ADMIN__TOKEN_FILE", token_file.as_str()),
        ];
        output_of(&["check-config"], &env)
    };

    let (open, open_text) = check("0.0.0.0:8081");
    let (local, local_text) = check("127.0.0.1:8081");

    assert!(!open.status.success(), "{open_text}");
    assert!(
        open_text
            .contains("admin.bind 0.0.0.0:8081 is off loopback and there is no server.tls_cert"),
        "{open_text}"
    );
    assert!(local.status.success(), "{local_text}");
    assert!(
        local_text.contains("admin           127.0.0.1:8081"),
        "{local_text}"
    );
}

#[actix_web::test]
async fn the_admin_command_finds_retries_and_cancels_tasks_and_pauses_queues() {
    let dir = TempDir::new("admin");
    let job = Job::default();
    job.broken.store(true, Ordering::SeqCst);
    let app = app_with_jobs(&dir, &job).await;
    let user = app.new_user("cli").await;
    enqueue_jobs(&app, &user, 3).await;
    let died = eventually(PATIENCE, || async {
        app.queue_counts(&user.token).await["dead"] == 3
    })
    .await;
    assert!(died);
    job.broken.store(false, Ordering::SeqCst);
    let url = app.admin_address.clone().unwrap();
    let by_env = [("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)];

    let (listed, listed_text) = admin_command(
        &url,
        &["--json", "tasks", "list", "--status", "dead"],
        &by_env,
    )
    .await;
    let (table, table_text) = admin_command(
        &url,
        &["tasks", "list", "--user", &user.id, "--limit", "2"],
        &by_env,
    )
    .await;
    let (unnamed, unnamed_text) = admin_command(&url, &["tasks", "retry"], &by_env).await;
    let (paused, paused_text) = admin_command(&url, &["users", "pause", &user.id], &by_env).await;
    let (retried, retried_text) =
        admin_command(&url, &["tasks", "retry", "--status", "dead"], &by_env).await;
    let detail = app
        .admin_json(&format!("/admin/api/v1/users/{}", user.id))
        .await;
    let (queues, queues_text) = admin_command(&url, &["queues"], &by_env).await;
    let (cancelled, cancelled_text) =
        admin_command(&url, &["tasks", "cancel", "--user", &user.id], &by_env).await;

    assert!(listed.status.success(), "{listed_text}");
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 3);
    assert!(table.status.success(), "{table_text}");
    let lines: Vec<&str> = table_text.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{table_text}"
    );
    assert!(
        lines[1].contains(" dead ") && lines[1].contains(" 1/"),
        "{table_text}"
    );
    assert!(lines[3].starts_with("next cursor: "), "{table_text}");
    assert!(!unnamed.status.success());
    assert!(unnamed_text.contains("or say --all"), "{unnamed_text}");
    assert!(paused.status.success(), "{paused_text}");
    assert_eq!(paused_text.trim(), "queue paused");
    assert!(retried.status.success(), "{retried_text}");
    assert_eq!(retried_text.trim(), "matched 3, changed 3");
    // Paused, the retried tasks wait, and so they can be cancelled.
    assert_eq!(detail["queue"]["queued"], 3, "{detail}");
    assert!(queues.status.success(), "{queues_text}");
    let lines: Vec<&str> = queues_text.lines().collect();
    assert!(lines[0].starts_with("waiting 3 (users 1)"), "{queues_text}");
    assert!(
        queues_text.contains("POOL") && queues_text.contains("hashers"),
        "{queues_text}"
    );
    assert!(
        queues_text.contains(&format!("{}  3", user.id)),
        "{queues_text}"
    );
    assert!(cancelled.status.success(), "{cancelled_text}");
    assert_eq!(cancelled_text.trim(), "matched 3, changed 3");
}
