//! A registered user, as the stores keep it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Email, Username};

/// A user's stable identifier (UUID v7: ordered by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A stored user. `password_hash` is a bcrypt hash, never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub email: Option<String>,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// What a user is to others: everything but the password hash. Nothing in
/// it changes while the user exists, so a copy kept with their sessions
/// stays true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub id: UserId,
    pub username: String,
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<&User> for Profile {
    fn from(user: &User) -> Self {
        Self {
            id: user.id,
            username: user.username.clone(),
            email: user.email.clone(),
            created_at: user.created_at,
        }
    }
}

/// A user about to be stored: identity and timestamps are decided by the
/// caller, so every store records exactly the same values.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: UserId,
    pub username: Username,
    pub email: Option<Email>,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

impl From<NewUser> for User {
    fn from(new: NewUser) -> Self {
        Self {
            id: new.id,
            username: new.username.as_str().to_owned(),
            email: new.email.map(|e| e.as_str().to_owned()),
            password_hash: new.password_hash,
            created_at: new.created_at,
        }
    }
}

/// Why a new user was not stored: the name or the address belongs to
/// someone already, regardless of case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Username,
    Email,
}
