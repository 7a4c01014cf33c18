//! The HTTP edge: routes per resource, the authentication extractor and the
//! request-id middleware. Only this module and `error` know HTTP; handlers
//! parse input, send a message to an actor and map the reply.

mod auth;
mod extract;
mod health;
mod request_id;
mod users;

use actix::Addr;
use actix_web::{
    HttpRequest, HttpResponse, Resource,
    error::{JsonPayloadError, PayloadError},
    web,
};
use secrecy::SecretString;

pub use extract::Authenticated;
pub use request_id::{REQUEST_ID, request_id};

use crate::actors::{SessionManager, UserRegistry};
use crate::auth::TokenKeys;
use crate::clock::Clock;
use crate::error::{ApiError, ErrorCode};

/// What every handler can reach.
pub struct AppState {
    pub registry: Addr<UserRegistry>,
    pub sessions: SessionManager,
    pub tokens: TokenKeys,
    pub clock: Clock,
    /// Credential for introspection; `None` leaves it open.
    pub introspection_secret: Option<SecretString>,
}

/// Registers every route, with JSON bodies limited to `max_body_bytes`.
pub fn configure(max_body_bytes: usize) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(
            web::JsonConfig::default()
                .limit(max_body_bytes)
                .error_handler(json_error),
        )
        .app_data(web::PayloadConfig::new(max_body_bytes))
        .service(
            web::scope("/api/v1")
                .service(resource("/auth/signup").post(auth::sign_up))
                .service(resource("/auth/signin").post(auth::sign_in))
                .service(resource("/auth/signout").post(auth::sign_out))
                .service(resource("/auth/signout-all").post(auth::sign_out_all))
                .service(resource("/auth/password").post(auth::change_password))
                .service(resource("/auth/session").get(auth::current_session))
                .service(resource("/auth/introspect").post(auth::introspect))
                .service(resource("/users/me").get(users::get_me)),
        )
        .service(resource("/health/live").get(health::live))
        .service(resource("/health/ready").get(health::ready))
        .default_service(web::to(not_found));
    }
}

/// A resource that answers a method it does not serve with a 405 problem.
fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not serve that method",
    ))
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
