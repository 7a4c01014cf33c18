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

    /// Which of `shards` shards holds this user's sessions. A v7 id ends
    /// in random bits, so users spread evenly.
    pub fn shard(&self, shards: usize) -> usize {
        (self.0.as_u128() % shards.max(1) as u128) as usize
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
    /// When an operator disabled the user: no sign-in while set.
    pub disabled_at: Option<DateTime<Utc>>,
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
            disabled_at: None,
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

/// Which users an operator asks for: newest first, those whose username or
/// e-mail address contains `contains` (regardless of case), from after
/// `after`, at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    pub contains: Option<String>,
    pub after: Option<UserCursor>,
    pub limit: usize,
}

/// Where a page of users ended: the last one's creation time and id, which
/// together order users newest first without ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserCursor {
    pub created_at: DateTime<Utc>,
    pub id: UserId,
}

impl UserCursor {
    pub fn of(user: &User) -> Self {
        Self {
            created_at: user.created_at,
            id: user.id,
        }
    }

    /// Whether `user` comes after this cursor, newest first.
    pub fn precedes(&self, user: &User) -> bool {
        (user.created_at, user.id) < (self.created_at, self.id)
    }
}

/// `<microseconds since the epoch>_<id>`, opaque to clients.
impl std::fmt::Display for UserCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}_{}",
            self.created_at.timestamp_micros(),
            self.id.0.simple()
        )
    }
}

impl std::str::FromStr for UserCursor {
    type Err = ();

    fn from_str(raw: &str) -> Result<Self, ()> {
        let (micros, id) = raw.split_once('_').ok_or(())?;
        Ok(Self {
            created_at: DateTime::from_timestamp_micros(micros.parse().map_err(drop)?).ok_or(())?,
            id: UserId(Uuid::try_parse(id).map_err(drop)?),
        })
    }
}
