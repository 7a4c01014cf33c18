//! Where users are kept: PostgreSQL in production, memory for the embedded
//! default. Both implement [`UserStore`] with the same behaviour.

mod memory;
mod postgres;

pub use memory::MemoryUserStore;
pub use postgres::{PostgresUserStore, migrate};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::{Login, NewUser, Taken, User, UserId, UserQuery};

/// Users by id, by username and by e-mail, both unique regardless of case.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Stores a new user exactly as given, unless the username or e-mail
    /// address is someone's already.
    async fn insert(&self, user: NewUser) -> Result<Result<User, Taken>, StoreError>;

    /// Finds a user by username or e-mail address, regardless of case.
    async fn find_by_login(&self, login: &Login) -> Result<Option<User>, StoreError>;

    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// Replaces a user's password hash, but only while it is still
    /// `current`: a change made meanwhile by someone else is never undone.
    /// Returns whether the hash was replaced.
    async fn replace_password_hash(
        &self,
        id: UserId,
        current: &str,
        new: &str,
    ) -> Result<bool, StoreError>;

    /// Disables the user as of `at` (`Some`), or enables them (`None`);
    /// disabling one already disabled keeps the first time. Returns the
    /// user as now stored, or `None` if there is none.
    async fn set_disabled(
        &self,
        id: UserId,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<User>, StoreError>;

    /// The users `query` asks for, newest first.
    async fn list(&self, query: &UserQuery) -> Result<Vec<User>, StoreError>;

    /// Removes a user for good. Returns whether there was one.
    async fn delete(&self, id: UserId) -> Result<bool, StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// A short name for health reports: `memory` or `postgres`.
    fn name(&self) -> &'static str;
}
