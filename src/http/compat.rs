//! The routes of the services Tollgate replaces, as thin aliases over the
//! v1 API, so that their clients work unchanged. Each calls the v1 code and
//! only shapes the answer the way the old route did.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::{SignInBody, SignUpBody, TokenGrant, introspection, signed_in, signed_up};
use super::extract::bearer_token;
use super::tasks::{EnqueueBody, enqueue as enqueue_task};
use super::users::UserView;
use super::{AppState, Authenticated};
use crate::actors::{GetUser, PingStore};
use crate::error::ApiError;

/// `POST /register {username, password}` → 201 `{id, username}`.
pub async fn register(
    state: web::Data<AppState>,
    body: web::Json<SignUpBody>,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = signed_up(&state, body.into_inner()).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, "/profile"))
        .json(json!({ "id": user.id, "username": user.username })))
}

/// The token under the name the old clients read, beside the v1 grant.
#[derive(Serialize)]
pub struct LoginAnswer {
    token: String,
    #[serde(flatten)]
    grant: TokenGrant,
}

/// `POST /login {username | email, password}` → `{token, ...}`.
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

#[derive(Deserialize)]
pub struct EnqueueAlias {
    task: Value,
}

/// `POST /enqueue {task}` (bearer) → 202 with the task, of the kind
/// `queue.default_kind`, whose payload is `task`.
pub async fn enqueue(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    body: web::Json<EnqueueAlias>,
) -> Result<HttpResponse, ApiError> {
    let body = EnqueueBody {
        kind: state.default_kind.as_str().to_owned(),
        payload: body.into_inner().task,
        max_attempts: None,
        delay_ms: None,
    };
    enqueue_task(&state, &auth, &req, body).await
}

/// `GET /protected-route` (bearer) → 200.
pub async fn protected_route(auth: Authenticated) -> web::Json<Value> {
    web::Json(json!({
        "message": "you are signed in",
        "user_id": auth.session.user_id,
    }))
}

/// `GET /data` with `Authorization: Bearer <token>` or the old business
/// service's raw `token` header → 200 `{data}`: the caller's profile and
/// session, the session just reinflated.
pub async fn data(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<web::Json<Value>, ApiError> {
    let token = bearer_token(&req)
        .or_else(|| req.headers().get("token")?.to_str().ok())
        .ok_or_else(ApiError::missing_credentials)?;
    let auth = state.authenticate(token).await?;
    let user = state.registry.send(GetUser(auth.session.user_id)).await??;
    Ok(web::Json(json!({
        "data": {
            "user": UserView::from(user),
            "session": auth.session,
        }
    })))
}

#[derive(Deserialize)]
pub struct ValidateTokenBody {
    token: String,
}

/// `POST /validateToken {token}` → `{authenticated}`, under introspection's
/// rule: the caller presents `auth.introspection_secret` as its bearer, and
/// a valid token's session is reinflated.
pub async fn validate_token(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<ValidateTokenBody>,
) -> Result<web::Json<Value>, ApiError> {
    let active = introspection(&state, &req, &body.token).await?;
    Ok(web::Json(json!({ "authenticated": active.is_some() })))
}

/// `GET /profile` (bearer) → the caller's profile, as `/api/v1/users/me`.
pub async fn profile(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<web::Json<UserView>, ApiError> {
    super::users::get_me(state, auth).await
}

/// `GET /auth/health` → 200 while the user database answers, else 503.
pub async fn auth_health(state: web::Data<AppState>) -> HttpResponse {
    match state.registry.send(PingStore).await {
        Ok(Ok(store)) => HttpResponse::Ok().json(json!({ "status": "ok", "database": store })),
        _ => HttpResponse::ServiceUnavailable().json(json!({ "status": "unavailable" })),
    }
}
