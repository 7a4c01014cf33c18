//! How the service's values look on the wire where that differs from the
//! domain's own shape.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{Profile, User, UserId};

/// A user as clients see one: never the password hash.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub username: String,
    #[schema(required = true)]
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<&Profile> for UserView {
    fn from(profile: &Profile) -> Self {
        Self {
            id: profile.id,
            username: profile.username.clone(),
            email: profile.email.clone(),
            created_at: profile.created_at,
        }
    }
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
