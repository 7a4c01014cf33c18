//! The error-code table and the one error type the HTTP edge returns. Every
//! failure a client can see is a row here, rendered as RFC 9457 problem
//! details with a stable `code` to switch on; every error the layers below
//! return maps to a row, and so does a body actix could not read.

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    error::{JsonPayloadError, PayloadError, UrlencodedError},
    http::{StatusCode, header},
};
use serde::Serialize;
use std::io::ErrorKind;

use crate::accounts::{AccountError, LimitError};
use crate::actors::{QueueError, SessionError};
use crate::domain::{InvalidInput, Taken, TaskRefusal};

/// Writes the error-code table once: the enum, its rows and the list of
/// every code (for the OpenAPI document).
macro_rules! error_codes {
    ($($variant:ident => ($code:literal, $status:ident, $title:literal),)*) => {
        /// Every error a client can receive: its code, status and title.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(Self::$variant,)*];

            /// `(code, status, title)`: the table itself.
            const fn row(self) -> (&'static str, StatusCode, &'static str) {
                match self {
                    $(Self::$variant => ($code, StatusCode::$status, $title),)*
                }
            }
        }
    };
}

error_codes! {
    MalformedJson => ("malformed_json", BAD_REQUEST, "Malformed JSON"),
    InvalidInput => ("invalid_input", UNPROCESSABLE_ENTITY, "Invalid input"),
    UnsupportedMediaType => ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "Unsupported media type"),
    PayloadTooLarge => ("payload_too_large", PAYLOAD_TOO_LARGE, "Payload too large"),
    RequestTimeout => ("request_timeout", REQUEST_TIMEOUT, "Request timeout"),
    MissingCredentials => ("missing_credentials", UNAUTHORIZED, "Authentication required"),
    InvalidToken => ("invalid_token", UNAUTHORIZED, "Invalid token"),
    InvalidCredentials => ("invalid_credentials", UNAUTHORIZED, "Invalid credentials"),
    IntrospectionDisabled => ("introspection_disabled", UNAUTHORIZED, "Introspection disabled"),
    AccountDisabled => ("account_disabled", FORBIDDEN, "Account disabled"),
    UsernameTaken => ("username_taken", CONFLICT, "Username taken"),
    EmailTaken => ("email_taken", CONFLICT, "E-mail address taken"),
    NotFound => ("not_found", NOT_FOUND, "Not found"),
    MethodNotAllowed => ("method_not_allowed", METHOD_NOT_ALLOWED, "Method not allowed"),
    TaskNotCancellable => ("task_not_cancellable", CONFLICT, "Task not cancellable"),
    TaskNotRetriable => ("task_not_retriable", CONFLICT, "Task not retriable"),
    IdempotencyKeyReused => ("idempotency_key_reused", UNPROCESSABLE_ENTITY, "Idempotency key reused"),
    QueueFull => ("queue_full", TOO_MANY_REQUESTS, "Queue full"),
    RateLimited => ("rate_limited", TOO_MANY_REQUESTS, "Too many requests"),
    StorageUnavailable => ("storage_unavailable", SERVICE_UNAVAILABLE, "Storage unavailable"),
    QueueUnavailable => ("queue_unavailable", SERVICE_UNAVAILABLE, "Queue unavailable"),
    ServiceUnavailable => ("service_unavailable", SERVICE_UNAVAILABLE, "Service unavailable"),
    Internal => ("internal", INTERNAL_SERVER_ERROR, "Internal error"),
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        self.row().0
    }

    pub const fn status(self) -> StatusCode {
        self.row().1
    }

    pub const fn title(self) -> &'static str {
        self.row().2
    }
}

/// An error on its way to the client.
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}", code.as_str())]
pub struct ApiError {
    pub code: ErrorCode,
    /// Human-readable explanation, safe to show: never a secret or a cause
    /// from inside the service.
    pub detail: String,
    /// The fields at fault, for `invalid_input`.
    pub errors: Vec<InvalidInput>,
    /// What went wrong inside, for the log only.
    #[source]
    cause: Option<anyhow::Error>,
    /// Seconds to wait before trying again, sent as `Retry-After`.
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            cause: None,
            retry_after: None,
        }
    }

    /// Too many of `what` lately; worth another try in `seconds`.
    pub fn rate_limited(what: &str, seconds: u64) -> Self {
        Self::new(
            ErrorCode::RateLimited,
            format!("too many {what}; try again in {seconds} s"),
        )
        .retry_after(seconds)
    }

    /// Tells the client when another try may succeed (`Retry-After`).
    pub fn retry_after(self, seconds: u64) -> Self {
        Self {
            retry_after: Some(seconds),
            ..self
        }
    }

    /// A body larger than `limit` bytes.
    fn body_too_large(limit: usize) -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        )
    }

    /// Whether a body's read failed because it came too slowly (the body
    /// deadline ends its stream with `TimedOut`): then the answer is 408.
    fn body_too_slow(err: &PayloadError) -> Option<Self> {
        matches!(err, PayloadError::Io(e) if e.kind() == ErrorKind::TimedOut).then(|| {
            Self::new(
                ErrorCode::RequestTimeout,
                "the body did not arrive within server.client_request_timeout_ms",
            )
        })
    }

    /// An error whose cause is logged but not shown.
    pub fn with_cause(
        code: ErrorCode,
        detail: impl Into<String>,
        cause: impl Into<anyhow::Error>,
    ) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(code, detail)
        }
    }

    /// One `invalid_input` naming every field that failed to parse.
    pub fn invalid_fields(problems: impl IntoIterator<Item = Option<InvalidInput>>) -> Self {
        let errors: Vec<InvalidInput> = problems.into_iter().flatten().collect();
        let detail = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            errors,
            ..Self::new(ErrorCode::InvalidInput, detail)
        }
    }

    pub fn missing_credentials() -> Self {
        Self::new(
            ErrorCode::MissingCredentials,
            "this route needs an `Authorization: Bearer` token",
        )
    }

    pub fn invalid_token() -> Self {
        Self::new(
            ErrorCode::InvalidToken,
            "the token is malformed, expired or revoked",
        )
    }

    pub fn invalid_credentials() -> Self {
        Self::new(
            ErrorCode::InvalidCredentials,
            "unknown user or wrong password",
        )
    }

    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "no such resource")
    }

    /// A bug or corrupt data: the cause is logged, the client told nothing.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::with_cause(ErrorCode::Internal, "internal error", cause)
    }
}

/// The problem-details body (RFC 9457) with Tollgate's `code` member.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// `urn:tollgate:problem:{code}`.
    #[schema(pattern = "^urn:tollgate:problem:[a-z_]+$")]
    r#type: String,
    title: &'static str,
    status: u16,
    /// What went wrong, for people: never a secret or a cause from inside.
    detail: &'a str,
    /// What went wrong, for programs: stable across versions.
    #[schema(schema_with = code_schema)]
    code: &'static str,
    /// The fields at fault, for `invalid_input`.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: Vec<FieldProblem<'a>>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct FieldProblem<'a> {
    /// The request field, or header, as the client spelled it.
    field: &'a str,
    message: &'a str,
}

/// The `code` member: one of the table's codes.
fn code_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(ErrorCode::ALL.iter().map(|code| code.as_str())))
        .build()
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(cause) = &self.cause {
            // `{:#}` prints the whole chain of causes on one line.
            if self.code.status().is_server_error() {
                tracing::error!(
                    code = self.code.as_str(),
                    cause = format!("{cause:#}"),
                    "request failed"
                );
            } else {
                tracing::info!(
                    code = self.code.as_str(),
                    cause = format!("{cause:#}"),
                    "request refused"
                );
            }
        }
        let problem = Problem {
            r#type: format!("urn:tollgate:problem:{}", self.code.as_str()),
            title: self.code.title(),
            status: self.code.status().as_u16(),
            detail: &self.detail,
            code: self.code.as_str(),
            errors: self
                .errors
                .iter()
                .map(|e| FieldProblem {
                    field: e.field,
                    message: e.message,
                })
                .collect(),
        };
        let mut response = HttpResponse::build(self.code.status());
        response.content_type("application/problem+json");
        // RFC 6750 §3: a bare challenge when no credentials came, an error
        // code when the ones that came are no good.
        match self.code {
            ErrorCode::MissingCredentials => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ErrorCode::InvalidToken => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#));
            }
            // The rest of a body that was too slow may still be coming.
            ErrorCode::RequestTimeout => {
                response.force_close();
            }
            _ => {}
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds));
        }
        response.json(problem)
    }
}

impl From<InvalidInput> for ApiError {
    fn from(err: InvalidInput) -> Self {
        Self::invalid_fields([Some(err)])
    }
}

impl From<Vec<InvalidInput>> for ApiError {
    fn from(errors: Vec<InvalidInput>) -> Self {
        Self::invalid_fields(errors.into_iter().map(Some))
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(err: actix::MailboxError) -> Self {
        Self::with_cause(
            ErrorCode::ServiceUnavailable,
            "the service is busy or stopping; retry shortly",
            err,
        )
    }
}

impl From<SessionError> for ApiError {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::Shard(err) => err.into(),
            err if err.is_unavailable() => Self::with_cause(
                ErrorCode::StorageUnavailable,
                "the session store is unavailable; retry shortly",
                err,
            ),
            err => Self::internal(err),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Busy(err) => err.into(),
            err if err.is_unavailable() => Self::with_cause(
                ErrorCode::QueueUnavailable,
                "the task queue is unavailable; retry shortly",
                err,
            ),
            err => Self::internal(err),
        }
    }
}

impl From<Taken> for ApiError {
    fn from(taken: Taken) -> Self {
        match taken {
            Taken::Username => Self::new(
                ErrorCode::UsernameTaken,
                "that username is already registered",
            ),
            Taken::Email => Self::new(
                ErrorCode::EmailTaken,
                "that e-mail address is already registered",
            ),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::InvalidCredentials => Self::invalid_credentials(),
            AccountError::Disabled => Self::new(
                ErrorCode::AccountDisabled,
                "an operator disabled this account",
            ),
            // The user behind a live session is gone: the token is worthless.
            AccountError::UnknownUser => Self::invalid_token(),
            AccountError::Taken(taken) => taken.into(),
            AccountError::Users(err) if err.is_unavailable() => Self::with_cause(
                ErrorCode::StorageUnavailable,
                "the user store is unavailable; retry shortly",
                err,
            ),
            AccountError::Busy(err) => err.into(),
            AccountError::Overloaded(seconds) => Self::new(
                ErrorCode::ServiceUnavailable,
                format!("too many passwords are being checked; retry in {seconds} s"),
            )
            .retry_after(seconds),
            AccountError::Sessions(err) => err.into(),
            AccountError::Queue(err) => err.into(),
            AccountError::Limited(err) => err.into(),
            err @ (AccountError::Users(_) | AccountError::Hasher(_) | AccountError::Panicked) => {
                Self::internal(err)
            }
        }
    }
}

impl From<LimitError> for ApiError {
    fn from(err: LimitError) -> Self {
        match err {
            LimitError::TooMany {
                limit,
                retry_after_secs,
            } => Self::rate_limited(limit.what(), retry_after_secs),
            LimitError::Unavailable(err) => Self::with_cause(
                ErrorCode::StorageUnavailable,
                "the rate limits cannot be checked; retry shortly",
                err,
            ),
        }
    }
}

impl From<TaskRefusal> for ApiError {
    fn from(refusal: TaskRefusal) -> Self {
        match refusal {
            TaskRefusal::TooLarge { size, limit } => Self::new(
                ErrorCode::PayloadTooLarge,
                format!("the payload is {size} bytes of JSON; the limit is {limit}"),
            ),
            TaskRefusal::Invalid(fields) => fields.into(),
        }
    }
}

/// Maps form-parsing failures onto the code table as `body_error` does
/// JSON's: 413, 408 or 422.
pub fn form_error(err: UrlencodedError, _: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        UrlencodedError::Overflow { limit, .. } => ApiError::body_too_large(*limit),
        UrlencodedError::Payload(payload) if let Some(slow) = ApiError::body_too_slow(payload) => {
            slow
        }
        _ => ApiError::new(
            ErrorCode::InvalidInput,
            "the body must be a UTF-8 form carrying `token`",
        ),
    };
    api.into()
}

/// Maps body-parsing failures onto the code table: 415, 413, 400 or 422.
pub fn body_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::ContentType => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::body_too_large(*limit),
        JsonPayloadError::Payload(PayloadError::Overflow) => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the body is too large")
        }
        JsonPayloadError::Payload(payload) if let Some(slow) = ApiError::body_too_slow(payload) => {
            slow
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

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;

    use super::*;

    async fn body_of(err: ApiError) -> serde_json::Value {
        let response = err.error_response();
        serde_json::from_slice(&to_bytes(response.into_body()).await.unwrap()).unwrap()
    }

    #[actix_web::test]
    async fn errors_render_as_problem_details_with_a_stable_code() {
        let body = body_of(ApiError::new(ErrorCode::UsernameTaken, "taken")).await;
        assert_eq!(
            body,
            serde_json::json!({
                "type": "urn:tollgate:problem:username_taken",
                "title": "Username taken",
                "status": 409,
                "detail": "taken",
                "code": "username_taken",
            })
        );
    }

    #[actix_web::test]
    async fn invalid_input_names_the_field() {
        let body = body_of(InvalidInput::new("username", "too short").into()).await;
        assert_eq!(body["status"], 422);
        assert_eq!(
            body["errors"],
            serde_json::json!([{"field": "username", "message": "too short"}])
        );
    }

    #[test]
    fn internal_causes_are_not_shown_to_clients() {
        let err = ApiError::internal(anyhow::anyhow!("relation users does not exist"));
        assert_eq!(err.code, ErrorCode::Internal);
        assert!(!err.detail.contains("relation"));
    }

    #[test]
    fn token_challenges_follow_rfc_6750() {
        let missing = ApiError::missing_credentials().error_response();
        let invalid = ApiError::invalid_token().error_response();
        assert_eq!(
            missing.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer"
        );
        assert_eq!(
            invalid.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            r#"Bearer error="invalid_token""#
        );
    }
}
