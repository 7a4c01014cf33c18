//! The HTTP edge: routes per resource, the authentication extractor and the
//! request-id middleware. Only this module and `error` know HTTP; handlers
//! parse input, send a message to an actor and map the reply.

mod auth;
mod compat;
mod extract;
mod health;
mod observe;
mod openapi;
mod tasks;
mod users;

use std::sync::Arc;

use actix::Addr;
use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    body::BoxBody,
    dev::ServiceResponse,
    error::{JsonPayloadError, PayloadError},
    http::{StatusCode, header},
    middleware::{ErrorHandlerResponse, ErrorHandlers},
    web,
};
use secrecy::SecretString;

pub use extract::Authenticated;
pub use observe::{REQUEST_ID, observe};

use crate::actors::{Queue, SessionManager, UserRegistry};
use crate::auth::{FailedSignIns, TokenKeys};
use crate::clock::Clock;
use crate::domain::TaskKind;
use crate::error::{ApiError, ErrorCode};
use crate::events::Events;
use crate::tasks::TaskHandlers;
use crate::telemetry::{Metrics, MetricsExport};

/// What every handler can reach.
pub struct AppState {
    pub registry: Addr<UserRegistry>,
    pub sessions: SessionManager,
    pub tokens: TokenKeys,
    pub clock: Clock,
    /// Credential for introspection; `None` leaves it open.
    pub introspection_secret: Option<SecretString>,
    pub queue: Queue,
    /// The task kinds there are handlers for, to check tasks at enqueue.
    pub handlers: Arc<TaskHandlers>,
    /// Largest task payload, in bytes of JSON.
    pub max_payload_bytes: usize,
    /// What `POST /enqueue` queues.
    pub default_kind: TaskKind,
    pub metrics: Metrics,
    /// Where domain events go.
    pub events: Events,
    /// What `/metrics` renders.
    pub export: Arc<MetricsExport>,
    /// Failed sign-ins by client address and by login, for rate limiting.
    pub sign_ins: Arc<FailedSignIns>,
}

/// How large a request body may be.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Every route but the one below.
    pub default: usize,
    /// `POST /api/v1/tasks`: room for the largest payload and the rest.
    pub tasks: usize,
}

/// Headers every answer carries unless its handler set them: nothing here
/// is a page to frame, sniff, cache or refer from, and answers hold tokens.
pub fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add((
            "Content-Security-Policy",
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("Cache-Control", "no-store"))
}

/// Cross-origin access for the configured browser origins only. With none
/// configured no CORS header is ever sent, so browsers keep other origins'
/// scripts out.
pub fn cors(origins: &[String]) -> actix_web::middleware::Condition<actix_cors::Cors> {
    let allowed = origins
        .iter()
        .fold(actix_cors::Cors::default(), |cors, origin| {
            cors.allowed_origin(origin)
        });
    let cors = allowed
        .allowed_methods(["GET", "POST", "DELETE"])
        .allowed_headers([
            "authorization",
            "content-type",
            "idempotency-key",
            "x-request-id",
        ])
        .expose_headers([
            "location",
            "retry-after",
            "x-request-id",
            "idempotent-replayed",
        ])
        .max_age(3600);
    actix_web::middleware::Condition::new(!origins.is_empty(), cors)
}

/// Registers every route, with JSON bodies limited as `limits` says.
pub fn configure(limits: BodyLimits) -> impl FnOnce(&mut web::ServiceConfig) {
    let json = |limit| {
        web::JsonConfig::default()
            .limit(limit)
            .error_handler(json_error)
    };
    openapi::prepare();
    move |cfg| {
        cfg.app_data(json(limits.default))
            .app_data(web::PayloadConfig::new(limits.default))
            .app_data(web::QueryConfig::default().error_handler(|err, _| {
                ApiError::new(ErrorCode::InvalidInput, err.to_string()).into()
            }))
            .service(
                web::scope("/api/v1")
                    .service(web::resource("/auth/signup").post(auth::sign_up))
                    .service(web::resource("/auth/signin").post(auth::sign_in))
                    .service(web::resource("/auth/signout").post(auth::sign_out))
                    .service(web::resource("/auth/signout-all").post(auth::sign_out_all))
                    .service(web::resource("/auth/password").post(auth::change_password))
                    .service(web::resource("/auth/session").get(auth::current_session))
                    .service(web::resource("/auth/introspect").post(auth::introspect))
                    .service(
                        web::resource("/users/me")
                            .get(users::get_me)
                            .delete(users::delete_me),
                    )
                    .service(
                        web::resource("/tasks")
                            .app_data(json(limits.tasks))
                            .app_data(web::PayloadConfig::new(limits.tasks))
                            .post(tasks::enqueue_task)
                            .get(tasks::list_tasks),
                    )
                    .service(
                        web::resource("/tasks/{id}")
                            .get(tasks::get_task)
                            .delete(tasks::cancel_task),
                    )
                    .service(web::resource("/queue").get(tasks::get_queue)),
            )
            .service(web::resource("/health/live").get(health::live))
            .service(web::resource("/health/ready").get(health::ready))
            .service(web::resource("/metrics").get(health::metrics))
            .service(web::resource("/openapi.json").get(openapi::document))
            .service(web::resource("/docs").get(openapi::docs))
            .service(web::resource("/register").post(compat::register))
            .service(web::resource("/login").post(compat::login))
            .service(web::resource("/enqueue").post(compat::enqueue))
            .service(web::resource("/protected-route").get(compat::protected_route))
            .service(web::resource("/data").get(compat::data))
            .service(web::resource("/validateToken").post(compat::validate_token))
            .service(web::resource("/profile").get(compat::profile))
            .service(web::resource("/auth/health").get(compat::auth_health))
            .default_service(web::to(not_found));
    }
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}

/// Gives actix's 405, which names the methods the route serves in `Allow`
/// (RFC 9110), a problem body like every other error.
pub fn method_not_allowed() -> ErrorHandlers<BoxBody> {
    ErrorHandlers::new().handler(StatusCode::METHOD_NOT_ALLOWED, |answer| {
        let (req, bare) = answer.into_parts();
        let mut problem = ApiError::new(
            ErrorCode::MethodNotAllowed,
            "this route does not serve that method",
        )
        .error_response();
        if let Some(allow) = bare.headers().get(header::ALLOW) {
            problem.headers_mut().insert(header::ALLOW, allow.clone());
        }
        let answer = ServiceResponse::new(req, problem).map_into_right_body();
        Ok(ErrorHandlerResponse::Response(answer))
    })
}

/// Maps body-parsing failures onto the code table: 415, 413, 400 or 422.
fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::ContentType => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        ),
        JsonPayloadError::Payload(PayloadError::Overflow) => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the body is too large")
        }
        // Well-formed JSON of the wrong shape: a missing field, a number
        // where a string belongs. serde quotes the offending value in its
        // type errors, and that value may be a password: say less then.
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            let message = e.to_string();
            let detail = if message.starts_with("invalid") {
                format!(
                    "a field has the wrong type (line {}, column {})",
                    e.line(),
                    e.column()
                )
            } else {
                message
            };
            ApiError::new(ErrorCode::InvalidInput, detail)
        }
        _ => ApiError::new(ErrorCode::MalformedJson, "the body is not valid JSON"),
    };
    api.into()
}
