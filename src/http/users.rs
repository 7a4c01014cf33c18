//! `/api/v1/users/*`: the signed-in user's own profile.

use actix_web::web;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{AppState, Authenticated};
use crate::actors::GetUser;
use crate::domain::{User, UserId};
use crate::error::ApiError;

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
