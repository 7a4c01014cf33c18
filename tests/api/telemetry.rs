//! What the running binary tells its operators: metrics and spans pushed
//! over OTLP to a collector, structured logs to standard output and a file,
//! and never a secret in either.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{HttpResponse, web};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, Server, TempDir, eventually, serve_on_loopback, spare_port};

/// What a collector received, decoded.
#[derive(Default)]
struct Received {
    metric_names: Vec<String>,
    spans: Vec<Span>,
}

/// An OTLP/HTTP receiver on a random loopback port, standing in for an
/// OpenTelemetry collector.
struct Collector {
    address: String,
    received: Arc<Mutex<Received>>,
}

impl Collector {
    async fn start() -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let state = web::Data::new(received.clone());
        let address = serve_on_loopback(move |app| {
            app.app_data(state.clone())
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .route("/v1/metrics", web::post().to(metrics))
                .route("/v1/traces", web::post().to(traces));
        });
        Self { address, received }
    }

    fn metric_names(&self) -> Vec<String> {
        self.received.lock().unwrap().metric_names.clone()
    }

    fn spans(&self) -> Vec<Span> {
        self.received.lock().unwrap().spans.clone()
    }
}

async fn metrics(body: web::Bytes, received: web::Data<Arc<Mutex<Received>>>) -> HttpResponse {
    let request = ExportMetricsServiceRequest::decode(body).unwrap();
    let names = request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| m.name.clone());
    received.lock().unwrap().metric_names.extend(names);
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}

async fn traces(body: web::Bytes, received: web::Data<Arc<Mutex<Received>>>) -> HttpResponse {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let spans = request
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans);
    received.lock().unwrap().spans.extend(spans);
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}

/// A string attribute of a span.
fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(text) => Some(text.as_str()),
            _ => None,
        })
}

/// Enqueues an echo task and waits for it to succeed; returns its id.
async fn run_a_task(server: &Server, token: &str) -> String {
    let enqueue = server.request(Method::POST, "/api/v1/tasks", Some(token));
    let task: Value = enqueue
        .json(&json!({ "kind": "echo", "payload": "traced" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = task["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/tasks/{id}");
    let done = eventually(PATIENCE, || async {
        server.get_json(&path, token).await["status"] == "succeeded"
    })
    .await;
    assert!(done);
    id
}

#[actix_web::test]
async fn metrics_and_spans_go_to_the_collector_and_one_trace_runs_from_request_to_task() {
    let collector = Collector::start().await;
    let env = [
        (
            "TOLLGATE__TELEMETRY__OTLP_ENDPOINT",
            collector.address.as_str(),
        ),
        ("TOLLGATE__TELEMETRY__OTLP_INTERVAL_SECS", "1"),
        // A quiet log does not quieten the traces.
        ("TOLLGATE__TELEMETRY__LOG_LEVEL", "warn"),
        // The span batch goes out every 200 ms rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let server = Server::start(&["serve"], &env).await;
    server.sign_up("traced").await;
    let (token, _) = server.sign_in("traced").await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traced_call = server
        .request(Method::GET, "/health/live", None)
        .header(
            "traceparent",
            format!("00-{caller_trace}-00f067aa0ba902b7-01"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(traced_call.status(), StatusCode::OK);

    let task = run_a_task(&server, &token).await;

    let pushed = eventually(PATIENCE, || async {
        let names = collector.metric_names();
        ["http.server.request.duration", "tollgate.tasks.finished"]
            .iter()
            .all(|name| names.iter().any(|n| n == name))
    })
    .await;
    assert!(pushed, "{:?}", collector.metric_names());
    let traced = eventually(PATIENCE, || async {
        collector
            .spans()
            .iter()
            .any(|s| attribute(s, "task_id") == Some(task.as_str()))
    })
    .await;
    assert!(traced, "no span for task {task}");
    let spans = collector.spans();
    let run = spans
        .iter()
        .find(|s| attribute(s, "task_id") == Some(task.as_str()))
        .unwrap();
    let enqueue = spans
        .iter()
        .find(|s| {
            s.name == "request"
                && attribute(s, "route") == Some("/api/v1/tasks")
                && attribute(s, "method") == Some("POST")
        })
        .expect("the enqueue request has a span");
    assert_eq!(run.name, "task");
    assert_eq!(run.trace_id, enqueue.trace_id, "one trace, request to task");
    assert_eq!(run.parent_span_id, enqueue.span_id);
    let continued = spans
        .iter()
        .any(|s| s.name == "request" && hex(&s.trace_id) == caller_trace);
    assert!(continued, "a caller's traceparent is continued");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[actix_web::test]
async fn a_collector_that_cannot_be_reached_is_logged_once_and_nothing_else_suffers() {
    let closed = format!("127.0.0.1:{}", spare_port());
    let dir = TempDir::new("otlp");
    let output = dir.join("output");
    let endpoint = format!("http://{closed}");
    let env = [
        ("TOLLGATE__TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("TOLLGATE__TELEMETRY__OTLP_INTERVAL_SECS", "1"),
    ];
    let server = Server::start_with_output(&["serve"], &env, Some(&output)).await;
    server.sign_up("unheard").await;
    let logged = || {
        let printed = std::fs::read_to_string(&output).unwrap();
        printed
            .matches("could not push to the OpenTelemetry collector")
            .count()
    };

    let said = eventually(PATIENCE, || async { logged() >= 1 }).await;

    assert!(said, "the failure is logged");
    let (token, _) = server.sign_in("unheard").await;
    run_a_task(&server, &token).await;
    // Pushes fail every second; three more of them add no line.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(logged(), 1, "once, not at every push");
}

#[actix_web::test]
async fn logs_are_json_with_request_and_task_ids_and_carry_no_secret() {
    let dir = TempDir::new("logs");
    let (stdout, file) = (dir.join("stdout"), dir.join("tollgate.log"));
    let secrets = [
        "first-password-of-mine",
        "second-password-of-mine",
        "an-introspection-secret-for-services",
        "a-signing-secret-of-at-least-32-bytes!!",
    ];
    let file_setting = file.display().to_string();
    let env = [
        ("TOLLGATE__TELEMETRY__LOG_FORMAT", "json"),
        ("TOLLGATE__TELEMETRY__LOG_LEVEL", "trace"),
        ("TOLLGATE__TELEMETRY__LOG_FILE", file_setting.as_str()),
        ("TOLLGATE__AUTH__INTROSPECTION_SECRET", secrets[2]),
        ("TOLLGATE__AUTH__JWT_SECRET", secrets[3]),
    ];
    let server = Server::start_with_output(&["serve"], &env, Some(&stdout)).await;

    // Every route that handles a secret, with it right and wrong.
    server.sign_up_with("secretive", secrets[0]).await;
    let (token, _) = server.sign_in_with("secretive", secrets[0]).await;
    let wrong = json!({ "username": "secretive", "password": secrets[1] });
    let signin = server.request(Method::POST, "/api/v1/auth/signin", None);
    assert_eq!(
        signin.json(&wrong).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let change = json!({ "current_password": secrets[0], "new_password": secrets[1] });
    let password = server.request(Method::POST, "/api/v1/auth/password", Some(&token));
    assert_eq!(
        password.json(&change).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let introspect = server.request(Method::POST, "/api/v1/auth/introspect", Some(secrets[2]));
    let answer = introspect
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let forged = server.request(Method::GET, "/api/v1/users/me", Some(&format!("{token}x")));
    assert_eq!(
        forged.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let task = run_a_task(&server, &token).await;
    let scrape = server.metrics().await;
    drop(server);

    let printed = std::fs::read_to_string(&stdout).unwrap();
    let rotated = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("tollgate.log.")
        })
        .expect("the log file, with the date appended");
    let filed = std::fs::read_to_string(&rotated).unwrap();
    for (source, text) in [
        ("stdout", &printed),
        ("the log file", &filed),
        ("/metrics", &scrape.text),
    ] {
        for secret in secrets.iter().chain([&token.as_str()]) {
            assert!(!text.contains(secret), "{source} holds a secret");
        }
    }
    let lines: Vec<Value> = printed
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let handled = lines
        .iter()
        .filter(|line| line["message"] == "request handled")
        .collect::<Vec<_>>();
    assert!(!handled.is_empty());
    assert!(
        handled
            .iter()
            .all(|line| line["span"]["request_id"].is_string()),
        "{handled:?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line["span"]["task_id"] == task.as_str()),
        "a task's lines carry its id"
    );
    assert!(
        filed.lines().count() >= handled.len(),
        "the file has the same lines"
    );
}
