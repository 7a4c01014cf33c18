//! `/api/v1/users/*`: the signed-in user's own profile and account.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AppState, Authenticated};
use crate::actors::{DeleteAccount, GetUser, RegistryError};
use crate::domain::{Password, User, UserId};
use crate::error::{ApiError, ErrorCode};

/// A user as clients see one: never the password hash.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserView {
    id: UserId,
    username: String,
    #[schema(required = true)]
    email: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            username: user.username,
            email: user.email,
            created_at: user.created_at,
        }
    }
}

/// The caller's profile.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users",
    security(("bearer" = [])),
    responses((status = 200, body = UserView, description = "The profile")))]
pub async fn get_me(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<web::Json<UserView>, ApiError> {
    let user = state.registry.send(GetUser(auth.session.user_id)).await??;
    Ok(web::Json(user.into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct DeleteAccountBody {
    /// The account's password, asked again.
    #[schema(schema_with = super::auth::shapes::password)]
    password: String,
}

/// Deletes the caller's account: their waiting tasks are cancelled and
/// every session of theirs ends, this one included.
#[utoipa::path(delete, path = "/api/v1/users/me", tag = "users",
    security(("bearer" = [])),
    request_body = DeleteAccountBody,
    responses(
        (status = 204, description = "Deleted; sessions revoked, waiting tasks cancelled"),
        (status = 401, description = "`invalid_credentials`: the password is wrong"),
        (status = 503, description = "`queue_unavailable`: the waiting tasks could not be cancelled, so the account is kept; retry"),
    ))]
pub async fn delete_me(
    state: web::Data<AppState>,
    auth: Authenticated,
    body: web::Json<DeleteAccountBody>,
) -> Result<HttpResponse, ApiError> {
    let password = Password::parse(&body.password, "password")?;
    let delete = DeleteAccount {
        user_id: auth.session.user_id,
        password,
    };
    match state.registry.send(delete).await? {
        Ok(()) => Ok(HttpResponse::NoContent().finish()),
        Err(RegistryError::InvalidCredentials) => Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "the password is wrong",
        )),
        Err(err) => Err(err.into()),
    }
}
