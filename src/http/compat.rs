//! The routes of the services Tollgate replaces, as thin aliases over the
//! v1 API, so that their clients work unchanged. Each calls the v1 code and
//! only shapes the answer the way the old route did.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::auth::{SignInBody, SignInRefusals, SignUpBody, TokenGrant, introspection, signed_in};
use super::error::ApiError;
use super::extract::{Authenticated, ServiceCredential, bearer_token};
use super::tasks::{EnqueueAnswers, IdempotencyHeader, enqueue as enqueue_task};
use super::views::UserView;
use crate::accounts::Limit;
use crate::domain::{Session, TaskDraft, UserId};

#[derive(Serialize, utoipa::ToSchema)]
pub struct Registered {
    id: UserId,
    username: String,
}

/// `POST /register {username, password}` → 201 `{id, username}`.
#[utoipa::path(post, path = "/register", tag = "compat",
    request_body = SignUpBody,
    responses(
        (status = 201, body = Registered, description = "Registered",
            headers(("location" = String, description = "/profile"))),
        (status = 409, description = "`username_taken`, `email_taken`"),
        (status = 429, description = "`rate_limited`: too many sign-ups from this address lately",
            headers(("retry-after" = u64, description = "Seconds until a try may succeed"))),
    ))]
pub async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<SignUpBody>,
) -> Result<HttpResponse, ApiError> {
    let registration = body.registration()?;
    state.limit_address(&req, Limit::SignUpPerAddress).await?;
    // The old route answered with the user alone: no session to open.
    let user = state.registry.register(registration).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, "/profile"))
        .json(Registered {
            id: user.id,
            username: user.username,
        }))
}

/// The token under the name the old clients read, beside the v1 grant.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LoginAnswer {
    token: String,
    #[serde(flatten)]
    grant: TokenGrant,
}

/// `POST /login {username | email, password}` → `{token, ...}`.
#[utoipa::path(post, path = "/login", tag = "compat",
    request_body = SignInBody,
    responses(
        (status = 200, body = LoginAnswer, description = "Signed in"),
        SignInRefusals,
    ))]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<SignInBody>,
) -> Result<web::Json<LoginAnswer>, ApiError> {
    let grant = signed_in(&req, &state, body.into_inner()).await?;
    Ok(web::Json(LoginAnswer {
        token: grant.access_token().to_owned(),
        grant,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct EnqueueAlias {
    /// The payload of a task of kind `queue.default_kind`.
    task: Value,
}

/// `POST /enqueue {task}` (bearer) → 202 with the task, of the kind
/// `queue.default_kind`, whose payload is `task`.
#[utoipa::path(post, path = "/enqueue", tag = "compat",
    security(("bearer" = [])),
    params(IdempotencyHeader),
    request_body = EnqueueAlias,
    responses(EnqueueAnswers))]
pub async fn enqueue(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    body: web::Json<EnqueueAlias>,
) -> Result<HttpResponse, ApiError> {
    let draft = TaskDraft {
        kind: state.intake.default_kind.as_str().to_owned(),
        payload: body.into_inner().task,
        max_attempts: None,
        delay_ms: None,
    };
    enqueue_task(&state, &auth, &req, draft).await
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SignedIn {
    #[schema(value_type = String, example = "you are signed in")]
    message: &'static str,
    user_id: UserId,
}

/// `GET /protected-route` (bearer) → 200.
#[utoipa::path(get, path = "/protected-route", tag = "compat",
    security(("bearer" = [])),
    responses((status = 200, body = SignedIn, description = "The caller is signed in")))]
pub async fn protected_route(auth: Authenticated) -> web::Json<SignedIn> {
    web::Json(SignedIn {
        message: "you are signed in",
        user_id: auth.session.user_id,
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DataAnswer {
    data: CallerData,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CallerData {
    user: UserView,
    session: Session,
}

/// `GET /data` with `Authorization: Bearer <token>` or the old business
/// service's raw `token` header → 200 `{data}`: the caller's profile and
/// session, the session just reinflated.
#[utoipa::path(get, path = "/data", tag = "compat",
    security(("bearer" = []), ("token_header" = [])),
    responses((status = 200, body = DataAnswer, description = "The caller's profile and session")))]
pub async fn data(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<web::Json<DataAnswer>, ApiError> {
    let token = bearer_token(&req)
        .or_else(|| req.headers().get("token")?.to_str().ok())
        .ok_or_else(ApiError::missing_credentials)?;
    let auth = state.authenticate(token).await?;
    let user = state.profile(&auth).await?;
    Ok(web::Json(DataAnswer {
        data: CallerData {
            user,
            session: auth.session,
        },
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ValidateTokenBody {
    token: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Validation {
    authenticated: bool,
}

/// `POST /validateToken {token}` → `{authenticated}`, under introspection's
/// rule: the caller presents `auth.introspection_secret` as its bearer, and
/// a valid token's session is reinflated.
#[utoipa::path(post, path = "/validateToken", tag = "compat",
    security(("service" = [])),
    request_body = ValidateTokenBody,
    responses(
        (status = 200, body = Validation, description = "Whether the token is active"),
        (status = 401, description = "`missing_credentials`, `invalid_credentials`, `introspection_disabled`"),
    ))]
pub async fn validate_token(
    state: web::Data<AppState>,
    service: ServiceCredential,
    body: web::Json<ValidateTokenBody>,
) -> Result<web::Json<Validation>, ApiError> {
    let active = introspection(&state, service, &body.token).await?;
    Ok(web::Json(Validation {
        authenticated: active.is_some(),
    }))
}

/// `GET /profile` (bearer) → the caller's profile, as `/api/v1/users/me`.
#[utoipa::path(get, path = "/profile", tag = "compat",
    security(("bearer" = [])),
    responses((status = 200, body = UserView, description = "The profile")))]
pub async fn profile(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<web::Json<UserView>, ApiError> {
    super::users::get_me(state, auth).await
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DatabaseHealth {
    #[schema(value_type = String, example = "ok")]
    status: &'static str,
    /// The user store: `postgres` or `memory`. Absent when it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    database: Option<&'static str>,
}

/// `GET /auth/health` → 200 while the user database answers, else 503.
#[utoipa::path(get, path = "/auth/health", tag = "compat",
    responses(
        (status = 200, body = DatabaseHealth, description = "`ok`: the user store answers"),
        (status = 503, body = DatabaseHealth, description = "`unavailable`: it does not"),
    ))]
pub async fn auth_health(state: web::Data<AppState>) -> HttpResponse {
    match state.registry.ping().await {
        Ok(store) => HttpResponse::Ok().json(DatabaseHealth {
            status: "ok",
            database: Some(store),
        }),
        _ => HttpResponse::ServiceUnavailable().json(DatabaseHealth {
            status: "unavailable",
            database: None,
        }),
    }
}
