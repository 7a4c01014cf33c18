//! The user registry: the handle through which the HTTP edge reaches the
//! account rules. Cheap to clone. Every call that writes runs as a task of
//! its own, awaited by the caller: if the client goes away the rule still
//! runs to its end (a password change still revokes the other sessions),
//! and a panic inside fails that one call instead of the caller's thread.

use std::future::Future;
use std::sync::Arc;

use super::{AccountError, Accounts, Grant};
use crate::domain::{
    Credentials, ListedSession, Origin, Password, PasswordChange, Registration, SessionId, User,
    UserId, UserQuery,
};

#[derive(Clone)]
pub struct UserRegistry {
    accounts: Arc<Accounts>,
}

impl UserRegistry {
    pub fn new(accounts: Accounts) -> Self {
        Self {
            accounts: Arc::new(accounts),
        }
    }

    /// Registers a user and opens their first session, from `origin`.
    pub async fn sign_up(
        &self,
        registration: Registration,
        origin: Origin,
    ) -> Result<Grant, AccountError> {
        self.detached(move |accounts| async move { accounts.sign_up(registration, &origin).await })
            .await
    }

    /// Registers a user, opening no session.
    pub async fn register(&self, registration: Registration) -> Result<User, AccountError> {
        self.detached(move |accounts| async move { accounts.register(registration).await })
            .await
    }

    /// Checks credentials and opens a session, from `origin`.
    pub async fn sign_in(
        &self,
        credentials: Credentials,
        origin: Origin,
    ) -> Result<Grant, AccountError> {
        self.detached(move |accounts| async move { accounts.sign_in(credentials, origin).await })
            .await
    }

    /// Changes a user's password and revokes their sessions but `keep`.
    pub async fn change_password(
        &self,
        user_id: UserId,
        keep: SessionId,
        change: PasswordChange,
    ) -> Result<(), AccountError> {
        self.detached(move |accounts| async move {
            accounts.change_password(user_id, keep, change).await
        })
        .await
    }

    /// Deletes a user whose password this is.
    pub async fn delete_account(
        &self,
        user_id: UserId,
        caller: SessionId,
        password: Password,
    ) -> Result<(), AccountError> {
        self.detached(move |accounts| async move {
            accounts.delete_account(user_id, caller, password).await
        })
        .await
    }

    /// The user with this id; reads need no task of their own.
    pub async fn user(&self, id: UserId) -> Result<User, AccountError> {
        self.accounts.existing(id).await
    }

    /// The users `query` asks for, each with how many sessions they hold.
    pub async fn users(&self, query: UserQuery) -> Result<Vec<(User, usize)>, AccountError> {
        self.accounts.users(&query).await
    }

    /// A user's live sessions and where each was opened, newest first.
    pub async fn sessions_of(&self, user: UserId) -> Result<Vec<ListedSession>, AccountError> {
        self.accounts.sessions_of(user).await
    }

    /// How many sessions each of `users` holds, in their order.
    pub async fn session_counts(&self, users: &[UserId]) -> Result<Vec<usize>, AccountError> {
        self.accounts.session_counts(users).await
    }

    /// Disables a user and ends their sessions; returns the user and how
    /// many sessions ended.
    pub async fn disable(&self, id: UserId) -> Result<(User, usize), AccountError> {
        self.detached(move |accounts| async move { accounts.disable(id).await })
            .await
    }

    /// Lets a disabled user sign in again.
    pub async fn enable(&self, id: UserId) -> Result<User, AccountError> {
        self.detached(move |accounts| async move { accounts.enable(id).await })
            .await
    }

    /// Ends every session of a user; returns how many ended.
    pub async fn sign_out_everywhere(&self, id: UserId) -> Result<usize, AccountError> {
        self.detached(move |accounts| async move { accounts.sign_out_everywhere(id).await })
            .await
    }

    /// Checks that the user store answers; names it.
    pub async fn ping(&self) -> Result<&'static str, AccountError> {
        self.accounts.ping().await
    }

    /// Runs `call` as a task of its own and waits for its answer.
    async fn detached<T, F>(&self, call: impl FnOnce(Arc<Accounts>) -> F) -> Result<T, AccountError>
    where
        F: Future<Output = Result<T, AccountError>> + 'static,
        T: 'static,
    {
        match actix::spawn(call(self.accounts.clone())).await {
            Ok(answer) => answer,
            Err(panicked) => {
                tracing::error!(error = %panicked, "an account request panicked");
                Err(AccountError::Panicked)
            }
        }
    }
}
