//! The user registry: sign-up, sign-in, password changes and account
//! deletion. It owns the user store, sends every bcrypt call to the hasher
//! pool, and opens and revokes sessions (and cancels queued tasks) where a
//! credential change demands it, so that each rule below runs to the end as
//! one unit even if the HTTP request is dropped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::{Actor, Addr, Context, Handler, MailboxError, Message, ResponseFuture, Supervised};

use super::{
    CancelAll, HashPassword, HasherPool, QueueRouter, SessionError, SessionManager, VerifyPassword,
};
use crate::auth::password::{self, HashError};
use crate::clock::Clock;
use crate::domain::{Email, Login, NewUser, Password, Session, SessionId, User, UserId, Username};
use crate::events::{Event, Events, RevokeReason};
use crate::storage::{QueueError, StoreError, UserStore};
use crate::telemetry::Metrics;

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Unknown user or wrong password: deliberately one case.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("no such user")]
    UnknownUser,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hasher failed")]
    Hasher(#[from] HashError),
    /// The hasher pool did not answer in time.
    #[error("an actor is not answering")]
    Unavailable(#[from] MailboxError),
    #[error(transparent)]
    Sessions(#[from] SessionError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl RegistryError {
    /// The outcome label of a failed sign-in or sign-up.
    fn outcome(&self) -> &'static str {
        match self {
            Self::InvalidCredentials => "invalid_credentials",
            Self::Store(StoreError::Unavailable(_))
            | Self::Unavailable(_)
            | Self::Queue(QueueError::Unavailable(_)) => "unavailable",
            Self::Sessions(err) if err.is_unavailable() => "unavailable",
            _ => "error",
        }
    }
}

/// A user with the session just opened for them.
pub type Grant = (User, Session);

pub struct UserRegistry {
    parts: Arc<Parts>,
}

/// What every request needs, shared with the futures that serve them.
struct Parts {
    store: Arc<dyn UserStore>,
    hasher: Arc<HasherPool>,
    sessions: SessionManager,
    queue: Addr<QueueRouter>,
    metrics: Metrics,
    events: Events,
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

/// How the registry is put together.
pub struct RegistryConfig {
    pub dummy_hash: String,
    pub cost: u32,
    pub hasher_timeout: Duration,
    pub clock: Clock,
    pub metrics: Metrics,
    pub events: Events,
}

impl UserRegistry {
    pub fn new(
        store: Arc<dyn UserStore>,
        hasher: Arc<HasherPool>,
        sessions: SessionManager,
        queue: Addr<QueueRouter>,
        config: RegistryConfig,
    ) -> Self {
        let RegistryConfig {
            dummy_hash,
            cost,
            hasher_timeout,
            clock,
            metrics,
            events,
        } = config;
        let parts = Parts {
            store,
            hasher,
            sessions,
            queue,
            metrics,
            events,
            dummy_hash,
            cost,
            hasher_timeout,
            clock,
            rehashing: Mutex::default(),
        };
        Self {
            parts: Arc::new(parts),
        }
    }
}

impl Actor for UserRegistry {
    type Context = Context<Self>;
}

/// Restarted by its `Supervisor` if it ever stops. It holds no state of its
/// own, and each request runs as a task of its own, so a panic while serving
/// one fails that request only.
impl Supervised for UserRegistry {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(actor = "UserRegistry", "restarting");
        self.parts.metrics.actor_restarted("UserRegistry");
    }
}

/// Register a user, opening no session (the older `/register` route).
#[derive(Message)]
#[rtype(result = "Result<User, RegistryError>")]
pub struct Register {
    pub username: Username,
    pub email: Option<Email>,
    pub password: Password,
}

/// Register a user and open their first session.
#[derive(Message)]
#[rtype(result = "Result<Grant, RegistryError>")]
pub struct SignUp(pub Register);

/// Check credentials and open a session for the user they belong to.
#[derive(Message)]
#[rtype(result = "Result<Grant, RegistryError>")]
pub struct SignIn {
    pub login: Login,
    pub password: Password,
}

/// Replace a user's password after checking the current one, then revoke
/// every session of the user but `keep`.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct ChangePassword {
    pub user_id: UserId,
    pub keep: SessionId,
    pub current: Password,
    pub new: Password,
}

/// Delete a user after checking their password: their waiting tasks are
/// cancelled, the user removed, and every session of theirs revoked.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct DeleteAccount {
    pub user_id: UserId,
    pub password: Password,
}

#[derive(Message)]
#[rtype(result = "Result<User, RegistryError>")]
pub struct GetUser(pub UserId);

/// Check that the user store answers.
#[derive(Message)]
#[rtype(result = "Result<&'static str, RegistryError>")]
pub struct PingStore;

impl Parts {
    async fn hash(&self, password: Password) -> Result<String, RegistryError> {
        let hashed = self
            .hasher
            .addr()
            .send(HashPassword(password))
            .timeout(self.hasher_timeout);
        Ok(hashed.await??)
    }

    async fn verify(&self, password: &Password, hash: &str) -> Result<bool, RegistryError> {
        let verify = VerifyPassword {
            password: password.clone(),
            hash: hash.to_owned(),
        };
        Ok(self
            .hasher
            .addr()
            .send(verify)
            .timeout(self.hasher_timeout)
            .await??)
    }

    async fn register(&self, msg: Register) -> Result<User, RegistryError> {
        let outcome = self.insert_user(msg).await;
        self.metrics.signup(match &outcome {
            Ok(_) => "created",
            Err(RegistryError::Store(StoreError::UsernameTaken)) => "username_taken",
            Err(RegistryError::Store(StoreError::EmailTaken)) => "email_taken",
            Err(err) => err.outcome(),
        });
        outcome
    }

    async fn insert_user(&self, msg: Register) -> Result<User, RegistryError> {
        let password_hash = self.hash(msg.password).await?;
        let new = NewUser {
            id: UserId::new(),
            username: msg.username,
            email: msg.email,
            password_hash,
            created_at: self.clock.now(),
        };
        let user = self.store.insert(new).await?;
        self.events.publish(Event::SignedUp {
            user_id: user.id,
            username: user.username.as_str().to_owned(),
        });
        Ok(user)
    }

    async fn sign_up(&self, msg: SignUp) -> Result<Grant, RegistryError> {
        let user = self.register(msg.0).await?;
        let session = self.sessions.open(user.id).await?;
        self.signed_in(&session);
        Ok((user, session))
    }

    async fn sign_in(self: Arc<Self>, msg: SignIn) -> Result<Grant, RegistryError> {
        let Some(user) = self.store.find_by_login(&msg.login).await? else {
            // An unknown user still costs one verification, against the
            // dummy hash, so that timing does not tell the two cases apart.
            self.verify(&msg.password, &self.dummy_hash).await?;
            return Err(RegistryError::InvalidCredentials);
        };
        let stale_cost = password::needs_rehash(&user.password_hash, self.cost);
        if !self.verify(&msg.password, &user.password_hash).await? {
            if stale_cost {
                // A hash from a cheaper cost verifies faster than the dummy;
                // pad the failure so it does not stand out from an unknown
                // user's.
                self.verify(&msg.password, &self.dummy_hash).await?;
            }
            return Err(RegistryError::InvalidCredentials);
        }
        let session = self.sessions.open(user.id).await?;

        // A password change may have swapped the hash while this sign-in
        // checked the old one, and revoked the user's sessions before this
        // one opened. Looking again after opening closes that gap: either
        // the change comes later and its revocation ends this session, or
        // it came first and the stored hash shows it.
        let current = self.store.find_by_id(user.id).await?;
        let still_valid = match &current {
            Some(now) if now.password_hash == user.password_hash => true,
            // Changed meanwhile: by a rehash (same password) or by a
            // password change. Only the password itself can tell.
            Some(now) => self.verify(&msg.password, &now.password_hash).await?,
            None => false,
        };
        if !still_valid {
            self.sessions.revoke(session.id).await?;
            return Err(RegistryError::InvalidCredentials);
        }
        self.signed_in(&session);

        if stale_cost && self.rehashing().insert(user.id) {
            // After the reply: the caller should not wait for a second hash.
            actix::spawn(self.clone().rehash(user.clone(), msg.password));
        }
        Ok((user, session))
    }

    /// Stores a hash of `password` at the configured cost in place of the
    /// user's current one, unless the password was changed meanwhile.
    async fn rehash(self: Arc<Self>, user: User, password: Password) {
        let outcome = async {
            let new_hash = self.hash(password).await?;
            let replaced =
                self.store
                    .replace_password_hash(user.id, &user.password_hash, &new_hash);
            Ok::<_, RegistryError>(replaced.await?)
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

    async fn change_password(&self, msg: ChangePassword) -> Result<(), RegistryError> {
        // The swap only succeeds while the stored hash is the one checked.
        // If a rehash slipped in between, the second round checks again
        // against the rehashed value; a real change in between makes the
        // current password wrong.
        let mut new_hash = None;
        for _ in 0..2 {
            let user = self
                .store
                .find_by_id(msg.user_id)
                .await?
                .ok_or(RegistryError::UnknownUser)?;
            if !self.verify(&msg.current, &user.password_hash).await? {
                return Err(RegistryError::InvalidCredentials);
            }
            let new_hash = match new_hash {
                Some(ref hash) => hash,
                None => new_hash.insert(self.hash(msg.new.clone()).await?),
            };
            let replace =
                self.store
                    .replace_password_hash(msg.user_id, &user.password_hash, new_hash);
            if replace.await? {
                let ended = self
                    .sessions
                    .revoke_user(msg.user_id, Some(msg.keep))
                    .await?;
                self.revoked(msg.user_id, ended, RevokeReason::PasswordChanged);
                return Ok(());
            }
        }
        Err(RegistryError::InvalidCredentials)
    }
}

impl Parts {
    async fn delete_account(&self, msg: DeleteAccount) -> Result<(), RegistryError> {
        let user = self
            .store
            .find_by_id(msg.user_id)
            .await?
            .ok_or(RegistryError::UnknownUser)?;
        if !self.verify(&msg.password, &user.password_hash).await? {
            return Err(RegistryError::InvalidCredentials);
        }
        // Tasks first: if the queue is down, nothing has changed yet and
        // the client can simply try again.
        self.queue.send(CancelAll(user.id)).await??;
        self.store.delete(user.id).await?;
        let ended = self.sessions.revoke_user(user.id, None).await?;
        self.revoked(user.id, ended, RevokeReason::AccountDeleted);
        Ok(())
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

impl Handler<Register> for UserRegistry {
    type Result = ResponseFuture<Result<User, RegistryError>>;

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> Self::Result {
        let parts = self.parts.clone();
        Box::pin(async move { parts.register(msg).await })
    }
}

impl Handler<SignUp> for UserRegistry {
    type Result = ResponseFuture<Result<Grant, RegistryError>>;

    fn handle(&mut self, msg: SignUp, _: &mut Context<Self>) -> Self::Result {
        let parts = self.parts.clone();
        Box::pin(async move { parts.sign_up(msg).await })
    }
}

impl Handler<SignIn> for UserRegistry {
    type Result = ResponseFuture<Result<Grant, RegistryError>>;

    fn handle(&mut self, msg: SignIn, _: &mut Context<Self>) -> Self::Result {
        let parts = self.parts.clone();
        Box::pin(async move {
            let outcome = parts.clone().sign_in(msg).await;
            parts.metrics.signin(match &outcome {
                Ok(_) => "success",
                Err(err) => err.outcome(),
            });
            outcome
        })
    }
}

impl Handler<ChangePassword> for UserRegistry {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, msg: ChangePassword, _: &mut Context<Self>) -> Self::Result {
        let parts = self.parts.clone();
        Box::pin(async move { parts.change_password(msg).await })
    }
}

impl Handler<DeleteAccount> for UserRegistry {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, msg: DeleteAccount, _: &mut Context<Self>) -> Self::Result {
        let parts = self.parts.clone();
        Box::pin(async move { parts.delete_account(msg).await })
    }
}

impl Handler<GetUser> for UserRegistry {
    type Result = ResponseFuture<Result<User, RegistryError>>;

    fn handle(&mut self, msg: GetUser, _: &mut Context<Self>) -> Self::Result {
        let parts = self.parts.clone();
        Box::pin(async move {
            parts
                .store
                .find_by_id(msg.0)
                .await?
                .ok_or(RegistryError::UnknownUser)
        })
    }
}

impl Handler<PingStore> for UserRegistry {
    type Result = ResponseFuture<Result<&'static str, RegistryError>>;

    fn handle(&mut self, _: PingStore, _: &mut Context<Self>) -> Self::Result {
        let parts = self.parts.clone();
        Box::pin(async move {
            parts.store.ping().await?;
            Ok(parts.store.name())
        })
    }
}
