//! `/api/v1/users/*`: the signed-in user's own profile and account.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AppState, Authenticated};
use crate::actors::{DeleteAccount, GetUser, RegistryError};
use crate::domain::{Password, User, UserId};
use crate::error::{ApiError, ErrorCode};

/// A user as clients see one: never the password hash.
#[derive(Serialize)]
pub struct UserView {
    id: UserId,
    username: String,
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

pub async fn get_me(
    state: web::Data<AppState>,
    auth: Authenticated,
) -> Result<web::Json<UserView>, ApiError> {
    let user = state.registry.send(GetUser(auth.session.user_id)).await??;
    Ok(web::Json(user.into()))
}

#[derive(Deserialize)]
pub struct DeleteAccountBody {
    password: String,
}

/// Deletes the caller's account: their waiting tasks are cancelled and
/// every session of theirs ends, this one included.
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
