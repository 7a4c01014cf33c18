//! The user registry: sign-up, sign-in and password changes. It owns the
//! user store and sends every bcrypt call to the hasher pool.

use std::sync::Arc;

use actix::{Actor, Addr, Context, Handler, MailboxError, Message, ResponseFuture, Supervised};

use super::{HashPassword, PasswordHasher, VerifyPassword};
use crate::auth::password::HashError;
use crate::clock::Clock;
use crate::domain::{Email, Login, NewUser, Password, User, UserId, Username};
use crate::storage::{StoreError, UserStore};

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
    #[error("password hasher pool is not answering")]
    HasherUnavailable(#[from] MailboxError),
}

pub struct UserRegistry {
    store: Arc<dyn UserStore>,
    hasher: Addr<PasswordHasher>,
    /// A hash of a password nobody has, verified when the user is unknown so
    /// that an unknown user costs the same bcrypt time as a wrong password.
    dummy_hash: Arc<str>,
    clock: Clock,
}

impl UserRegistry {
    pub fn new(
        store: Arc<dyn UserStore>,
        hasher: Addr<PasswordHasher>,
        dummy_hash: String,
        clock: Clock,
    ) -> Self {
        Self {
            store,
            hasher,
            dummy_hash: dummy_hash.into(),
            clock,
        }
    }
}

impl Actor for UserRegistry {
    type Context = Context<Self>;
}

/// Restarted by its `Supervisor` if it ever stops; it holds no state of its
/// own beyond handles, so a restart loses nothing.
impl Supervised for UserRegistry {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(actor = "UserRegistry", "restarting");
    }
}

/// Register a user; replies with the stored user.
#[derive(Message)]
#[rtype(result = "Result<User, RegistryError>")]
pub struct SignUp {
    pub username: Username,
    pub email: Option<Email>,
    pub password: Password,
}

/// Check credentials; replies with the user they belong to.
#[derive(Message)]
#[rtype(result = "Result<User, RegistryError>")]
pub struct SignIn {
    pub login: Login,
    pub password: Password,
}

/// Replace a user's password after checking the current one.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct ChangePassword {
    pub user_id: UserId,
    pub current: Password,
    pub new: Password,
}

#[derive(Message)]
#[rtype(result = "Result<User, RegistryError>")]
pub struct GetUser(pub UserId);

/// Check that the user store answers.
#[derive(Message)]
#[rtype(result = "Result<&'static str, RegistryError>")]
pub struct PingStore;

impl Handler<SignUp> for UserRegistry {
    type Result = ResponseFuture<Result<User, RegistryError>>;

    fn handle(&mut self, msg: SignUp, _: &mut Context<Self>) -> Self::Result {
        let (store, hasher, clock) = (self.store.clone(), self.hasher.clone(), self.clock.clone());
        Box::pin(async move {
            let password_hash = hasher.send(HashPassword(msg.password)).await??;
            let user = NewUser {
                id: UserId::new(),
                username: msg.username,
                email: msg.email,
                password_hash,
                created_at: clock.now(),
            };
            Ok(store.insert(user).await?)
        })
    }
}

impl Handler<SignIn> for UserRegistry {
    type Result = ResponseFuture<Result<User, RegistryError>>;

    fn handle(&mut self, msg: SignIn, _: &mut Context<Self>) -> Self::Result {
        let (store, hasher, dummy) = (
            self.store.clone(),
            self.hasher.clone(),
            self.dummy_hash.clone(),
        );
        Box::pin(async move {
            let user = store.find_by_login(&msg.login).await?;
            let hash = user
                .as_ref()
                .map_or_else(|| dummy.to_string(), |u| u.password_hash.clone());
            let matches = hasher
                .send(VerifyPassword {
                    password: msg.password,
                    hash,
                })
                .await??;
            match user {
                Some(user) if matches => Ok(user),
                _ => Err(RegistryError::InvalidCredentials),
            }
        })
    }
}

impl Handler<ChangePassword> for UserRegistry {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, msg: ChangePassword, _: &mut Context<Self>) -> Self::Result {
        let (store, hasher) = (self.store.clone(), self.hasher.clone());
        Box::pin(async move {
            let user = store
                .find_by_id(msg.user_id)
                .await?
                .ok_or(RegistryError::UnknownUser)?;
            let hash = user.password_hash;
            if !hasher
                .send(VerifyPassword {
                    password: msg.current,
                    hash,
                })
                .await??
            {
                return Err(RegistryError::InvalidCredentials);
            }
            let new_hash = hasher.send(HashPassword(msg.new)).await??;
            if store.set_password_hash(msg.user_id, &new_hash).await? {
                Ok(())
            } else {
                Err(RegistryError::UnknownUser)
            }
        })
    }
}

impl Handler<GetUser> for UserRegistry {
    type Result = ResponseFuture<Result<User, RegistryError>>;

    fn handle(&mut self, msg: GetUser, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move {
            store
                .find_by_id(msg.0)
                .await?
                .ok_or(RegistryError::UnknownUser)
        })
    }
}

impl Handler<PingStore> for UserRegistry {
    type Result = ResponseFuture<Result<&'static str, RegistryError>>;

    fn handle(&mut self, _: PingStore, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move {
            store.ping().await?;
            Ok(store.name())
        })
    }
}
