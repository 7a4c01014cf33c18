//! The deployment files against the service they deploy: every metric the
//! Grafana dashboard queries is in a real scrape.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::spawn_app;

/// The metric names in the dashboard's queries.
fn dashboard_metrics() -> BTreeSet<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/grafana/dashboards/tollgate.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap())
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(!queries.is_empty());
    queries
        .iter()
        .flat_map(|query| {
            without_labels(query)
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|word| {
                    ["http_", "tollgate_", "process_"]
                        .iter()
                        .any(|p| word.starts_with(p))
                })
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A PromQL query without its label matchers (`{...}`) and grouping
/// clauses (`by (...)`), so that only metric names are left as words.
fn without_labels(query: &str) -> String {
    let mut kept = String::new();
    let mut rest = query;
    while let Some(at) = rest.find(['{', '(']) {
        let (before, from) = rest.split_at(at);
        let grouping = from.starts_with('(') && before.trim_end().ends_with(" by");
        if from.starts_with('{') || grouping {
            kept.push_str(before);
            let close = if from.starts_with('{') { '}' } else { ')' };
            rest = &from[from.find(close).map_or(from.len(), |i| i + 1)..];
        } else {
            kept.push_str(&rest[..=at]);
            rest = &rest[at + 1..];
        }
    }
    kept.push_str(rest);
    kept
}

#[actix_web::test]
async fn every_metric_the_dashboard_queries_is_in_a_real_scrape() {
    let app = spawn_app().await;
    let user = app.new_user("watched").await;
    app.new_token(&user).await;
    let task = app.enqueued(&user.token, &json!({ "kind": "echo" })).await;
    app.finished_task(
        &user.token,
        task["id"].as_str().unwrap(),
        Duration::from_secs(30),
    )
    .await;
    let wanted = dashboard_metrics();

    let all_there = crate::helpers::eventually(Duration::from_secs(30), || async {
        let metrics = app.metrics().await;
        let names: BTreeSet<&str> = metrics.names().collect();
        wanted.iter().all(|name| names.contains(name.as_str()))
    })
    .await;

    let metrics = app.metrics().await;
    let names: BTreeSet<&str> = metrics.names().collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !names.contains(n.as_str()))
        .collect();
    assert!(
        all_there,
        "the dashboard queries metrics no scrape has: {missing:?}"
    );
    assert!(wanted.len() >= 15, "{wanted:?}");
}
