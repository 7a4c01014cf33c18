//! Users in process memory: the embedded default. Lost on exit.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::UserStore;
use crate::domain::{Login, NewUser, Taken, User, UserId, UserQuery};
use crate::storage::StoreError;

#[derive(Debug, Default)]
pub struct MemoryUserStore {
    inner: Mutex<Indexes>,
}

/// Invariant: every id in `by_username` and `by_email` is a key of `users`,
/// and the keys are the folded (lower-case) names.
#[derive(Debug, Default)]
struct Indexes {
    users: HashMap<UserId, User>,
    by_username: HashMap<String, UserId>,
    by_email: HashMap<String, UserId>,
}

impl MemoryUserStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn indexes(&self) -> std::sync::MutexGuard<'_, Indexes> {
        // A panic elsewhere while holding the lock cannot leave the indexes
        // half updated (each update below is checked before it writes), so a
        // poisoned lock is still safe to use.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl UserStore for MemoryUserStore {
    async fn insert(&self, new: NewUser) -> Result<Result<User, Taken>, StoreError> {
        let mut idx = self.indexes();
        let username = new.username.folded();
        let email = new.email.as_ref().map(|e| e.folded());
        if idx.by_username.contains_key(&username) {
            return Ok(Err(Taken::Username));
        }
        if email.as_ref().is_some_and(|e| idx.by_email.contains_key(e)) {
            return Ok(Err(Taken::Email));
        }
        let user = User::from(new);
        idx.by_username.insert(username, user.id);
        if let Some(email) = email {
            idx.by_email.insert(email, user.id);
        }
        idx.users.insert(user.id, user.clone());
        Ok(Ok(user))
    }

    async fn find_by_login(&self, login: &Login) -> Result<Option<User>, StoreError> {
        let idx = self.indexes();
        let id = match login {
            Login::Username(name) => idx.by_username.get(&name.folded()),
            Login::Email(email) => idx.by_email.get(&email.folded()),
        };
        Ok(id.and_then(|id| idx.users.get(id)).cloned())
    }

    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        Ok(self.indexes().users.get(&id).cloned())
    }

    async fn replace_password_hash(
        &self,
        id: UserId,
        current: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        let mut idx = self.indexes();
        match idx.users.get_mut(&id) {
            Some(user) if user.password_hash == current => {
                user.password_hash = new.to_owned();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set_disabled(
        &self,
        id: UserId,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<User>, StoreError> {
        let mut idx = self.indexes();
        Ok(idx.users.get_mut(&id).map(|user| {
            user.disabled_at = at.map(|at| user.disabled_at.unwrap_or(at));
            user.clone()
        }))
    }

    async fn list(&self, query: &UserQuery) -> Result<Vec<User>, StoreError> {
        let contains = query.contains.as_deref().map(str::to_lowercase);
        let matches = |user: &&User| {
            query.after.is_none_or(|after| after.precedes(user))
                && contains.as_deref().is_none_or(|part| {
                    user.username.to_lowercase().contains(part)
                        || user
                            .email
                            .as_deref()
                            .is_some_and(|email| email.to_lowercase().contains(part))
                })
        };
        let idx = self.indexes();
        let mut found: Vec<&User> = idx.users.values().filter(matches).collect();
        found.sort_unstable_by_key(|user| std::cmp::Reverse((user.created_at, user.id)));
        Ok(found.into_iter().take(query.limit).cloned().collect())
    }

    async fn delete(&self, id: UserId) -> Result<bool, StoreError> {
        let mut idx = self.indexes();
        let Some(user) = idx.users.remove(&id) else {
            return Ok(false);
        };
        idx.by_username.remove(&user.username.to_ascii_lowercase());
        if let Some(email) = &user.email {
            idx.by_email.remove(&email.to_ascii_lowercase());
        }
        Ok(true)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
