//! How the service's values look on the wire where that differs from the
//! domain's own shape.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{ListedSession, Profile, SessionId, User, UserId};

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

/// A live session as its user, or an operator, sees it listed.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: SessionId,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// When it lapses unless used again.
    pub expires_at: DateTime<Utc>,
    /// When it ends however often it is used (the token's `exp`).
    pub absolute_expires_at: DateTime<Utc>,
    /// How many times it has been reinflated by use.
    pub refresh_count: u32,
    /// The `User-Agent` of the client that opened it (at most 256 bytes).
    #[schema(required = true)]
    pub user_agent: Option<String>,
    /// The address of the client that opened it.
    #[schema(required = true)]
    pub ip: Option<String>,
    /// Whether the request's own token belongs to it (never, for an
    /// operator).
    pub current: bool,
}

impl SessionView {
    /// `listed`, marked as `current` if it is the caller's own session.
    pub fn new(listed: &ListedSession, current: Option<SessionId>) -> Self {
        let (session, origin) = (&listed.session, &listed.origin);
        Self {
            id: session.id,
            created_at: session.created_at,
            last_seen_at: session.last_seen_at,
            expires_at: session.expires_at,
            absolute_expires_at: session.absolute_expires_at,
            refresh_count: session.refresh_count,
            user_agent: origin.user_agent.as_deref().map(str::to_owned),
            ip: origin.ip.map(|ip| ip.to_string()),
            current: Some(session.id) == current,
        }
    }
}
