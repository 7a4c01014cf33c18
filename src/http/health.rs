//! `/health/*`: liveness (the process answers) and readiness (its stores
//! do); `/metrics`: every metric, for Prometheus to scrape.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::telemetry::MetricsExport;

/// The content type of Prometheus's text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Serialize, utoipa::ToSchema)]
pub struct Liveness {
    #[schema(value_type = String, example = "live")]
    status: &'static str,
}

/// The process is up and answering.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, body = Liveness, description = "Live")))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Liveness { status: "live" })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`, or `unavailable` when any check is down.
    #[schema(value_type = String, example = "ready")]
    status: &'static str,
    checks: Checks,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Checks {
    users: Check,
    sessions: Check,
    tasks: Check,
}

/// One dependency's line in the readiness report.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `up` or `down`.
    #[schema(value_type = String, example = "up")]
    status: &'static str,
    /// Where it is kept (`postgres`, `redis`, `memory`); absent when down.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    store: Option<&'static str>,
}

/// 200 when every store answers; 503 naming the ones that do not.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, body = Readiness, description = "Every store answers"),
        (status = 503, body = Readiness, description = "Some store does not: its check is `down`"),
    ))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let (users, sessions, tasks) = futures_util::join!(
        state.registry.ping(),
        state.sessions.ping(),
        state.queue.ping()
    );
    let checks = Checks {
        users: check("users", users),
        sessions: check("sessions", sessions),
        tasks: check("tasks", tasks),
    };
    let ready = [&checks.users, &checks.sessions, &checks.tasks]
        .iter()
        .all(|check| check.store.is_some());
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        checks,
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Every metric, in Prometheus's text format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, body = String, content_type = "text/plain; version=0.0.4; charset=utf-8", description = "The exposition"),
        (status = 500, description = "`internal`"),
    ))]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    render_metrics(&state.export)
}

/// The exposition of `export`, as `/metrics` answers it on either listener.
pub fn render_metrics(export: &MetricsExport) -> Result<HttpResponse, ApiError> {
    let text = export.render().map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().content_type(PROMETHEUS_TEXT).body(text))
}

/// One dependency's line in the readiness report.
fn check<E: std::fmt::Display>(name: &str, answer: Result<&'static str, E>) -> Check {
    match answer {
        Ok(store) => Check {
            status: "up",
            store: Some(store),
        },
        Err(err) => {
            tracing::warn!(check = name, error = %err, "a store is not ready");
            Check {
                status: "down",
                store: None,
            }
        }
    }
}
