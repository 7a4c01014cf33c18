//! Accounts: sign-up, sign-in, password changes and account deletion.
//!
//! [`Accounts`] holds the rules as plain async code over the user store,
//! the hasher pool, the sessions and the queue, and is tested as such.
//! [`UserRegistry`] is the handle the HTTP edge holds: it runs each call
//! that changes something as a task of its own, so that a rule runs to the
//! end even if the client goes away, and a panic fails that call only.

mod limits;
mod registry;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::MailboxError;

pub use limits::{AbuseLimits, CountedTry, Limit, LimitError, address_key};
pub use registry::UserRegistry;

use crate::actors::{
    HashPassword, HasherError, HasherPool, Priority, Queue, QueueError, SessionError,
    SessionManager, VerifyPassword,
};
use crate::auth::password::{self, HashError};
use crate::clock::Clock;
use crate::domain::{
    Credentials, ListedSession, NewUser, Origin, Password, PasswordChange, Profile, Registration,
    Session, SessionId, Taken, User, UserId, UserQuery,
};
use crate::events::{Event, Events, RevokeReason};
use crate::storage::{StoreError, UserStore};
use crate::telemetry::Metrics;

/// Why an account request failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Unknown user or wrong password: deliberately one case.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The right password of a user an operator disabled.
    #[error("the account is disabled")]
    Disabled,
    #[error("no such user")]
    UnknownUser,
    /// The username or e-mail address is someone else's.
    #[error("{0:?} taken")]
    Taken(Taken),
    #[error("the user store did not answer")]
    Users(#[from] StoreError),
    #[error("password hasher failed")]
    Hasher(#[from] HashError),
    /// The hasher pool did not answer in time.
    #[error("the hasher pool is not answering")]
    Busy(#[from] MailboxError),
    /// The hasher pool could not have started the work in time.
    #[error("the hasher pool is overloaded; retry in {0} s")]
    Overloaded(u64),
    #[error(transparent)]
    Sessions(#[from] SessionError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Too many tries lately, or the counts could not be read.
    #[error(transparent)]
    Limited(#[from] LimitError),
    /// The call's task panicked: a bug, reported for that call only.
    #[error("the request failed inside")]
    Panicked,
}

impl AccountError {
    /// The outcome label of a failed sign-in or sign-up.
    fn outcome(&self) -> &'static str {
        match self {
            Self::InvalidCredentials => "invalid_credentials",
            Self::Disabled => "account_disabled",
            Self::Taken(Taken::Username) => "username_taken",
            Self::Taken(Taken::Email) => "email_taken",
            Self::Busy(_) | Self::Overloaded(_) => "unavailable",
            Self::Users(err) if err.is_unavailable() => "unavailable",
            Self::Sessions(err) if err.is_unavailable() => "unavailable",
            Self::Queue(err) if err.is_unavailable() => "unavailable",
            Self::Limited(LimitError::TooMany { .. }) => "rate_limited",
            Self::Limited(LimitError::Unavailable(_)) => "unavailable",
            _ => "error",
        }
    }
}

impl From<HasherError> for AccountError {
    fn from(err: HasherError) -> Self {
        match err {
            HasherError::Overloaded { retry_after_secs } => Self::Overloaded(retry_after_secs),
            HasherError::Busy(err) => Self::Busy(err),
        }
    }
}

/// A user with the session just opened for them.
pub type Grant = (User, Session);

/// The account rules and what they need.
pub struct Accounts {
    store: Arc<dyn UserStore>,
    hasher: Arc<HasherPool>,
    sessions: SessionManager,
    queue: Queue,
    metrics: Metrics,
    events: Events,
    limits: Arc<AbuseLimits>,
    /// A hash of a password nobody has, verified when the user is unknown so
    /// that an unknown user costs the same bcrypt time as a wrong password.
    dummy_hash: String,
    /// The configured bcrypt cost; hashes made at another are redone at
    /// the user's next sign-in.
    cost: u32,
    /// Longest wait for the hasher pool, queueing included.
    hasher_timeout: Duration,
    clock: Clock,
    /// Users whose rehash is queued or running: one at a time each, so a
    /// burst of sign-ins does not queue a burst of extra hashes.
    rehashing: Mutex<HashSet<UserId>>,
}

/// What [`Accounts`] is built from, besides the parts it calls.
pub struct AccountsConfig {
    pub dummy_hash: String,
    pub cost: u32,
    pub hasher_timeout: Duration,
    pub clock: Clock,
    pub metrics: Metrics,
    pub events: Events,
    pub limits: Arc<AbuseLimits>,
}

impl Accounts {
    pub fn new(
        store: Arc<dyn UserStore>,
        hasher: Arc<HasherPool>,
        sessions: SessionManager,
        queue: Queue,
        config: AccountsConfig,
    ) -> Self {
        let AccountsConfig {
            dummy_hash,
            cost,
            hasher_timeout,
            clock,
            metrics,
            events,
            limits,
        } = config;
        Self {
            store,
            hasher,
            sessions,
            queue,
            metrics,
            events,
            limits,
            dummy_hash,
            cost,
            hasher_timeout,
            clock,
            rehashing: Mutex::default(),
        }
    }

    async fn hash(&self, password: Password, priority: Priority) -> Result<String, AccountError> {
        let hashing = self
            .hasher
            .run(priority, HashPassword(password), self.hasher_timeout);
        Ok(hashing.await??)
    }

    /// Checks a password for someone with an account, ahead of sign-ups.
    async fn verify(&self, password: &Password, hash: &str) -> Result<bool, AccountError> {
        let verify = VerifyPassword {
            password: password.clone(),
            hash: hash.to_owned(),
        };
        let verifying = self
            .hasher
            .run(Priority::SignIn, verify, self.hasher_timeout);
        Ok(verifying.await??)
    }

    /// Registers a user, opening no session (the older `/register` route).
    pub async fn register(&self, registration: Registration) -> Result<User, AccountError> {
        let outcome = self.insert_user(registration).await;
        self.counted_sign_up(outcome.inspect(|user| self.signed_up(user)))
    }

    fn counted_sign_up<T>(&self, outcome: Result<T, AccountError>) -> Result<T, AccountError> {
        self.metrics.signup(match &outcome {
            Ok(_) => "created",
            Err(err) => err.outcome(),
        });
        outcome
    }

    async fn insert_user(&self, registration: Registration) -> Result<User, AccountError> {
        let password_hash = self.hash(registration.password, Priority::SignUp).await?;
        let new = NewUser {
            id: UserId::new(),
            username: registration.username,
            email: registration.email,
            password_hash,
            created_at: self.clock.now(),
        };
        self.store.insert(new).await?.map_err(AccountError::Taken)
    }

    fn signed_up(&self, user: &User) {
        self.events.publish(Event::SignedUp {
            user_id: user.id,
            username: user.username.as_str().to_owned(),
        });
    }

    /// Registers a user and opens their first session, from `origin`. If
    /// the session cannot be opened the user is removed again, so that the
    /// client's retry of the same sign-up can succeed rather than find the
    /// name taken.
    pub async fn sign_up(
        &self,
        registration: Registration,
        origin: &Origin,
    ) -> Result<Grant, AccountError> {
        let outcome = async {
            let user = self.insert_user(registration).await?;
            match self.sessions.open(&Profile::from(&user), origin).await {
                // A new user's first session ends none.
                Ok((session, _)) => Ok((user, session)),
                Err(err) => {
                    if let Err(undo) = self.store.delete(user.id).await {
                        tracing::warn!(user_id = %user.id, error = %undo, "a user whose first session failed to open is left behind");
                    }
                    Err(err.into())
                }
            }
        };
        let (user, session) = self.counted_sign_up(outcome.await)?;
        self.signed_up(&user);
        self.signed_in(&session);
        Ok((user, session))
    }

    /// Checks credentials and opens a session, from `origin`, for the user
    /// they belong to.
    pub async fn sign_in(
        self: Arc<Self>,
        credentials: Credentials,
        origin: Origin,
    ) -> Result<Grant, AccountError> {
        let outcome = self.clone().check_and_open(credentials, origin).await;
        self.metrics.signin(match &outcome {
            Ok(_) => "success",
            Err(err) => err.outcome(),
        });
        outcome
    }

    async fn check_and_open(
        self: Arc<Self>,
        Credentials { login, password }: Credentials,
        origin: Origin,
    ) -> Result<Grant, AccountError> {
        let found = self.store.find_by_login(&login).await?;
        // One count per account, whichever login named it; an unknown
        // login is counted as itself.
        let account = match &found {
            Some(user) => user.id.to_string(),
            None => format!("unknown:{}", login.folded()),
        };
        let counted = self.limits.take(Limit::SignInPerAccount, &account).await?;
        let outcome = self
            .clone()
            .check_and_open_found(found, password, origin)
            .await;
        // Only wrong credentials count against the limit.
        if !matches!(outcome, Err(AccountError::InvalidCredentials)) {
            self.limits.give_back(counted).await;
        }
        outcome
    }

    async fn check_and_open_found(
        self: Arc<Self>,
        found: Option<User>,
        password: Password,
        origin: Origin,
    ) -> Result<Grant, AccountError> {
        let Some(user) = found else {
            // An unknown user still costs one verification, against the
            // dummy hash, so that timing does not tell the two cases apart.
            self.verify(&password, &self.dummy_hash).await?;
            return Err(AccountError::InvalidCredentials);
        };
        let stale_cost = password::needs_rehash(&user.password_hash, self.cost);
        // A failure costs as much as the dummy's whatever the stored cost:
        // the hasher pads it.
        if !self.verify(&password, &user.password_hash).await? {
            return Err(AccountError::InvalidCredentials);
        }
        // Told only to whoever knows the password, as Keycloak does.
        if user.disabled_at.is_some() {
            return Err(AccountError::Disabled);
        }
        let (session, ended) = self.sessions.open(&Profile::from(&user), &origin).await?;
        for id in ended {
            self.events.publish(Event::SessionsRevoked {
                user_id: user.id,
                session_id: Some(id),
                sessions: 1,
                reason: RevokeReason::SessionLimit,
            });
        }

        // A password change may have swapped the hash while this sign-in
        // checked the old one, and revoked the user's sessions before this
        // one opened. Looking again after opening closes that gap: either
        // the change comes later and its revocation ends this session, or
        // it came first and the stored hash shows it.
        let current = self.store.find_by_id(user.id).await?;
        // Disabled meanwhile: the disabling revoked the sessions it found,
        // perhaps before this one opened.
        if current
            .as_ref()
            .is_some_and(|now| now.disabled_at.is_some())
        {
            self.sessions.revoke(session.id, user.id).await?;
            return Err(AccountError::Disabled);
        }
        let still_valid = match &current {
            Some(now) if now.password_hash == user.password_hash => true,
            // Changed meanwhile: by a rehash (same password) or by a
            // password change. Only the password itself can tell.
            Some(now) => self.verify(&password, &now.password_hash).await?,
            None => false,
        };
        if !still_valid {
            self.sessions.revoke(session.id, user.id).await?;
            return Err(AccountError::InvalidCredentials);
        }
        self.signed_in(&session);

        if stale_cost && self.rehashing().insert(user.id) {
            // After the reply: the caller should not wait for a second hash.
            actix::spawn(self.clone().rehash(user.clone(), password));
        }
        Ok((user, session))
    }

    /// Stores a hash of `password` at the configured cost in place of the
    /// user's current one, unless the password was changed meanwhile.
    async fn rehash(self: Arc<Self>, user: User, password: Password) {
        let outcome = async {
            // Nobody waits for a rehash: it goes behind sign-ins.
            let new_hash = self.hash(password, Priority::SignUp).await?;
            let replaced =
                self.store
                    .replace_password_hash(user.id, &user.password_hash, &new_hash);
            Ok::<_, AccountError>(replaced.await?)
        };
        let outcome = outcome.await;
        self.rehashing().remove(&user.id);
        match outcome {
            Ok(true) => {
                tracing::info!(user_id = %user.id, "password rehashed at the configured cost")
            }
            Ok(false) => {}
            Err(err) => tracing::warn!(user_id = %user.id, error = %err, "password rehash failed"),
        }
    }

    fn rehashing(&self) -> std::sync::MutexGuard<'_, HashSet<UserId>> {
        // The set is only inserted into and removed from: a panic cannot
        // leave it half changed, so a poisoned lock is still sound.
        self.rehashing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces a user's password after checking the current one, and
    /// revokes every session of the user but `keep`: first, so that if
    /// anything fails later no other session outlives the call's answer,
    /// and again after the swap, for a session a sign-in with the old
    /// password opened meanwhile. A call that failed after the swap is
    /// completed by sending it again: the new password is then the stored
    /// one, and the revocation is done.
    pub async fn change_password(
        &self,
        user_id: UserId,
        keep: SessionId,
        change: PasswordChange,
    ) -> Result<(), AccountError> {
        // The swap only succeeds while the stored hash is the one checked.
        // If a rehash slipped in between, the second round checks again
        // against the rehashed value; a real change in between makes the
        // current password wrong.
        let mut new_hash = None;
        for _ in 0..2 {
            let user = self.existing(user_id).await?;
            match self.check_password(&user, &change.current).await {
                Err(AccountError::InvalidCredentials)
                    if self.verify(&change.new, &user.password_hash).await? =>
                {
                    // Changed already, by this very request sent before.
                    return self.end_other_sessions(user_id, keep, 0).await;
                }
                checked => checked?,
            }
            let ended = self.sessions.revoke_user(user_id, Some(keep)).await?;
            let new_hash = match new_hash {
                Some(ref hash) => hash,
                None => new_hash.insert(self.hash(change.new.clone(), Priority::SignIn).await?),
            };
            let replace = self
                .store
                .replace_password_hash(user_id, &user.password_hash, new_hash);
            if replace.await? {
                return self.end_other_sessions(user_id, keep, ended).await;
            }
            self.revoked(user_id, ended, RevokeReason::PasswordChanged);
        }
        Err(AccountError::InvalidCredentials)
    }

    /// Revokes every session of a user whose password changed but `keep`,
    /// `ended` of them ended already.
    async fn end_other_sessions(
        &self,
        user_id: UserId,
        keep: SessionId,
        ended: usize,
    ) -> Result<(), AccountError> {
        let outcome = self.sessions.revoke_user(user_id, Some(keep)).await;
        let now_ended = outcome.as_ref().map_or(0, |n| *n);
        self.revoked(user_id, ended + now_ended, RevokeReason::PasswordChanged);
        outcome.map(drop).map_err(Into::into)
    }

    /// Deletes a user after checking their password. Their waiting tasks
    /// are cancelled and their other sessions revoked before anything is
    /// removed, so that if a step fails no session but the caller's
    /// survives the answer, and sending the call again finishes it; then
    /// the user goes, and the caller's session last. Sent again after the
    /// user went, it ends the caller's session and succeeds.
    pub async fn delete_account(
        &self,
        user_id: UserId,
        caller: SessionId,
        password: Password,
    ) -> Result<(), AccountError> {
        let user = match self.existing(user_id).await {
            Ok(user) => user,
            Err(AccountError::UnknownUser) => {
                let ended = self.sessions.revoke_user(user_id, None).await?;
                self.revoked(user_id, ended, RevokeReason::AccountDeleted);
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        self.check_password(&user, &password).await?;
        self.queue.cancel_all(user.id).await?;
        let others = self.sessions.revoke_user(user.id, Some(caller)).await?;
        self.store.delete(user.id).await?;
        let outcome = self.sessions.revoke_user(user.id, None).await;
        let last = outcome.as_ref().map_or(0, |n| *n);
        self.revoked(user.id, others + last, RevokeReason::AccountDeleted);
        outcome.map(drop).map_err(Into::into)
    }

    /// Checks a signed-in user's password, as a password change or an
    /// account deletion does: wrong ones are limited per user, so that a
    /// stolen token cannot be used to guess the password.
    async fn check_password(&self, user: &User, password: &Password) -> Result<(), AccountError> {
        let user_key = user.id.to_string();
        let counted = self
            .limits
            .take(Limit::PasswordChecksPerUser, &user_key)
            .await?;
        let verified = self.verify(password, &user.password_hash).await;
        if !matches!(verified, Ok(false)) {
            self.limits.give_back(counted).await;
        }
        if verified? {
            Ok(())
        } else {
            Err(AccountError::InvalidCredentials)
        }
    }

    /// The user with this id.
    pub async fn existing(&self, id: UserId) -> Result<User, AccountError> {
        self.store
            .find_by_id(id)
            .await?
            .ok_or(AccountError::UnknownUser)
    }

    /// The users `query` asks for, each with how many sessions they hold.
    pub async fn users(&self, query: &UserQuery) -> Result<Vec<(User, usize)>, AccountError> {
        let users = self.store.list(query).await?;
        let ids: Vec<UserId> = users.iter().map(|user| user.id).collect();
        let counts = self.session_counts(&ids).await?;
        Ok(users.into_iter().zip(counts).collect())
    }

    /// A user's live sessions, newest first.
    pub async fn sessions_of(&self, user: UserId) -> Result<Vec<ListedSession>, AccountError> {
        Ok(self.sessions.sessions_of(user).await?)
    }

    /// How many sessions each of `users` holds, in their order.
    pub async fn session_counts(&self, users: &[UserId]) -> Result<Vec<usize>, AccountError> {
        Ok(self.sessions.count_of(users).await?)
    }

    /// Disables a user, then ends every session of theirs: in that order,
    /// so that a sign-in between the two finds the user disabled when it
    /// looks again. Sent again after a failure, it completes what was left.
    /// Returns the user and how many sessions ended.
    pub async fn disable(&self, id: UserId) -> Result<(User, usize), AccountError> {
        let user = self
            .store
            .set_disabled(id, Some(self.clock.now()))
            .await?
            .ok_or(AccountError::UnknownUser)?;
        let ended = self.sign_out_everywhere(id).await?;
        Ok((user, ended))
    }

    /// Lets a disabled user sign in again.
    pub async fn enable(&self, id: UserId) -> Result<User, AccountError> {
        self.store
            .set_disabled(id, None)
            .await?
            .ok_or(AccountError::UnknownUser)
    }

    /// Ends every session of a user. Returns how many ended.
    pub async fn sign_out_everywhere(&self, id: UserId) -> Result<usize, AccountError> {
        let ended = self.sessions.revoke_user(id, None).await?;
        if ended > 0 {
            self.revoked(id, ended, RevokeReason::Operator);
        }
        Ok(ended)
    }

    /// Checks that the user store answers; names it.
    pub async fn ping(&self) -> Result<&'static str, AccountError> {
        self.store.ping().await?;
        Ok(self.store.name())
    }

    fn signed_in(&self, session: &Session) {
        self.events.publish(Event::SignedIn {
            user_id: session.user_id,
            session_id: session.id,
        });
    }

    /// Tells other services that `sessions` of a user's ended at once.
    fn revoked(&self, user_id: UserId, sessions: usize, reason: RevokeReason) {
        self.events.publish(Event::SessionsRevoked {
            user_id,
            session_id: None,
            sessions,
            reason,
        });
    }
}
