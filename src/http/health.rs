//! `/health/*`: liveness (the process answers) and readiness (its stores do).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;
use crate::actors::PingStore;

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "live" }))
}

/// 200 when every store answers; 503 naming the ones that do not.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let users = match state.registry.send(PingStore).await {
        Ok(Ok(store)) => json!({ "store": store, "status": "up" }),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "user store is not ready");
            json!({ "status": "down" })
        }
        Err(err) => {
            tracing::warn!(error = %err, "user registry is not answering");
            json!({ "status": "down" })
        }
    };
    let ready = users["status"] == "up";
    let body = json!({ "status": if ready { "ready" } else { "unavailable" }, "checks": { "users": users } });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
