//! The user registry: sign-up, sign-in and password changes. It owns the
//! user store and sends every bcrypt call to the hasher pool.

use std::sync::Arc;

use actix::{Actor, Addr, Context, Handler, MailboxError, Message, ResponseFuture, Supervised};

use super::{HashPassword, PasswordHasher, VerifyPassword};
use crate::auth::password::{self, HashError};
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
    /// The configured bcrypt cost; hashes made at another are redone at
    /// the user's next sign-in.
    cost: u32,
    clock: Clock,
}

impl UserRegistry {
    pub fn new(
        store: Arc<dyn UserStore>,
        hasher: Addr<PasswordHasher>,
        dummy_hash: String,
        cost: u32,
        clock: Clock,
    ) -> Self {
        let dummy_hash = dummy_hash.into();
        Self {
            store,
            hasher,
            dummy_hash,
            cost,
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
        let (store, hasher) = (self.store.clone(), self.hasher.clone());
        let (dummy, cost) = (self.dummy_hash.clone(), self.cost);
        Box::pin(async move {
            let user = store.find_by_login(&msg.login).await?;
            // An unknown user still costs one verification, against the
            // dummy hash, so that timing does not tell the two cases apart.
            let hash = user
                .as_ref()
                .map_or_else(|| dummy.to_string(), |u| u.password_hash.clone());
            let verify = VerifyPassword {
                password: msg.password.clone(),
                hash,
            };
            let matches = hasher.send(verify).await??;
            let Some(user) = user.filter(|_| matches) else {
                return Err(RegistryError::InvalidCredentials);
            };
            if password::needs_rehash(&user.password_hash, cost) {
                // After the reply: the caller should not wait for a second hash.
                actix::spawn(rehash(store, hasher, user.clone(), msg.password));
            }
            Ok(user)
        })
    }
}

/// Stores a hash of `password` at the configured cost in place of the
/// user's current one, unless the password was changed meanwhile.
async fn rehash(
    store: Arc<dyn UserStore>,
    hasher: Addr<PasswordHasher>,
    user: User,
    password: Password,
) {
    let outcome = match hasher.send(HashPassword(password)).await {
        Ok(Ok(new_hash)) => store
            .replace_password_hash(user.id, &user.password_hash, &new_hash)
            .await
            .map_err(anyhow::Error::from),
        Ok(Err(err)) => Err(err.into()),
        Err(err) => Err(err.into()),
    };
    match outcome {
        Ok(true) => tracing::info!(user_id = %user.id, "password rehashed at the configured cost"),
        Ok(false) => {}
        Err(err) => tracing::warn!(user_id = %user.id, error = %err, "password rehash failed"),
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
            let verify = VerifyPassword {
                password: msg.current,
                hash: user.password_hash.clone(),
            };
            if !hasher.send(verify).await?? {
                return Err(RegistryError::InvalidCredentials);
            }
            let new_hash = hasher.send(HashPassword(msg.new)).await??;
            // Refused if another change landed since the check above: the
            // password this request proved is no longer the current one.
            if store
                .replace_password_hash(msg.user_id, &user.password_hash, &new_hash)
                .await?
            {
                Ok(())
            } else {
                Err(RegistryError::InvalidCredentials)
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
