//! `/health/*`: liveness (the process answers) and readiness (its stores
//! do); `/metrics`: every metric, for Prometheus to scrape.

use actix::MailboxError;
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::AppState;
use crate::actors::{PingQueue, PingStore};
use crate::error::{ApiError, ErrorCode};

/// The content type of Prometheus's text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "live" }))
}

/// 200 when every store answers; 503 naming the ones that do not.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let (users, sessions, tasks) = futures_util::join!(
        state.registry.send(PingStore),
        state.sessions.ping(),
        state.queue.router.send(PingQueue)
    );
    let checks = json!({
        "users": check("users", users),
        "sessions": check("sessions", Ok(sessions)),
        "tasks": check("tasks", tasks),
    });
    let ready = ["users", "sessions", "tasks"]
        .iter()
        .all(|name| checks[name]["status"] == "up");
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": checks,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let text = state
        .export
        .render()
        .map_err(|e| ApiError::with_cause(ErrorCode::Internal, "internal error", e))?;
    Ok(HttpResponse::Ok().content_type(PROMETHEUS_TEXT).body(text))
}

/// One dependency's line in the readiness report.
fn check<E: std::fmt::Display>(
    name: &str,
    answer: Result<Result<&'static str, E>, MailboxError>,
) -> Value {
    match answer {
        Ok(Ok(store)) => json!({ "store": store, "status": "up" }),
        Ok(Err(err)) => {
            tracing::warn!(check = name, error = %err, "a store is not ready");
            json!({ "status": "down" })
        }
        Err(err) => {
            tracing::warn!(check = name, error = %err, "an actor is not answering");
            json!({ "status": "down" })
        }
    }
}
