//! `/metrics` after real traffic: every instrument by name, labels and
//! value, checked by `promtool`, and scraped by a real Prometheus server.

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, PATIENCE, TestApp, client, eventually, spare_port, spawn_app, spawn_app_with,
};

/// Every instrument of the design, as Prometheus names it, but the two that
/// appear only once something has gone wrong (restarts, fencing refusals;
/// the task tests see those), and the process's own figures.
const EVERY_INSTRUMENT: [&str; 22] = [
    "http_server_request_duration_seconds_count",
    "http_server_active_requests",
    "tollgate_auth_signins_total",
    "tollgate_auth_signups_total",
    "tollgate_auth_password_hash_duration_seconds_count",
    "tollgate_sessions_active",
    "tollgate_sessions_created_total",
    "tollgate_sessions_reinflated_total",
    "tollgate_sessions_expired_total",
    "tollgate_tasks_enqueued_total",
    "tollgate_tasks_finished_total",
    "tollgate_tasks_duration_seconds_count",
    "tollgate_tasks_wait_seconds_count",
    "tollgate_queue_pending",
    "tollgate_queue_users_with_pending",
    "tollgate_queue_oldest_wait_seconds",
    "tollgate_workers_busy",
    "tollgate_pool_size",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_threads",
];

/// Signs up `name`, fails three sign-ins, signs in once, uses the token
/// twice and runs two echo tasks. Returns the user's id, token and a task id.
async fn traffic(app: &TestApp, name: &str) -> (String, String, String) {
    let user = app.new_user(name).await;
    for _ in 0..3 {
        let wrong = app.sign_in(name, "not the password at all").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let token = app.new_token(&user).await;
    for _ in 0..2 {
        assert_eq!(app.me(&token).await.status(), StatusCode::OK);
    }
    let mut task = String::new();
    for n in 0..2 {
        let queued = app
            .enqueued(&token, &json!({ "kind": "echo", "payload": n }))
            .await;
        task = queued["id"].as_str().unwrap().to_owned();
        app.finished_task(&token, &task, PATIENCE).await;
    }
    (user.id, token, task)
}

#[actix_web::test]
async fn every_instrument_counts_what_the_traffic_did() {
    let app = spawn_app().await;
    let (user_id, token, task) = traffic(&app, "counted").await;
    assert_eq!(app.task(&token, &task).await.status(), StatusCode::OK);

    // The queue's gauges are first recorded by the pool's periodic round.
    let missing = || async {
        let metrics = app.metrics().await;
        let names: Vec<&str> = metrics.names().collect();
        EVERY_INSTRUMENT
            .iter()
            .filter(|name| !names.contains(name))
            .map(|name| name.to_string())
            .collect::<Vec<_>>()
    };
    let all_there = eventually(PATIENCE, || async { missing().await.is_empty() }).await;
    assert!(all_there, "missing from the scrape: {:?}", missing().await);
    let metrics = app.metrics().await;

    let value = |name: &str, labels: &[(&str, &str)]| metrics.value(name, labels);
    assert_eq!(
        value("tollgate_auth_signups_total", &[("outcome", "created")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            "tollgate_auth_signins_total",
            &[("outcome", "invalid_credentials")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value("tollgate_auth_signins_total", &[("outcome", "success")]),
        Some(1.0)
    );
    // The dummy hash at start, the sign-up; four sign-ins checked a hash.
    assert_eq!(
        value(
            "tollgate_auth_password_hash_duration_seconds_count",
            &[("operation", "hash")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            "tollgate_auth_password_hash_duration_seconds_count",
            &[("operation", "verify")]
        ),
        Some(4.0)
    );
    assert_eq!(value("tollgate_sessions_created_total", &[]), Some(2.0));
    assert_eq!(value("tollgate_sessions_active", &[]), Some(2.0));
    // Two profile reads, two enqueues, the polls of the tasks, the read.
    assert!(value("tollgate_sessions_reinflated_total", &[]).unwrap() >= 5.0);
    let me = [
        ("http_route", "/api/v1/users/me"),
        ("http_response_status_code", "200"),
    ];
    assert_eq!(
        value("http_server_request_duration_seconds_count", &me),
        Some(2.0)
    );
    let signins = [
        ("http_route", "/api/v1/auth/signin"),
        ("http_request_method", "POST"),
        ("http_response_status_code", "401"),
    ];
    assert_eq!(
        value("http_server_request_duration_seconds_count", &signins),
        Some(3.0)
    );
    let by_id = [("http_route", "/api/v1/tasks/{id}")];
    assert!(value("http_server_request_duration_seconds_count", &by_id).unwrap() >= 1.0);
    assert_eq!(
        value(
            "http_server_active_requests",
            &[("http_route", "/api/v1/users/me")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value("tollgate_tasks_enqueued_total", &[("kind", "echo")]),
        Some(2.0)
    );
    let succeeded = [("kind", "echo"), ("outcome", "succeeded")];
    assert_eq!(
        value("tollgate_tasks_finished_total", &succeeded),
        Some(2.0)
    );
    assert_eq!(
        value("tollgate_tasks_duration_seconds_count", &[("kind", "echo")]),
        Some(2.0)
    );
    assert_eq!(
        value("tollgate_tasks_wait_seconds_count", &[("kind", "echo")]),
        Some(2.0)
    );
    assert_eq!(value("tollgate_workers_busy", &[]), Some(0.0));
    let workers = [("pool", "workers"), ("kind", "target")];
    assert_eq!(value("tollgate_pool_size", &workers), Some(4.0));
    assert_eq!(
        value(
            "tollgate_pool_size",
            &[("pool", "hashers"), ("kind", "actual")]
        ),
        Some(2.0)
    );
    for process in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_threads",
    ] {
        assert!(value(process, &[]).unwrap() > 0.0, "{process}");
    }
    assert!(value("process_cpu_seconds_total", &[]).is_some());
    // Nothing says who: no user, no raw path, no secret in any label.
    for (label, label_value) in metrics.label_values() {
        assert!(!label.contains("user"), "{label}");
        for private in [
            user_id.as_str(),
            "counted",
            task.as_str(),
            PASSWORD,
            token.as_str(),
        ] {
            assert!(!label_value.contains(private), "{label}={label_value}");
        }
    }
}

#[actix_web::test]
async fn an_invented_method_is_counted_as_other_and_never_named() {
    let app = spawn_app().await;
    let invented = reqwest::Method::from_bytes(b"SECRETTOKENabc123").unwrap();

    let response = app
        .client
        .request(invented, app.url("/metrics"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let metrics = app.metrics().await;
    let other = [
        ("http_request_method", "_OTHER"),
        ("http_route", "/metrics"),
    ];
    assert_eq!(
        metrics.value("http_server_request_duration_seconds_count", &other),
        Some(1.0)
    );
    assert!(!metrics.text.contains("SECRETTOKEN"));
}

#[actix_web::test]
async fn the_queue_figures_show_what_waits_and_for_how_long() {
    // One worker and none kept for newcomers: every task but the first waits.
    let app = spawn_app_with(|s| {
        s.queue.workers = 1;
        s.queue.newcomer_workers = 0;
    })
    .await;
    let (first, second) = (app.new_user("first").await, app.new_user("second").await);
    let holding = json!({ "kind": "sleep", "payload": { "ms": 2000 } });
    let hold = app.enqueued(&first.token, &holding).await;
    let hold = hold["id"].as_str().unwrap().to_owned();
    app.task_where(&first.token, &hold, PATIENCE, |t| t["status"] == "running")
        .await;
    for user in [&first, &first, &second] {
        app.enqueued(&user.token, &json!({ "kind": "echo" })).await;
    }
    app.clock.advance(Duration::from_secs(5));

    let figures = || async {
        let metrics = app.metrics().await;
        [
            "tollgate_queue_pending",
            "tollgate_queue_users_with_pending",
            "tollgate_queue_oldest_wait_seconds",
            "tollgate_workers_busy",
        ]
        .map(|name| metrics.value(name, &[]))
    };
    let waiting = [Some(3.0), Some(2.0), Some(5.0), Some(1.0)];
    let seen = eventually(PATIENCE, || async { figures().await == waiting }).await;
    assert!(seen, "{:?}", figures().await);

    let drained = [Some(0.0), Some(0.0), Some(0.0), Some(0.0)];
    let seen = eventually(PATIENCE, || async { figures().await == drained }).await;
    assert!(seen, "{:?}", figures().await);
}

#[actix_web::test]
async fn each_lapsed_session_is_counted_once_whether_a_use_or_the_sweep_finds_it() {
    let app = spawn_app().await;
    let first = app.new_user("lapsing").await;
    app.new_user("sleeper").await;
    app.new_token(&first).await;
    app.clock.advance(Duration::from_secs(31));

    // A use finds one lapsed session; the sweep finds the other two.
    assert_eq!(
        app.session(&first.token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let expired = || async {
        let metrics = app.metrics().await;
        (
            metrics.value("tollgate_sessions_expired_total", &[]),
            metrics.value("tollgate_sessions_active", &[]),
        )
    };
    let swept = eventually(PATIENCE, || async {
        expired().await.1 == Some(0.0) && app.sessions.count().await.unwrap() == 0
    })
    .await;

    assert!(swept, "{:?}", expired().await);
    assert_eq!(expired().await.0, Some(3.0));
}

#[actix_web::test]
async fn the_scrape_passes_promtool() {
    let app = spawn_app().await;
    traffic(&app, "linted").await;
    let scrape = app.metrics().await;

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs; `make test` installs it");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.text.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();

    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(checked.status.success(), "{said}");
    assert_eq!(said.trim(), "", "promtool found something to say");
}

/// A Prometheus server on a spare loopback port, scraping `target` every
/// second; killed and removed when dropped.
struct Prometheus {
    address: String,
    dir: std::path::PathBuf,
    server: Child,
}

impl Prometheus {
    async fn scraping(target: &str) -> Self {
        let port = spare_port();
        let dir =
            std::env::temp_dir().join(format!("tollgate-prometheus-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tollgate\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let server = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs; `make test` installs it");
        let prometheus = Self {
            address: format!("http://127.0.0.1:{port}"),
            dir,
            server,
        };
        let ready = eventually(PATIENCE, || async {
            let ready = client()
                .get(format!("{}/-/ready", prometheus.address))
                .send()
                .await;
            ready.is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
        assert!(ready, "prometheus did not start");
        prometheus
    }

    /// The value of a PromQL query that yields one sample, if it does.
    async fn query(&self, promql: &str) -> Option<f64> {
        let response = client()
            .get(format!("{}/api/v1/query", self.address))
            .query(&[("query", promql)])
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[actix_web::test]
async fn a_real_prometheus_scrapes_the_service_and_answers_promql() {
    let app = spawn_app().await;
    let target = app.address.trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::scraping(&target).await;
    for _ in 0..7 {
        let live = app.get("/health/live").send().await.unwrap();
        assert_eq!(live.status(), StatusCode::OK);
    }

    let query = r#"sum(http_server_request_duration_seconds_count{http_route="/health/live"})"#;
    let seen = eventually(PATIENCE, || async {
        prometheus.query(query).await == Some(7.0)
    })
    .await;

    assert!(
        seen,
        "prometheus answered {:?}",
        prometheus.query(query).await
    );
    let up = prometheus.query(r#"up{job="tollgate"}"#).await;
    assert_eq!(up, Some(1.0));
}

/// The gauges the README's metric table documents: the names in each row
/// whose type is a gauge.
fn documented_gauges() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    readme
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|row| {
            let columns: Vec<&str> = row.split('|').map(str::trim).collect();
            let is_gauge = columns.get(2).is_some_and(|kind| kind.starts_with("gauge"));
            is_gauge.then(|| columns[1].to_owned())
        })
        .flat_map(|names| {
            names
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[actix_web::test]
async fn every_documented_gauge_is_in_the_very_first_scrape() {
    let gauges = documented_gauges();
    assert!(gauges.len() >= 7, "the README's table was read: {gauges:?}");
    // One kind with limits, so that the gauges per kind have a series.
    let app = spawn_app_with(|s| {
        let limit = tollgate::config::KindSettings {
            max_running: Some(4),
            max_per_second: None,
        };
        s.queue.kinds = [(tollgate::domain::TaskKind::parse("webhook").unwrap(), limit)].into();
    })
    .await;

    let first = app.metrics().await;

    let names: Vec<&str> = first.names().collect();
    let missing: Vec<&String> = gauges
        .iter()
        .filter(|gauge| !names.contains(&gauge.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?} from\n{}",
        first.text
    );
    for route in ["/api/v1/tasks", "/health/ready"] {
        let labels = [("http_route", route)];
        assert_eq!(
            first.value("http_server_active_requests", &labels),
            Some(0.0),
            "{route} is shown idle before its first request"
        );
    }
}
